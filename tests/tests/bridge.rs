//! The async bridge (`soliton::bridge`, feature `tokio`) over real sockets on both
//! backends: a tokio task echoes through it in order; `Bridge::send` awaits while a
//! client does not read, the server's queue staying near the backpressure limit; and
//! a tokio consumer that stops taking events leaves the clients' writes stalled
//! (TCP's window) rather than the server buffering what they send, then gets every
//! message, in order, once it takes events again.
//!
//! The tests share the process's RSS (one of them measures it), so they run one at a
//! time.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use soliton::bridge::{self, Bridge, BridgeOptions, Event, Events, Payload};
use soliton::proto::Message;
use soliton::server::{Builder, ConnId};
use soliton_tests::{builder, for_each_backend, op, rss, upgrade_request, RawWs, IO_TIMEOUT};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A bridged server, shut down (200 ms grace) when dropped.
struct Served {
    bridge: Bridge,
}

impl Served {
    /// Starts `b` through the bridge; logs and checks the backend as `TestServer` does.
    fn start(b: Builder, opts: BridgeOptions) -> (Served, Events) {
        let asked = b.backend_asked();
        let (bridge, events) = bridge::serve(b, opts).expect("bridged server starts");
        let running = bridge.handle().backend();
        eprintln!(
            "soliton-tests: bridged server on {}, backend running: {running:?}",
            bridge.local_addr()
        );
        soliton_tests::record_backend(running);
        assert_eq!(running, asked, "the backend running is the one asked for");
        (Served { bridge }, events)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let r = self.bridge.handle().shutdown(Duration::from_millis(200));
        if let Err(e) = r {
            if !std::thread::panicking() {
                panic!("server stopped with an error: {e}");
            }
        }
    }
}

/// Runs `f` on a tokio runtime in a thread of its own.
fn on_tokio<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> JoinHandle<T> {
    std::thread::spawn(move || block_on(f))
}

/// Waits for `f` on a current-thread tokio runtime of its own (the bridge needs no
/// I/O or timer driver).
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// Polls `f` every 50 ms until it returns the same value for `quiet` (a stall: that
/// value), or panics once `deadline` passes without one.
fn stall(quiet: Duration, deadline: Duration, mut f: impl FnMut() -> usize) -> usize {
    let start = Instant::now();
    let mut last = f();
    let mut since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = f();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
        assert!(
            start.elapsed() < deadline,
            "no stall within {deadline:?}: at {now} and still moving"
        );
    }
}

/// The payload of message `seq` of a stream: `seq` (8 bytes, little endian) then a
/// pattern that depends on it, `len` bytes in all.
fn numbered(seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((8..len).map(|i| (i as u64 ^ seq.wrapping_mul(131)) as u8));
    v.truncate(len);
    v
}

/// `payload` is message `seq` of a [`numbered`] stream of `len`-byte messages.
fn check_numbered(payload: &[u8], seq: u64, len: usize, what: &str) {
    assert_eq!(payload.len(), len, "{what}: length of message {seq}");
    let got = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
    assert_eq!(got, seq, "{what}: messages out of order");
    assert!(
        payload == numbered(seq, len),
        "{what}: message {seq} corrupted"
    );
}

