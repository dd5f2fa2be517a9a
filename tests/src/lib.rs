//! Shared helpers for the integration tests.
//!
//! * [`for_each_backend`] runs a test body once per I/O backend; [`builder`] and
//!   [`TestServer`] start a server on `127.0.0.1:0` (one unpinned worker by default)
//!   and shut it down when dropped, so a failing test does not leave it running.
//! * [`RawWs`] is a minimal WebSocket client over a blocking [`TestStream`] with its own
//!   frame encoder and decoder ([`encode_frame`], [`decode_frame`]), written apart from
//!   the engine so that the tests do not share its bugs; it can send what a correct
//!   client never would (unmasked frames, reserved opcodes, bad UTF-8).
//! * [`http_exchange`] writes a raw request and reads the response head and body.
//!
//! Every read has a timeout ([`IO_TIMEOUT`]), so no test waits forever.
//!
//! With `SOLITON_TEST_LAYER=xor` in the environment, every server the tests start puts
//! the [`soliton::layer::Xor`] test layer on each connection and every client stream
//! ([`TestStream`]) XORs its bytes likewise: the whole suite then runs through the
//! engine's per-connection layer slot, on both backends.
//!
//! With `SOLITON_TEST_LAYER=tls`, every server serves `wss://` (rustls, a self-signed
//! certificate made for the run), every [`TestStream`] speaks TLS to it (rustls, blocking,
//! trusting that certificate), and the engine's clients connect with `wss://` through
//! [`client_builder`]: the whole suite then runs over TLS.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use soliton::proto::Message;
use soliton::server::{
    Backend, Builder, Config, Handler, Reject, Server, ServerHandle, UpgradeRequest, WebSocket,
};

/// Read and write timeout of every client socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The backends every server test runs on.
pub const BACKENDS: [Backend; 2] = [Backend::Epoll, Backend::IoUring];

/// The RFC 6455 §1.3 sample key and the accept value it must produce.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
/// `Sec-WebSocket-Accept` for [`SAMPLE_KEY`].
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Frame opcodes (raw numbers, so that reserved ones can be sent too).
pub mod op {
    /// Continuation.
    pub const CONT: u8 = 0x0;
    /// Text.
    pub const TEXT: u8 = 0x1;
    /// Binary.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Runs `f` once with [`Backend::Epoll`] and once with [`Backend::IoUring`]. A server
/// asked for io_uring on a kernel without it fails to start (no silent fallback), and
/// [`TestServer::start`] asserts that the backend running is the one asked for.
pub fn for_each_backend(mut f: impl FnMut(Backend)) {
    for b in BACKENDS {
        eprintln!("soliton-tests: === backend asked for: {b:?}");
        f(b);
    }
}

/// Appends the backend of a server that started to the file named by
/// `SOLITON_TEST_BACKEND_LOG`, if set (CI counts the servers each backend ran).
pub fn record_backend(b: Backend) {
    if let Some(path) = std::env::var_os("SOLITON_TEST_BACKEND_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{}", b.name());
        }
    }
}

/// The test configuration: `127.0.0.1:0`, one unpinned worker, `backend`; every other
/// setting at its default.
pub fn config(backend: Backend) -> Config {
    Config {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        workers: 1,
        backend,
        pin_cores: false,
        layer: match test_layer() {
            Some(TestLayer::Xor(k)) => Some(soliton::layer::LayerFactory::new(move || {
                Some(Box::new(soliton::layer::Xor(k)) as Box<dyn soliton::layer::Layer>)
            })),
            Some(TestLayer::Tls) => Some(test_tls().acceptor.factory()),
            None => None,
        },
        ..Config::default()
    }
}

/// A client builder on `backend`, with the test layer when the servers have it.
pub fn client_builder(backend: Backend) -> soliton::client::ClientBuilder {
    let b = soliton::client::Client::builder().backend(backend);
    match test_layer() {
        Some(TestLayer::Tls) => b.tls(test_tls().connector.clone()),
        Some(TestLayer::Xor(_)) => b.layer(config(backend).layer.expect("the xor layer")),
        None => b,
    }
}

/// A builder with [`config`] (callers add what the test needs).
pub fn builder(backend: Backend) -> Builder {
    Server::builder()
        .config(config(backend))
        .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .workers(1)
        .pin(None)
        .backend(backend)
}

