//! `soliton-load`: a WebSocket load generator for capacity planning, on Soliton's
//! sans-I/O client role. See `docs/loadgen.md` and `soliton-load --help`.

mod plot;
mod procfs;
mod report;
mod run;
mod slo;
mod stats;
mod target;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;

use crate::report::Report;
use crate::run::{Kind, Spec};

const ABOUT: &str = "A WebSocket load generator for capacity planning: closed-loop echo, \
open-loop rate (coordinated omission corrected), connection storms, idle holds, \
broadcast fan-out and capacity search, against any ws:// or wss:// server.";

const AFTER: &str = "\
URLs: ws://HOST[:PORT][/PATH][?QUERY] or wss://... (TLS 1.3/1.2 with rustls; the system's roots \
unless --ca FILE or --insecure; connect counts full and resumed TLS handshakes, \
--no-tls-resume makes every one full).

Every report shows the load generator's own CPU use (µs per message) and, with --server-pid, \
the server's, and flags a run as LOAD-BOUND when the load generator's threads were the busier \
side. Examples:
  soliton-load echo ws://127.0.0.1:9001/ --connections 100 --size 20 --cores 0
  soliton-load rate ws://127.0.0.1:9001/ --rate 50000 --duration 30s --json run.json
  soliton-load slo ws://127.0.0.1:9001/ --target 'p99<1ms' --start 20000 --step 20000 --plot slo.svg
  soliton-load merge a.json b.json --json all.json --plot all.svg";

/// soliton-load: WebSocket load generator.
#[derive(Debug, Parser)]
#[command(name = "soliton-load", version, about = ABOUT, after_help = AFTER)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Closed loop: each connection keeps --inflight messages outstanding and sends a new
    /// one for each echo. Checks that every echo comes back (received = sent).
    Echo(EchoArgs),
    /// Open loop at a fixed total rate on a precomputed schedule; latency counts from the
    /// intended send time, so a slow server cannot hide its stalls (as wrk2 does).
    Rate(RateArgs),
    /// Connection storm: handshakes per second and connect latency, optionally closing
    /// each connection as soon as it is open.
    Connect(ConnectArgs),
    /// Open N connections and keep them idle: how many held, and the server's RSS per
    /// connection with --server-pid (--steps gives the marginal cost too).
    Hold(HoldArgs),
    /// Publishers and subscribers against a broadcast server: delivery latency over all
    /// receivers and deliveries per second (per node too, with --subscriber-url).
    Fanout(FanoutArgs),
    /// Open flood: every connection writes messages as fast as its socket takes them,
    /// with no cap on messages in flight (as tcpkali does); the server's throughput at
    /// saturation, echo latency under it (every message is stamped), and with
    /// --server-pid the server's RSS: whether it stops reading a connection whose
    /// outgoing queue is long, or lets memory and latency grow.
    Flood(FloodArgs),
    /// Capacity search: raise the rate step by step (or double, then bisect) until a
    /// target such as p99<1ms or the error budget fails; report the highest passing rate.
    Slo(SloArgs),
    /// Combine the --json reports of runs made at the same time (several load machines)
    /// into one: counts and histograms add exactly, rates add.
    Merge(MergeArgs),
}

/// `slo --plot`, which draws something else than the other scenarios' plot.
const SLO_PLOT_HELP: &str = "Draw the capacity curve to this SVG file: p50, p99 and p99.9 \
(and any percentile a target names) against the offered rate over every step, sorted by \
rate, latency on a log axis, the targets as horizontal lines, the highest passing rate as \
a vertical line, failing steps as hollow markers; below it achieved against offered \
rate, each step's percentile distribution and the step table";

