//! `wss://` over real sockets, on both backends: echo with the engine's client (every
//! size class up to 16 MiB), fragments, ping and close over a blocking rustls stream,
//! session resumption, SNI, every kind of bad input (plain HTTP, garbage records, a
//! truncated or stalled handshake, a certificate the client does not trust, a
//! `close_notify` mid-frame, a client that vanishes mid-record), each ending only its
//! own connection, and interop with Python `websockets` and Node `ws`.
//!
//! Every server here is made TLS explicitly (`builder(b)` then `.tls(&acceptor)`, which
//! replaces whatever layer `SOLITON_TEST_LAYER` put there), so the file runs the same
//! with that variable unset, `xor` or `tls`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use soliton::client::{ClientHandle, ConnectRequest};
use soliton::layer::TlsInfo;
use soliton::proto::{CloseCode, Message};
use soliton::server::{
    Backend, Builder, CloseInfo, ConnError, ConnId, Handler, Reject, UpgradeRequest, WebSocket,
    WorkerCtx,
};
use soliton::tls::{self_signed, CertKey, TlsAcceptor, TlsConnector};
use soliton_tests::{
    binary_of_len, builder, client_builder, close_payload, decode_frame, encode_frame,
    for_each_backend, op, test_tls, text_of_len, upgrade_request, Frame, TestServer, IO_TIMEOUT,
    SAMPLE_ACCEPT,
};

// ---------------------------------------------------------------------------------
// The server side: echoes, closes with 4000 "bye" on "close me", reports everything.

/// What the server's handler saw.
#[derive(Debug)]
enum Srv {
    Open(Option<TlsInfo>),
    Error(String),
    Closed {
        code: u16,
        reason: String,
        clean: bool,
    },
}

struct Probe {
    tx: Sender<Srv>,
    /// The worker's connections (every state), as of its last loop iteration.
    conns: Arc<AtomicUsize>,
}

impl Handler for Probe {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
        let _ = self.tx.send(Srv::Open(ws.tls()));
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        if msg == Message::Text("close me") {
            ws.close(CloseCode::new(4000).expect("nonzero"), "bye");
        } else {
            ws.send(msg);
        }
    }
    fn on_error(&mut self, _id: ConnId, _data: &mut (), e: &ConnError) {
        let _ = self.tx.send(Srv::Error(e.to_string()));
    }
    fn on_close(&mut self, _id: ConnId, _data: (), info: CloseInfo<'_>) {
        let _ = self.tx.send(Srv::Closed {
            code: info.code.get(),
            reason: info.reason.to_owned(),
            clean: info.was_clean,
        });
    }
    fn on_tick(&mut self, w: &mut WorkerCtx<'_, ()>) -> Option<Instant> {
        self.conns.store(w.connections(), Ordering::SeqCst);
        Some(w.now() + Duration::from_millis(20))
    }
}

/// A running TLS server (one worker) with its handler's reports.
struct TlsServer {
    srv: TestServer,
    rx: Receiver<Srv>,
    conns: Arc<AtomicUsize>,
}

impl TlsServer {
    /// `b` (from `builder(backend)`, with what the test needs) serving `wss://` with
    /// `acceptor` (which replaces any layer the suite's environment set).
    fn start(b: Builder, acceptor: &TlsAcceptor) -> TlsServer {
        let (tx, rx) = channel();
        let conns = Arc::new(AtomicUsize::new(usize::MAX));
        let c = conns.clone();
        let srv = TestServer::start(b.tls(acceptor), move |_| Probe {
            tx: tx.clone(),
            conns: c.clone(),
        });
        TlsServer { srv, rx, conns }
    }

    /// With the suite's certificate (localhost, 127.0.0.1).
    fn suite(backend: Backend) -> TlsServer {
        TlsServer::start(builder(backend), &test_tls().acceptor)
    }

    fn addr(&self) -> SocketAddr {
        self.srv.addr()
    }

    fn url(&self) -> String {
        format!("wss://{}/", self.addr())
    }

    /// The next report of the handler.
    fn next(&self) -> Srv {
        self.rx
            .recv_timeout(IO_TIMEOUT)
            .expect("an event from the server's handler")
    }

    /// The next `on_open`'s TLS info (panics on anything else).
    fn opened(&self) -> TlsInfo {
        match self.next() {
            Srv::Open(Some(t)) => t,
            other => panic!("expected on_open with TLS info, got {other:?}"),
        }
    }

