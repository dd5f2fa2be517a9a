//! The engine's counters over real sockets: a scripted session read back exactly
//! through `ServerHandle::metrics`, the backpressure and slow-consumer counters, and the
//! Prometheus endpoint over HTTP.

use std::io::Write;
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use soliton::metrics::{Counts, Snapshot};
use soliton::proto::handshake::OriginPolicy;
use soliton::proto::Message;
use soliton::server::{CloseInfo, ConnId, Handler, Reject, SendStatus, UpgradeRequest, WebSocket};
use soliton_tests::{
    builder, close_payload, connect, decode_frame, encode_frame, for_each_backend, next_mask, op,
    read_retrying, read_to_end_or_reset, test_layer, upgrade_request, Echo, RawWs, TestLayer,
    TestServer, TestStream, IO_TIMEOUT,
};

/// Waits (bounded) until `done` holds for the server's counters, which the worker
/// updates on its own thread; returns the last snapshot either way.
fn settle(server: &TestServer, done: impl Fn(&Counts) -> bool) -> Snapshot {
    let until = Instant::now() + IO_TIMEOUT;
    loop {
        let s = server.metrics();
        if done(&s.total()) || Instant::now() > until {
            return s;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Byte counts are the socket's: exact unless the suite runs over TLS (whose records
/// the client stream decrypts before this file sees them).
fn wire_is_plain() -> bool {
    test_layer() != Some(TestLayer::Tls)
}

/// A client that counts every byte it writes and reads.
struct Counted {
    s: TestStream,
    buf: Vec<u8>,
    written: u64,
    read: u64,
    seed: u32,
}

impl Counted {
    fn connect(addr: std::net::SocketAddr) -> Counted {
        let s = connect(addr);
        let seed = s.local_addr().map_or(1, |a| u32::from(a.port())) | 1;
        Counted {
            s,
            buf: Vec::new(),
            written: 0,
            read: 0,
            seed,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
        self.written += bytes.len() as u64;
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 4096];
        let n = read_retrying(&mut self.s, &mut tmp).expect("read");
        self.buf.extend_from_slice(&tmp[..n]);
        self.read += n as u64;
        n
    }

    /// Reads a response head; its status.
    fn head(&mut self) -> u16 {
        loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                self.buf.drain(..p + 4);
                return head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
            assert!(self.fill() > 0, "EOF before a response head");
        }
    }

    fn send(&mut self, opcode: u8, payload: &[u8]) {
        let f = encode_frame(true, opcode, payload, Some(next_mask(&mut self.seed)));
        self.write(&f);
    }

    /// The next frame: opcode and payload.
    fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if let Some((f, n)) = decode_frame(&self.buf) {
                self.buf.drain(..n);
                return (f.opcode, f.payload);
            }
            assert!(self.fill() > 0, "EOF before a frame");
        }
    }

    /// Reads to the server's EOF (counting what arrives).
    fn read_to_eof(&mut self) {
        let (rest, ended) = read_to_end_or_reset(&mut self.s);
        assert!(ended, "the server did not close the connection");
        self.read += rest.len() as u64;
    }
}

#[test]
fn a_scripted_session_is_counted_exactly() {
    const K: usize = 4;
    const N: usize = 10;
    const GOOD: &str = "Origin: https://good.example";
    for_each_backend(|backend| {
        let b =
            builder(backend).origins(OriginPolicy::AllowList(vec!["https://good.example".into()]));
        let server = TestServer::start(b, |_| Echo);
        let fresh = server.metrics();
        assert_eq!(fresh.workers.len(), 1);
        assert_eq!(fresh.total(), Counts::default(), "nothing counted yet");
        let (mut written, mut read) = (0, 0);

        // k upgrades, n echoed messages each
        let mut conns: Vec<Counted> = (0..K)
            .map(|_| {
                let mut c = Counted::connect(server.addr());
                c.write(upgrade_request("/", &[], &[GOOD]).as_bytes());
                assert_eq!(c.head(), 101);
                c
            })
            .collect();
        for (i, c) in conns.iter_mut().enumerate() {
            for j in 0..N {
                let text = format!("conn {i:02} message {j:04}"); // 20 bytes
                assert_eq!(text.len(), 20);
                c.send(op::TEXT, text.as_bytes());
                assert_eq!(c.frame(), (op::TEXT, text.into_bytes()));
            }
        }
        // a foreign origin (403) and a bad version (426)
        for (req, status) in [
            (
                upgrade_request("/", &[], &["Origin: https://evil.example"]),
                403,
            ),
            (
                upgrade_request(
                    "/",
                    &["Sec-WebSocket-Version"],
                    &["Sec-WebSocket-Version: 8", GOOD],
                ),
                426,
            ),
        ] {
            let mut c = Counted::connect(server.addr());
            c.write(req.as_bytes());
            assert_eq!(c.head(), status);
            c.read_to_eof();
            written += c.written;
            read += c.read;
        }
        // half close with 1000, half with 4001; the server echoes and ends TCP
        for (i, mut c) in conns.drain(..).enumerate() {
            let code = if i % 2 == 0 { 1000 } else { 4001 };
            c.send(op::CLOSE, &close_payload(code, ""));
            let (opcode, payload) = c.frame();
            assert_eq!(opcode, op::CLOSE);
            assert_eq!(payload, code.to_be_bytes());
            c.read_to_eof();
            written += c.written;
            read += c.read;
        }

        let s = settle(&server, |t| t.connections_open == 0 && t.closes(1000) == 2);
        let t = s.total();
        assert_eq!(s.workers.len(), 1);
        assert_eq!(s.workers[0], t, "one worker: its counts are the totals");
        assert_eq!(t.connections_open, 0, "{t:?}");
        assert_eq!(t.connections_accepted, K as u64 + 2);
        assert_eq!(t.handshakes(101), K as u64);
        assert_eq!(t.handshakes(403), 1);
        assert_eq!(t.handshakes(426), 1);
        let answered: u64 = t.handshake_series().map(|(_, n)| n).sum();
        assert_eq!(answered, K as u64 + 2, "no other status: {t:?}");
        assert_eq!(t.messages_in, (K * N) as u64);
        assert_eq!(t.messages_out, (K * N) as u64, "every message echoed");
        assert_eq!(t.closes(1000), K as u64 / 2);
        assert_eq!(t.closes(4001), K as u64 / 2, "4001 counts in 4xxx");
        let closes: u64 = t.close_series().map(|(_, n)| n).sum();
        assert_eq!(closes, K as u64, "no other close code: {t:?}");
        assert_eq!(t.backpressure_events, 0);
        assert_eq!(t.slow_consumer_drops, 0);
        if wire_is_plain() {
            assert_eq!(t.bytes_in, written, "every byte the clients wrote");
            assert_eq!(t.bytes_out, read, "every byte the clients read");
        } else {
            assert!(t.bytes_in > written && t.bytes_out > read, "TLS adds bytes");
        }
    });
}