/// Options every scenario shares.
#[derive(Debug, Args, Clone)]
struct Common {
    /// Server URL: ws://HOST[:PORT][/PATH][?QUERY] or wss://HOST[:PORT][/PATH][?QUERY].
    url: String,
    /// wss://: trust the certificates in this PEM file (a test CA or a self-signed
    /// server certificate) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// wss://: accept any server certificate (test certificates only: no protection
    /// against an attacker).
    #[arg(long)]
    insecure: bool,
    /// wss://: no TLS session resumption (every handshake a full one; with it, every
    /// connection after the first resumes a session).
    #[arg(long)]
    no_tls_resume: bool,
    /// Worker threads (one event loop each). Default: 1, or one per --cores entry.
    #[arg(long, short = 't')]
    threads: Option<usize>,
    /// Pin worker threads to these cores: `0`, `0,2`, `2-5` (worker i on the i-th).
    #[arg(long)]
    cores: Option<String>,
    /// Source addresses to spread connections over, to pass the ~28k local ports one
    /// address gives per server: `127.0.0.2-127.0.0.60`, or a comma list.
    #[arg(long)]
    source: Option<String>,
    /// Connections opened per second while connecting (0: as fast as --max-pending allows).
    #[arg(long, default_value_t = 0.0)]
    ramp: f64,
    /// Most handshakes in progress at once, over all threads.
    #[arg(long, default_value_t = 512)]
    max_pending: usize,
    /// Subprotocol to offer (repeatable, most preferred first).
    #[arg(long = "protocol", value_name = "NAME")]
    protocols: Vec<String>,
    /// Extra header field for the upgrade request, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Origin header to send.
    #[arg(long)]
    origin: Option<String>,
    /// Measured time (after connecting and the warm-up). Units: ns, us, ms, s, m.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Warm-up before the measured window (echo, rate, fanout).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Longest wait after the window for the answers to the last messages.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    drain: Duration,
    /// Time for TCP connect plus the upgrade handshake of one connection.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
    /// A connection with messages outstanding and nothing received this long counts a
    /// `stall` error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Time for the server to finish the close handshake at the end.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    close_timeout: Duration,
    /// Open-loop schedules (rate, fanout, slo): the sends that fall due within one tick
    /// go out together at the tick, and their latency counts from it, so that one
    /// wake-up of the load generator serves several messages (its CPU per message at
    /// 10,000 msg/s fell from 48 to 18.5 µs, the server's from 40 to 11.8). The schedule
    /// stays open-loop: a tick that starts late still counts from its planned time. `auto` (default): the time of 8 sends at
    /// a worker's rate, at most 1 ms, so a burst stays short beside the latencies it
    /// measures, and none above 32,000 msg/s per thread (where a 200 µs tick would
    /// still halve the load generator's CPU per message, but its bursts of 8 double the
    /// median latency measured);
    /// a duration: that tick (a long one makes the load bursty); 0: every message at its
    /// own time.
    #[arg(long, default_value = "auto", value_parser = parse_tick)]
    tick: TickArg,
    /// The server's process id: its CPU time (µs/msg, busiest thread) and, for hold, RSS.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Write every figure, with histograms in a mergeable encoding, to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the latency percentile distribution and throughput over time to this SVG file
    /// (slo: the capacity curve).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Offer permessage-deflate (RFC 7692): `shared` asks for no context takeover
    /// (both ends reset per message), `dedicated` lets both ends keep context. The
    /// report then says how much the messages sent shrank.
    #[arg(long, value_enum, default_value_t = DeflateArg::Off)]
    deflate: DeflateArg,
    /// Socket I/O of the workers (Soliton's drivers, as in the server): `uring`
    /// (io_uring, Linux 6.1+: every send of a loop iteration in one system call,
    /// multishot receives into a provided buffer ring), `epoll`, or `auto`: io_uring
    /// where the kernel allows it, else epoll.
    #[arg(long, value_enum, default_value_t = IoArg::Auto)]
    io: IoArg,
    /// When an answer counts as received (rate, fanout, slo). `kernel` (default): the
    /// time the kernel received it (`SO_TIMESTAMPNS`); each worker then sleeps from one
    /// send of the schedule to the next (or one tick to the next; 1 ms at most) and
    /// reads everything that came meanwhile in one go, instead of waking for every
    /// answer. `loop`: the start of the worker's loop turn that reads it, waking for
    /// each; that includes the load generator's own wake-up, and under a heavy fan-out
    /// an answer that arrives during a long turn is timed at the turn's start. Echo,
    /// flood and connect always use `loop` (closed loops answer at once).
    #[arg(long, value_enum, default_value_t = RxTimeArg::Kernel)]
    rx_time: RxTimeArg,
    /// glibc's M_TRIM_THRESHOLD, in bytes, as `soliton-server --malloc-trim-threshold`:
    /// freed memory up to this stays in the allocator's arenas (the default, 128 KiB,
    /// had 200 connections of 16 KiB messages fault their queue chunks in again: 2.4 %
    /// of the load generator's time); the mmap threshold is set to half of it, at most
    /// 32 MiB; 0 keeps glibc's own.
    #[arg(long, default_value_t = 64 << 20)]
    malloc_trim_threshold: usize,
}