    /// The next `on_close` (skipping `on_error`s, returned too).
    fn closed(&self) -> ((u16, String, bool), Vec<String>) {
        let mut errors = Vec::new();
        loop {
            match self.next() {
                Srv::Error(e) => errors.push(e),
                Srv::Closed {
                    code,
                    reason,
                    clean,
                } => return ((code, reason, clean), errors),
                other => panic!("expected on_close, got {other:?}"),
            }
        }
    }

    /// Asserts that the handler reports nothing more for a while.
    fn quiet(&self) {
        if let Ok(e) = self.rx.recv_timeout(Duration::from_millis(100)) {
            panic!("unexpected report from the server's handler: {e:?}");
        }
    }

    /// Waits until the worker holds exactly `n` connections.
    fn wait_conns(&self, n: usize, what: &str) {
        let until = Instant::now() + Duration::from_secs(3);
        loop {
            let now = self.conns.load(Ordering::SeqCst);
            if now == n {
                return;
            }
            assert!(
                Instant::now() < until,
                "{what}: the server holds {now} connections, expected {n}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

// ---------------------------------------------------------------------------------
// Blocking clients: plain TCP, and rustls over it.

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// A client configuration trusting these PEM certificates (through the engine's
/// connector, so the same provider and ALPN).
fn trusting(pems: &[&str]) -> Arc<ClientConfig> {
    let ca = pems.iter().map(|p| der(p)).collect();
    TlsConnector::with_ca_certs(ca)
        .expect("connector")
        .config()
        .clone()
}

/// A connector trusting the suite's certificate, with an empty session cache.
fn fresh_connector() -> TlsConnector {
    TlsConnector::with_ca_certs(vec![der(&test_tls().cert_pem)]).expect("connector")
}

/// The client configuration trusting the suite's certificate.
fn suite_config() -> Arc<ClientConfig> {
    test_tls().connector.config().clone()
}

/// A rustls connection to `name` (its ClientHello ready to go).
fn client_conn(cfg: Arc<ClientConfig>, name: &str) -> ClientConnection {
    let name = ServerName::try_from(name.to_owned()).expect("a server name");
    ClientConnection::new(cfg, name).expect("client connection")
}

/// Connects and completes the TLS handshake with `name`.
fn tls_connect(addr: SocketAddr, cfg: Arc<ClientConfig>, name: &str) -> Tls {
    let mut s = StreamOwned::new(client_conn(cfg, name), tcp(addr));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("TLS handshake");
    }
    s
}

/// How a stream ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `read` returned 0: a TCP FIN on a plain stream, a `close_notify` over TLS.
    Zero,
    /// A FIN without `close_notify` over TLS, or a reset.
    Broken,
    /// Nothing for [`IO_TIMEOUT`] (the stream did not end).
    Timeout,
    /// Another error (a TLS alert received, ...).
    Failed(String),
}

/// Reads until the stream ends; what came and how it ended.
fn read_to_end(r: &mut impl Read) -> (Vec<u8>, End) {
    let mut out = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut tmp) {
            Ok(0) => return (out, End::Zero),
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return (out, End::Broken)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (out, End::Timeout)
            }
            Err(e) => return (out, End::Failed(e.to_string())),
        }
    }
}

/// A WebSocket client over a blocking rustls stream (frames by the suite's encoder and
/// decoder, not the engine's).
struct TlsWs {
    s: Tls,
    buf: Vec<u8>,
    seed: u32,
}

impl TlsWs {
    /// TLS to `127.0.0.1` trusting the suite's certificate, then the upgrade.
    fn open(addr: SocketAddr) -> TlsWs {
        TlsWs::upgrade(tls_connect(addr, suite_config(), "127.0.0.1"))
    }

    /// The opening handshake over `s` (panics unless 101 with the right accept).
    fn upgrade(mut s: Tls) -> TlsWs {
        s.write_all(upgrade_request("/", &[], &[]).as_bytes())
            .expect("write the upgrade request");
        s.flush().expect("flush");
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            let n = s.read(&mut tmp).expect("read the 101 response");
            assert!(n > 0, "EOF before the response head");
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        assert!(head.contains(SAMPLE_ACCEPT), "{head}");
        buf.drain(..end);
        let seed = s.sock.local_addr().map_or(7, |a| u32::from(a.port())) | 1;
        TlsWs { s, buf, seed }
    }

