//! Backpressure: `send` reports it above the limit, a connection past `max_buffered` is
//! dropped (so a client that never reads cannot make the server buffer without bound),
//! and `on_drain` fires once a slow reader has caught up.

use std::sync::mpsc::{channel, Receiver, Sender};

use soliton::proto::Message;
use soliton::server::{CloseInfo, ConnId, Handler, Reject, SendStatus, UpgradeRequest, WebSocket};
use soliton_tests::{
    builder, for_each_backend, op, read_to_end_or_reset, RawWs, TestServer, IO_TIMEOUT,
};

const MIB: usize = 1 << 20;
const BACKPRESSURE: usize = 256 * 1024;
const MAX_BUFFERED: usize = 4 * MIB;
/// Bounds the flood: far more than `MAX_BUFFERED` plus any socket buffers.
const MAX_SENDS: usize = 64;

#[derive(Debug)]
enum Ev {
    /// What each send of the flood returned, and the buffered amount after it.
    Flood(Vec<(SendStatus, usize)>),
    Drain {
        buffered: usize,
    },
    Closed {
        code: u16,
        clean: bool,
    },
}

/// On "flood", sends 1 MiB binary messages until `send` says `Backpressure`
/// (`until_dropped`: until it says `Dropped`); on drain, sends "drained".
struct Flooder {
    tx: Sender<Ev>,
    chunk: Vec<u8>,
    until_dropped: bool,
}

impl Handler for Flooder {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        if msg != Message::Text("flood") {
            return;
        }
        let mut log = Vec::new();
        for _ in 0..MAX_SENDS {
            let s = ws.send_binary(&self.chunk);
            log.push((s, ws.buffered_amount()));
            let stop = if self.until_dropped {
                s == SendStatus::Dropped
            } else {
                s != SendStatus::Sent
            };
            if stop {
                break;
            }
        }
        let _ = self.tx.send(Ev::Flood(log));
    }
    fn on_drain(&mut self, ws: &mut WebSocket<'_, ()>) {
        let _ = self.tx.send(Ev::Drain {
            buffered: ws.buffered_amount(),
        });
        ws.send_text("drained");
    }
    fn on_close(&mut self, _id: ConnId, _data: (), info: CloseInfo<'_>) {
        let _ = self.tx.send(Ev::Closed {
            code: info.code.get(),
            clean: info.was_clean,
        });
    }
}

fn flood_server(
    backend: soliton::server::Backend,
    until_dropped: bool,
) -> (TestServer, Receiver<Ev>) {
    let (tx, rx) = channel();
    let b = builder(backend).buffered_limits(BACKPRESSURE, MAX_BUFFERED);
    let server = TestServer::start(b, move |_| Flooder {
        tx: tx.clone(),
        chunk: soliton_tests::binary_of_len(MIB),
        until_dropped,
    });
    (server, rx)
}

#[test]
fn flooding_a_client_that_never_reads_reports_backpressure_then_drops_it_past_max_buffered() {
    for_each_backend(|backend| {
        let (server, rx) = flood_server(backend, true);
        let mut ws = RawWs::connect(server.addr());
        ws.send_text("flood");
        // the client reads nothing until the server is done with it
        let log = match rx.recv_timeout(IO_TIMEOUT).expect("flood report") {
            Ev::Flood(log) => log,
            other => panic!("expected the flood report, got {other:?}"),
        };
        eprintln!("  sends: {log:?}");
        let first_bp = log
            .iter()
            .position(|(s, _)| *s == SendStatus::Backpressure)
            .expect("send reported Backpressure");
        assert!(
            log[first_bp].1 > BACKPRESSURE,
            "Backpressure only above the limit: {log:?}"
        );
        assert!(
            log[..first_bp]
                .iter()
                .all(|(s, b)| *s == SendStatus::Sent && *b <= BACKPRESSURE),
            "Sent while at or under the limit: {log:?}"
        );
        let (last, _) = *log.last().expect("at least one send");
        assert_eq!(
            last,
            SendStatus::Dropped,
            "dropped past max_buffered: {log:?}"
        );
        assert!(log.len() < MAX_SENDS, "the flood was cut short by the drop");
        // every send after the drop would be Dropped too; the connection is gone
        match rx.recv_timeout(IO_TIMEOUT).expect("on_close ran") {
            Ev::Closed { code, clean } => {
                assert_eq!(code, 1006, "a dropped connection reads as abnormal");
                assert!(!clean);
            }
            other => panic!("expected on_close, got {other:?}"),
        }
        // the client sees the stream end (reset or EOF), not a timeout, and never
        // more than the server accepted to buffer plus what the sockets held
        let (bytes, ended) = read_to_end_or_reset(&mut ws.stream);
        assert!(ended, "the connection was not dropped");
        assert!(
            bytes.len() < log.len() * MIB,
            "got {} bytes: more than was sent before the drop",
            bytes.len()
        );
    });
}