/// `--rx-time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RxTimeArg {
    Kernel,
    Loop,
}

/// `--deflate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeflateArg {
    Off,
    Shared,
    Dedicated,
}

/// `--io`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum IoArg {
    Auto,
    Uring,
    Epoll,
}

/// Resolves `--io`: `auto` probes io_uring (what the engine's driver needs); an
/// explicit `uring` that the kernel refuses is an error.
fn resolve_io(a: IoArg) -> Result<soliton::server::Backend, String> {
    use soliton::server::Backend;
    let asked = match a {
        IoArg::Epoll => Backend::Epoll,
        IoArg::Uring => Backend::IoUring,
        IoArg::Auto => Backend::Auto,
    };
    asked
        .resolve()
        .map(|(b, _)| b)
        .map_err(|e| format!("--io uring: {e} (try --io epoll)"))
}

/// Message options.
#[derive(Debug, Args, Clone)]
struct MsgArgs {
    /// Payload size in bytes (at least 16: every payload starts with a 16-byte time
    /// stamp and sequence number; smaller sizes are sent as 16).
    #[arg(long, short = 's', default_value_t = 20)]
    size: usize,
    /// Send text messages (payloads are ASCII) instead of binary.
    #[arg(long)]
    text: bool,
    /// What fills each payload after its stamp: `x` (one byte repeated), `json`
    /// (JSON-like text of words and numbers, which compresses about 3 to 1, for
    /// --deflate runs) or `random` (incompressible bytes; ASCII letters with --text).
    #[arg(long, value_enum, default_value_t = worker::Payload::X)]
    payload: worker::Payload,
}

#[derive(Debug, Args)]
struct EchoArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    msg: MsgArgs,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 100)]
    connections: usize,
    /// Messages in flight per connection.
    #[arg(long, short = 'i', default_value_t = 1)]
    inflight: u32,
}

#[derive(Debug, Args)]
struct RateArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    msg: MsgArgs,
    /// Connections (the schedule sends round-robin over them).
    #[arg(long, short = 'c', default_value_t = 100)]
    connections: usize,
    /// Total messages per second over all connections.
    #[arg(long, short = 'r')]
    rate: f64,
}

#[derive(Debug, Args)]
struct FloodArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    msg: MsgArgs,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 100)]
    connections: usize,
    /// Bytes each connection keeps queued in the load generator beyond what its socket
    /// took (messages are queued again as soon as the queue falls under it).
    #[arg(long, default_value_t = 64 * 1024)]
    window: usize,
}

#[derive(Debug, Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Handshakes to perform (without --close: connections to open and keep until the end).
    #[arg(long, short = 'c', default_value_t = 1000)]
    connections: usize,
    /// Most connection attempts in progress at once (with --close: most connections alive).
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Close each connection (1000) as soon as it is open, then open the next.
    #[arg(long)]
    close: bool,
}

#[derive(Debug, Args)]
struct HoldArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open and hold.
    #[arg(long, short = 'c', default_value_t = 1000)]
    connections: usize,
    /// Measure at several connection counts, e.g. `5000,15000`: with --server-pid the
    /// RSS difference between the first and last step gives the marginal bytes per
    /// connection (fixed costs cancel). Default: just --connections.
    #[arg(long, value_delimiter = ',')]
    steps: Vec<usize>,
    /// Wait after each step before reading the server's RSS.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    settle: Duration,
}

#[derive(Debug, Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    msg: MsgArgs,
    /// Connections that only receive.
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Connections that publish (on the open-loop schedule); they receive too.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Total messages published per second.
    #[arg(long, short = 'r', default_value_t = 100.0)]
    rate: f64,
    /// Subscribers connect here instead of URL, spread over every one given
    /// (repeatable): publishers on one node, subscribers on others sharing topics
    /// through a broker (`soliton-server --nats`). Deliveries and their latency are
    /// then also reported per node (URL), the publishers' URL included.
    #[arg(long = "subscriber-url", value_name = "URL")]
    subscriber_urls: Vec<String>,
}