    /// A masked frame's bytes.
    fn frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let k = soliton_tests::next_mask(&mut self.seed);
        encode_frame(fin, opcode, payload, Some(k))
    }

    fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let f = self.frame(fin, opcode, payload);
        self.s.write_all(&f).expect("write a frame");
        self.s.flush().expect("flush");
    }

    fn read_frame(&mut self) -> Frame {
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            if let Some((f, n)) = decode_frame(&self.buf) {
                self.buf.drain(..n);
                assert!(!f.masked, "a server's frames are never masked");
                return f;
            }
            let n = self.s.read(&mut tmp).expect("read a frame");
            assert!(n > 0, "EOF with {} undecoded bytes", self.buf.len());
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Sends `text` and reads it back.
    fn echo(&mut self, text: &str) {
        self.send_frame(true, op::TEXT, text.as_bytes());
        let f = self.read_frame();
        assert_eq!((f.fin, f.opcode), (true, op::TEXT), "{f:?}");
        assert_eq!(f.text(), text);
    }
}

/// `n` bytes of xorshift noise.
fn noise(n: usize, mut x: u32) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// The engine's client side.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
}

impl Owned {
    fn as_msg(&self) -> Message<'_> {
        match self {
            Owned::Text(t) => Message::Text(t),
            Owned::Binary(b) => Message::Binary(b),
        }
    }
}

/// What the client's handler saw.
#[derive(Debug, PartialEq, Eq)]
enum Cl {
    Open(u32, Option<TlsInfo>),
    Pong(u32, Vec<u8>),
    /// The echo of message `i` matched (its length).
    Echoed(u32, usize, usize),
    Mismatch(u32, usize, String),
    Error(u32, String),
    Closed {
        tag: u32,
        code: u16,
        reason: String,
        clean: bool,
    },
}

/// Per connection: on open, a ping; on its pong the first message; each echo checked,
/// then the next; after the last, "close me" (the server closes with 4000 "bye").
struct Script {
    tag: u32,
    msgs: Arc<Vec<Owned>>,
    next: usize,
}

fn script(tag: u32, msgs: Vec<Owned>) -> Script {
    Script {
        tag,
        msgs: Arc::new(msgs),
        next: 0,
    }
}

struct ClientProbe {
    tx: Sender<Cl>,
}

impl ClientProbe {
    fn send_next(ws: &mut WebSocket<'_, Script>) {
        let d = ws.data();
        let msgs = d.msgs.clone();
        match msgs.get(d.next) {
            Some(m) => {
                ws.send(m.as_msg());
            }
            None => {
                ws.send_text("close me");
            }
        }
    }
}

impl Handler for ClientProbe {
    type Data = Script;
    fn on_open(&mut self, ws: &mut WebSocket<'_, Script>) {
        let tag = ws.data().tag;
        let _ = self.tx.send(Cl::Open(tag, ws.tls()));
        ws.ping(b"are you there");
    }
    fn on_pong(&mut self, ws: &mut WebSocket<'_, Script>, payload: &[u8]) {
        let tag = ws.data().tag;
        let _ = self.tx.send(Cl::Pong(tag, payload.to_vec()));
        ClientProbe::send_next(ws);
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, Script>, msg: Message<'_>) {
        let d = ws.data();
        let (tag, i) = (d.tag, d.next);
        let want = d.msgs.get(i).map(Owned::as_msg);
        let _ = self.tx.send(if want == Some(msg) {
            Cl::Echoed(tag, i, msg.as_bytes().len())
        } else {
            let what = match msg {
                Message::Text(t) => format!("text of {} bytes", t.len()),
                Message::Binary(b) => format!("binary of {} bytes", b.len()),
            };
            Cl::Mismatch(tag, i, what)
        });
        ws.data().next += 1;
        ClientProbe::send_next(ws);
    }
    fn on_error(&mut self, _id: ConnId, data: &mut Script, e: &ConnError) {
        let _ = self.tx.send(Cl::Error(data.tag, e.to_string()));
    }
    fn on_close(&mut self, _id: ConnId, data: Script, info: CloseInfo<'_>) {
        let _ = self.tx.send(Cl::Closed {
            tag: data.tag,
            code: info.code.get(),
            reason: info.reason.to_owned(),
            clean: info.was_clean,
        });
    }
}

/// An engine client on `backend` whose `wss://` requests trust what `connector` does.
fn engine_client(
    backend: Backend,
    connector: TlsConnector,
) -> (ClientHandle<Script>, Receiver<Cl>) {
    let (tx, rx) = channel();
    let c = client_builder(backend)
        .tls(connector)
        .start(move |_| ClientProbe { tx: tx.clone() })
        .expect("client starts");
    assert_eq!(c.backend(), backend);
    (c, rx)
}

fn next_cl(rx: &Receiver<Cl>) -> Cl {
    rx.recv_timeout(Duration::from_secs(20))
        .expect("an event from the client")
}