#[test]
fn a_tokio_task_echoes_through_the_bridge_in_order() {
    let _serial = serial();
    const CLIENTS: usize = 4;
    const ROUNDS: usize = 20;
    const WINDOW: usize = 10;
    for_each_backend(|backend| {
        // a small queue, so that connections get paused and resumed on the way
        let opts = BridgeOptions::new().capacity(4).header("x-client");
        // two workers: each pauses and resumes its own connections
        let (served, mut events) = Served::start(builder(backend).workers(2), opts);
        let bridge = served.bridge.clone();
        // One task per connection sends its echoes in order. (Awaiting each send in the
        // event loop itself would tie every connection to the slowest: while it waits
        // for connection X to drain, the queue fills, X is paused, X's client blocks
        // writing its window before it reads, and X never drains. Seen once in CI.)
        let consumer = on_tokio(async move {
            let (mut opens, mut closes) = (Vec::new(), Vec::new());
            let mut echoers = std::collections::HashMap::new();
            let mut tasks = Vec::new();
            while let Some(ev) = events.next().await {
                match ev {
                    Event::Open {
                        id, path, headers, ..
                    } => {
                        opens.push((id, path, headers));
                        // bounded (memory stays bounded), and larger than a client's window
                        let (tx, mut rx) = tokio::sync::mpsc::channel::<Payload>(4 * WINDOW);
                        let bridge = bridge.clone();
                        tasks.push(tokio::spawn(async move {
                            while let Some(p) = rx.recv().await {
                                bridge
                                    .send(id, p.as_message())
                                    .await
                                    .expect("the client is there");
                            }
                        }));
                        echoers.insert(id, tx);
                    }
                    Event::Message { id, payload } => {
                        echoers[&id]
                            .send(payload)
                            .await
                            .expect("the echo task runs");
                    }
                    Event::Close {
                        id,
                        code,
                        reason,
                        clean,
                    } => {
                        echoers.remove(&id);
                        closes.push((id, code.get(), reason, clean));
                        if closes.len() == CLIENTS {
                            break;
                        }
                    }
                }
            }
            for t in tasks {
                t.await.expect("an echo task");
            }
            (opens, closes)
        });
        let addr = served.bridge.local_addr();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                std::thread::spawn(move || {
                    let header = format!("X-Client: {c}");
                    let req = upgrade_request(&format!("/room/{c}"), &[], &[&header]);
                    let mut ws = RawWs::connect_with(addr, &req);
                    // a window of messages in flight, some over the backpressure limit
                    let msg = |i: usize| -> (bool, Vec<u8>) {
                        if i % 7 == 3 {
                            (false, numbered(i as u64, 100 * KIB))
                        } else {
                            (true, format!("client {c} message {i} ✓").into_bytes())
                        }
                    };
                    for round in 0..ROUNDS {
                        let ids = round * WINDOW..(round + 1) * WINDOW;
                        for i in ids.clone() {
                            let (text, p) = msg(i);
                            let opcode = if text { op::TEXT } else { op::BINARY };
                            ws.send_frame(true, opcode, &p);
                        }
                        for i in ids {
                            let (text, p) = msg(i);
                            let (opcode, got) = ws.read_message();
                            assert_eq!(opcode == op::TEXT, text, "client {c} message {i}");
                            assert!(got == p, "client {c}: echo {i} differs or out of order");
                        }
                    }
                    ws.send_close(1000, "bye");
                    let (code, _, skipped) = ws.read_close();
                    assert_eq!((code, skipped), (Some(1000), 0));
                })
            })
            .collect();
        for c in clients {
            c.join().expect("client");
        }
        let (opens, closes) = consumer.join().expect("consumer");
        assert_eq!(opens.len(), CLIENTS);
        for (id, path, headers) in &opens {
            let c: usize = path
                .strip_prefix("/room/")
                .and_then(|c| c.parse().ok())
                .expect("the path");
            assert_eq!(headers, &[("x-client".to_owned(), c.to_string())]);
            let close = closes.iter().find(|x| x.0 == *id).expect("its Close");
            assert_eq!((close.1, close.2.as_str(), close.3), (1000, "bye", true));
        }
    });
}

#[test]
fn send_awaits_while_the_client_does_not_read_and_the_server_buffers_near_the_limit() {
    let _serial = serial();
    const LIMIT: usize = 64 * KIB;
    const SIZE: usize = 256 * KIB;
    /// 16 MiB: far more than the sockets' buffers hold.
    const COUNT: usize = 64;
    for_each_backend(|backend| {
        let b = builder(backend).buffered_limits(LIMIT, 64 * MIB);
        let (served, mut events) = Served::start(b, BridgeOptions::new());
        let bridge = served.bridge.clone();
        let sent = Arc::new(AtomicUsize::new(0));
        let s = sent.clone();
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let producer = on_tokio(async move {
            let Some(Event::Open { id, .. }) = events.next().await else {
                panic!("expected an Open");
            };
            id_tx.send(id).expect("test thread");
            for seq in 0..COUNT {
                let m = numbered(seq as u64, SIZE);
                bridge
                    .send(id, Message::Binary(&m))
                    .await
                    .expect("the client is there");
                s.store(seq + 1, Ordering::SeqCst);
            }
            // the client's Close, after the last message
            match events.next().await {
                Some(Event::Close { code, .. }) => code,
                other => panic!("expected a Close, got {other:?}"),
            }
        });
        let mut ws = RawWs::connect(served.bridge.local_addr());
        let id: ConnId = id_rx.recv_timeout(IO_TIMEOUT).expect("the Open event");
        // the client reads nothing: the sends stall once the sockets are full
        let stalled_at = stall(Duration::from_millis(500), IO_TIMEOUT, || {
            sent.load(Ordering::SeqCst)
        });
        let buffered = block_on(served.bridge.buffered_amount(id)).expect("still open");
        eprintln!(
            "  sends stalled after {stalled_at} of {COUNT}; the server holds {buffered} bytes"
        );
        assert!(
            stalled_at < COUNT,
            "every send returned though the client read nothing"
        );
        assert!(
            buffered <= LIMIT + SIZE + 14,
            "the server holds {buffered} bytes: more than one message past the limit"
        );
        for seq in 0..COUNT {
            let (opcode, p) = ws.read_message();
            assert_eq!(opcode, op::BINARY);
            check_numbered(&p, seq as u64, SIZE, "server to client");
        }
        ws.send_close(1000, "");
        assert_eq!(producer.join().expect("producer").get(), 1000);
        assert_eq!(sent.load(Ordering::SeqCst), COUNT);
    });
}

