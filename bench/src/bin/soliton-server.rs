//! `soliton-server`: the standalone WebSocket server (echo or broadcast), for
//! benchmarks and conformance runs, and a chat server with its page for browsers.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use soliton::cluster::NatsConfig;
use soliton::proto::handshake::{HeadLimits, OriginPolicy, Request};
use soliton::proto::{Limits, Message};
use soliton::server::{
    Backend, Builder, Config, DeflateConfig, DeflateMode, Handler, HttpResponse, Reject, Server,
    ServerHandle, UpgradeRequest, WebSocket,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeflateArg {
    Off,
    Shared,
    Dedicated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Send every message back to its sender.
    Echo,
    /// Publish every message to every connection (the sender too).
    Broadcast,
    /// Benchmark ceiling: a raw TCP echo (no WebSocket) on the same drivers, buffers
    /// and write batching, without the protocol.
    RawTcp,
    /// Chat rooms for browsers: GET / serves a chat page; a WebSocket joins the room
    /// of its URL's ?room=NAME (a topic; ?name=NAME names the sender), subprotocol
    /// "chat"; text goes to everyone in the room as "NAME: TEXT", binary comes back to
    /// its sender.
    Chat,
}

/// A Soliton WebSocket server: echo, broadcast or chat rooms (with a page for browsers),
/// on io_uring or epoll, ws:// or wss://.
#[derive(Debug, Parser)]
#[command(
    name = "soliton-server",
    version,
    args_override_self = true,
    after_help = "wss:// (TLS): give --tls-cert and --tls-key, or --tls-self-signed for a test.\n\
A test certificate with openssl (then point clients at cert.pem, e.g. soliton-load --ca cert.pem):\n  \
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \\\n    \
-keyout key.pem -out cert.pem -subj /CN=localhost \\\n    \
-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE\n\
(rustls refuses a CA certificate as a server's: without CA:FALSE, openssl makes one)"
)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on.
    #[arg(long, short, default_value_t = 9001)]
    port: u16,
    /// I/O backend: auto (io_uring where the kernel allows, else epoll), uring, epoll.
    #[arg(long, default_value = "auto")]
    backend: Backend,
    /// Worker threads (one per core); default: the available cores.
    #[arg(long, short)]
    threads: Option<usize>,
    /// First core to pin workers to (worker i on core FIRST+i).
    #[arg(long, default_value_t = 0)]
    first_core: usize,
    /// Do not pin workers to cores.
    #[arg(long)]
    no_pin: bool,
    /// Keep one descriptor table for all threads. By default a one-worker server's
    /// main thread (which only waits for signals and serves --metrics) takes a copy of
    /// its own once the server is up, so that the kernel no longer counts references
    /// to the worker's sockets on each of its system calls (about 1 % of the CPU per
    /// small echo). With more workers they share one table anyway.
    #[arg(long)]
    shared_fd_table: bool,
    /// What to do with each message.
    #[arg(long, value_enum, default_value_t = Mode::Echo)]
    mode: Mode,
    /// Largest message in bytes (all fragments), 1009 past it.
    #[arg(long, default_value_t = 16 << 20)]
    max_message: u64,
    /// Largest frame payload in bytes, 1009 past it.
    #[arg(long, default_value_t = 16 << 20)]
    max_frame: u64,
    /// Most connections per worker (503 past it).
    #[arg(long, default_value_t = 100_000)]
    max_connections: usize,
    /// Seconds to complete the opening handshake.
    #[arg(long, default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Seconds of silence before a ping (and as long again before closing); 0 disables.
    #[arg(long, default_value_t = 120.0)]
    idle_timeout: f64,
    /// Buffered outgoing bytes above which sends report backpressure and the connection
    /// is not read until its queue drains (read-side flow control).
    #[arg(long, default_value_t = 64 << 10)]
    backpressure: usize,
    /// Buffered outgoing bytes past which a connection is dropped.
    #[arg(long, default_value_t = 64 << 20)]
    max_buffered: usize,
    /// Allowed Origin (repeatable); when given, other or missing origins get 403.
    #[arg(long = "origin")]
    origins: Vec<String>,
    /// Supported subprotocol (repeatable), most preferred first.
    #[arg(long = "protocol")]
    protocols: Vec<String>,
    /// io_uring: provided receive buffers per worker (rounded up to a power of two).
    #[arg(long, default_value_t = 128)]
    uring_buffers: u16,
    /// io_uring: size of one provided receive buffer, in bytes.
    #[arg(long, default_value_t = 32 * 1024)]
    uring_buffer_size: usize,
    /// Leave Nagle's algorithm on (no TCP_NODELAY): less kernel CPU per small message
    /// on epoll, at the risk of a small message waiting for the peer's delayed ACK.
    #[arg(long)]
    no_nodelay: bool,
    /// Keep reading a connection whose outgoing queue is over --backpressure (off by
    /// default: such a connection is not read until it drains, so TCP slows a peer that
    /// sends faster than it reads; this flag shows what happens without that).
    #[arg(long)]
    no_read_throttle: bool,
    /// epoll: size of the worker's receive buffer, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    recv_buffer: usize,
    /// permessage-deflate (RFC 7692): off, shared (no context takeover: one compressor
    /// per worker and window, nothing per connection) or dedicated (context takeover:
    /// a compressor and decompressor per connection, within --deflate-budget).
    #[arg(long, value_enum, default_value_t = DeflateArg::Shared)]
    deflate: DeflateArg,
    /// Largest window the server compresses with (9-15 bits).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u8).range(9..=15))]
    deflate_window_bits: u8,
    /// Largest window asked of clients that offer client_max_window_bits (9-15 bits).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u8).range(9..=15))]
    deflate_client_window_bits: u8,
    /// zlib memLevel of the server's compressors (1-9; lower: less memory, worse ratio).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=9))]
    deflate_mem_level: u8,
    /// Messages shorter than this many bytes go uncompressed.
    #[arg(long, default_value_t = 1024)]
    deflate_threshold: usize,
    /// Most bytes of dedicated compression state per worker (past it, new connections
    /// get shared compression).
    #[arg(long, default_value_t = 64 << 20)]
    deflate_budget: usize,
    /// wss://: the certificate chain, PEM (leaf first). Needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// wss://: the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// wss://: another certificate, chosen when the client asks for NAME by SNI
    /// (repeatable): NAME=CERT.pem,KEY.pem. --tls-cert's serves every other name.
    #[arg(long = "tls-sni", value_name = "NAME=CERT,KEY", requires = "tls_cert")]
    tls_sni: Vec<String>,
    /// wss:// with a self-signed certificate for localhost and 127.0.0.1 made at start
    /// (tests and benchmarks only: clients must skip verification, e.g. soliton-load
    /// --insecure, or trust the PEM written by --tls-self-signed-out).
    #[arg(long, conflicts_with = "tls_cert")]
    tls_self_signed: bool,
    /// With --tls-self-signed: write the certificate made (PEM) to this file.
    #[arg(long, requires = "tls_self_signed")]
    tls_self_signed_out: Option<std::path::PathBuf>,
    /// Log level of the engine's events on standard error: error, warn (accept
    /// failures), info (the backend chosen and why), debug (each refused handshake
    /// with its status and reason, each close with its code and reason, each TLS
    /// failure and dropped connection) or trace. Nothing is logged per message.
    #[arg(long, default_value = "warn")]
    log: tracing::Level,
    /// Serve the engine's counters (connections, handshakes by status, messages and
    /// bytes, backpressure, slow-consumer drops, close codes; per worker) in the
    /// Prometheus text format at http://ADDR/metrics, e.g. 127.0.0.1:9090 (port 0
    /// picks one; the address is printed). Not with --mode raw-tcp.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// Seconds to wait for close handshakes on SIGINT/SIGTERM.
    #[arg(long, default_value_t = 2.0)]
    shutdown_grace: f64,
    /// Seconds to wait for the peer's close frame after ours.
    #[arg(long, default_value_t = 5.0)]
    close_timeout: f64,
    /// Listen backlog (pending connections the kernel queues per worker).
    #[arg(long, default_value_t = 4096)]
    backlog: i32,
    /// Longest request line, in bytes (414 past it).
    #[arg(long, default_value_t = 8 * 1024)]
    max_request_line: usize,
    /// Longest request head, request line and headers included, in bytes (431 past it).
    #[arg(long, default_value_t = 16 * 1024)]
    max_head: usize,
    /// Most header fields in a request head (431 past it).
    #[arg(long, default_value_t = 64)]
    max_headers: usize,
    /// glibc's M_TRIM_THRESHOLD, in bytes: freed memory up to this stays in the
    /// allocator's arenas for reuse instead of going back to the kernel (its default,
    /// 128 KiB, made a fan-out round on io_uring fault 22 MB in again each time: see
    /// docs/architecture.md); the mmap threshold is set to half of it, at most 32 MiB;
    /// 0 keeps glibc's own (128 KiB, both rising as large blocks are freed). Applied
    /// again on SIGHUP.
    #[arg(long, default_value_t = 64 << 20)]
    malloc_trim_threshold: usize,
    /// Hand the allocator's free memory back to the kernel (glibc's malloc_trim) a
    /// second after this many connections have opened or closed on a worker, so that
    /// what a storm of handshakes or closes freed does not stay resident under the
    /// high trim threshold; 0: never.
    #[arg(long, default_value_t = 1_000)]
    release_memory_after: usize,
    /// Read settings from this TOML file first (flags given on the command line win).
    /// Keys are the long flag names, e.g. `port = 9001`, `origin = ["https://a.example"]`,
    /// `no-pin = true`. On SIGHUP the file is read again and what may change while
    /// running is applied to new connections: limits, timeouts, Origin list,
    /// subprotocols, max connections, backpressure limits, TLS certificates (settings
    /// fixed at start, e.g. the port or threads, need a restart: the reload is then
    /// refused as a whole, and says which).
    #[arg(long, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Share topics with other nodes through this NATS broker (nats://host:port; a
    /// comma-separated list is tried in turn). The server does not start if it cannot
    /// connect.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// NATS subjects are PREFIX.TOPIC (nodes that share topics use the same prefix).
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "soliton",
        requires = "nats"
    )]
    nats_prefix: String,
}