/// A running server that is shut down (200 ms grace) when dropped.
#[derive(Debug)]
pub struct TestServer {
    handle: Option<ServerHandle>,
    addr: SocketAddr,
}

impl TestServer {
    /// Starts the server (panics if it cannot) and logs the backend it runs.
    pub fn start<H, F>(b: Builder, factory: F) -> TestServer
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        Self::start_with(b, move |i, _| factory(i))
    }

    /// As [`TestServer::start`], the factory getting the server's handle too.
    pub fn start_with<H, F>(b: Builder, factory: F) -> TestServer
    where
        H: Handler,
        F: Fn(usize, &ServerHandle) -> H + Send + Sync + 'static,
    {
        let asked = b.backend_asked();
        Self::adopt(b.start_with(factory), asked)
    }

    /// A server started elsewhere (an example's `start`) as a `TestServer`: panics if
    /// it did not start, logs its backend and checks it is the one `asked` for.
    pub fn adopt(started: io::Result<ServerHandle>, asked: Backend) -> TestServer {
        let handle = started.expect("server starts");
        let addr = handle.local_addr();
        eprintln!(
            "soliton-tests: server on {addr}, backend running: {:?}",
            handle.backend()
        );
        record_backend(handle.backend());
        if asked != Backend::Auto {
            assert_eq!(
                handle.backend(),
                asked,
                "the backend running is the one asked for"
            );
        }
        TestServer {
            handle: Some(handle),
            addr,
        }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `ws://` URL of `path` (`wss://` when the suite runs over TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if test_layer() == Some(TestLayer::Tls) {
            "wss"
        } else {
            "ws"
        };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// Graceful shutdown with this grace period; returns once the workers stopped.
    pub fn shutdown(mut self, grace: Duration) {
        if let Some(h) = self.handle.take() {
            h.shutdown(grace).expect("the workers stop cleanly");
        }
    }
}

impl Deref for TestServer {
    type Target = ServerHandle;
    fn deref(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server running")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if let Err(e) = h.shutdown(Duration::from_millis(200)) {
                eprintln!("soliton-tests: server stopped with an error: {e}");
                if !std::thread::panicking() {
                    panic!("server stopped with an error: {e}");
                }
            }
        }
    }
}

/// Accepts every upgrade and echoes every message; `on_http` is the default (426).
#[derive(Debug, Default, Clone, Copy)]
pub struct Echo;

impl Handler for Echo {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        ws.send(msg);
    }
}

/// The layer every connection of the suite goes through, from `SOLITON_TEST_LAYER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestLayer {
    /// The XOR test layer, with this key.
    Xor(u8),
    /// TLS (rustls on both sides, a self-signed certificate).
    Tls,
}

/// The layer `SOLITON_TEST_LAYER` asks for (`xor` or `tls`), if any.
pub fn test_layer() -> Option<TestLayer> {
    static L: OnceLock<Option<TestLayer>> = OnceLock::new();
    *L.get_or_init(|| match std::env::var("SOLITON_TEST_LAYER").as_deref() {
        Ok("xor") => {
            eprintln!("soliton-tests: every connection goes through the XOR test layer");
            Some(TestLayer::Xor(0xa5))
        }
        Ok("tls") => {
            eprintln!("soliton-tests: every connection goes through TLS (wss://)");
            Some(TestLayer::Tls)
        }
        Ok("") | Err(_) => None,
        Ok(other) => panic!("SOLITON_TEST_LAYER={other}: only 'xor' and 'tls' are known"),
    })
}

/// The key of the XOR test layer, when `SOLITON_TEST_LAYER=xor` asks for it.
pub fn test_layer_key() -> Option<u8> {
    match test_layer() {
        Some(TestLayer::Xor(k)) => Some(k),
        _ => None,
    }
}

/// The suite's TLS: a self-signed certificate for `localhost` and `127.0.0.1`, the
/// server's acceptor, and clients (engine and blocking) that trust it.
#[derive(Debug)]
pub struct TestTls {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its key, PEM.
    pub key_pem: String,
    /// The server side.
    pub acceptor: soliton::tls::TlsAcceptor,
    /// The engine's client side, trusting the certificate.
    pub connector: soliton::tls::TlsConnector,
}