#[test]
fn on_drain_fires_when_a_slow_reader_catches_up() {
    for_each_backend(|backend| {
        let (server, rx) = flood_server(backend, false);
        let mut ws = RawWs::connect(server.addr());
        ws.send_text("flood");
        let log = match rx.recv_timeout(IO_TIMEOUT).expect("flood report") {
            Ev::Flood(log) => log,
            other => panic!("expected the flood report, got {other:?}"),
        };
        eprintln!("  sends: {log:?}");
        assert_eq!(
            log.last().map(|l| l.0),
            Some(SendStatus::Backpressure),
            "the flood stops at the first Backpressure: {log:?}"
        );
        // now read everything: every 1 MiB message, then the drain's "drained"
        let chunk = soliton_tests::binary_of_len(MIB);
        for i in 0..log.len() {
            let (opcode, payload) = ws.read_message();
            assert_eq!(opcode, op::BINARY, "message {i}");
            assert!(
                payload == chunk,
                "message {i} differs ({} bytes)",
                payload.len()
            );
        }
        assert_eq!(ws.read_text(), "drained");
        match rx.recv_timeout(IO_TIMEOUT).expect("on_drain ran") {
            Ev::Drain { buffered } => {
                assert!(buffered <= BACKPRESSURE, "drained at {buffered} bytes")
            }
            other => panic!("expected on_drain, got {other:?}"),
        }
        // the connection is still fine
        ws.send_text("flood?");
        ws.send_frame(true, op::PING, b"alive");
        let pong = ws.read_frame().expect("pong");
        assert_eq!(
            (pong.opcode, pong.payload.as_slice()),
            (op::PONG, &b"alive"[..])
        );
    });
}

/// Echoes every message and keeps the highest buffered amount it saw after a send.
struct EchoWatch {
    max: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Handler for EchoWatch {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        use std::sync::atomic::Ordering::Relaxed;
        if ws.send(msg) == SendStatus::Dropped {
            self.dropped.fetch_add(1, Relaxed);
        }
        self.max.fetch_max(ws.buffered_amount(), Relaxed);
    }
}