#[derive(Debug, Args)]
#[command(mut_arg("plot", |a| a.help(SLO_PLOT_HELP)))]
struct SloArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    msg: MsgArgs,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 100)]
    connections: usize,
    /// Latency targets, e.g. `p99<1ms` or `p99<1ms,p99.9<5ms` (repeatable): percentiles
    /// p50 p90 p99 p99.9 p99.99 max mean; units ns us ms s.
    #[arg(long, required = true)]
    target: Vec<String>,
    /// First rate (messages/s).
    #[arg(long, default_value_t = 10_000.0)]
    start: f64,
    /// Rate increment per step (default: the start rate).
    #[arg(long)]
    step: Option<f64>,
    /// Highest rate to try.
    #[arg(long, default_value_t = 10_000_000.0)]
    max_rate: f64,
    /// Double the rate until a step fails, then bisect between the last pass and the
    /// first failure.
    #[arg(long)]
    bisect: bool,
    /// Bisect until the bracket is narrower than this fraction of the rate.
    #[arg(long, default_value_t = 0.05)]
    precision: f64,
    /// Most steps.
    #[arg(long, default_value_t = 20)]
    max_steps: usize,
    /// Errors allowed per step.
    #[arg(long, default_value_t = 0)]
    max_errors: u64,
    /// A step also fails when it achieves less than this fraction of the offered rate.
    #[arg(long, default_value_t = 0.95)]
    min_achieved: f64,
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// --json reports to combine.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Write the combined report as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the combined report as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// `10s`, `500ms`, `2m`, `100us`, `1.5` (seconds).
/// `--tick`: `None` for auto.
#[derive(Clone, Copy, Debug)]
struct TickArg(Option<Duration>);

/// `auto` or a duration (see `--tick`).
fn parse_tick(s: &str) -> Result<TickArg, String> {
    if s.trim() == "auto" {
        Ok(TickArg(None))
    } else {
        parse_duration(s).map(|d| TickArg(Some(d)))
    }
}

/// The report's `config.tick`: "auto" or microseconds.
fn tick_entry(t: Option<Duration>) -> Value {
    t.map_or(Value::from("auto"), |d| Value::from(d.as_secs_f64() * 1e6))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let i = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let v: f64 = s[..i]
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 10s, 500ms, 2m)"))?;
    let secs = match s[i..].trim() {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" | "µs" => v / 1e6,
        "ns" => v / 1e9,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        u => return Err(format!("bad duration unit {u:?} (ns, us, ms, s, m, h)")),
    };
    if !(0.0..1e7).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn config_entry(cfg: &mut BTreeMap<String, Value>, k: &str, v: impl Into<Value>) {
    cfg.insert(k.to_string(), v.into());
}

/// The server at `url` with the shared options (TLS trust, compression offer, ...).
fn make_target(url: &str, c: &Common) -> Result<target::Target, String> {
    let mut target = target::Target::new(url, &c.protocols, &c.headers, c.origin.clone())?.tls(
        c.ca.as_deref(),
        c.insecure,
        !c.no_tls_resume,
    )?;
    let deflate = match c.deflate {
        DeflateArg::Off => None,
        DeflateArg::Shared => Some(soliton::client::ClientOffer {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..Default::default()
        }),
        DeflateArg::Dedicated => Some(soliton::client::ClientOffer::default()),
    };
    if let Some(o) = deflate {
        target.req = target.req.deflate(o);
    }
    Ok(target)
}