struct App {
    mode: Mode,
}

impl Handler for App {
    type Data = ();

    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }

    fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
        if let Mode::Broadcast = self.mode {
            ws.subscribe("all");
        }
    }

    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        match self.mode {
            Mode::Echo => {
                ws.send(msg);
            }
            Mode::Broadcast | Mode::RawTcp | Mode::Chat => ws.publish("all", msg),
        }
    }
}

/// `--mode chat`'s page (the engine's chat example serves the same file).
const CHAT_PAGE: &str = include_str!("../../../engine/examples/chat.html");

/// `--mode chat`: rooms as topics. A connection joins the room its upgrade URL names
/// (`/chat?room=lobby&name=ada`); its text messages are published to the room as
/// `NAME: TEXT` (so they reach the sender too), its binary messages are echoed to it
/// alone. Plain GET `/` (or `/chat`) answers the chat page.
struct Chat {
    /// Scratch for the `NAME: TEXT` line (one per worker, reused).
    line: String,
    /// To announce a departure (`on_close` has no connection left to publish from).
    server: ServerHandle,
}

/// A chat connection: its room's topic and its name.
struct Member {
    /// `room:` and the room's name.
    topic: String,
    name: String,
}

impl Handler for Chat {
    type Data = Member;

    fn on_http(&mut self, req: &Request<'_>) -> HttpResponse {
        match (req.method(), req.path()) {
            ("GET", "/" | "/chat") => HttpResponse {
                status: 200,
                headers: vec![
                    ("Content-Type".into(), "text/html; charset=utf-8".into()),
                    ("Cache-Control".into(), "no-store".into()),
                ],
                body: CHAT_PAGE.into(),
            },
            ("GET", _) => HttpResponse::new(404, "not found: the chat page is at /\n"),
            _ => HttpResponse::new(405, "GET only\n"),
        }
    }