// ---------------------------------------------------------------------------------
// 1. Echo, fragments, ping and close.

#[test]
fn the_engine_client_echoes_every_size_over_wss_and_closes_cleanly() {
    // 16 MiB is exactly the default max_frame and max_message (the limit is inclusive)
    let sizes = [0usize, 125, 126, 64 << 10, 1 << 20, 16 << 20];
    let mut msgs = Vec::new();
    for n in sizes {
        msgs.push(Owned::Text(text_of_len(n)));
        msgs.push(Owned::Binary(binary_of_len(n)));
    }
    let count = msgs.len();
    let msgs = Arc::new(msgs);
    for_each_backend(|backend| {
        let t0 = Instant::now();
        let srv = TlsServer::suite(backend);
        // a connector of its own: no session cached by another connection
        let (c, rx) = engine_client(backend, fresh_connector());
        let req = ConnectRequest::new(&format!("wss://localhost:{}/", srv.addr().port()))
            .expect("url")
            .addr(srv.addr());
        assert!(req.is_secure());
        c.connect(
            req,
            Script {
                tag: 1,
                msgs: msgs.clone(),
                next: 0,
            },
        );
        match next_cl(&rx) {
            Cl::Open(1, Some(t)) => {
                assert_eq!(t.version, "TLSv1_3", "{t:?}");
                assert!(!t.cipher.is_empty(), "{t:?}");
                assert_eq!(t.alpn.as_deref(), Some("http/1.1"), "{t:?}");
                assert_eq!(t.server_name, None, "server_name is the server's side");
                assert!(!t.resumed, "a first connection is a full handshake");
            }
            other => panic!("expected on_open with TLS info, got {other:?}"),
        }
        let s = srv.opened();
        assert_eq!(s.server_name.as_deref(), Some("localhost"), "{s:?}");
        assert_eq!(next_cl(&rx), Cl::Pong(1, b"are you there".to_vec()));
        for i in 0..count {
            assert_eq!(
                next_cl(&rx),
                Cl::Echoed(1, i, msgs[i].as_msg().as_bytes().len())
            );
        }
        assert_eq!(
            next_cl(&rx),
            Cl::Closed {
                tag: 1,
                code: 4000,
                reason: "bye".into(),
                clean: true
            },
            "the server's close code and reason reach the client"
        );
        let ((code, reason, clean), errors) = srv.closed();
        assert_eq!((code, reason.as_str(), clean), (4000, "bye", true));
        assert!(errors.is_empty(), "{errors:?}");
        srv.wait_conns(0, "after the close");
        c.shutdown(Duration::from_millis(200))
            .expect("client stops");
        eprintln!("{backend:?}: echo of every size in {:?}", t0.elapsed());
    });
}

#[test]
fn fragments_ping_and_close_over_a_raw_rustls_stream() {
    for_each_backend(|backend| {
        let srv = TlsServer::suite(backend);
        let mut ws = TlsWs::open(srv.addr());
        let t = srv.opened();
        assert_eq!(t.server_name, None, "no SNI for an IP address");
        assert_eq!(t.alpn.as_deref(), Some("http/1.1"));
        // a text in three fragments (cut inside multi-byte characters), a ping between
        let text = text_of_len(3000);
        let b = text.as_bytes();
        ws.send_frame(false, op::TEXT, &b[..1001]);
        ws.send_frame(true, op::PING, b"mid");
        ws.send_frame(false, op::CONT, &b[1001..2002]);
        ws.send_frame(true, op::CONT, &b[2002..]);
        let f = ws.read_frame();
        assert_eq!((f.opcode, f.payload.as_slice()), (op::PONG, &b"mid"[..]));
        let f = ws.read_frame();
        assert!(f.fin, "the echo is one message");
        assert_eq!((f.opcode, f.text()), (op::TEXT, text));
        // binary in two fragments, all in one TLS record
        let bin = binary_of_len(70_000);
        let mut both = ws.frame(false, op::BINARY, &bin[..40_000]);
        both.extend(ws.frame(true, op::CONT, &bin[40_000..]));
        ws.s.write_all(&both).expect("write");
        ws.s.flush().expect("flush");
        let f = ws.read_frame();
        assert!(f.fin);
        assert_eq!(f.opcode, op::BINARY);
        assert!(f.payload == bin, "the binary echo differs");
        // our close: echoed, then close_notify and FIN
        ws.send_frame(true, op::CLOSE, &close_payload(1000, "done"));
        let f = ws.read_frame();
        assert_eq!(f.close_code(), Some(1000));
        assert!(ws.buf.is_empty());
        let (more, end) = read_to_end(&mut ws.s);
        drop(ws); // our FIN: the server need not wait out its linger
        assert!(
            more.is_empty(),
            "{} bytes after the close frame",
            more.len()
        );
        assert_eq!(
            end,
            End::Zero,
            "the server ends its TLS stream with close_notify"
        );
        let ((code, _, clean), errors) = srv.closed();
        assert_eq!((code, clean), (1000, true));
        assert!(errors.is_empty(), "{errors:?}");
        srv.wait_conns(0, "after the close");
    });
}