/// Builds the run's settings from the shared options.
fn spec(
    scenario: &str,
    c: &Common,
    conns: usize,
    kind: Kind,
    msg: Option<&MsgArgs>,
) -> Result<Spec, String> {
    if c.malloc_trim_threshold != 0 && !soliton::alloc::set_trim_threshold(c.malloc_trim_threshold)
    {
        eprintln!("soliton-load: --malloc-trim-threshold: not available with this C library");
    }
    let target = make_target(&c.url, c)?;
    let cores = c.cores.as_deref().map(target::parse_cores).transpose()?;
    let threads = c
        .threads
        .unwrap_or_else(|| cores.as_ref().map_or(1, Vec::len))
        .max(1);
    let sources = match &c.source {
        Some(s) => target::parse_sources(s)?,
        None => Vec::new(),
    };
    if conns == 0 {
        return Err("--connections must be at least 1".into());
    }
    let open_loop = matches!(kind, Kind::Rate { .. } | Kind::Fanout { .. });
    let rx_kernel = open_loop && c.rx_time == RxTimeArg::Kernel;
    let io = resolve_io(c.io)?;
    let mut cfg = BTreeMap::new();
    config_entry(&mut cfg, "connections", conns as u64);
    config_entry(&mut cfg, "threads", threads as u64);
    config_entry(
        &mut cfg,
        "cores",
        cores
            .as_ref()
            .map_or(Value::Null, |v| Value::from(v.clone())),
    );
    config_entry(&mut cfg, "sources", sources.len() as u64);
    config_entry(&mut cfg, "io", io.name());
    if open_loop {
        config_entry(
            &mut cfg,
            "rx_time",
            if rx_kernel { "kernel" } else { "loop" },
        );
    }
    config_entry(&mut cfg, "ramp", c.ramp);
    config_entry(&mut cfg, "duration_s", c.duration.as_secs_f64());
    config_entry(&mut cfg, "warmup_s", c.warmup.as_secs_f64());
    config_entry(&mut cfg, "protocols", c.protocols.clone());
    config_entry(
        &mut cfg,
        "deflate",
        format!("{:?}", c.deflate).to_lowercase(),
    );
    config_entry(
        &mut cfg,
        "server_pid",
        c.server_pid.map_or(Value::Null, Value::from),
    );
    match &kind {
        Kind::Echo { inflight } => config_entry(&mut cfg, "inflight", *inflight),
        Kind::Rate { rate } => {
            config_entry(&mut cfg, "rate", *rate);
            config_entry(&mut cfg, "tick", tick_entry(c.tick.0));
        }
        Kind::Connect { close, concurrency } => {
            config_entry(&mut cfg, "close", *close);
            config_entry(&mut cfg, "concurrency", *concurrency as u64);
        }
        Kind::Hold { steps, .. } => config_entry(
            &mut cfg,
            "steps",
            steps.iter().map(|s| *s as u64).collect::<Vec<_>>(),
        ),
        Kind::Fanout { rate, publishers } => {
            config_entry(&mut cfg, "rate", *rate);
            config_entry(&mut cfg, "publishers", *publishers as u64);
            config_entry(&mut cfg, "tick", tick_entry(c.tick.0));
        }
        Kind::Flood { window } => config_entry(&mut cfg, "window", *window as u64),
    }
    if let Some(m) = msg {
        config_entry(&mut cfg, "size", m.size.max(worker::STAMP) as u64);
        config_entry(&mut cfg, "text", m.text);
        config_entry(
            &mut cfg,
            "payload",
            format!("{:?}", m.payload).to_lowercase(),
        );
    }
    Ok(Spec {
        scenario: scenario.to_string(),
        target: Arc::new(target),
        subscriber_targets: Arc::new(Vec::new()),
        nodes: Arc::default(),
        sources: Arc::new(sources),
        threads,
        cores,
        conns,
        kind,
        size: msg.map_or(worker::STAMP, |m| m.size),
        text: msg.is_some_and(|m| m.text),
        payload: msg.map_or(worker::Payload::X, |m| m.payload),
        dedicated: c.deflate == DeflateArg::Dedicated,
        ramp: c.ramp.max(0.0),
        max_pending: c.max_pending.max(1),
        duration: c.duration,
        warmup: c.warmup,
        drain: c.drain,
        connect_timeout: c.connect_timeout,
        stall_timeout: c.timeout,
        close_timeout: c.close_timeout,
        tick: c.tick.0,
        rx_kernel,
        server_pid: c.server_pid,
        progress: !c.quiet,
        io,
        config: cfg,
    })
}

