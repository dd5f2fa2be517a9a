//! Shared helpers: an in-process Soliton server, misbehaving servers, a peer server
//! written by someone else (Python `websockets`), and running `soliton-load` with a time
//! limit. Everything listens on 127.0.0.1 (but [`Ours::start_all_loopback`]) and is
//! stopped when dropped.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use soliton::proto::handshake::accept_key;
use soliton::proto::Message;
use soliton::server::{Handler, Reject, Server, ServerHandle, UpgradeRequest, WebSocket};

/// Echo or broadcast, as `soliton-server` does.
pub struct App {
    broadcast: bool,
}

impl Handler for App {
    type Data = ();

    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }

    fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
        if self.broadcast {
            ws.subscribe("all");
        }
    }

    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        if self.broadcast {
            ws.publish("all", msg);
        } else {
            ws.send(msg);
        }
    }
}

/// Our server, in this process.
pub struct Ours {
    handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    /// wss://: the certificate's PEM file (the server's certificate is self-signed).
    pub ca: Option<PathBuf>,
}

impl Ours {
    pub fn start(broadcast: bool) -> Ours {
        Ours::start_with(broadcast, false)
    }

    /// A server bound to 0.0.0.0, so that every loopback address (127.0.0.1, 127.0.0.2,
    /// ...) reaches it: one node under several URLs ([`Ours::url_at`]).
    pub fn start_all_loopback(broadcast: bool) -> Ours {
        Ours::start_on("0.0.0.0:0".parse().unwrap(), broadcast, false)
    }

    /// `ws://HOST:PORT/` for this server's port.
    pub fn url_at(&self, host: &str) -> String {
        format!("ws://{host}:{}/", self.addr.port())
    }

    /// An echo server on wss:// with a self-signed certificate for 127.0.0.1, written
    /// to a PEM file for --ca.
    pub fn start_tls() -> Ours {
        Ours::start_with(false, true)
    }

    fn start_with(broadcast: bool, tls: bool) -> Ours {
        Ours::start_on("127.0.0.1:0".parse().unwrap(), broadcast, tls)
    }

    fn start_on(addr: SocketAddr, broadcast: bool, tls: bool) -> Ours {
        let mut b = Server::builder().addr(addr).workers(1).pin(None);
        let mut ca = None;
        if tls {
            let (cert, key) = soliton::tls::self_signed(&["127.0.0.1", "localhost"]);
            let ck = soliton::tls::CertKey::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
            b = b.tls(&soliton::tls::TlsAcceptor::new(ck, Vec::new()).unwrap());
            let f = temp("ca.pem");
            std::fs::write(&f, cert).unwrap();
            ca = Some(f);
        }
        let handle = b
            .start(move |_| App { broadcast })
            .expect("start the soliton server");
        let addr = handle.local_addr();
        Ours {
            handle: Some(handle),
            addr,
            ca,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}/", self.addr)
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            if let Err(e) = h.shutdown(Duration::from_millis(200)) {
                assert!(
                    std::thread::panicking(),
                    "server stopped with an error: {e}"
                );
            }
        }
    }
}

/// How a misbehaving server treats each connection.
#[derive(Clone, Copy, Debug)]
pub enum Bad {
    /// Completes the handshake, then sends bytes that are not WebSocket frames.
    Garbage,
    /// Completes the handshake, then never answers.
    Stall,
    /// Completes the handshake, echoes for a while, then closes with 1011.
    CloseMidRun(Duration),
    /// Completes the handshake, then echoes each message this long after reading it.
    Delayed(Duration),
    /// Answers the upgrade with this status.
    Status(u16),
    /// Accepts TCP and never answers the upgrade.
    Silent,
}