    fn on_upgrade(&mut self, req: &UpgradeRequest<'_, '_>) -> Result<Member, Reject> {
        let query = req.request.query().unwrap_or("");
        let room = chat_param(query, "room", "lobby", 64)?;
        let name = chat_param(query, "name", "guest", 32)?;
        if req.protocol().is_none() {
            // offered by the page; a client that offers none is still let in
            req.select_protocol("chat");
        }
        Ok(Member {
            topic: format!("room:{room}"),
            name,
        })
    }

    fn on_open(&mut self, ws: &mut WebSocket<'_, Member>) {
        let m = ws.data();
        let topic = std::mem::take(&mut m.topic);
        self.line.clear();
        self.line.push_str("* ");
        self.line.push_str(&m.name);
        self.line.push_str(" joined ");
        self.line.push_str(&topic["room:".len()..]);
        ws.subscribe(&topic);
        ws.publish(&topic, Message::Text(&self.line));
        ws.data().topic = topic;
    }

    fn on_message(&mut self, ws: &mut WebSocket<'_, Member>, msg: Message<'_>) {
        match msg {
            Message::Text(text) => {
                let m = ws.data();
                let topic = std::mem::take(&mut m.topic);
                self.line.clear();
                self.line.push_str(&m.name);
                self.line.push_str(": ");
                self.line.push_str(text);
                ws.publish(&topic, Message::Text(&self.line));
                ws.data().topic = topic;
            }
            Message::Binary(_) => {
                ws.send(msg);
            }
        }
    }