/// Writes `count` binary messages of `size` bytes ([`numbered`]) on `ws`, adding each
/// one's bytes to `written` once written; the client keeps the connection.
fn flood(mut ws: RawWs, count: usize, size: usize, written: Arc<AtomicUsize>) -> RawWs {
    // the server may hold off reading for a while: no write timeout (the test's own
    // deadline applies)
    ws.stream.set_write_timeout(None).expect("write timeout");
    let mut frame = Vec::with_capacity(size + 14);
    for seq in 0..count {
        // masked with a zero key (valid, RFC 6455 §5.3): the payload goes as it is
        frame.clear();
        frame.push(0x80 | op::BINARY);
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(size as u16).to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&numbered(seq as u64, size));
        ws.stream.write_all(&frame).expect("write");
        written.fetch_add(frame.len(), Ordering::SeqCst);
    }
    ws
}

#[test]
fn a_consumer_that_stops_taking_events_leaves_memory_bounded_and_loses_nothing() {
    let _serial = serial();
    const CLIENTS: usize = 4;
    const SIZE: usize = 60_000;
    /// 36 MB per client, 144 MB in all.
    const COUNT: usize = 600;
    const CAPACITY: usize = 64;
    for_each_backend(|backend| {
        let opts = BridgeOptions::new().capacity(CAPACITY);
        let (served, mut events) = Served::start(builder(backend), opts);
        let addr = served.bridge.local_addr();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        // the consumer takes nothing until told to
        let consumer = std::thread::spawn(move || {
            go_rx.recv().expect("go");
            block_on(async move {
                let mut next = std::collections::HashMap::<ConnId, u64>::new();
                let mut got = 0;
                while got < CLIENTS * COUNT {
                    match events.next().await.expect("the server runs") {
                        Event::Open { id, .. } => {
                            next.insert(id, 0);
                        }
                        Event::Message { id, payload } => {
                            let Payload::Binary(p) = payload else {
                                panic!("a text message");
                            };
                            let seq = next.get_mut(&id).expect("Open came first");
                            check_numbered(&p, *seq, SIZE, "client to server");
                            *seq += 1;
                            got += 1;
                        }
                        Event::Close { .. } => panic!("no client closes"),
                    }
                }
                next.into_values().collect::<Vec<_>>()
            })
        });
        let conns: Vec<RawWs> = (0..CLIENTS).map(|_| RawWs::connect(addr)).collect();
        let before = rss();
        let written = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = conns
            .into_iter()
            .map(|ws| {
                let w = written.clone();
                std::thread::spawn(move || flood(ws, COUNT, SIZE, w))
            })
            .collect();
        let total = CLIENTS * COUNT * (SIZE + 8);
        let stalled_at = stall(Duration::from_millis(500), IO_TIMEOUT, || {
            written.load(Ordering::SeqCst)
        });
        let grew = rss().saturating_sub(before);
        eprintln!(
            "  writes stalled at {:.1} MB of {:.1} MB; RSS grew {:.1} MB",
            stalled_at as f64 / 1e6,
            total as f64 / 1e6,
            grew as f64 / 1e6
        );
        // what the sockets hold (several MB a connection on loopback) and the queue's
        // capacity: well under half
        assert!(
            stalled_at < total / 2,
            "the clients wrote {stalled_at} of {total} bytes: the server kept reading"
        );
        assert!(
            grew < 32 * MIB,
            "RSS grew {grew} bytes while the consumer took nothing"
        );
        go_tx.send(()).expect("consumer");
        let counts = consumer.join().expect("consumer");
        assert_eq!(counts, vec![COUNT as u64; CLIENTS], "every message, once");
        for w in writers {
            let mut ws = w.join().expect("writer");
            ws.send_close(1000, "");
        }
    });
}