/// A misbehaving server on its own threads.
pub struct BadServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl BadServer {
    pub fn start(kind: Bad) -> BadServer {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || serve_bad(c, kind, s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        BadServer { addr, stop }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for BadServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The unmasked echo of the whole frames at the start of `pending` (client frames are
/// masked; payloads under 126 bytes), which are taken off it.
fn echo_frames(pending: &mut Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    while pending.len() >= 6 {
        let len = (pending[1] & 0x7f) as usize;
        if len >= 126 || pending.len() < 6 + len {
            break;
        }
        let key = [pending[2], pending[3], pending[4], pending[5]];
        out.extend_from_slice(&[pending[0], len as u8]);
        out.extend((0..len).map(|i| pending[6 + i] ^ key[i % 4]));
        pending.drain(..6 + len);
    }
    out
}

fn serve_bad(mut c: TcpStream, kind: Bad, stop: Arc<AtomicBool>) {
    let _ = c.set_nodelay(true);
    let _ = c.set_read_timeout(Some(Duration::from_millis(50)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(20);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if stop.load(Ordering::Relaxed) || Instant::now() > until {
            return;
        }
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => continue,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let key = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    match kind {
        Bad::Silent => {
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        Bad::Status(s) => {
            let _ = c.write_all(
                format!("HTTP/1.1 {s} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            return;
        }
        _ => {}
    }
    let accept = accept_key(key.as_bytes());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        std::str::from_utf8(&accept).unwrap()
    );
    if c.write_all(resp.as_bytes()).is_err() {
        return;
    }
    let started = Instant::now();
    let mut pending: Vec<u8> = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) || Instant::now() > until {
            return;
        }
        let n = match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(_) => 0,
        };
        match kind {
            Bad::Garbage => {
                if n > 0 {
                    // reserved opcode 0x3 with RSV bits, then junk
                    let _ = c.write_all(b"\xf3\x05hello\xff\xfe garbage");
                }
            }
            Bad::Stall => {}
            Bad::Delayed(d) => {
                pending.extend_from_slice(&buf[..n]);
                let out = echo_frames(&mut pending);
                if !out.is_empty() {
                    std::thread::sleep(d);
                    let _ = c.write_all(&out);
                }
            }
            Bad::CloseMidRun(after) => {
                pending.extend_from_slice(&buf[..n]);
                let out = echo_frames(&mut pending);
                let _ = c.write_all(&out);
                if started.elapsed() > after {
                    // close frame 1011 "bye", then FIN
                    let _ = c.write_all(b"\x88\x05\x03\xf3bye");
                    let _ = c.shutdown(std::net::Shutdown::Write);
                    std::thread::sleep(Duration::from_millis(200));
                    return;
                }
            }
            Bad::Silent | Bad::Status(_) => return,
        }
    }
}

/// The Python `websockets` peer, if it can run here.
pub struct Peer {
    child: Child,
    pub port: u16,
}

impl Peer {
    /// Starts the peer (`echo` or `broadcast`). `None` (with the reason printed) when
    /// Python or `websockets` is missing, unless SOLITON_REQUIRE_PEER=1, which makes it
    /// a failure.
    pub fn start(mode: &str) -> Option<Peer> {
        let require = std::env::var("SOLITON_REQUIRE_PEER").is_ok_and(|v| v == "1");
        let ok = Command::new("python3")
            .args(["-c", "import websockets"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let why = "python3 with the `websockets` package is not installed \
                       (pip install websockets)";
            assert!(!require, "SOLITON_REQUIRE_PEER=1 but {why}");
            eprintln!("SKIPPED: peer server test: {why}");
            return None;
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ws_peer.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(mode)
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the python peer");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(15)).unwrap_or_default();
        let port = line
            .strip_prefix("READY ")
            .and_then(|p| p.trim().parse().ok());
        match port {
            Some(port) => Some(Peer { child, port }),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("python peer did not start (said {line:?})");
            }
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a run of `soliton-load` gave.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    pub json: Option<Value>,
    pub elapsed: Duration,
}

/// A temporary file path, unique to this process and call.
pub fn temp(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "soliton-load-test-{}-{n}-{name}",
        std::process::id()
    ))
}

/// Runs `soliton-load ARGS --json TMP -q`, killed after `limit`. With
/// SOLITON_TEST_IO=uring|epoll in the environment, runs without an `--io` of their own
/// get that one (so the whole suite can be run on either I/O driver).
pub fn load(args: &[&str], limit: Duration) -> Run {
    let json = temp("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_soliton-load"));
    cmd.args(args);
    if args.first() != Some(&"merge") {
        cmd.arg("-q");
        if let Ok(io) = std::env::var("SOLITON_TEST_IO") {
            if !args.contains(&"--io") {
                cmd.arg("--io").arg(io);
            }
        }
    }
    cmd.arg("--json").arg(&json);
    run_cmd(cmd, limit, Some(json))
}

/// Runs `soliton-load ARGS` as given.
pub fn load_raw(args: &[&str], limit: Duration) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_soliton-load"));
    cmd.args(args);
    run_cmd(cmd, limit, None)
}

fn run_cmd(mut cmd: Command, limit: Duration, json: Option<PathBuf>) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run soliton-load");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("soliton-load ran past {limit:?}: it must end on time");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    let stdout = t1.join().unwrap();
    let stderr = t2.join().unwrap();
    let json = json.and_then(|p| {
        let s = std::fs::read_to_string(&p).ok()?;
        let _ = std::fs::remove_file(&p);
        Some(serde_json::from_str(&s).expect("the --json report parses"))
    });
    Run {
        status,
        stdout,
        stderr,
        json,
        elapsed,
    }
}

pub fn u(v: &Value, path: &str) -> u64 {
    let mut x = v;
    for k in path.split('.') {
        x = &x[k];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{path} is not an unsigned integer: {x}"))
}

pub fn f(v: &Value, path: &str) -> f64 {
    let mut x = v;
    for k in path.split('.') {
        x = &x[k];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path} is not a number: {x}"))
}

pub fn err(v: &Value, kind: &str) -> u64 {
    v["errors"][kind].as_u64().unwrap_or(0)
}

/// The percentiles of a summary are in order.
pub fn assert_ordered(v: &Value, path: &str) {
    let s = &v[path];
    let keys = ["min", "p50", "p90", "p99", "p99_9", "p99_99", "max"];
    let vals: Vec<f64> = keys.iter().map(|k| s[*k].as_f64().unwrap()).collect();
    for w in vals.windows(2) {
        assert!(w[0] <= w[1], "{path} percentiles out of order: {vals:?}");
    }
}

/// Decodes a report's base64 V2+DEFLATE histogram.
pub fn hist(s: &str) -> hdrhistogram::Histogram<u64> {
    use hdrhistogram::serialization::Deserializer;
    let bytes = soliton::proto::base64::decode(s).expect("base64");
    Deserializer::new().deserialize(&mut &bytes[..]).unwrap()
}