    fn on_close(
        &mut self,
        _id: soliton::server::ConnId,
        m: Member,
        _info: soliton::server::CloseInfo<'_>,
    ) {
        if !m.topic.is_empty() {
            let line = format!("* {} left {}", m.name, &m.topic["room:".len()..]);
            self.server.publish(&m.topic, Message::Text(&line));
        }
    }
}

/// The query parameter `key`, percent-decoded, or `default` when absent or empty: at
/// most `max` characters and no control characters (400 otherwise).
fn chat_param(query: &str, key: &str, default: &str, max: usize) -> Result<String, Reject> {
    let raw = query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    });
    let value = match raw {
        None | Some("") => return Ok(default.to_owned()),
        Some(v) => percent_decode(v),
    };
    match value {
        Some(v) if v.chars().count() <= max && !v.chars().any(char::is_control) => Ok(v),
        _ => Err(Reject::new(
            400,
            format!(
                "{key}: at most {max} characters (UTF-8, percent-encoded), no control characters\n"
            ),
        )),
    }
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space); `None` for a bad
/// escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Starts the workers with the handler `mode` asks for.
fn start(b: Builder, mode: Mode) -> std::io::Result<ServerHandle> {
    match mode {
        Mode::Chat => b.start_with(|_, server| Chat {
            line: String::new(),
            server: server.clone(),
        }),
        _ => b.start(move |_| App { mode }),
    }
}

/// Writes one line to stderr in one `write`. `eprintln!` writes each piece of its format
/// separately (stderr is unbuffered), so a script reading the address from a pipe could
/// see "listening on ws://127.0.0.1:" before the port; the lines scripts parse go here.
fn announce(mut line: String) {
    use std::io::Write;
    line.push('\n');
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// The TLS settings the flags ask for, if any.
fn tls(a: &Args) -> Result<Option<soliton::tls::TlsAcceptor>, String> {
    use soliton::tls::{CertKey, TlsAcceptor};
    if a.tls_self_signed {
        let (cert, key) = soliton::tls::self_signed(&["localhost", "127.0.0.1"]);
        if let Some(out) = &a.tls_self_signed_out {
            std::fs::write(out, &cert).map_err(|e| format!("{}: {e}", out.display()))?;
        }
        let ck = CertKey::from_pem(cert.as_bytes(), key.as_bytes()).map_err(|e| e.0)?;
        return TlsAcceptor::new(ck, Vec::new()).map(Some).map_err(|e| e.0);
    }
    let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) else {
        return Ok(None);
    };
    let default = CertKey::from_pem_files(cert, key).map_err(|e| e.0)?;
    let mut sni = Vec::new();
    for entry in &a.tls_sni {
        let parsed = entry
            .split_once('=')
            .and_then(|(name, files)| Some((name, files.split_once(',')?)));
        let Some((name, (c, k))) = parsed else {
            return Err(format!("--tls-sni {entry:?}: expected NAME=CERT,KEY"));
        };
        let ck = CertKey::from_pem_files(c.as_ref(), k.as_ref()).map_err(|e| e.0)?;
        sni.push((name.to_owned(), ck));
    }
    TlsAcceptor::new(default, sni).map(Some).map_err(|e| e.0)
}