/// The suite's TLS set-up, made once per test binary.
pub fn test_tls() -> &'static TestTls {
    static T: OnceLock<TestTls> = OnceLock::new();
    T.get_or_init(|| {
        let (cert_pem, key_pem) = soliton::tls::self_signed(&["localhost", "127.0.0.1"]);
        let ck = soliton::tls::CertKey::from_pem(cert_pem.as_bytes(), key_pem.as_bytes())
            .expect("the test certificate loads");
        let acceptor = soliton::tls::TlsAcceptor::new(ck, Vec::new()).expect("acceptor");
        let ca = rustls::pki_types::pem::PemObject::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("the test certificate parses");
        let connector = soliton::tls::TlsConnector::with_ca_certs(ca).expect("connector");
        TestTls {
            cert_pem,
            key_pem,
            acceptor,
            connector,
        }
    })
}

/// Environment for a peer program (Python, Node) that connects to the suite's servers:
/// with TLS on, `SSL_CERT_FILE` and `NODE_EXTRA_CA_CERTS` name a file holding the
/// suite's certificate, so that their default TLS settings trust it.
pub fn peer_env() -> Vec<(String, String)> {
    if test_layer() != Some(TestLayer::Tls) {
        return Vec::new();
    }
    static FILE: OnceLock<String> = OnceLock::new();
    let f = FILE.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("soliton-test-ca-{}.pem", std::process::id()));
        std::fs::write(&p, &test_tls().cert_pem).expect("write the test certificate");
        p.to_string_lossy().into_owned()
    });
    vec![
        ("SSL_CERT_FILE".into(), f.clone()),
        ("NODE_EXTRA_CA_CERTS".into(), f.clone()),
    ]
}

/// Runs an interop peer's client script (`tests/peers/NAME` through `cmd`: python3,
/// node) with `args` and [`peer_env`]; its standard output, or `None` when its runtime or
/// library is missing (the test is then skipped, unless `SOLITON_REQUIRE_PEER=1`, as in
/// CI). Fails the test if the script fails.
pub fn peer(cmd: &str, script: &str, args: &[&str]) -> Option<String> {
    let path = format!("{}/peers/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = match std::process::Command::new(cmd)
        .arg(&path)
        .args(args)
        .envs(peer_env())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            peer_missing(&format!("{cmd}: {e}"));
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'websockets") || stderr.contains("Cannot find module 'ws'")
    {
        peer_missing(&stderr);
        return None;
    }
    assert!(
        out.status.success(),
        "{cmd} {script} failed: {stdout} {stderr}"
    );
    Some(stdout)
}

fn peer_missing(why: &str) {
    if std::env::var("SOLITON_REQUIRE_PEER").as_deref() == Ok("1") {
        panic!("interop peer missing: {why}");
    }
    eprintln!("SKIPPED interop: {why}");
}

/// A blocking rustls client connection to `127.0.0.1` trusting the suite's certificate.
pub fn tls_client_conn() -> rustls::ClientConnection {
    let cfg: Arc<rustls::ClientConfig> = test_tls().connector.config().clone();
    rustls::ClientConnection::new(cfg, "127.0.0.1".try_into().expect("an IP address"))
        .expect("client connection")
}

/// A blocking client socket; with the XOR test layer on (see the crate docs), its
/// bytes are XORed both ways, as the server's layer does; with TLS on, it speaks TLS.
/// Derefs to the socket for its options (timeouts, shutdown); reads and writes go
/// through [`Read`]/[`Write`].
#[derive(Debug)]
pub struct TestStream {
    s: TcpStream,
    xor: Option<u8>,
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Deref for TestStream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        &self.s
    }
}

impl Read for TestStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(c) = &mut self.tls {
            return match rustls::Stream::new(&mut **c, &mut self.s).read(buf) {
                // a TCP FIN without close_notify: the end of the stream all the same
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            };
        }
        let n = self.s.read(buf)?;
        if let Some(k) = self.xor {
            soliton::layer::xor_in_place(&mut buf[..n], k);
        }
        Ok(n)
    }
}

impl Write for TestStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(c) = &mut self.tls {
            let mut st = rustls::Stream::new(&mut **c, &mut self.s);
            let n = st.write(buf)?;
            // `n` bytes are taken (encrypted, some perhaps still in rustls): a socket
            // that would block now is flushed by the next read or write
            match st.flush() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => r?,
            }
            return Ok(n);
        }
        match self.xor {
            None => self.s.write(buf),
            Some(k) => {
                let mut v = buf.to_vec();
                soliton::layer::xor_in_place(&mut v, k);
                self.s.write(&v)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        if let Some(c) = &mut self.tls {
            return rustls::Stream::new(&mut **c, &mut self.s).flush();
        }
        self.s.flush()
    }
}

