//! `soliton-server`: the standalone WebSocket server (echo or broadcast), for
//! benchmarks and conformance runs.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use soliton::proto::handshake::OriginPolicy;
use soliton::proto::{Limits, Message};
use soliton::server::{
    Backend, DeflateConfig, DeflateMode, Handler, Reject, Server, UpgradeRequest, WebSocket,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeflateArg {
    Off,
    Shared,
    Dedicated,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Send every message back to its sender.
    Echo,
    /// Publish every message to every connection (the sender too).
    Broadcast,
    /// Benchmark ceiling: a raw TCP echo (no WebSocket) on the same drivers, buffers
    /// and write batching, without the protocol.
    RawTcp,
}

/// A Soliton WebSocket server: echo or broadcast, on io_uring or epoll, ws:// or wss://.
#[derive(Debug, Parser)]
#[command(
    name = "soliton-server",
    version,
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
            Mode::Broadcast | Mode::RawTcp => ws.publish("all", msg),
        }
    }
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

fn main() {
    let a = Args::parse();
    tracing_subscriber::fmt()
        .with_max_level(a.log)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    if let Mode::RawTcp = a.mode {
        if a.metrics.is_some() {
            eprintln!("soliton-server: --metrics is not available with --mode raw-tcp");
            std::process::exit(2);
        }
        raw_tcp(&a);
        return;
    }
    let mut b = Server::builder()
        .addr(std::net::SocketAddr::new(a.host, a.port))
        .backend(a.backend)
        .pin((!a.no_pin).then_some(a.first_core))
        .limits(Limits {
            max_frame: a.max_frame,
            max_message: a.max_message,
        })
        .protocols(a.protocols.clone())
        .max_connections(a.max_connections)
        .handshake_timeout(secs(a.handshake_timeout))
        .idle_timeout((a.idle_timeout > 0.0).then(|| secs(a.idle_timeout)))
        .buffered_limits(a.backpressure, a.max_buffered);
    b = b
        .nodelay(!a.no_nodelay)
        .read_throttle(!a.no_read_throttle)
        .deflate(
            DeflateConfig {
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
            a.deflate_budget,
        );
    b = b.receive_buffers(a.uring_buffers, a.uring_buffer_size, a.recv_buffer);
    if let Some(t) = a.threads {
        b = b.workers(t);
    }
    if !a.origins.is_empty() {
        b = b.origins(OriginPolicy::AllowList(a.origins.clone()));
    }
    let tls = match tls(&a) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("soliton-server: TLS: {e}");
            std::process::exit(2);
        }
    };
    if let Some(t) = &tls {
        b = b.tls(t);
    }
    let mode = a.mode;
    let server = match b.start(move |_| App { mode }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soliton-server: cannot start on {}:{}: {e}", a.host, a.port);
            std::process::exit(1);
        }
    };
    eprintln!(
        "soliton-server: listening on {}://{} ({:?}, {:?} mode)",
        if tls.is_some() { "wss" } else { "ws" },
        server.local_addr(),
        server.backend(),
        a.mode
    );
    let exporter = a.metrics.map(|addr| {
        let reader = server.metrics_reader();
        match soliton::metrics::serve(addr, move || reader.snapshot().to_prometheus()) {
            Ok(e) => {
                eprintln!(
                    "soliton-server: metrics on http://{}/metrics",
                    e.local_addr()
                );
                e
            }
            Err(e) => {
                eprintln!("soliton-server: cannot serve metrics on {addr}: {e}");
                std::process::exit(1);
            }
        }
    });
    wait_for_signal();
    if let Some(e) = exporter {
        e.stop();
    }
    if let Err(e) = server.shutdown(secs(a.shutdown_grace)) {
        eprintln!("soliton-server: {e}");
        std::process::exit(1);
    }
    eprintln!("soliton-server: stopped");
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() {
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("soliton-server: cannot install signal handlers: {e}");
            std::process::exit(1);
        }
    };
    if let Some(sig) = signals.forever().next() {
        eprintln!("soliton-server: signal {sig}: closing connections (1001)");
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
    };
    let threads = a
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let addr = std::net::SocketAddr::new(a.host, a.port);
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
    eprintln!(
        "soliton-server: listening on {} ({:?}, raw TCP echo)",
        server.addr, server.backend
    );
    wait_for_signal();
    if let Err(e) = server.stop() {
        eprintln!("soliton-server: {e}");
        std::process::exit(1);
    }
}