// ---------------------------------------------------------------------------------
// 2. Resumption.

#[test]
fn a_second_connection_with_the_same_connector_resumes() {
    for_each_backend(|backend| {
        let srv = TlsServer::suite(backend);
        // a connector of its own: no session cached by another connection
        let (c, rx) = engine_client(backend, fresh_connector());
        let url = format!("wss://localhost:{}/", srv.addr().port());
        for (tag, resumed) in [(1, false), (2, true)] {
            let req = ConnectRequest::new(&url).expect("url").addr(srv.addr());
            c.connect(req, script(tag, vec![Owned::Text("hi".into())]));
            match next_cl(&rx) {
                Cl::Open(t, Some(info)) if t == tag => {
                    assert_eq!(info.resumed, resumed, "client side, connection {tag}");
                    assert_eq!(info.version, "TLSv1_3");
                }
                other => panic!("expected on_open {tag}, got {other:?}"),
            }
            let s = srv.opened();
            assert_eq!(s.resumed, resumed, "server side, connection {tag}: {s:?}");
            assert_eq!(s.server_name.as_deref(), Some("localhost"));
            assert_eq!(next_cl(&rx), Cl::Pong(tag, b"are you there".to_vec()));
            assert_eq!(next_cl(&rx), Cl::Echoed(tag, 0, 2));
            assert!(matches!(
                next_cl(&rx),
                Cl::Closed {
                    code: 4000,
                    clean: true,
                    ..
                }
            ));
            let ((code, _, clean), _) = srv.closed();
            assert_eq!((code, clean), (4000, true));
        }
        // and a connector without resumption does a full handshake again
        let (c2, rx2) = engine_client(backend, fresh_connector().without_resumption());
        for tag in [3, 4] {
            let req = ConnectRequest::new(&url).expect("url").addr(srv.addr());
            c2.connect(req, script(tag, vec![]));
            assert!(
                matches!(next_cl(&rx2), Cl::Open(t, Some(ref i)) if t == tag && !i.resumed),
                "connection {tag} without resumption"
            );
            assert!(!srv.opened().resumed);
            assert_eq!(next_cl(&rx2), Cl::Pong(tag, b"are you there".to_vec()));
            assert!(matches!(next_cl(&rx2), Cl::Closed { code: 4000, .. }));
            let _ = srv.closed();
        }
        c.shutdown(Duration::from_millis(200))
            .expect("client stops");
        c2.shutdown(Duration::from_millis(200))
            .expect("client stops");
    });
}

// ---------------------------------------------------------------------------------
// 3. SNI.

#[test]
fn sni_chooses_the_certificate_and_the_server_sees_the_name() {
    let (a_cert, a_key) = self_signed(&["a.test"]);
    let (b_cert, b_key) = self_signed(&["b.test"]);
    let tt = test_tls();
    let ck = |c: &str, k: &str| CertKey::from_pem(c.as_bytes(), k.as_bytes()).expect("certkey");
    let acceptor = TlsAcceptor::new(
        ck(&tt.cert_pem, &tt.key_pem),
        vec![
            ("a.test".into(), ck(&a_cert, &a_key)),
            ("b.test".into(), ck(&b_cert, &b_key)),
        ],
    )
    .expect("acceptor");
    for_each_backend(|backend| {
        let srv = TlsServer::start(builder(backend), &acceptor);
        let cases: [(&str, Arc<ClientConfig>, &str, Option<&str>); 4] = [
            ("b.test", trusting(&[&b_cert]), &b_cert, Some("b.test")),
            ("a.test", trusting(&[&a_cert]), &a_cert, Some("a.test")),
            ("127.0.0.1", suite_config(), &tt.cert_pem, None),
            // an unknown name gets the default (which is not valid for it: accept any)
            (
                "c.test",
                TlsConnector::insecure().config().clone(),
                &tt.cert_pem,
                Some("c.test"),
            ),
        ];
        for (name, cfg, want, seen) in cases {
            let s = tls_connect(srv.addr(), cfg, name);
            let got = s
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .expect("a peer certificate")
                .clone();
            assert!(got == der(want), "{name}: not the expected certificate");
            let mut ws = TlsWs::upgrade(s);
            let info = srv.opened();
            assert_eq!(info.server_name.as_deref(), seen, "{name}: {info:?}");
            ws.echo(name);
            ws.send_frame(true, op::CLOSE, &close_payload(1000, ""));
            assert_eq!(ws.read_frame().close_code(), Some(1000));
            drop(ws); // our FIN: the server need not wait out its linger
            let ((code, _, clean), _) = srv.closed();
            assert_eq!((code, clean), (1000, true), "{name}");
        }
    });
}