/// A blocking client socket with [`IO_TIMEOUT`] and `TCP_NODELAY`.
pub fn connect(addr: SocketAddr) -> TestStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
    s.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    s.set_nodelay(true).expect("nodelay");
    TestStream {
        s,
        xor: test_layer_key(),
        tls: (test_layer() == Some(TestLayer::Tls)).then(|| Box::new(tls_client_conn())),
    }
}

/// The next masking key of a test client (xorshift32 over `seed`, which must not be 0):
/// masks vary between frames and connections.
pub fn next_mask(seed: &mut u32) -> [u8; 4] {
    let mut x = *seed;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *seed = x;
    x.to_le_bytes()
}

/// A request head from lines (the request line first), CRLF-terminated, with the
/// empty line that ends it.
pub fn head(lines: &[&str]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s
}

/// The header lines of a valid upgrade request (sample key, version 13).
pub const UPGRADE_HEADERS: [&str; 5] = [
    "Host: 127.0.0.1",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
];

/// A valid upgrade request for `path`, without the header lines whose names are in
/// `omit` (case-insensitive), plus `extra` lines.
pub fn upgrade_request(path: &str, omit: &[&str], extra: &[&str]) -> String {
    upgrade_request_with("GET", path, omit, extra)
}

/// [`upgrade_request`] with another method.
pub fn upgrade_request_with(method: &str, path: &str, omit: &[&str], extra: &[&str]) -> String {
    let line = format!("{method} {path} HTTP/1.1");
    let mut lines = vec![line.as_str()];
    for h in UPGRADE_HEADERS {
        let name = h.split(':').next().unwrap_or("");
        if !omit.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            lines.push(h);
        }
    }
    lines.extend_from_slice(extra);
    head(&lines)
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The status line.
    pub status_line: String,
    /// Header fields, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes; empty for 101).
    pub body: Vec<u8>,
    /// Whether the server closed the connection right after the response: EOF or
    /// reset before [`IO_TIMEOUT`], with no bytes past the body. Set by [`read_reply`]
    /// (and so [`http_exchange`]); false from [`read_head`].
    pub closed: bool,
}

impl HttpReply {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `read`, retried when a signal interrupts it.
pub fn read_retrying(stream: &mut TestStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// A [`TestStream`] whose reads and writes are retried when a signal interrupts them
/// (`EINTR` shows up here; the tungstenite client would otherwise fail on it).
#[derive(Debug)]
pub struct RetryStream(pub TestStream);

impl Read for RetryStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_retrying(&mut self.0, buf)
    }
}

impl Write for RetryStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads a response head from `stream` into `buf` (which may already hold bytes);
/// leaves what follows the head in `buf`.
pub fn read_head(stream: &mut TestStream, buf: &mut Vec<u8>) -> io::Result<HttpReply> {
    let end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        let mut tmp = [0u8; 4096];
        let n = read_retrying(stream, &mut tmp)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "EOF before a complete response head; got {:?}",
                    String::from_utf8_lossy(buf)
                ),
            ));
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_owned();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    Ok(HttpReply {
        status,
        status_line,
        headers,
        body: Vec::new(),
        closed: false,
    })
}

/// Reads until EOF or reset; returns the bytes read and whether the stream ended
/// (false: the read timed out or failed otherwise).
pub fn read_to_end_or_reset(stream: &mut TestStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut tmp = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut tmp) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return (out, true)
            }
            Err(_) => return (out, false),
        }
    }
}

/// Connects, writes `request` and reads the response (head, `Content-Length` body),
/// then whether the server closes the connection.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> HttpReply {
    let mut s = connect(addr);
    s.write_all(request).expect("write request");
    read_reply(&mut s)
}