/// On "flood", sends 1 MiB messages until `send` says `Dropped`; reports what each
/// send said, then the close.
struct Flooder {
    tx: Sender<Vec<SendStatus>>,
    closed: Sender<u16>,
    chunk: Vec<u8>,
}

impl Handler for Flooder {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, _msg: Message<'_>) {
        let mut log = Vec::new();
        for _ in 0..64 {
            let s = ws.send_binary(&self.chunk);
            log.push(s);
            if s == SendStatus::Dropped {
                break;
            }
        }
        let _ = self.tx.send(log);
    }
    fn on_close(&mut self, _id: ConnId, _data: (), info: CloseInfo<'_>) {
        let _ = self.closed.send(info.code.get());
    }
}

#[test]
fn a_client_that_never_reads_is_one_backpressure_event_then_one_slow_consumer_drop() {
    for_each_backend(|backend| {
        let (tx, rx) = channel();
        let (closed_tx, closed) = channel();
        let b = builder(backend).buffered_limits(256 * 1024, 4 << 20);
        let server = TestServer::start(b, move |_| Flooder {
            tx: tx.clone(),
            closed: closed_tx.clone(),
            chunk: soliton_tests::binary_of_len(1 << 20),
        });
        let mut ws = RawWs::connect(server.addr());
        ws.send_text("flood");
        let log = rx.recv_timeout(IO_TIMEOUT).expect("flood report");
        assert_eq!(log.last(), Some(&SendStatus::Dropped), "{log:?}");
        assert_eq!(closed.recv_timeout(IO_TIMEOUT), Ok(1006));
        let t = settle(&server, |t| t.connections_open == 0).total();
        assert_eq!(t.messages_in, 1);
        let queued = log.iter().filter(|s| **s != SendStatus::Dropped).count();
        assert_eq!(t.messages_out, queued as u64, "{log:?}");
        assert_eq!(t.backpressure_events, 1, "crossing the limit once");
        assert_eq!(t.slow_consumer_drops, 1);
        assert_eq!(t.closes(1006), 1);
        assert_eq!(t.connections_open, 0);
    });
}

#[test]
fn the_exporter_serves_the_counters_in_the_prometheus_text_format() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend).workers(2), |_| Echo);
        let mut ws = RawWs::connect(server.addr());
        ws.send_text("hi");
        assert_eq!(ws.read_text(), "hi");
        let reader = server.metrics_reader();
        let exporter = soliton::metrics::serve("127.0.0.1:0".parse().expect("addr"), move || {
            reader.snapshot().to_prometheus()
        })
        .expect("exporter binds");
        let get = |target: &str| {
            let mut s = std::net::TcpStream::connect(exporter.local_addr()).expect("connect");
            s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
            write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
            let mut out = String::new();
            std::io::Read::read_to_string(&mut s, &mut out).expect("read");
            out
        };
        let reply = get("/metrics");
        let (head, body) = reply.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
        assert!(head.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        // every sample parses as `name{labels} value`; collect them
        let mut samples = std::collections::HashMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("name{labels} value");
            let value: u64 = value.parse().expect("an integer");
            let (name, labels) = series.split_once('{').expect("labels");
            assert!(name.starts_with("soliton_"), "{line}");
            assert!(labels.starts_with("worker=\"") && labels.ends_with("\"}"));
            samples.insert(series.to_owned(), value);
        }
        // the connection is on one of the two workers: sum over them
        let sum = |name: &str, extra: &str| -> u64 {
            (0..2)
                .map(|w| samples[&format!("{name}{{worker=\"{w}\"{extra}}}")])
                .sum()
        };
        assert_eq!(sum("soliton_messages_in_total", ""), 1);
        assert_eq!(sum("soliton_messages_out_total", ""), 1);
        assert_eq!(sum("soliton_connections_open", ""), 1);
        assert_eq!(sum("soliton_connections_accepted_total", ""), 1);
        assert_eq!(sum("soliton_handshakes_total", ",status=\"101\""), 1);
        assert_eq!(sum("soliton_closes_total", ",code=\"1000\""), 0);
        assert!(body.contains("# TYPE soliton_connections_open gauge\n"));
        assert!(body.contains("# TYPE soliton_closes_total counter\n"));
        assert!(get("/").starts_with("HTTP/1.1 404 "));
        exporter.stop();
        drop(ws);
    });
}