// ---------------------------------------------------------------------------------
// 4. Bad input: each ends only its own connection.

/// A TLS server with a healthy `wss://` connection open on it.
fn guarded(b: Builder) -> (TlsServer, TlsWs) {
    let srv = TlsServer::start(b, &test_tls().acceptor);
    let mut healthy = TlsWs::open(srv.addr());
    srv.opened();
    healthy.echo("first");
    srv.wait_conns(1, "the healthy connection");
    (srv, healthy)
}

/// The healthy connection still echoes, and it is the only one left.
fn still_fine(srv: &TlsServer, healthy: &mut TlsWs, what: &str) {
    healthy.echo(&format!("still here after {what}"));
    srv.wait_conns(1, what);
}

#[test]
fn plain_http_on_the_tls_port_gets_a_plain_400_then_eof() {
    for_each_backend(|backend| {
        let (srv, mut healthy) = guarded(builder(backend));
        let mut s = tcp(srv.addr());
        s.write_all(upgrade_request("/", &[], &[]).as_bytes())
            .expect("write");
        let (got, end) = read_to_end(&mut s);
        drop(s); // our FIN: the server need not wait out its linger
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 400"), "{text:?}");
        assert!(text.contains("wss://"), "{text:?}");
        assert!(matches!(end, End::Zero | End::Broken), "{end:?}: {text:?}");
        still_fine(&srv, &mut healthy, "plain HTTP");
        srv.quiet();
    });
}

/// What a server may send before closing a connection whose handshake failed: nothing,
/// or alert records (in plain text before any key is agreed).
fn only_alerts(got: &[u8], what: &str) {
    let mut rest = got;
    while !rest.is_empty() {
        assert!(
            rest.len() >= 5 && rest[0] == 0x15,
            "{what}: expected only alert records, got {got:02x?}"
        );
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        assert!(
            rest.len() >= 5 + len,
            "{what}: a truncated record {got:02x?}"
        );
        rest = &rest[5 + len..];
    }
}

#[test]
fn garbage_records_get_an_alert_or_eof_and_never_hang() {
    for_each_backend(|backend| {
        let (srv, mut healthy) = guarded(builder(backend));
        // a handshake record holding a "ClientHello" of noise
        let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0x44, 0x01, 0x00, 0x00, 0x40];
        hello.extend(noise(0x40, 0x1234_5677));
        // a record of an unknown content type
        let mut unknown = vec![0x99, 0x03, 0x03, 0x00, 0x20];
        unknown.extend(noise(0x20, 0x0bad_cafe));
        // pure noise (the first byte is not a TLS content type)
        let junk = noise(300, 0x5eed_5eed);
        for (what, bytes) in [
            ("noise hello", hello),
            ("unknown type", unknown),
            ("junk", junk),
        ] {
            let t0 = Instant::now();
            let mut s = tcp(srv.addr());
            s.write_all(&bytes).expect("write");
            let (got, end) = read_to_end(&mut s);
            drop(s); // our FIN: the server need not wait out its linger
            assert!(
                matches!(end, End::Zero | End::Broken),
                "{what}: the server did not close the connection ({end:?}, {got:02x?})"
            );
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "{what}: closed only after {:?}",
                t0.elapsed()
            );
            only_alerts(&got, what);
            eprintln!("{what}: {} bytes of alerts, then {end:?}", got.len());
            still_fine(&srv, &mut healthy, what);
        }
        srv.quiet();
    });
}