/// The engine's configuration the flags ask for (`tls`: the certificates loaded).
fn config(a: &Args, tls: Option<&soliton::tls::TlsAcceptor>) -> Config {
    let mut c = Config {
        addr: std::net::SocketAddr::new(a.host, a.port),
        backend: a.backend,
        pin_cores: !a.no_pin,
        first_core: a.first_core,
        limits: Limits {
            max_frame: a.max_frame,
            max_message: a.max_message,
        },
        max_connections: a.max_connections,
        handshake_timeout: secs(a.handshake_timeout),
        idle_timeout: (a.idle_timeout > 0.0).then(|| secs(a.idle_timeout)),
        close_timeout: secs(a.close_timeout),
        backpressure_limit: a.backpressure,
        max_buffered: a.max_buffered.max(a.backpressure),
        backlog: a.backlog,
        nodelay: !a.no_nodelay,
        read_throttle: !a.no_read_throttle,
        uring_buffers: a.uring_buffers.max(2),
        uring_buffer_size: a.uring_buffer_size.max(512),
        recv_buffer_size: a.recv_buffer.max(512),
        layer: tls.map(|t| t.factory()),
        deflate: DeflateConfig {
            mode: match a.deflate {
                DeflateArg::Off => DeflateMode::Off,
                DeflateArg::Shared => DeflateMode::Shared,
                DeflateArg::Dedicated => DeflateMode::Dedicated,
            },
            server_max_window_bits: a.deflate_window_bits,
            client_max_window_bits: a.deflate_client_window_bits,
            mem_level: a.deflate_mem_level,
            threshold: a.deflate_threshold,
        },
        deflate_budget: a.deflate_budget,
        release_memory_after: a.release_memory_after,
        ..Config::default()
    };
    if let Some(t) = a.threads {
        c.workers = t.max(1);
    }
    c.handshake.protocols = a.protocols.clone();
    if !a.origins.is_empty() {
        c.handshake.origins = OriginPolicy::AllowList(a.origins.clone());
    }
    c.handshake.limits = HeadLimits {
        max_request_line: a.max_request_line,
        max_head: a.max_head,
        max_headers: a.max_headers,
    };
    c
}

/// Why the flags could not be read.
enum ArgsError {
    /// clap's (usage, --help, --version included).
    Flags(clap::Error),
    /// The config file's.
    File(String),
}

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgsError::Flags(e) => write!(f, "{}", e.to_string().trim_end()),
            ArgsError::File(e) => f.write_str(e),
        }
    }
}

/// The flags: the `--config` file's settings, then the command line's (which win).
fn parse_args() -> Result<Args, ArgsError> {
    let cli: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let file = config_file_arg(&cli);
    let mut argv = vec![cli[0].clone()];
    if let Some(f) = &file {
        let file_args = config_file_args(f).map_err(ArgsError::File)?;
        argv.extend(file_args.into_iter().map(Into::into));
    }
    argv.extend(cli[1..].iter().cloned());
    Args::try_parse_from(argv).map_err(ArgsError::Flags)
}

/// The `--config FILE` given on the command line, if any.
fn config_file_arg(cli: &[std::ffi::OsString]) -> Option<std::path::PathBuf> {
    let mut it = cli.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--config" {
            return it.next().map(Into::into);
        }
        if let Some(f) = a.strip_prefix("--config=") {
            return Some(f.into());
        }
    }
    None
}