/// Reads a whole response from an open stream (see [`http_exchange`]).
pub fn read_reply(s: &mut TestStream) -> HttpReply {
    let mut buf = Vec::new();
    let mut r = read_head(s, &mut buf).expect("response head");
    let len: usize = r
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < len {
        let mut tmp = [0u8; 4096];
        match read_retrying(s, &mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let rest = buf.split_off(len.min(buf.len()));
    r.body = buf;
    let (more, ended) = read_to_end_or_reset(s);
    r.closed = ended && rest.is_empty() && more.is_empty();
    r
}

/// One received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// FIN bit.
    pub fin: bool,
    /// RSV1-3 as the top nibble's low 3 bits (0 when none are set).
    pub rsv: u8,
    /// Opcode (raw).
    pub opcode: u8,
    /// Whether the frame was masked (never, from a server).
    pub masked: bool,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A close frame's code (None if it has no payload or is not a close frame).
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == op::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    /// A close frame's reason.
    pub fn close_reason(&self) -> String {
        String::from_utf8_lossy(self.payload.get(2..).unwrap_or(&[])).into_owned()
    }

    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Encodes one frame; `mask` masks it (as a client must).
pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    encode_frame_rsv(fin, 0, opcode, payload, mask)
}

/// [`encode_frame`] with RSV bits (`rsv` in 0..8: RSV1 = 4, RSV2 = 2, RSV3 = 1).
pub fn encode_frame_rsv(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(u8::from(fin) << 7 | (rsv & 7) << 4 | (opcode & 0x0f));
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xffff {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, &b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Decodes one frame from the front of `buf`; `None` until it is complete.
pub fn decode_frame(buf: &[u8]) -> Option<(Frame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (b0, b1) = (buf[0], buf[1]);
    let masked = b1 & 0x80 != 0;
    let (len, mut pos) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let key: Option<[u8; 4]> = if masked {
        let k = buf.get(pos..pos + 4)?.try_into().ok()?;
        pos += 4;
        Some(k)
    } else {
        None
    };
    let len = usize::try_from(len).ok()?;
    let end = pos.checked_add(len)?;
    let raw = buf.get(pos..end)?;
    let payload = match key {
        Some(k) => raw.iter().enumerate().map(|(i, &b)| b ^ k[i % 4]).collect(),
        None => raw.to_vec(),
    };
    Some((
        Frame {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: b0 & 0x0f,
            masked,
            payload,
        },
        end,
    ))
}

/// A close frame's payload: code and reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// A minimal WebSocket client over a blocking socket.
#[derive(Debug)]
pub struct RawWs {
    /// The socket.
    pub stream: TestStream,
    /// Bytes received and not yet decoded.
    buf: Vec<u8>,
    /// The 101 response.
    pub reply: HttpReply,
    seed: u32,
}

impl RawWs {
    /// Connects and completes the opening handshake for `/` (panics unless 101 with
    /// the right accept value).
    pub fn connect(addr: SocketAddr) -> RawWs {
        Self::connect_with(addr, &upgrade_request("/", &[], &[]))
    }

    /// Connects and sends `request`, which must be accepted.
    pub fn connect_with(addr: SocketAddr, request: &str) -> RawWs {
        let mut s = connect(addr);
        s.write_all(request.as_bytes()).expect("write request");
        Self::finish_handshake(s)
    }

    /// Reads the 101 response for a request already written on `stream`.
    pub fn finish_handshake(mut stream: TestStream) -> RawWs {
        let mut buf = Vec::new();
        let reply = read_head(&mut stream, &mut buf).expect("101 response");
        assert_eq!(reply.status, 101, "not upgraded: {reply:?}");
        assert_eq!(reply.header("sec-websocket-accept"), Some(SAMPLE_ACCEPT));
        let seed = stream.local_addr().map_or(1, |a| u32::from(a.port())) | 1;
        RawWs {
            stream,
            buf,
            reply,
            seed,
        }
    }

    fn next_mask(&mut self) -> [u8; 4] {
        next_mask(&mut self.seed)
    }

    /// Writes raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The encoding of a masked frame (as [`RawWs::send_frame`] sends it).
    pub fn masked_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let k = self.next_mask();
        encode_frame(fin, opcode, payload, Some(k))
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        let f = self.masked_frame(fin, opcode, payload);
        self.send_raw(&f);
    }

    /// Sends a whole text message.
    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, op::TEXT, text.as_bytes());
    }

    /// Sends a whole binary message.
    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.send_frame(true, op::BINARY, bytes);
    }

    /// Sends a close frame with a code and reason.
    pub fn send_close(&mut self, code: u16, reason: &str) {
        self.send_frame(true, op::CLOSE, &close_payload(code, reason));
    }

    /// Reads the next frame.
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let mut tmp = vec![0u8; 64 * 1024];
        loop {
            if let Some((f, n)) = decode_frame(&self.buf) {
                self.buf.drain(..n);
                return Ok(f);
            }
            let n = read_retrying(&mut self.stream, &mut tmp)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF with {} undecoded bytes", self.buf.len()),
                ));
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// Reads the next frame, which must be a data frame with FIN set: its opcode and
    /// payload.
    pub fn read_message(&mut self) -> (u8, Vec<u8>) {
        let f = self.read_frame().expect("read a message");
        assert!(f.fin, "unexpected fragment {f:?}");
        assert!(!f.masked, "server frames are never masked");
        assert_eq!(f.rsv, 0, "no extension was negotiated");
        (f.opcode, f.payload)
    }

    /// Reads `want.len()` messages and checks each one's opcode and payload, in order.
    pub fn expect_messages(&mut self, want: &[(u8, Vec<u8>)]) {
        for (i, (opcode, payload)) in want.iter().enumerate() {
            let (got_op, got) = self.read_message();
            assert_eq!(got_op, *opcode, "message {i}: opcode");
            assert!(
                got == *payload,
                "message {i}: payload of {} bytes differs",
                payload.len()
            );
        }
    }

    /// Reads the next frame, which must be a text message: its text.
    pub fn read_text(&mut self) -> String {
        let (opcode, p) = self.read_message();
        assert_eq!(opcode, op::TEXT, "expected a text message");
        String::from_utf8(p).expect("text is UTF-8")
    }

    /// Reads frames until a close frame (data frames before it are skipped and
    /// counted): its code (None if it had none), reason, and the frames skipped.
    pub fn read_close(&mut self) -> (Option<u16>, String, usize) {
        let mut skipped = 0;
        loop {
            let f = self.read_frame().expect("read until a close frame");
            if f.opcode == op::CLOSE {
                return (f.close_code(), f.close_reason(), skipped);
            }
            skipped += 1;
        }
    }

    /// Drops the connection with a TCP reset (SO_LINGER 0), no close frame.
    pub fn reset(self) {
        socket2::SockRef::from(&*self.stream)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
        drop(self);
    }

    /// Reads until the server closes the TCP connection; panics if it does not within
    /// [`IO_TIMEOUT`] or if any bytes arrive first.
    pub fn expect_eof(&mut self) {
        assert!(self.buf.is_empty(), "undecoded bytes before EOF");
        let (more, ended) = read_to_end_or_reset(&mut self.stream);
        assert!(ended, "the server did not close the TCP connection");
        assert!(more.is_empty(), "{} bytes arrived before EOF", more.len());
    }
}