#[test]
fn a_record_that_does_not_decrypt_ends_that_connection_with_an_alert() {
    for_each_backend(|backend| {
        let (srv, mut healthy) = guarded(builder(backend));
        let mut ws = TlsWs::open(srv.addr());
        srv.opened();
        ws.echo("before");
        // an encrypted record of a frame, one bit of it flipped
        let f = ws.frame(true, op::TEXT, b"this record is tampered with");
        ws.s.conn.writer().write_all(&f).expect("encrypt");
        let mut rec = Vec::new();
        while ws.s.conn.wants_write() {
            ws.s.conn.write_tls(&mut rec).expect("write_tls");
        }
        let at = rec.len() - 3;
        rec[at] ^= 0x40;
        ws.s.sock.write_all(&rec).expect("write");
        let (got, end) = read_to_end(&mut ws.s);
        drop(ws); // our FIN: the server need not wait out its linger
        assert!(got.is_empty(), "no data after a bad record: {got:02x?}");
        match &end {
            End::Failed(e) => assert!(e.contains("BadRecordMac"), "{e}"),
            End::Broken => {}
            other => panic!("the connection did not end: {other:?}"),
        }
        eprintln!("a tampered record: the client sees {end:?}");
        let ((code, _, clean), errors) = srv.closed();
        assert_eq!((code, clean), (1006, false));
        assert!(
            errors.iter().any(|e| e.contains("TLS")),
            "the layer's error reaches on_error: {errors:?}"
        );
        still_fine(&srv, &mut healthy, "a tampered record");
    });
}

/// A whole ClientHello record, as rustls would send it.
fn client_hello() -> Vec<u8> {
    let mut c = client_conn(suite_config(), "127.0.0.1");
    let mut out = Vec::new();
    while c.wants_write() {
        c.write_tls(&mut out).expect("write_tls");
    }
    assert_eq!(out[0], 0x16, "a handshake record");
    out
}

#[test]
fn a_truncated_or_stalled_handshake_is_closed_by_the_handshake_timeout() {
    for_each_backend(|backend| {
        let (srv, mut healthy) =
            guarded(builder(backend).handshake_timeout(Duration::from_millis(300)));
        let hello = client_hello();
        for (what, bytes) in [
            ("half a ClientHello", &hello[..hello.len() / 2]),
            ("nothing sent", &[][..]),
        ] {
            let t0 = Instant::now();
            let mut s = tcp(srv.addr());
            if !bytes.is_empty() {
                s.write_all(bytes).expect("write");
            }
            srv.wait_conns(2, what);
            let (got, end) = read_to_end(&mut s);
            drop(s); // our FIN: the server need not wait out its linger
            let took = t0.elapsed();
            assert!(
                matches!(end, End::Zero | End::Broken),
                "{what}: not closed ({end:?}) after {took:?}"
            );
            assert!(
                took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
                "{what}: closed after {took:?}, the handshake timeout is 300 ms"
            );
            only_alerts(&got, what);
            eprintln!(
                "{what}: closed after {took:?} ({} bytes of alerts)",
                got.len()
            );
            still_fine(&srv, &mut healthy, what);
        }
        srv.quiet();
    });
}

/// The engine client against a server it must refuse: a certificate it does not trust
/// (another self-signed one for the same names), and a name the certificate lacks.
/// Each gets `on_error` with the certificate error (not the TCP reset that may follow
/// the alert) then `on_close` 1006; the server stays fine.
#[test]
fn the_engine_client_refuses_an_untrusted_certificate_or_a_wrong_name() {
    let (other_cert, _) = self_signed(&["localhost", "127.0.0.1"]);
    for_each_backend(|backend| {
        let (srv, mut healthy) = guarded(builder(backend));
        let (c, rx) = engine_client(
            backend,
            TlsConnector::with_ca_certs(vec![der(&other_cert)]).expect("connector"),
        );
        c.connect(
            ConnectRequest::new(&srv.url()).expect("url"),
            script(1, vec![]),
        );
        // trusts the server's certificate, asks for a name it is not valid for
        let (c2, rx2) = engine_client(backend, fresh_connector());
        c2.connect(
            ConnectRequest::new(&format!("wss://127.0.0.2:{}/", srv.addr().port()))
                .expect("url")
                .addr(srv.addr()),
            script(2, vec![]),
        );
        for (rx, tag) in [(&rx, 1), (&rx2, 2)] {
            let e = match next_cl(rx) {
                Cl::Error(t, e) if t == tag => e,
                other => panic!("{tag}: expected on_error, got {other:?}"),
            };
            eprintln!("{backend:?}, connection {tag}: on_error: {e}");
            assert!(
                e.contains("certificate"),
                "{backend:?}, connection {tag}: on_error says {e:?}, not the certificate"
            );
            assert_eq!(
                next_cl(rx),
                Cl::Closed {
                    tag,
                    code: 1006,
                    reason: String::new(),
                    clean: false
                }
            );
        }
        still_fine(&srv, &mut healthy, "refused certificates");
        srv.quiet();
        c.shutdown(Duration::from_millis(200))
            .expect("client stops");
        c2.shutdown(Duration::from_millis(200))
            .expect("client stops");
    });
}