/// A TOML file's settings as flags: `key = value` becomes `--key value` (`true`: the
/// bare flag, `false`: nothing, an array: the flag once per element).
fn config_file_args(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = format!("--{}", key.replace('_', "-"));
        if flag == "--config" {
            return Err(format!(
                "{}: a config file cannot name another",
                path.display()
            ));
        }
        let scalar = |v: &toml::Value| -> Result<String, String> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                other => Err(format!(
                    "{}: {key}: expected a string or a number, found {}",
                    path.display(),
                    other.type_str()
                )),
            }
        };
        match &value {
            toml::Value::Boolean(true) => out.push(flag),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for v in items {
                    out.push(flag.clone());
                    out.push(scalar(v)?);
                }
            }
            v => {
                out.push(flag);
                out.push(scalar(v)?);
            }
        }
    }
    Ok(out)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(ArgsError::Flags(e)) => e.exit(),
        Err(e) => {
            eprintln!("soliton-server: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_max_level(a.log)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    trim_threshold(a.malloc_trim_threshold);
    if let Mode::RawTcp = a.mode {
        if a.metrics.is_some() {
            eprintln!("soliton-server: --metrics is not available with --mode raw-tcp");
            std::process::exit(2);
        }
        raw_tcp(&a);
        return;
    }
    let tls = match tls(&a) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("soliton-server: TLS: {e}");
            std::process::exit(2);
        }
    };
    let mode = a.mode;
    let mut builder = Server::builder().config(config(&a, tls.as_ref()));
    if let Some(url) = &a.nats {
        builder = builder.cluster(NatsConfig::new(url).subject_prefix(&a.nats_prefix));
    }
    let blocked = block_signals();
    let server = match start(builder, mode) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soliton-server: cannot start on {}:{}: {e}", a.host, a.port);
            std::process::exit(1);
        }
    };
    let mut signals = after_spawn(blocked, server.workers(), &a, true);
    announce(format!(
        "soliton-server: listening on {}://{} ({:?}, {:?} mode)",
        if tls.is_some() { "wss" } else { "ws" },
        server.local_addr(),
        server.backend(),
        a.mode
    ));
    if let Mode::Chat = a.mode {
        let scheme = if tls.is_some() { "https" } else { "http" };
        announce(format!(
            "soliton-server: chat page at {scheme}://{}/",
            server.local_addr()
        ));
    }

    let exporter = a.metrics.map(|addr| {
        let reader = server.metrics_reader();
        match soliton::metrics::serve(addr, move || reader.snapshot().to_prometheus()) {
            Ok(e) => {
                announce(format!(
                    "soliton-server: metrics on http://{}/metrics",
                    e.local_addr()
                ));
                e
            }
            Err(e) => {
                eprintln!("soliton-server: cannot serve metrics on {addr}: {e}");
                std::process::exit(1);
            }
        }
    });
    let mut current = a;
    while wait_for_signal(&mut signals) {
        current = reload(&server, current);
    }
    if let Some(e) = exporter {
        e.stop();
    }
    if let Err(e) = server.shutdown(secs(current.shutdown_grace)) {
        eprintln!("soliton-server: {e}");
        std::process::exit(1);
    }
    eprintln!("soliton-server: stopped");
}

/// SIGHUP: reads the config file (and the command line) again and applies what may
/// change while running; returns the flags in force.
fn reload(server: &ServerHandle, old: Args) -> Args {
    let new = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soliton-server: SIGHUP: not reloaded: {e}");
            return old;
        }
    };
    let tls = match tls(&new) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("soliton-server: SIGHUP: not reloaded: TLS: {e}");
            return old;
        }
    };
    if new.malloc_trim_threshold != old.malloc_trim_threshold {
        trim_threshold(new.malloc_trim_threshold);
    }
    let mut next = config(&new, tls.as_ref());
    let same_addr = (new.host, new.port) == (old.host, old.port);
    let r = server.reconfigure(|c| {
        if same_addr {
            // the address in force is the bound one (port 0 picks one at start)
            next.addr = c.addr;
        }
        next.workers = c.workers;
        if new.threads != old.threads {
            next.workers = new.threads.unwrap_or(0);
        }
        if new.backend == old.backend {
            // the backend in force is the one `auto` chose at start
            next.backend = c.backend;
        }
        *c = next;
    });
    let mut ignored = Vec::new();
    if new.mode != old.mode {
        ignored.push("mode");
    }
    if new.log != old.log {
        ignored.push("log");
    }
    if (&new.nats, &new.nats_prefix) != (&old.nats, &old.nats_prefix) {
        ignored.push("nats");
    }
    if new.shared_fd_table != old.shared_fd_table {
        ignored.push("shared-fd-table");
    }
    match r {
        Ok(()) if ignored.is_empty() => {
            eprintln!("soliton-server: SIGHUP: reloaded");
            new
        }
        Ok(()) => {
            eprintln!(
                "soliton-server: SIGHUP: reloaded ({} kept: restart to change)",
                ignored.join(", ")
            );
            new
        }
        Err(e) => {
            eprintln!("soliton-server: SIGHUP: not reloaded: {e}");
            old
        }
    }
}