/// Read-side flow control: a client that writes echo requests as fast as the socket
/// takes them and reads nothing. Without it the server would read on, queue the echoes
/// until `max_buffered` and drop the connection; with it the server stops reading the
/// connection once its queue is past the backpressure limit, the client's writes block
/// (TCP's window), and when the client reads again every echo comes back, in order.
#[test]
fn a_client_that_floods_without_reading_is_slowed_by_tcp_not_dropped() {
    let payload: Vec<u8> = (0..16 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    for_each_backend(|backend| flood_without_reading(backend, std::slice::from_ref(&payload)));
}

/// The same with small frames of every length up to 125 bytes (the server's
/// small-frame send path, and on epoll writes made there and then that the full socket
/// takes only part of): every echo back, whole and in order, and the queue within a
/// read of the limit.
#[test]
fn small_frames_flooded_without_reading_all_come_back_in_order() {
    let payloads: Vec<Vec<u8>> = (1..=125usize)
        .map(|n| (0..n).map(|i| (n * 13 + i) as u8).collect())
        .collect();
    for_each_backend(|backend| flood_without_reading(backend, &payloads));
}

/// Writes `payloads` (in turn, over and over) as masked binary frames until the writes
/// have blocked for half a second, checks that the server neither dropped the
/// connection nor queued more than a read past the limit, then reads every echo back.
fn flood_without_reading(backend: soliton::server::Backend, payloads: &[Vec<u8>]) {
    use std::io::{ErrorKind, Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    const LIMIT: usize = 64 * 1024;
    const MAX: usize = 2 * MIB;
    /// Far more than every socket buffer on the path together: reaching it means the
    /// server never stopped reading.
    const CAP: usize = 512 * MIB;
    let max = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (m, d) = (max.clone(), dropped.clone());
    let b = builder(backend).buffered_limits(LIMIT, MAX);
    let server = TestServer::start(b, move |_| EchoWatch {
        max: m.clone(),
        dropped: d.clone(),
    });
    let mut ws = RawWs::connect(server.addr());
    // one run of frames, every payload once
    let mut cycle = Vec::new();
    for p in payloads {
        cycle.extend_from_slice(&ws.masked_frame(true, op::BINARY, p));
    }
    // where each frame of the run ends, to count the frames written
    let mut ends = Vec::new();
    let mut at_end = 0;
    for p in payloads {
        at_end += ws.masked_frame(true, op::BINARY, p).len();
        ends.push(at_end);
    }
    ws.stream.set_nonblocking(true).expect("nonblocking");
    // flood until the writes have blocked for half a second
    let (mut runs, mut at, mut written) = (0usize, 0usize, 0usize);
    let mut blocked_since: Option<Instant> = None;
    loop {
        assert!(
            written < CAP,
            "{written} bytes taken: the server never stopped reading"
        );
        match ws.stream.write(&cycle[at..]) {
            Ok(n) => {
                blocked_since = None;
                written += n;
                at += n;
                if at == cycle.len() {
                    at = 0;
                    runs += 1;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!(
                "write failed after {written} bytes: {e} (sends dropped: {}, highest queue {} B)",
                dropped.load(Relaxed),
                max.load(Relaxed)
            ),
        }
    }
    // the frames wholly or partly written (a partly written one is finished below)
    let frames = runs * payloads.len()
        + ends.iter().filter(|&&e| e <= at).count()
        + usize::from(at > 0 && !ends.contains(&at));
    eprintln!(
        "  writes blocked after {written} bytes ({frames} frames); highest queue {} B",
        max.load(Relaxed)
    );
    assert_eq!(dropped.load(Relaxed), 0, "the server dropped the flooder");
    let longest = payloads.iter().map(Vec::len).max().unwrap_or(0) + 14;
    assert!(
        max.load(Relaxed) <= LIMIT + 32 * 1024 + longest,
        "the queue reached {} B",
        max.load(Relaxed)
    );
    // now read every echo back (finishing the last frame as the window opens)
    let end_of_frame = ends.iter().copied().find(|&e| e >= at).unwrap_or(0);
    let mut to_write = if at > 0 { end_of_frame - at } else { 0 };
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut got, mut buf, mut tmp) = (0usize, Vec::new(), vec![0u8; 256 * 1024]);
    while got < frames {
        assert!(
            Instant::now() < deadline,
            "{got} of {frames} echoes came back"
        );
        if to_write > 0 {
            match ws.stream.write(&cycle[at..at + to_write]) {
                Ok(n) => {
                    at += n;
                    to_write -= n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("write failed: {e}"),
            }
        }
        match ws.stream.read(&mut tmp) {
            Ok(0) => panic!("the server closed after {got} of {frames} echoes"),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("read failed after {got} echoes: {e}"),
        }
        let mut used = 0;
        while let Some((f, n)) = soliton_tests::decode_frame(&buf[used..]) {
            assert_eq!(f.opcode, op::BINARY, "echo {got}");
            assert!(
                f.payload == payloads[got % payloads.len()],
                "echo {got} differs"
            );
            got += 1;
            used += n;
        }
        buf.drain(..used);
    }
    assert!(buf.is_empty(), "bytes past the last echo");
    // and the connection is still fine
    ws.stream.set_nonblocking(false).expect("blocking");
    ws.send_frame(true, op::PING, b"alive");
    let pong = ws.read_frame().expect("pong");
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (op::PONG, &b"alive"[..])
    );
}

/// The same flood with read-side flow control turned off (`read_throttle(false)`, what
/// a load generator sets): the server reads on past the backpressure limit and its
/// queue grows far beyond it (with the throttle it stays within a frame of the limit,
/// above); past `max_buffered` the flooder would be dropped, as the first test shows.
#[test]
fn without_read_throttle_the_queue_grows_past_the_limit() {
    use std::io::{ErrorKind, Write};
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    const FRAME: usize = 16 * 1024;
    const LIMIT: usize = 64 * 1024;
    const MAX: usize = 2 * MIB;
    /// Eight times the limit: far past what the throttled server ever queued.
    const GROWN: usize = 8 * LIMIT;
    for_each_backend(|backend| {
        let max = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let (m, d) = (max.clone(), dropped.clone());
        let b = builder(backend)
            .buffered_limits(LIMIT, MAX)
            .read_throttle(false);
        let server = TestServer::start(b, move |_| EchoWatch {
            max: m.clone(),
            dropped: d.clone(),
        });
        let mut ws = RawWs::connect(server.addr());
        let payload = vec![7u8; FRAME];
        let frame = ws.masked_frame(true, op::BINARY, &payload);
        ws.stream.set_nonblocking(true).expect("nonblocking");
        // (a debug build reads slowly: the socket buffers fill first, then the queue)
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut blocked_since: Option<Instant> = None;
        let mut at = 0usize;
        // write until the queue has grown, the connection fails, or the writes stay
        // blocked for 2 s (reading stopped after all)
        while max.load(Relaxed) < GROWN && Instant::now() < deadline {
            match ws.stream.write(&frame[at..]) {
                Ok(n) => {
                    blocked_since = None;
                    at = (at + n) % frame.len();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(2) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
        eprintln!(
            "  highest queue {} B, sends dropped {}",
            max.load(Relaxed),
            dropped.load(Relaxed)
        );
        assert!(
            max.load(Relaxed) >= GROWN,
            "the queue stayed at {} B: reading stopped anyway",
            max.load(Relaxed)
        );
    });
}

/// Logs each message; "pause" pauses the connection, and a timer resumes it 100 ms
/// later (logging "resume" first).
struct Pauser {
    tx: Sender<String>,
}

impl Handler for Pauser {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        let text = String::from_utf8_lossy(msg.as_bytes()).into_owned();
        if text == "pause" {
            ws.pause();
            let id = ws.id();
            ws.set_timer::<Pauser>(std::time::Duration::from_millis(100), move |h, ctx| {
                let _ = h.tx.send("resume".into());
                ctx.with(id, |ws| ws.resume());
            });
        }
        let _ = self.tx.send(text);
    }
}

/// `pause()` takes effect at once: the messages that came in the same read as the one
/// being handled wait for `resume()` (in order), so a handler that pauses holds at most
/// the message it was given.
#[test]
fn pause_stops_delivery_at_once_and_resume_delivers_the_rest_in_order() {
    for_each_backend(|backend| {
        let (tx, rx) = channel();
        let server = TestServer::start(builder(backend), move |_| Pauser { tx: tx.clone() });
        let mut ws = RawWs::connect(server.addr());
        // three messages in one write: one read on the server
        let mut bytes = ws.masked_frame(true, op::TEXT, b"pause");
        bytes.extend(ws.masked_frame(true, op::TEXT, b"a"));
        bytes.extend(ws.masked_frame(true, op::TEXT, b"b"));
        ws.send_raw(&bytes);
        let log: Vec<String> = (0..4)
            .map(|_| {
                rx.recv_timeout(IO_TIMEOUT)
                    .expect("a message or the resume")
            })
            .collect();
        assert_eq!(log, ["pause", "resume", "a", "b"]);
    });
}