#[test]
fn a_close_notify_mid_frame_ends_the_connection_as_1006() {
    for_each_backend(|backend| {
        let (srv, mut healthy) = guarded(builder(backend));
        let mut ws = TlsWs::open(srv.addr());
        srv.opened();
        let f = ws.frame(true, op::TEXT, &[b'x'; 100]);
        ws.s.write_all(&f[..f.len() / 2]).expect("write");
        ws.s.conn.send_close_notify();
        ws.s.flush().expect("flush");
        let ((code, _, clean), errors) = srv.closed();
        assert_eq!((code, clean), (1006, false), "errors: {errors:?}");
        let (got, end) = read_to_end(&mut ws.s);
        assert!(got.is_empty(), "{got:02x?}");
        assert!(
            matches!(end, End::Zero | End::Broken),
            "the socket is closed: {end:?}"
        );
        still_fine(&srv, &mut healthy, "a close_notify mid-frame");
        srv.quiet();
    });
}

#[test]
fn a_client_that_vanishes_mid_record_is_cleaned_up() {
    for_each_backend(|backend| {
        let (srv, mut healthy) = guarded(builder(backend));
        // mid-handshake: 10 bytes of a ClientHello, then gone
        let hello = client_hello();
        let mut s = tcp(srv.addr());
        s.write_all(&hello[..10]).expect("write");
        srv.wait_conns(2, "a handshake begun");
        drop(s);
        still_fine(&srv, &mut healthy, "a ClientHello cut short");
        // open: 10 bytes of an encrypted record, then a FIN
        let mut ws = TlsWs::open(srv.addr());
        srv.opened();
        ws.echo("before");
        let f = ws.frame(true, op::BINARY, &[7u8; 1000]);
        ws.s.conn.writer().write_all(&f).expect("encrypt");
        let mut rec = Vec::new();
        while ws.s.conn.wants_write() {
            ws.s.conn.write_tls(&mut rec).expect("write_tls");
        }
        ws.s.sock.write_all(&rec[..10]).expect("write");
        ws.s.sock.shutdown(Shutdown::Both).expect("shutdown");
        drop(ws);
        let ((code, _, clean), _) = srv.closed();
        assert_eq!((code, clean), (1006, false));
        still_fine(&srv, &mut healthy, "a record cut short");
        // and with a reset instead of a FIN
        let mut ws = TlsWs::open(srv.addr());
        srv.opened();
        ws.echo("before");
        ws.s.conn.writer().write_all(&f).expect("encrypt");
        let mut rec = Vec::new();
        while ws.s.conn.wants_write() {
            ws.s.conn.write_tls(&mut rec).expect("write_tls");
        }
        ws.s.sock.write_all(&rec[..10]).expect("write");
        socket2::SockRef::from(&ws.s.sock)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
        drop(ws);
        let ((code, _, clean), _) = srv.closed();
        assert_eq!((code, clean), (1006, false));
        still_fine(&srv, &mut healthy, "a record cut short by a reset");
        srv.quiet();
    });
}

// ---------------------------------------------------------------------------------
// 5. Interop.

/// The suite's certificate in a PEM file, removed when dropped.
struct CaFile(std::path::PathBuf);

impl CaFile {
    fn new(tag: &str) -> CaFile {
        let p = std::env::temp_dir().join(format!(
            "soliton-tls-{tag}-{}-{:?}.pem",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&p, &test_tls().cert_pem).expect("write the CA file");
        CaFile(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for CaFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn interop(runtime: &str, script: &str) {
    let ca = CaFile::new(runtime);
    for_each_backend(|backend| {
        let srv = TlsServer::suite(backend);
        let Some(out) = soliton_tests::peer(runtime, script, &[&srv.url(), ca.path()]) else {
            return;
        };
        assert!(out.starts_with("OK TLSv1."), "{runtime}: {out}");
        eprintln!("{runtime} on {backend:?}: {}", out.trim());
        let info = srv.opened();
        assert!(info.version.starts_with("TLSv1_"), "{runtime}: {info:?}");
        let ((code, _, clean), errors) = srv.closed();
        assert_eq!((code, clean), (1000, true), "{runtime}: {errors:?}");
        srv.wait_conns(0, "after the peer's close");
    });
}

#[test]
fn python_websockets_echoes_over_wss() {
    interop("python3", "wss_client.py");
}

#[test]
fn node_ws_echoes_over_wss() {
    interop("node", "wss_client.js");
}