/// Opens `n` WebSocket connections to `addr`: connects and writes the requests in
/// batches, then reads each batch's responses (all must be 101).
pub fn open_many(addr: SocketAddr, n: usize) -> Vec<RawWs> {
    const BATCH: usize = 500;
    let request = upgrade_request("/", &[], &[]);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = BATCH.min(n - out.len());
        let streams: Vec<TestStream> = (0..batch)
            .map(|_| {
                let mut s = connect(addr);
                s.write_all(request.as_bytes()).expect("write request");
                s
            })
            .collect();
        out.extend(streams.into_iter().map(RawWs::finish_handshake));
    }
    out
}

/// This process's resident set in bytes, from `/proc/self/status` (tests that read it
/// run in a test binary of their own, or one test at a time).
pub fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in kB");
    kib << 10
}

/// A text of exactly `n` bytes, mostly multi-byte characters (2, 3 and 4 bytes), so
/// that UTF-8 sequences straddle every read and chunk boundary.
pub fn text_of_len(n: usize) -> String {
    let pattern = ['h', 'é', '€', '𝄞', ' ', 'ж', 'z', '中'];
    let mut s = String::with_capacity(n);
    let mut i = 0;
    while s.len() < n {
        let c = pattern[i % pattern.len()];
        i += 1;
        if s.len() + c.len_utf8() <= n {
            s.push(c);
        } else {
            s.push('x');
        }
    }
    s
}

/// `n` bytes of a pattern that does not repeat with period 4 (the mask's).
pub fn binary_of_len(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
        .collect()
}

/// The soft limit on open files, from `/proc/self/limits` (None if unreadable).
pub fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