/// `--malloc-trim-threshold`: sets it (0: leaves glibc's own), warning where it cannot.
fn trim_threshold(bytes: usize) {
    if bytes != 0 && !soliton::alloc::set_trim_threshold(bytes) {
        tracing::warn!("--malloc-trim-threshold: not available with this C library");
    }
}

/// The signals this binary handles, blocked in the main thread while it spawns the
/// workers (they keep them blocked, so the handlers run on the main thread, whose table
/// holds the handlers' socket pair: see `after_spawn`, which unblocks them there).
fn block_signals() -> Option<soliton_bench::fdtable::BlockedSignals> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    match soliton_bench::fdtable::block_signals(&[SIGINT, SIGTERM, SIGHUP]) {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!("cannot block signals in the workers: {e}");
            None
        }
    }
}

/// Once the workers run (spawned with `blocked` in force), in this order: with one
/// worker, the main thread leaves its descriptor table (see `--shared-fd-table` and
/// `soliton_bench::fdtable`; not where the signals could not be blocked, since their
/// handlers, running on the worker, would write to a descriptor number of the other
/// table); then it catches SIGINT and SIGTERM and, with `hup`, SIGHUP (after leaving,
/// so that the handlers' socket pair is in the main thread's table; before the server
/// says that it listens, so that a signal sent right after that line does not meet the
/// default action); then it unblocks them here.
fn after_spawn(
    blocked: Option<soliton_bench::fdtable::BlockedSignals>,
    workers: usize,
    a: &Args,
    hup: bool,
) -> signal_hook::iterator::Signals {
    if workers == 1 && !a.shared_fd_table && blocked.is_some() {
        if let Err(e) = soliton_bench::fdtable::leave_shared_table() {
            tracing::warn!("the main thread keeps the workers' descriptor table: {e}");
        }
    }
    let mut sigs = vec![signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM];
    if hup {
        sigs.push(signal_hook::consts::SIGHUP);
    }
    let signals = match signal_hook::iterator::Signals::new(&sigs) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soliton-server: cannot install signal handlers: {e}");
            std::process::exit(1);
        }
    };
    drop(blocked);
    signals
}

/// Blocks until SIGINT or SIGTERM (false) or SIGHUP (true).
fn wait_for_signal(signals: &mut signal_hook::iterator::Signals) -> bool {
    match signals.forever().next() {
        Some(signal_hook::consts::SIGHUP) => true,
        Some(sig) => {
            eprintln!("soliton-server: signal {sig}: closing connections (1001)");
            false
        }
        None => false,
    }
}

/// `--mode raw-tcp`: the raw echo on the drivers alone.
fn raw_tcp(a: &Args) {
    let cfg = soliton::driver::DriverConfig {
        backend: a.backend,
        uring_buffers: a.uring_buffers,
        uring_buffer_size: a.uring_buffer_size,
        recv_buffer_size: a.recv_buffer,
        nodelay: !a.no_nodelay,
        ..Default::default()
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let addr = std::net::SocketAddr::new(a.host, a.port);
    let blocked = block_signals();
    let server = match soliton_bench::rawecho::RawEcho::start(
        addr,
        cfg,
        threads,
        (!a.no_pin).then_some(a.first_core),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soliton-server: cannot start on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let mut signals = after_spawn(blocked, threads, a, false);
    announce(format!(
        "soliton-server: listening on {} ({:?}, raw TCP echo)",
        server.addr, server.backend
    ));
    wait_for_signal(&mut signals);
    if let Err(e) = server.stop() {
        eprintln!("soliton-server: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decode_is_form_decoding_and_refuses_bad_input() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("50%"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn chat_room_and_name_come_from_the_query_with_defaults_and_limits() {
        let q = "name=ada+l&room=r%C3%A9d&x=1";
        assert_eq!(chat_param(q, "room", "lobby", 64).unwrap(), "réd");
        assert_eq!(chat_param(q, "name", "guest", 32).unwrap(), "ada l");
        assert_eq!(chat_param("", "room", "lobby", 64).unwrap(), "lobby");
        assert_eq!(chat_param("room=", "room", "lobby", 64).unwrap(), "lobby");
        assert_eq!(chat_param("room=é", "room", "lobby", 1).unwrap(), "é");
        for bad in ["room=ab", "room=a%0Ab", "room=%e9"] {
            let e = chat_param(bad, "room", "lobby", 1).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
    }
}