fn output(r: &Report, json: Option<&PathBuf>, plot: Option<&PathBuf>) -> Result<(), String> {
    print!("{}", r.table());
    if let Some(p) = json {
        let s = serde_json::to_string_pretty(r).map_err(|e| format!("json: {e}"))?;
        std::fs::write(p, s + "\n").map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("soliton-load: report written to {}", p.display());
    }
    if let Some(p) = plot {
        std::fs::write(p, plot::svg(r)).map_err(|e| format!("{}: {e}", p.display()))?;
        eprintln!("soliton-load: plot written to {}", p.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    procfs::init_clock();
    let cli = Cli::parse();
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("soliton-load: {e}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> Result<ExitCode, String> {
    let (report, common) = match cli.cmd {
        Cmd::Echo(a) => {
            if a.inflight == 0 {
                return Err("--inflight must be at least 1".into());
            }
            let s = spec(
                "echo",
                &a.common,
                a.connections,
                Kind::Echo {
                    inflight: a.inflight,
                },
                Some(&a.msg),
            )?;
            (run::run(&s), a.common)
        }
        Cmd::Rate(a) => {
            if a.rate.is_nan() || a.rate <= 0.0 {
                return Err("--rate must be positive".into());
            }
            let s = spec(
                "rate",
                &a.common,
                a.connections,
                Kind::Rate { rate: a.rate },
                Some(&a.msg),
            )?;
            (run::run(&s), a.common)
        }
        Cmd::Flood(a) => {
            if a.window == 0 {
                return Err("--window must be at least 1".into());
            }
            let s = spec(
                "flood",
                &a.common,
                a.connections,
                Kind::Flood { window: a.window },
                Some(&a.msg),
            )?;
            (run::run(&s), a.common)
        }
        Cmd::Connect(a) => {
            let s = spec(
                "connect",
                &a.common,
                a.connections,
                Kind::Connect {
                    close: a.close,
                    concurrency: a.concurrency.max(1),
                },
                None,
            )?;
            (run::run(&s), a.common)
        }
        Cmd::Hold(a) => {
            let mut steps = a.steps.clone();
            steps.retain(|&s| s > 0);
            let conns = steps.iter().copied().max().unwrap_or(a.connections);
            let s = spec(
                "hold",
                &a.common,
                conns,
                Kind::Hold {
                    steps,
                    settle: a.settle,
                },
                None,
            )?;
            (run::run(&s), a.common)
        }
        Cmd::Fanout(a) => {
            if a.publishers == 0 {
                return Err("--publishers must be at least 1".into());
            }
            let mut s = spec(
                "fanout",
                &a.common,
                a.publishers + a.subscribers,
                Kind::Fanout {
                    rate: a.rate.max(0.0),
                    publishers: a.publishers,
                },
                Some(&a.msg),
            )?;
            let subs = a.subscriber_urls.iter();
            s.subscriber_targets = Arc::new(
                subs.map(|u| make_target(u, &a.common))
                    .collect::<Result<_, _>>()?,
            );
            s.nodes = Arc::new(target::Nodes::new(&a.common.url, &a.subscriber_urls)?);
            if !a.subscriber_urls.is_empty() {
                config_entry(&mut s.config, "subscriber_urls", a.subscriber_urls.clone());
            }
            (run::run(&s), a.common)
        }
        Cmd::Slo(a) => {
            let targets = slo::parse_targets(&a.target)?;
            if a.start.is_nan() || a.start <= 0.0 {
                return Err("--start must be positive".into());
            }
            let mut base = spec(
                "rate",
                &a.common,
                a.connections,
                Kind::Rate { rate: a.start },
                Some(&a.msg),
            )?;
            base.config.insert(
                "targets".into(),
                Value::from(targets.iter().map(|t| t.text.clone()).collect::<Vec<_>>()),
            );
            let search = slo::Search {
                start: a.start,
                step: a.step.unwrap_or(a.start),
                max: a.max_rate,
                bisect: a.bisect,
                precision: a.precision.clamp(0.001, 1.0),
                max_steps: a.max_steps.max(1),
                max_errors: a.max_errors,
                min_achieved: a.min_achieved.clamp(0.0, 1.0),
            };
            let r = slo::run(&base, &targets, &search);
            println!();
            (r, a.common)
        }
        Cmd::Merge(a) => {
            let mut reports = Vec::new();
            for f in &a.files {
                let s = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
                let r: Report =
                    serde_json::from_str(&s).map_err(|e| format!("{}: {e}", f.display()))?;
                reports.push(r);
            }
            let r = report::merge(reports)?;
            output(&r, a.json.as_ref(), a.plot.as_ref())?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    output(&report, common.json.as_ref(), common.plot.as_ref())?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
