//! `compare`: Soliton side by side with peer engines (uWebSockets, fastwebsockets,
//! tokio-websockets, tokio-tungstenite) and the raw-TCP ceiling.
//!
//! Starts each server pinned to one core (`taskset -c 1`; Soliton also `--first-core 1`)
//! and drives it with `soliton-load` pinned to the other (`--cores 0 --server-pid PID
//! --json`), over a matrix of echo rows, an open-loop row at half of our peak, a
//! handshake storm and an idle hold, repeating every row interleaved (A B C … A B C …),
//! and a fan-out in the manner of uWebSockets' `broadcast_test` (every connection
//! publishes one message a round and receives everyone's, driven by
//! `soliton_bench::broadcast` on the load core, against the servers that have a
//! broadcast mode), and prints the medians, each server's ratio to ours, the server's and the load
//! generator's CPU per message, and a load-bound mark where the load side was the
//! busier one. The raw-TCP ceiling (`soliton-server --mode raw-tcp`) speaks no
//! WebSocket, so it is driven by a raw TCP closed-loop client in this process
//! (`soliton_bench::rawtcp`), pinned to the load core.
//!
//! uWebSockets (C++) is the one optional peer: `bench/peers/uwebsockets/build.sh` builds
//! it from sources that are not in this repository. When its binary is missing, compare
//! runs that script (unless `--no-build`), and if there is still no binary it skips
//! uWebSockets with one line in the output and in the report; the run goes on.
//!
//! ```sh
//! cargo run --release -p soliton-bench --bin compare -- --quick
//! cargo run --release -p soliton-bench --bin compare -- --json cmp.json --plot docs/img
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use soliton_bench::broadcast::{self, FanoutParams};
use soliton_bench::rawtcp::{self, RawParams};

/// Soliton against peer engines (uWebSockets, fastwebsockets, tokio-websockets,
/// tokio-tungstenite) and the raw-TCP ceiling: one server core, one load core,
/// interleaved repetitions, medians.
///
/// uWebSockets is optional: bench/peers/uwebsockets/build.sh builds it from uWebSockets'
/// and uSockets' C++ sources (not in this repository: UWS_SRC / USOCKETS_SRC, or the
/// snapshots it finds). compare runs that script only when the binary
/// (bench/peers/target/release/uwebsockets-echo) is missing and --no-build is not given;
/// it never rebuilds an existing one (rerun the script for that). Without the binary,
/// uWebSockets is skipped with a note in the output and in the report, and the run goes
/// on.
#[derive(Debug, Parser)]
#[command(name = "compare", version)]
struct Args {
    /// A short run (about 3 minutes): 1 repetition, 1 s windows, 5,000 held connections.
    #[arg(long)]
    quick: bool,
    /// Repetitions of every row (interleaved); default 3 (1 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Seconds measured per run; default 3 (1 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds of warm-up per run; default 1 (0.5 with --quick).
    #[arg(long)]
    warmup: Option<f64>,
    /// Servers to run, comma-separated (default: all): soliton-uring, soliton-epoll,
    /// uwebsockets, fastwebsockets, tokio-websockets, tokio-tungstenite, raw-tcp-uring,
    /// raw-tcp-epoll. uwebsockets is skipped (with a note) when it is not built.
    #[arg(long)]
    servers: Option<String>,
    /// Scenarios to run, comma-separated: echo, rate, flood, fanout, connect, churn, hold.
    /// connect: handshakes, the connections kept open until the end; churn: each
    /// connection closed (close handshake) as soon as it is open, so the server's CPU
    /// per connection counts its whole life (a connection storm). flood:
    /// 100 connections writing 20 B messages as fast as their sockets take them (no
    /// in-flight cap): throughput at saturation, echo latency under it, and the server's
    /// peak RSS. fanout: N connections to a broadcast server, each publishing one
    /// message a round and receiving all N (N² deliveries a round, as uWebSockets'
    /// broadcast_test), on the servers with a broadcast mode (soliton, uwebsockets,
    /// tokio-websockets); the server's CPU per delivery.
    #[arg(long, default_value = "echo,rate,flood,fanout,connect,churn,hold")]
    scenarios: String,
    /// Echo and fan-out rows to run, comma-separated ids (default: all): echo-100x20,
    /// echo-10x1k, echo-10x16k, echo-200x16k, echo-1000x125-16, echo-100x20-1024,
    /// fanout-100x20, fanout-1000x20, fanout-1000x1k.
    #[arg(long)]
    rows: Option<String>,
    /// Offered rate of the open-loop row (default: a quarter of soliton-uring's median
    /// at 100 × 20 B from the echo rows, where the load generator, which wakes for
    /// every send at these rates, still has room on its core).
    #[arg(long)]
    rate: Option<f64>,
    /// Handshakes per connect run; default 10,000 (2,000 with --quick).
    #[arg(long)]
    handshakes: Option<u64>,
    /// Idle connections per hold run; default 10,000 (5,000 with --quick).
    #[arg(long)]
    hold: Option<u64>,
    /// Write every figure (each run and the medians) to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write SVG latency plots to this directory: an overlay of every WebSocket
    /// server's latency distribution per latency row, and soliton-load's own plot of the
    /// open-loop row's last repetition for each server.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Start the peers with `--nodelay` (TCP_NODELAY on each connection). By default
    /// they run as their examples do, with Nagle's algorithm on; Soliton always sets
    /// TCP_NODELAY.
    #[arg(long)]
    peer_nodelay: bool,
    /// Do not build: use the binaries already built (and do not run
    /// bench/peers/uwebsockets/build.sh when uWebSockets' binary is missing).
    #[arg(long)]
    no_build: bool,
    /// Core for the servers.
    #[arg(long, default_value_t = 1)]
    server_core: usize,
    /// Core for the load generator.
    #[arg(long, default_value_t = 0)]
    load_core: usize,
    /// First port; each server start takes the next one (so no start waits for
    /// TIME_WAIT to clear).
    #[arg(long, default_value_t = 19100)]
    port: u16,
}

// ---------------------------------------------------------------------------------
// servers and rows

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// `soliton-server --backend B`.
    Soliton(&'static str),
    /// `soliton-server --mode raw-tcp --backend B`.
    Raw(&'static str),
    /// A binary of the `bench/peers` workspace.
    Peer(&'static str),
    /// An optional peer built outside cargo: its binary in the peers' target dir
    /// (`bench/peers/target/release`) and the script (relative to the repository root)
    /// that builds it from sources not in this repository. Skipped when not built.
    External(&'static str, &'static str),
}

#[derive(Clone, Copy, Debug)]
struct Spec {
    id: &'static str,
    label: &'static str,
    kind: Kind,
    /// Has a broadcast mode (every message to every connection): runs the fan-out rows.
    fanout: bool,
}

const SERVERS: [Spec; 8] = [
    Spec {
        id: "soliton-uring",
        label: "soliton (io_uring)",
        kind: Kind::Soliton("uring"),
        fanout: true,
    },
    Spec {
        id: "soliton-epoll",
        label: "soliton (epoll)",
        kind: Kind::Soliton("epoll"),
        fanout: true,
    },
    Spec {
        id: "uwebsockets",
        label: "uWebSockets (epoll)",
        kind: Kind::External("uwebsockets-echo", "bench/peers/uwebsockets/build.sh"),
        fanout: true,
    },
    Spec {
        id: "fastwebsockets",
        label: "fastwebsockets",
        kind: Kind::Peer("fastwebsockets-echo"),
        fanout: false,
    },
    Spec {
        id: "tokio-websockets",
        label: "tokio-websockets",
        kind: Kind::Peer("tokio-websockets-echo"),
        fanout: true,
    },
    Spec {
        id: "tokio-tungstenite",
        label: "tokio-tungstenite",
        kind: Kind::Peer("tungstenite-echo"),
        fanout: false,
    },
    Spec {
        id: "raw-tcp-uring",
        label: "raw TCP ceiling (io_uring)*",
        kind: Kind::Raw("uring"),
        fanout: false,
    },
    Spec {
        id: "raw-tcp-epoll",
        label: "raw TCP ceiling (epoll)*",
        kind: Kind::Raw("epoll"),
        fanout: false,
    },
];

/// The server the ratios are taken to.
const OURS: &str = "soliton-uring";

impl Spec {
    /// A peer engine, one the ratios' "best peer" is chosen from.
    fn is_peer(&self) -> bool {
        matches!(self.kind, Kind::Peer(_) | Kind::External(..))
    }
    fn is_raw(&self) -> bool {
        matches!(self.kind, Kind::Raw(_))
    }
    /// The raw-TCP ceiling on this Soliton server's backend.
    fn ceiling(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Soliton("uring") => Some("raw-tcp-uring"),
            Kind::Soliton(_) => Some("raw-tcp-epoll"),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Scenario {
    Echo {
        conns: usize,
        size: usize,
        inflight: usize,
    },
    Rate {
        conns: usize,
        size: usize,
    },
    /// Open flood: soliton-load flood (no in-flight cap).
    Flood {
        conns: usize,
        size: usize,
    },
    /// Fan-out rounds: `conns` connections to a broadcast server, `size`-byte messages.
    Fanout {
        conns: usize,
        size: usize,
    },
    /// Handshakes on 100 connections at a time: kept open until the end (`connect`), or
    /// each closed with a close handshake as soon as it is open (`churn`).
    Connect {
        close: bool,
    },
    Hold,
}

#[derive(Clone, Debug)]
struct Row {
    id: String,
    label: String,
    sc: Scenario,
}

fn echo_rows() -> Vec<Row> {
    let r = |id: &str, label: &str, conns, size, inflight| Row {
        id: id.into(),
        label: label.into(),
        sc: Scenario::Echo {
            conns,
            size,
            inflight,
        },
    };
    vec![
        r("echo-100x20", "100 conns × 20 B", 100, 20, 1),
        r("echo-10x1k", "10 conns × 1 KiB", 10, 1024, 1),
        r("echo-10x16k", "10 conns × 16 KiB", 10, 16 * 1024, 1),
        r("echo-200x16k", "200 conns × 16 KiB", 200, 16 * 1024, 1),
        r(
            "echo-1000x125-16",
            "1,000 conns × 125 B, 16 in flight",
            1000,
            125,
            16,
        ),
        r(
            "echo-100x20-1024",
            "100 conns × 20 B, 1,024 in flight (pipelined)",
            100,
            20,
            1024,
        ),
    ]
}

fn fanout_rows() -> Vec<Row> {
    let r = |id: &str, label: &str, conns, size| Row {
        id: id.into(),
        label: label.into(),
        sc: Scenario::Fanout { conns, size },
    };
    vec![
        r(
            "fanout-100x20",
            "fan-out 100 × 20 B (10,000 deliveries a round)",
            100,
            20,
        ),
        r(
            "fanout-1000x20",
            "fan-out 1,000 × 20 B (1,000,000 deliveries a round)",
            1000,
            20,
        ),
        r(
            "fanout-1000x1k",
            "fan-out 1,000 × 1 KiB (1,000,000 deliveries a round)",
            1000,
            1024,
        ),
    ]
}

// ---------------------------------------------------------------------------------
// one measurement

/// What one run measured. `value` is the row's headline figure: msg/s (echo, rate:
/// achieved), handshakes/s (connect), bytes per held connection (hold).
#[derive(Clone, Debug, Default)]
struct Sample {
    value: f64,
    server_us: Option<f64>,
    load_us: Option<f64>,
    server_busy: Option<f64>,
    /// The user-space share of the server's CPU over the whole run (the rest is the
    /// kernel's: TCP, syscalls, io_uring).
    server_user: Option<f64>,
    load_busy: f64,
    load_bound: bool,
    /// Neither side reached 70% of a core: other processes held the cores.
    contended: bool,
    errors: u64,
    /// Latency summary (µs): p50, p99, p99.9, max.
    lat: Option<[f64; 4]>,
    /// The latency histogram (soliton-load's base64 V2+DEFLATE encoding).
    hist: Option<String>,
    /// hold: marginal bytes per connection, connections held, baseline RSS.
    marginal: Option<f64>,
    held: Option<u64>,
    baseline_rss: Option<u64>,
    /// flood: the server's highest RSS during the run.
    rss_peak: Option<u64>,
    note: Option<String>,
    /// The repetition it belongs to (0-based): the runs of one repetition are back to
    /// back, one per server.
    rep: usize,
}

impl Sample {
    /// load-bound: the load generator's busiest thread was at least as busy as the
    /// server's (soliton-load's own verdict also asks for 50% of a core); contended:
    /// neither side reached 70% of a core.
    fn mark(&mut self) {
        let srv = self.server_busy.unwrap_or(0.0);
        self.load_bound = self.load_busy >= srv;
        self.contended = self.load_busy.max(srv) < 0.7;
    }

    fn to_json(&self) -> Value {
        json!({
            "value": self.value,
            "server_us_per_op": self.server_us,
            "load_us_per_op": self.load_us,
            "server_busiest_thread": self.server_busy,
            "server_user_share": self.server_user,
            "load_busiest_thread": self.load_busy,
            "load_bound": self.load_bound,
            "contended": self.contended,
            "errors": self.errors,
            "latency_us": self.lat.map(|l| json!({"p50": l[0], "p99": l[1], "p99_9": l[2], "max": l[3]})),
            "marginal_bytes_per_conn": self.marginal,
            "held": self.held,
            "baseline_rss": self.baseline_rss,
            "server_rss_peak": self.rss_peak,
            "note": self.note,
            "repetition": self.rep + 1,
        })
    }
}

fn f(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_f64()
}

/// The figures compare keeps from a soliton-load report.
fn sample_of(sc: Scenario, r: &Value) -> Sample {
    let cpu = &r["cpu"];
    let mut s = Sample {
        server_us: f(cpu, &["server_us_per_msg"]),
        load_us: f(cpu, &["load_us_per_msg"]),
        server_busy: f(cpu, &["server_busiest_thread"]),
        load_busy: f(cpu, &["load_busiest_thread"]).unwrap_or(0.0),
        errors: r["errors_total"].as_u64().unwrap_or(0),
        ..Sample::default()
    };
    let lat = |l: &Value| {
        Some([
            f(l, &["p50"])?,
            f(l, &["p99"])?,
            f(l, &["p99_9"])?,
            f(l, &["max"])?,
        ])
    };
    s.mark();
    match sc {
        Scenario::Echo { .. } | Scenario::Rate { .. } | Scenario::Flood { .. } => {
            s.value = f(r, &["messages", "received_per_s"]).unwrap_or(0.0);
            s.lat = lat(&r["latency_us"]);
            s.hist = r["latency_hist"].as_str().map(str::to_owned);
            s.rss_peak = cpu["server_rss_peak"].as_u64();
        }
        Scenario::Connect { .. } => {
            s.value = f(r, &["connections", "handshakes_per_s"]).unwrap_or(0.0);
            s.lat = lat(&r["connections"]["connect_us"]);
            s.hist = r["connections"]["connect_hist"].as_str().map(str::to_owned);
        }
        Scenario::Hold => {
            let h = &r["hold"];
            let last = h["steps"].as_array().and_then(|v| v.last());
            s.value = last.and_then(|l| f(l, &["bytes_per_conn"])).unwrap_or(0.0);
            s.held = last.and_then(|l| l["held"].as_u64());
            s.marginal = f(h, &["marginal_bytes_per_conn"]);
            s.baseline_rss = h["baseline_rss"].as_u64();
            // an idle hold has no messages: CPU per message means nothing here
            s.server_us = None;
            s.load_us = None;
            s.load_bound = false;
            s.contended = false;
        }
        Scenario::Fanout { .. } => {
            unreachable!("fan-out rows are measured by compare's own client (Env::run_fanout)")
        }
    }
    s
}

// ---------------------------------------------------------------------------------
// processes

/// A child process killed (SIGKILL) and reaped when dropped: on success, on error,
/// on panic and after Ctrl-C.
struct Proc {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(6)..].join("\n")
    }
}

/// User and system CPU seconds of process `pid` (/proc/PID/stat, 100 ticks/s).
fn user_sys(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
    let t = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v / 100.0)
    };
    Some((t(11)?, t(12)?))
}

/// Set by SIGINT / SIGTERM: every wait checks it, so guards drop and kill children.
fn stopped(stop: &AtomicBool) -> Result<(), String> {
    if stop.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

fn sleep_checked(d: Duration, stop: &AtomicBool) -> Result<(), String> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        stopped(stop)?;
        std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
    }
    Ok(())
}

struct Env {
    args: Args,
    reps: usize,
    duration: f64,
    warmup: f64,
    handshakes: u64,
    hold: u64,
    /// Soliton's binaries (soliton-server, soliton-load).
    bin_dir: PathBuf,
    /// The peers' binaries.
    peer_dir: PathBuf,
    tmp: PathBuf,
    next_port: u16,
    stop: Arc<AtomicBool>,
    /// One line per optional server that was asked for but is not built.
    skipped: Vec<String>,
}

impl Env {
    fn port(&mut self) -> u16 {
        let p = self.next_port;
        self.next_port = if p >= self.args.port.saturating_add(999) {
            self.args.port
        } else {
            p + 1
        };
        p
    }

    /// Starts `spec` on the server core, in its broadcast mode for `fanout`.
    fn start_server(&mut self, spec: &Spec, fanout: bool) -> Result<(Proc, u16), String> {
        let port = self.port();
        let core = self.args.server_core.to_string();
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &core]);
        match spec.kind {
            Kind::Soliton(b) | Kind::Raw(b) => {
                cmd.arg(self.bin_dir.join("soliton-server")).args([
                    "--backend",
                    b,
                    "--threads",
                    "1",
                    "--first-core",
                    &core,
                    "--port",
                    &port.to_string(),
                    "--mode",
                    if spec.is_raw() {
                        "raw-tcp"
                    } else if fanout {
                        "broadcast"
                    } else {
                        "echo"
                    },
                ]);
            }
            Kind::Peer(bin) | Kind::External(bin, _) => {
                cmd.arg(self.peer_dir.join(bin))
                    .args(["--port", &port.to_string()]);
                if self.args.peer_nodelay {
                    cmd.arg("--nodelay");
                }
                if fanout {
                    cmd.arg("--broadcast");
                }
            }
        }
        let log = self.tmp.join(format!("{}.log", spec.id));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start {} (taskset): {e}", spec.id))?;
        let mut p = Proc {
            child,
            what: spec.id.into(),
            log,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            stopped(&self.stop)?;
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(format!(
                    "{} exited at start ({st}): {}",
                    p.what,
                    p.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{} did not listen on {addr} in 10 s", p.what));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // let the probe connection's teardown pass
        sleep_checked(Duration::from_millis(50), &self.stop)?;
        Ok((p, port))
    }

    /// Runs soliton-load with `args` and returns its JSON report.
    fn load(&self, args: &[String], limit: Duration) -> Result<Value, String> {
        let json_path = self.tmp.join("run.json");
        let _ = std::fs::remove_file(&json_path);
        let log = self.tmp.join("load.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(self.bin_dir.join("soliton-load"))
            .args(args)
            .args(["--cores", &self.args.load_core.to_string(), "-q", "--json"])
            .arg(&json_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start soliton-load: {e}"))?;
        let mut p = Proc {
            child,
            what: "soliton-load".into(),
            log,
        };
        let deadline = Instant::now() + limit;
        let status = loop {
            stopped(&self.stop)?;
            if let Ok(Some(st)) = p.child.try_wait() {
                break st;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "soliton-load ran past {} s: {}",
                    limit.as_secs(),
                    p.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&json_path)
            .map_err(|_| format!("soliton-load ({status}) wrote no report: {}", p.log_tail()))?;
        serde_json::from_str(&text).map_err(|e| format!("soliton-load report: {e}"))
    }

    /// One run of `row` against `spec`.
    fn run(
        &mut self,
        row: &Row,
        spec: &Spec,
        rate: Option<f64>,
        plot: Option<PathBuf>,
    ) -> Result<Sample, String> {
        let fanout = matches!(row.sc, Scenario::Fanout { .. });
        let (mut server, port) = self.start_server(spec, fanout)?;
        let pid = server.pid();
        let cpu0 = user_sys(pid);
        let url = format!("ws://127.0.0.1:{port}/");
        let d = format!("{}s", self.duration);
        let w = format!("{}s", self.warmup);
        let limit = Duration::from_secs_f64(self.duration + self.warmup + 60.0);
        let mut a: Vec<String> = Vec::new();
        let mut push = |v: &[&str]| a.extend(v.iter().map(|s| s.to_string()));
        let sample = match row.sc {
            Scenario::Echo {
                conns,
                size,
                inflight,
            } if spec.is_raw() => self.run_raw(pid, port, conns, size, inflight)?,
            Scenario::Echo {
                conns,
                size,
                inflight,
            } => {
                push(&["echo", &url, "-c", &conns.to_string(), "-s"]);
                push(&[&size.to_string(), "-i", &inflight.to_string(), "-d", &d]);
                push(&["--warmup", &w, "--server-pid", &pid.to_string()]);
                sample_of(row.sc, &self.load(&a, limit)?)
            }
            Scenario::Rate { conns, size } => {
                let rate = rate.ok_or("no rate for the open-loop row")?;
                push(&["rate", &url, "-c", &conns.to_string(), "-s"]);
                push(&[&size.to_string(), "-r", &format!("{rate:.0}"), "-d", &d]);
                push(&["--warmup", &w, "--server-pid", &pid.to_string()]);
                if let Some(p) = &plot {
                    push(&["--plot", &p.to_string_lossy()]);
                }
                sample_of(row.sc, &self.load(&a, limit)?)
            }
            Scenario::Flood { conns, size } => {
                push(&["flood", &url, "-c", &conns.to_string(), "-s"]);
                push(&[&size.to_string(), "-d", &d, "--drain", "10s"]);
                push(&["--warmup", &w, "--server-pid", &pid.to_string()]);
                sample_of(row.sc, &self.load(&a, limit)?)
            }
            Scenario::Fanout { conns, size } => self.run_fanout(pid, port, conns, size)?,
            Scenario::Connect { close } => {
                push(&["connect", &url, "-c", &self.handshakes.to_string()]);
                push(&["--concurrency", "100", "--source", "127.0.0.2-127.0.0.9"]);
                if close {
                    push(&["--close"]);
                }
                push(&["--server-pid", &pid.to_string()]);
                sample_of(row.sc, &self.load(&a, limit)?)
            }
            Scenario::Hold => {
                let first = (self.hold / 5).max(1);
                push(&["hold", &url, "--steps", &format!("{first},{}", self.hold)]);
                push(&["--source", "127.0.0.2-127.0.0.9", "--settle", "1s"]);
                push(&["-d", "1s", "--server-pid", &pid.to_string()]);
                sample_of(row.sc, &self.load(&a, limit + Duration::from_secs(60))?)
            }
        };
        let mut sample = sample;
        if let (Some((u0, s0)), Some((u1, s1))) = (cpu0, user_sys(pid)) {
            let (u, s) = (u1 - u0, s1 - s0);
            sample.server_user = (u + s > 0.0).then(|| u / (u + s));
        }
        if let Ok(Some(st)) = server.child.try_wait() {
            return Err(format!(
                "{} died during the run ({st}): {}",
                spec.id,
                server.log_tail()
            ));
        }
        drop(server);
        Ok(sample)
    }

    /// Runs one of compare's own clients (`what`) on a thread pinned to the load core
    /// and returns its result (an error if it failed or compare was stopped).
    fn on_load_core<T: Send + 'static>(
        &self,
        what: &str,
        client: impl FnOnce(&AtomicBool) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let core = self.args.load_core;
        let stop = self.stop.clone();
        let r = std::thread::spawn(move || {
            if let Some(c) =
                core_affinity::get_core_ids().and_then(|ids| ids.into_iter().find(|c| c.id == core))
            {
                core_affinity::set_for_current(c);
            }
            client(&stop)
        })
        .join()
        .map_err(|_| format!("{what} panicked"))?
        .map_err(|e| format!("{what}: {e}"))?;
        stopped(&self.stop)?;
        Ok(r)
    }

    /// A fan-out row: compare's own broadcast_test-style client, on the load core.
    fn run_fanout(&self, pid: u32, port: u16, conns: usize, size: usize) -> Result<Sample, String> {
        let p = FanoutParams {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            conns,
            size,
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            server_pid: Some(pid),
        };
        let r = self.on_load_core("fan-out client", move |stop| broadcast::run(p, stop))?;
        if r.rounds == 0 {
            return Err("no whole round in the measured window".into());
        }
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        let per = |cpu: f64| cpu / r.deliveries as f64 * 1e6;
        let mut s = Sample {
            value: r.rate(),
            server_us: Some(per(r.server_cpu)),
            load_us: Some(per(r.cpu)),
            server_busy: Some(r.server_cpu / secs),
            load_busy: r.cpu / secs,
            note: Some(format!("{} rounds (compare's fan-out client)", r.rounds)),
            ..Sample::default()
        };
        s.mark();
        Ok(s)
    }

    /// The raw-TCP ceiling: compare's own raw closed-loop client, on the load core.
    fn run_raw(
        &self,
        pid: u32,
        port: u16,
        conns: usize,
        size: usize,
        inflight: usize,
    ) -> Result<Sample, String> {
        let p = RawParams {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            conns,
            size,
            inflight,
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            server_pid: Some(pid),
        };
        let r = self.on_load_core("raw TCP client", move |stop| rawtcp::run(p, stop))?;
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        let per = |cpu: f64| (r.messages > 0).then(|| cpu / r.messages as f64 * 1e6);
        let mut s = Sample {
            value: r.rate(),
            server_us: per(r.server_cpu),
            load_us: per(r.cpu),
            server_busy: Some(r.server_cpu / secs),
            load_busy: r.cpu / secs,
            errors: r.errors,
            note: Some("raw TCP client (compare)".into()),
            ..Sample::default()
        };
        s.mark();
        Ok(s)
    }
}

// ---------------------------------------------------------------------------------
// statistics and formatting

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Medians of a cell's samples.
#[derive(Clone, Debug, Default)]
struct Med {
    n: usize,
    value: f64,
    /// (max - min) / median of `value`.
    spread: f64,
    server_us: Option<f64>,
    load_us: Option<f64>,
    server_busy: Option<f64>,
    server_user: Option<f64>,
    load_busy: f64,
    load_bound: usize,
    contended: usize,
    errors: u64,
    lat: Option<[f64; 4]>,
    marginal: Option<f64>,
    held: Option<u64>,
    failed: usize,
}

fn med_of(samples: &[Sample], failed: usize) -> Med {
    let col = |g: &dyn Fn(&Sample) -> Option<f64>| {
        let mut v: Vec<f64> = samples.iter().filter_map(g).collect();
        median(&mut v)
    };
    let value = col(&|s| Some(s.value)).unwrap_or(0.0);
    let (lo, hi) = samples.iter().fold((f64::MAX, f64::MIN), |(a, b), s| {
        (a.min(s.value), b.max(s.value))
    });
    let lat = (0..4)
        .map(|i| col(&|s| s.lat.map(|l| l[i])))
        .collect::<Option<Vec<f64>>>()
        .map(|v| [v[0], v[1], v[2], v[3]]);
    Med {
        n: samples.len(),
        value,
        spread: if samples.len() > 1 && value > 0.0 {
            (hi - lo) / value
        } else {
            0.0
        },
        server_us: col(&|s| s.server_us),
        load_us: col(&|s| s.load_us),
        server_busy: col(&|s| s.server_busy),
        server_user: col(&|s| s.server_user),
        load_busy: col(&|s| Some(s.load_busy)).unwrap_or(0.0),
        load_bound: samples.iter().filter(|s| s.load_bound).count(),
        contended: samples.iter().filter(|s| s.contended).count(),
        errors: samples.iter().map(|s| s.errors).sum(),
        lat,
        marginal: col(&|s| s.marginal),
        held: samples.iter().filter_map(|s| s.held).min(),
        failed,
    }
}

fn commas(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn fmt_us(us: f64) -> String {
    if us < 100.0 {
        format!("{us:.1}µs")
    } else if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 100_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.0}%", v * 100.0))
}

/// Pads to `w` display columns (µ, ×, ÷ are one column each, not one byte).
fn pad(s: &str, w: usize, right: bool) -> String {
    let n = s.chars().count();
    let fill = " ".repeat(w.saturating_sub(n));
    if right {
        format!("{fill}{s}")
    } else {
        format!("{s}{fill}")
    }
}

/// A plain-text table with a header row; column 0 left-aligned, the rest right.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(&pad(c, w[i], i > 0));
        }
        s.trim_end().to_string()
    };
    let mut out = line(head.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------
// machine and date

fn date_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil from days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The commit and the files that differ from it (the engine, bench, loadgen).
fn git_state(root: &Path) -> Value {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    };
    let dirty: Vec<String> = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "engine",
        "loadgen",
        "bench/src",
    ])
    .unwrap_or_default()
    .lines()
    .map(|l| l.get(3..).unwrap_or(l).to_string())
    .collect();
    json!({"commit": git(&["rev-parse", "--short", "HEAD"]), "modified": dirty})
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".into(), |s| s.trim().to_string());
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or(String::new(), |s| s.trim().to_string());
    json!({
        "cpu": model,
        "cores": cores,
        "avx512": flags.contains(" avx512f"),
        "avx2": flags.contains(" avx2"),
        "kernel": kernel,
    })
}

fn machine_line(m: &Value) -> String {
    format!(
        "{} ({} cores{}), Linux {}",
        m["cpu"].as_str().unwrap_or(""),
        m["cores"],
        if m["avx512"].as_bool() == Some(true) {
            ", AVX-512"
        } else {
            ""
        },
        m["kernel"].as_str().unwrap_or("")
    )
}

// ---------------------------------------------------------------------------------
// plots

fn decode_hist(s: &str) -> Option<Histogram<u64>> {
    let bytes = soliton::proto::base64::decode(s)?;
    Deserializer::new().deserialize(&mut &bytes[..]).ok()
}

/// (log10(1/(1-q)), log10(µs)) points of a latency distribution.
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        let us = (v.value_iterated_to() as f64 / 1000.0).max(0.1);
        pts.push(((1.0 / (1.0 - q)).log10(), us.log10()));
    }
    let last = pts.last().map_or(0.0, |p| p.0);
    let x_max = last.max((h.len() as f64).log10()).max(1.0);
    pts.push((x_max, (h.max() as f64 / 1000.0).max(0.1).log10()));
    pts
}

const COLORS: [&str; 7] = [
    "#d62728", "#ff7f0e", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#7f7f7f",
];

/// An SVG of latency distributions (percentile on a log 1/(1-q) axis, latency on a
/// log axis), one line per server.
fn overlay_svg(title: &str, subtitle: &str, lines: &[(String, bool, Histogram<u64>)]) -> String {
    let (w, h, left, right, top, bottom) = (960.0, 460.0, 80.0, 310.0, 60.0, 50.0);
    let curves: Vec<Vec<(f64, f64)>> = lines.iter().map(|l| curve(&l.2)).collect();
    let x_max = curves
        .iter()
        .flatten()
        .map(|p| p.0)
        .fold(1.0, f64::max)
        .ceil();
    let y_lo = curves
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(f64::MAX, f64::min)
        .floor();
    let y_hi = curves
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(f64::MIN, f64::max)
        .ceil()
        .max(y_lo + 1.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let px = |x: f64| left + x / x_max * pw;
    let py = |y: f64| top + ph - (y - y_lo) / (y_hi - y_lo) * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="100%" height="100%" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="22" font-size="15" font-weight="bold">{}</text>"##,
        esc(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="40" fill="#555">{}</text>"##,
        esc(subtitle)
    );
    // grid: decades of latency, nines of percentile
    let mut y = y_lo;
    while y <= y_hi + 1e-9 {
        let yy = py(y);
        let label = match y.round() as i32 {
            e if e < 0 => format!("{}µs", 10f64.powi(e)),
            e @ 0..=2 => format!("{}µs", 10i64.pow(e as u32)),
            e @ 3..=5 => format!("{}ms", 10i64.pow(e as u32 - 3)),
            e => format!("{}s", 10i64.pow(e as u32 - 6)),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0,
            label
        );
        y += 1.0;
    }
    for k in 0..=(x_max as i32) {
        let xx = px(f64::from(k));
        let label = match k {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            k => format!("99.{}%", "9".repeat(k as usize - 2)).replace("99.%", "99%"),
        };
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" y1="{top}" x2="{xx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            top + ph,
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">percentile</text>"##,
        left + pw / 2.0,
        h - 10.0
    );
    let _ = writeln!(
        s,
        r##"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle" fill="#555">latency (log scale)</text>"##,
        top + ph / 2.0
    );
    for (i, ((name, strong, hist), pts)) in lines.iter().zip(&curves).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let width = if *strong { 2.5 } else { 1.2 };
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="{color}" stroke-width="{width}" points="{}"/>"##,
            path.join(" ")
        );
        let ly = top + 10.0 + i as f64 * 34.0;
        let lx = left + pw + 15.0;
        let p = |q: f64| fmt_us(hist.value_at_quantile(q) as f64 / 1000.0);
        let _ = writeln!(
            s,
            r##"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="{width}"/><text x="{:.1}" y="{:.1}"{}>{}</text><text x="{:.1}" y="{:.1}" fill="#555" font-size="11">p50 {} p99 {} p99.9 {}</text>"##,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            if *strong {
                r#" font-weight="bold""#
            } else {
                ""
            },
            esc(name),
            lx + 26.0,
            ly + 18.0,
            p(0.5),
            p(0.99),
            p(0.999)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

// ---------------------------------------------------------------------------------
// the run

/// Results: row id → server id → samples, and failures.
#[derive(Default)]
struct Results {
    samples: BTreeMap<(String, String), Vec<Sample>>,
    failed: BTreeMap<(String, String), Vec<String>>,
}

impl Results {
    fn med(&self, row: &str, server: &str) -> Option<Med> {
        let key = (row.to_string(), server.to_string());
        let s = self.samples.get(&key).map_or(&[][..], |v| &v[..]);
        let failed = self.failed.get(&key).map_or(0, Vec::len);
        (!s.is_empty() || failed > 0).then(|| med_of(s, failed))
    }
}

fn build(root: &Path, peers: &Path, servers: &[Spec]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = |what: &str, cmd: &mut Command| -> Result<(), String> {
        println!("building {what}: {cmd:?}");
        let t = Instant::now();
        let st = cmd
            .status()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if !st.success() {
            return Err(format!("building {what} failed ({st})"));
        }
        println!("  done in {:.0} s", t.elapsed().as_secs_f64());
        Ok(())
    };
    run(
        "soliton-server and soliton-load",
        Command::new(&cargo).current_dir(root).args([
            "build",
            "--release",
            "-p",
            "soliton-load",
            "-p",
            "soliton-bench",
        ]),
    )?;
    // the peers' own workspace and target dir (CARGO_TARGET_DIR is overridden)
    run(
        "the peers (bench/peers)",
        Command::new(&cargo)
            .current_dir(peers)
            .args(["build", "--release", "--target-dir"])
            .arg(peers.join("target")),
    )?;
    // optional peers: their script, only when the binary is missing; a failure (no
    // sources, no compiler) is not an error: the server is skipped later
    for s in servers {
        let Kind::External(bin, script) = s.kind else {
            continue;
        };
        if peers.join("target/release").join(bin).exists() {
            continue;
        }
        let mut cmd = Command::new("bash");
        cmd.current_dir(root).arg(root.join(script));
        if let Err(e) = run(s.label, &mut cmd) {
            println!("  {e}: {} is skipped unless it is built", s.label);
        }
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("compare: cannot install a signal handler: {e}");
        }
    }
    match real_main(args, stop) {
        Ok(ok) => std::process::exit(if ok { 0 } else { 1 }),
        Err(e) => {
            eprintln!("compare: {e}");
            std::process::exit(2);
        }
    }
}

fn real_main(args: Args, stop: Arc<AtomicBool>) -> Result<bool, String> {
    // before anything is built or started
    let scen = scenarios(&args.scenarios)?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace root")?
        .to_path_buf();
    let peers = root.join("bench/peers");
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin_dir = exe.parent().ok_or("no binary directory")?.to_path_buf();
    let peer_dir = peers.join("target/release");
    let wanted: Vec<String> = args
        .servers
        .as_deref()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect())
        .unwrap_or_else(|| SERVERS.iter().map(|s| s.id.to_string()).collect());
    let mut servers: Vec<Spec> = SERVERS
        .iter()
        .filter(|s| wanted.iter().any(|w| w == s.id))
        .copied()
        .collect();
    if let Some(bad) = wanted.iter().find(|w| !SERVERS.iter().any(|s| s.id == *w)) {
        return Err(format!("unknown server {bad:?}"));
    }
    if !args.no_build {
        build(&root, &peers, &servers)?;
    }
    let mut skipped = Vec::new();
    servers.retain(|s| match s.kind {
        Kind::External(bin, script) if !peer_dir.join(bin).exists() => {
            let name = s.label.split(" (").next().unwrap_or(s.label);
            let line = format!("{name} not built: run {script}");
            println!("{line}; skipped");
            skipped.push(line);
            false
        }
        _ => true,
    });
    for s in &servers {
        let bin = match s.kind {
            Kind::Peer(b) | Kind::External(b, _) => peer_dir.join(b),
            _ => bin_dir.join("soliton-server"),
        };
        if !bin.exists() {
            return Err(format!(
                "{} not found: build it (compare builds everything unless --no-build)",
                bin.display()
            ));
        }
    }
    if !bin_dir.join("soliton-load").exists() {
        return Err(format!(
            "{} not found: cargo build --release -p soliton-load",
            bin_dir.join("soliton-load").display()
        ));
    }
    let has = |x: &str| scen.iter().any(|s| s == x);
    let quick = args.quick;
    let tmp = std::env::temp_dir().join(format!("soliton-compare-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    struct RmDir(PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _rm = RmDir(tmp.clone());
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut env = Env {
        reps: args.reps.unwrap_or(if quick { 1 } else { 3 }).max(1),
        duration: args.duration.unwrap_or(if quick { 1.0 } else { 3.0 }),
        warmup: args.warmup.unwrap_or(if quick { 0.5 } else { 1.0 }),
        handshakes: args.handshakes.unwrap_or(if quick { 2000 } else { 10_000 }),
        hold: args.hold.unwrap_or(if quick { 5000 } else { 10_000 }),
        bin_dir,
        peer_dir,
        tmp,
        next_port: args.port,
        stop: stop.clone(),
        skipped,
        args,
    };
    let date = date_utc();
    let mach = machine();
    let git = git_state(&root);
    let load_start = loadavg();
    let t_start = Instant::now();
    println!(
        "compare: {date}, {}; servers on core {}, soliton-load on core {}; {} repetition(s), {} s windows after {} s warm-up; load average {load_start}",
        machine_line(&mach),
        env.args.server_core,
        env.args.load_core,
        env.reps,
        env.duration,
        env.warmup
    );
    println!(
        "commit {}{}",
        git["commit"].as_str().unwrap_or("?"),
        match git["modified"].as_array().map_or(0, Vec::len) {
            0 => String::new(),
            n => format!(" with {n} modified file(s): {}", git["modified"]),
        }
    );

    let mut res = Results::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut rate_used = None;
    let one = |env: &mut Env,
               res: &mut Results,
               rep: usize,
               row: &Row,
               spec: &Spec,
               rate: Option<f64>,
               plot: Option<PathBuf>|
     -> Result<(), String> {
        let t = Instant::now();
        let key = (row.id.clone(), spec.id.to_string());
        match env.run(row, spec, rate, plot) {
            Ok(s) => {
                let unit = match row.sc {
                    Scenario::Connect { .. } => "handshakes/s",
                    Scenario::Fanout { .. } => "deliveries/s",
                    Scenario::Hold => "B/conn",
                    _ => "msg/s",
                };
                println!(
                    "[{}/{}] {:<34} {:<28} {:>10} {unit}  server {} µs  load {} µs{}{}  ({:.1} s)",
                    rep + 1,
                    env.reps,
                    row.label,
                    spec.label,
                    commas(s.value),
                    opt(s.server_us, 2),
                    opt(s.load_us, 2),
                    if s.load_bound { "  load-bound" } else { "" },
                    if s.errors > 0 {
                        format!("  {} errors", s.errors)
                    } else {
                        String::new()
                    },
                    t.elapsed().as_secs_f64()
                );
                res.samples
                    .entry(key)
                    .or_default()
                    .push(Sample { rep, ..s });
            }
            Err(e) => {
                stopped(&env.stop)?;
                println!(
                    "[{}/{}] {:<34} {:<28} FAILED: {e}",
                    rep + 1,
                    env.reps,
                    row.label,
                    spec.label
                );
                res.failed.entry(key).or_default().push(e);
            }
        }
        Ok(())
    };

    // every row on every server, repetitions interleaved (A B C … A B C …)
    let interleaved =
        |env: &mut Env, res: &mut Results, rows: &[Row], specs: &[Spec]| -> Result<(), String> {
            for rep in 0..env.reps {
                for row in rows {
                    for spec in specs {
                        one(env, res, rep, row, spec, None, None)?;
                    }
                }
            }
            Ok(())
        };
    // the rows --rows names (all without it)
    let only = |mut v: Vec<Row>, only: &Option<String>| {
        if let Some(only) = only {
            v.retain(|r| only.split(',').any(|o| o.trim() == r.id));
        }
        v
    };

    let result: Result<(), String> = (|| {
        // phase 1: echo rows, interleaved
        if has("echo") {
            let echo = only(echo_rows(), &env.args.rows);
            interleaved(&mut env, &mut res, &echo, &servers)?;
            rows.extend(echo);
        }
        let ws: Vec<Spec> = servers.iter().filter(|s| !s.is_raw()).copied().collect();
        // phase 2: open loop at a quarter of our peak: at half of it (2026-12-06, 117,000
        // msg/s) the load generator's core was 99 % busy for every server, and the p99s
        // were as much its queue as the server's (0.27-1.3 ms from run to run, against
        // 0.12-0.15 ms at 50,000)
        if has("rate") && !ws.is_empty() {
            let peak = res.med("echo-100x20", OURS).map(|m| m.value);
            let rate = env
                .args
                .rate
                .or(peak.map(|p| (p / 4.0 / 1000.0).round() * 1000.0))
                .ok_or("the open-loop row needs --rate, or the echo rows with soliton-uring")?;
            rate_used = Some(rate);
            let row = Row {
                id: "rate-100x20".into(),
                label: format!("open loop 100 × 20 B at {} msg/s", commas(rate)),
                sc: Scenario::Rate {
                    conns: 100,
                    size: 20,
                },
            };
            for rep in 0..env.reps {
                for spec in &ws {
                    let plot = env
                        .args
                        .plot
                        .as_ref()
                        .filter(|_| rep + 1 == env.reps)
                        .map(|d| d.join(format!("openloop-{}.svg", spec.id)));
                    one(&mut env, &mut res, rep, &row, spec, Some(rate), plot)?;
                }
            }
            rows.push(row);
        }
        // phase 2b: open flood
        if has("flood") && !ws.is_empty() {
            let row = Row {
                id: "flood-100x20".into(),
                label: "open flood: 100 conns × 20 B, no in-flight cap".into(),
                sc: Scenario::Flood {
                    conns: 100,
                    size: 20,
                },
            };
            interleaved(&mut env, &mut res, std::slice::from_ref(&row), &ws)?;
            rows.push(row);
        }
        // phase 2c: fan-out rounds, on the servers with a broadcast mode
        let fan: Vec<Spec> = servers.iter().filter(|s| s.fanout).copied().collect();
        if has("fanout") && !fan.is_empty() {
            let fanout = only(fanout_rows(), &env.args.rows);
            interleaved(&mut env, &mut res, &fanout, &fan)?;
            rows.extend(fanout);
        }
        // phase 3: handshakes per second, the connections kept open (connect) or each
        // closed as soon as it is open (churn: a connection storm)
        let n = commas(env.handshakes as f64);
        for (id, close, label) in [
            ("connect", false, format!("connect: {n} handshakes")),
            (
                "churn",
                true,
                format!("churn: {n} connections opened and closed"),
            ),
        ] {
            if has(id) && !ws.is_empty() {
                let row = Row {
                    id: id.into(),
                    label,
                    sc: Scenario::Connect { close },
                };
                interleaved(&mut env, &mut res, std::slice::from_ref(&row), &ws)?;
                rows.push(row);
            }
        }
        // phase 4: idle connections
        if has("hold") && !ws.is_empty() {
            let row = Row {
                id: "hold".into(),
                label: format!("hold: {} idle connections", commas(env.hold as f64)),
                sc: Scenario::Hold,
            };
            interleaved(&mut env, &mut res, std::slice::from_ref(&row), &ws)?;
            rows.push(row);
        }
        Ok(())
    })();
    let interrupted = result.is_err();
    if let Err(e) = &result {
        println!("compare: {e}; the tables below cover what was measured");
    }
    let load_end = loadavg();
    let wall = t_start.elapsed().as_secs_f64();
    let report = report(&env, &servers, &rows, &res);
    print!("{report}");
    println!(
        "load average: {load_start} at the start, {load_end} at the end; {:.0} s in all",
        wall
    );
    if let Some(dir) = &env.args.plot {
        for row in &rows {
            if !matches!(
                row.sc,
                Scenario::Echo { .. } | Scenario::Rate { .. } | Scenario::Flood { .. }
            ) {
                continue;
            }
            let file = dir.join(format!("latency-{}.svg", row.id));
            if let Some(svg) = plot_row(&env, &servers, row, &res, &date, &mach) {
                std::fs::write(&file, svg).map_err(|e| format!("{}: {e}", file.display()))?;
                println!("plot: {}", file.display());
            }
        }
    }
    if let Some(path) = &env.args.json {
        let mut doc = json_doc(
            &env,
            &servers,
            &rows,
            &res,
            &date,
            &mach,
            &load_start,
            &load_end,
            wall,
            rate_used,
        );
        doc["git"] = git.clone();
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("json: {}", path.display());
    }
    if interrupted {
        return Err("stopped before the end".into());
    }
    Ok(res.failed.is_empty())
}

/// The best peer of a row: highest throughput (echo, connect), lowest p99 (rate),
/// least memory (hold).
fn best_peer(servers: &[Spec], row: &Row, res: &Results) -> Option<(Spec, Med)> {
    let key = |m: &Med| match row.sc {
        Scenario::Rate { .. } => -m.lat.map_or(f64::MAX, |l| l[1]),
        Scenario::Hold => -m.value,
        _ => m.value,
    };
    servers
        .iter()
        .filter(|s| s.is_peer())
        .filter_map(|s| res.med(&row.id, s.id).map(|m| (*s, m)))
        .filter(|(_, m)| m.n > 0)
        .max_by(|a, b| key(&a.1).total_cmp(&key(&b.1)))
}

/// The most frugal peer of a row: the lowest median server CPU per message, and that
/// figure.
fn frugal_peer(servers: &[Spec], row: &Row, res: &Results) -> Option<(Spec, f64)> {
    servers
        .iter()
        .filter(|s| s.is_peer())
        .filter_map(|s| {
            res.med(&row.id, s.id)
                .and_then(|m| m.server_us)
                .map(|u| (*s, u))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The most frugal peer of a row ([`frugal_peer`]) and, for `ours`, the median over
/// repetitions of that peer's CPU per message ÷ ours in the same repetition, with the
/// number of repetitions that had both. The runs of a repetition are back to back, so
/// this ratio leaves out how the machine drifts between repetitions, which the ratio of
/// the two medians does not. None for the rows whose figure is not CPU per message
/// (the open-loop row's latency, idle connections' bytes).
fn paired_cpu(
    servers: &[Spec],
    row: &Row,
    res: &Results,
    ours: &str,
) -> Option<(Spec, f64, usize)> {
    if matches!(row.sc, Scenario::Rate { .. } | Scenario::Hold) {
        return None;
    }
    let peer = frugal_peer(servers, row, res)?.0;
    let runs = |id: &str| {
        res.samples
            .get(&(row.id.clone(), id.to_string()))
            .map_or(&[][..], |v| &v[..])
    };
    let mut ratios: Vec<f64> = runs(ours)
        .iter()
        .filter_map(|o| {
            let p = runs(peer.id).iter().find(|p| p.rep == o.rep)?;
            Some(p.server_us? / o.server_us.filter(|u| *u > 0.0)?)
        })
        .collect();
    let n = ratios.len();
    median(&mut ratios).map(|r| (peer, r, n))
}

fn report(env: &Env, servers: &[Spec], rows: &[Row], res: &Results) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmedians of {} interleaved repetition(s); ÷ours: ratio to {OURS}; µs/msg: CPU seconds (user + system, /proc/PID/stat) over the window ÷ messages; user: the user-space share of the server's CPU (the rest is the kernel's TCP and syscalls); busy: busiest thread's share of a core; load-bound: the load generator's busiest thread was at least as busy as the server's (k of n runs); contended: neither side reached 70% of a core (other processes held the cores: compare CPU per message, not msg/s)",
        env.reps
    );
    for line in &env.skipped {
        let _ = writeln!(out, "\n{line} (skipped)");
    }
    for row in rows {
        let _ = writeln!(out, "\n{}", row.label);
        let ours = res.med(&row.id, OURS);
        let mut t = Vec::new();
        let head: Vec<&str> = match row.sc {
            Scenario::Echo { .. } => vec![
                "server",
                "msg/s",
                "÷ours",
                "spread",
                "server µs/msg",
                "user",
                "load µs/msg",
                "server busy",
                "load busy",
                "",
            ],
            Scenario::Fanout { .. } => vec![
                "server",
                "deliveries/s",
                "÷ours",
                "spread",
                "server µs/delivery",
                "user",
                "load µs/delivery",
                "server busy",
                "load busy",
                "",
            ],
            Scenario::Rate { .. } => vec![
                "server",
                "achieved msg/s",
                "p50",
                "p99",
                "p99.9",
                "max",
                "p99 ÷ours",
                "server µs/msg",
                "load µs/msg",
                "",
            ],
            Scenario::Connect { .. } => vec![
                "server",
                "handshakes/s",
                "÷ours",
                "spread",
                "connect p50",
                "p99",
                "server µs/hs",
                "load µs/hs",
                "",
            ],
            Scenario::Flood { .. } => vec![
                "server",
                "msg/s",
                "÷ours",
                "server µs/msg",
                "p50",
                "p99",
                "max",
                "server RSS peak",
                "load µs/msg",
                "",
            ],
            Scenario::Hold => vec![
                "server",
                "held",
                "B/conn (average)",
                "B/conn (marginal)",
                "÷ours",
                "baseline RSS",
                "",
            ],
        };
        for spec in servers {
            let Some(m) = res.med(&row.id, spec.id) else {
                continue;
            };
            if m.n == 0 {
                let mut r = vec![spec.label.to_string(), "FAILED".into()];
                r.resize(head.len(), String::new());
                t.push(r);
                continue;
            }
            let mut flags = Vec::new();
            if m.load_bound > 0 {
                flags.push(format!("load-bound {}/{}", m.load_bound, m.n));
            }
            if m.contended > 0 {
                flags.push(format!("contended {}/{}", m.contended, m.n));
            }
            if m.errors > 0 {
                flags.push(format!("{} errors", m.errors));
            }
            if m.failed > 0 {
                flags.push(format!("{} failed", m.failed));
            }
            let ratio = |v: f64, o: Option<f64>| {
                o.filter(|o| *o > 0.0)
                    .map_or("-".into(), |o| format!("{:.2}", v / o))
            };
            let r = match row.sc {
                Scenario::Echo { .. } | Scenario::Connect { .. } | Scenario::Fanout { .. } => {
                    let mut r = vec![
                        spec.label.to_string(),
                        commas(m.value),
                        ratio(m.value, ours.as_ref().map(|o| o.value)),
                        format!("±{:.0}%", m.spread * 50.0),
                    ];
                    if let Scenario::Connect { .. } = row.sc {
                        r.push(m.lat.map_or("-".into(), |l| fmt_us(l[0])));
                        r.push(m.lat.map_or("-".into(), |l| fmt_us(l[1])));
                    }
                    let digits = if let Scenario::Fanout { .. } = row.sc {
                        3
                    } else {
                        2
                    };
                    let echo_like =
                        matches!(row.sc, Scenario::Echo { .. } | Scenario::Fanout { .. });
                    r.push(opt(m.server_us, digits));
                    if echo_like {
                        r.push(pct(m.server_user));
                    }
                    r.push(opt(m.load_us, digits));
                    if echo_like {
                        r.push(pct(m.server_busy));
                        r.push(pct(Some(m.load_busy)));
                    }
                    r.push(flags.join(", "));
                    r
                }
                Scenario::Rate { .. } => {
                    let l = m.lat.unwrap_or_default();
                    vec![
                        spec.label.to_string(),
                        commas(m.value),
                        fmt_us(l[0]),
                        fmt_us(l[1]),
                        fmt_us(l[2]),
                        fmt_us(l[3]),
                        ratio(l[1], ours.as_ref().and_then(|o| o.lat).map(|o| o[1])),
                        opt(m.server_us, 2),
                        opt(m.load_us, 2),
                        flags.join(", "),
                    ]
                }
                Scenario::Flood { .. } => {
                    let l = m.lat.unwrap_or_default();
                    vec![
                        spec.label.to_string(),
                        commas(m.value),
                        ratio(m.value, ours.as_ref().map(|o| o.value)),
                        opt(m.server_us, 3),
                        fmt_us(l[0]),
                        fmt_us(l[1]),
                        fmt_us(l[3]),
                        res.samples
                            .get(&(row.id.clone(), spec.id.to_string()))
                            .and_then(|v| {
                                let mut p: Vec<f64> = v
                                    .iter()
                                    .filter_map(|s| s.rss_peak.map(|r| r as f64))
                                    .collect();
                                median(&mut p)
                            })
                            .map_or("-".into(), |b| format!("{:.1} MiB", b / 1048576.0)),
                        opt(m.load_us, 3),
                        flags.join(", "),
                    ]
                }
                Scenario::Hold => vec![
                    spec.label.to_string(),
                    m.held.map_or("-".into(), |h| commas(h as f64)),
                    commas(m.value),
                    opt(m.marginal, 0),
                    ratio(m.value, ours.as_ref().map(|o| o.value)),
                    res.samples
                        .get(&(row.id.clone(), spec.id.to_string()))
                        .and_then(|v| v.iter().filter_map(|s| s.baseline_rss).min())
                        .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0)),
                    flags.join(", "),
                ],
            };
            t.push(r);
        }
        out.push_str(&table(&head, &t));
        match row.sc {
            Scenario::Echo { .. } if servers.iter().any(Spec::is_raw) => {
                out.push_str("* raw TCP ceiling: soliton-server --mode raw-tcp (no WebSocket), driven by compare's own raw TCP closed-loop client on the load core (soliton-load speaks only WebSocket); its load µs/msg is that client's\n");
            }
            Scenario::Rate { .. } => out.push_str(
                "latency from the intended send time (coordinated omission corrected); p99 ÷ours > 1: a higher p99 than ours\n",
            ),
            Scenario::Flood { .. } => out.push_str(
                "every message stamped; latency from the load generator's queueing of a message to its echo; errors: echoes missing or out of order (a server that drops what it cannot send shows here); RSS peak: median over repetitions of the highest RSS sampled every 20 ms\n",
            ),
            Scenario::Fanout { .. } => out.push_str(
                "compare's fan-out client (soliton_bench::broadcast, as uWebSockets' broadcast_test): each round every connection sends one message and waits for all N (every frame parsed and checked); the window runs from a round's end to a round's end; µs/delivery: CPU over the window ÷ (rounds × N²); peers without a broadcast mode are not run\n",
            ),
            Scenario::Hold => out.push_str(
                "average: (RSS − RSS before connecting) ÷ held at the last step; marginal: ΔRSS ÷ Δheld between the two steps\n",
            ),
            _ => {}
        }
    }
    // the targets: ours ÷ best peer, ours ÷ ceiling
    let _ = writeln!(
        out,
        "\nsummary: ours ÷ best peer (≥ 1.0 now; goal ≥ 1.2) and ours ÷ raw-TCP ceiling (goal ≥ 0.9)"
    );
    let mut t = Vec::new();
    let ours_ids: Vec<&Spec> = servers
        .iter()
        .filter(|s| matches!(s.kind, Kind::Soliton(_)))
        .collect();
    for row in rows {
        let Some((bp, bm)) = best_peer(servers, row, res).filter(|b| b.1.value > 0.0) else {
            continue;
        };
        for o in &ours_ids {
            let Some(om) = res.med(&row.id, o.id).filter(|m| m.n > 0) else {
                continue;
            };
            let (vs_best, eff) = match row.sc {
                Scenario::Echo { .. }
                | Scenario::Connect { .. }
                | Scenario::Flood { .. }
                | Scenario::Fanout { .. } => (
                    om.value / bm.value,
                    // CPU per message: the most efficient peer's ÷ ours
                    frugal_peer(servers, row, res)
                        .map(|(_, p)| p)
                        .zip(om.server_us)
                        .map(|(p, o)| p / o),
                ),
                Scenario::Rate { .. } => (
                    bm.lat.map_or(0.0, |l| l[1]) / om.lat.map_or(f64::MAX, |l| l[1]),
                    None,
                ),
                Scenario::Hold => (bm.value / om.value.max(1e-9), None),
            };
            let ceiling = o
                .ceiling()
                .and_then(|c| res.med(&row.id, c))
                .filter(|m| m.n > 0 && matches!(row.sc, Scenario::Echo { .. }));
            let verdict = if vs_best >= 1.2 {
                "goal met"
            } else if vs_best >= 1.0 {
                "≥ 1.0"
            } else {
                "BELOW 1.0"
            };
            let paired = paired_cpu(servers, row, res, o.id);
            t.push(vec![
                row.label.clone(),
                o.label.to_string(),
                bp.label.to_string(),
                format!("{vs_best:.2}"),
                eff.map_or("-".into(), |e| format!("{e:.2}")),
                paired.map_or("-".into(), |(_, r, n)| format!("{r:.2} ({n})")),
                ceiling
                    .as_ref()
                    .map_or("-".into(), |c| format!("{:.2}", om.value / c.value)),
                ceiling
                    .as_ref()
                    .and_then(|c| c.server_us.zip(om.server_us))
                    .map_or("-".into(), |(c, o)| format!("{:.2}", c / o)),
                verdict.into(),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "row",
            "ours",
            "best peer",
            "ours÷best",
            "CPU/msg: best peer÷ours",
            "paired (reps)",
            "÷ceiling msg/s",
            "÷ceiling CPU/msg",
            "",
        ],
        &t,
    ));
    out.push_str("ours÷best: msg/s or handshakes/s ratio; for the open-loop row the best peer's p99 ÷ ours; for hold the best peer's bytes per connection ÷ ours (> 1: ours is better in every case). CPU/msg: the most frugal peer's server µs/msg ÷ ours (> 1: ours spends less per message), the fair figure when a row is load-bound; paired: the median over repetitions of that ratio within each repetition (its runs back to back), which leaves out the machine's drift between repetitions, and how many repetitions it pairs. ÷ceiling: against the raw-TCP ceiling on the same backend (throughput, and its µs/msg ÷ ours)\n");
    out
}

fn plot_row(
    env: &Env,
    servers: &[Spec],
    row: &Row,
    res: &Results,
    date: &str,
    mach: &Value,
) -> Option<String> {
    let best = best_peer(servers, row, res).map(|b| b.0.id);
    let mut lines = Vec::new();
    for spec in servers.iter().filter(|s| !s.is_raw()) {
        let v = res.samples.get(&(row.id.clone(), spec.id.to_string()))?;
        // the representative run: the one with the median p99
        let mut by: Vec<&Sample> = v.iter().filter(|s| s.hist.is_some()).collect();
        by.sort_by(|a, b| {
            let p = |s: &Sample| s.lat.map_or(0.0, |l| l[1]);
            p(a).total_cmp(&p(b))
        });
        let Some(s) = by.get(by.len() / 2) else {
            continue;
        };
        let Some(h) = s.hist.as_deref().and_then(decode_hist) else {
            continue;
        };
        let strong = matches!(spec.kind, Kind::Soliton(_)) || Some(spec.id) == best;
        let name = if Some(spec.id) == best {
            format!("{} (best peer)", spec.label)
        } else {
            spec.label.to_string()
        };
        lines.push((name, strong, h));
    }
    if lines.is_empty() {
        return None;
    }
    let kind = if let Scenario::Rate { .. } = row.sc {
        "open loop, from the intended send time"
    } else {
        "closed loop"
    };
    Some(overlay_svg(
        &format!("{} — latency ({kind})", row.label),
        &format!(
            "{date}; {}; server core {}, load core {}; run with the median p99 of {}",
            machine_line(mach),
            env.args.server_core,
            env.args.load_core,
            env.reps
        ),
        &lines,
    ))
}

#[allow(clippy::too_many_arguments)]
fn json_doc(
    env: &Env,
    servers: &[Spec],
    rows: &[Row],
    res: &Results,
    date: &str,
    mach: &Value,
    load_start: &str,
    load_end: &str,
    wall: f64,
    rate: Option<f64>,
) -> Value {
    let mut out_rows = Vec::new();
    for row in rows {
        let mut cells = serde_json::Map::new();
        for spec in servers {
            let key = (row.id.clone(), spec.id.to_string());
            let Some(m) = res.med(&row.id, spec.id) else {
                continue;
            };
            let runs: Vec<Value> = res
                .samples
                .get(&key)
                .map(|v| v.iter().map(Sample::to_json).collect())
                .unwrap_or_default();
            let mut cell = json!({
                "median": {
                    "value": m.value,
                    "spread": m.spread,
                    "server_us_per_op": m.server_us,
                    "load_us_per_op": m.load_us,
                    "server_busiest_thread": m.server_busy,
                    "server_user_share": m.server_user,
                    "load_busiest_thread": m.load_busy,
                    "latency_us": m.lat.map(|l| json!({"p50": l[0], "p99": l[1], "p99_9": l[2], "max": l[3]})),
                    "marginal_bytes_per_conn": m.marginal,
                },
                "load_bound_runs": m.load_bound,
                "contended_runs": m.contended,
                "errors": m.errors,
                "failures": res.failed.get(&key).cloned().unwrap_or_default(),
                "runs": runs,
            });
            if matches!(spec.kind, Kind::Soliton(_)) {
                if let Some((peer, ratio, n)) = paired_cpu(servers, row, res, spec.id) {
                    cell["paired_cpu_vs_frugal_peer"] =
                        json!({"peer": peer.id, "ratio": ratio, "repetitions": n});
                }
            }
            cells.insert(spec.id.into(), cell);
        }
        let (kind, params, unit) = match row.sc {
            Scenario::Echo {
                conns,
                size,
                inflight,
            } => (
                "echo",
                json!({"connections": conns, "size": size, "inflight": inflight}),
                "msg/s",
            ),
            Scenario::Rate { conns, size } => (
                "rate",
                json!({"connections": conns, "size": size, "rate": rate}),
                "msg/s achieved",
            ),
            Scenario::Flood { conns, size } => (
                "flood",
                json!({"connections": conns, "size": size}),
                "msg/s",
            ),
            Scenario::Fanout { conns, size } => (
                "fanout",
                json!({"connections": conns, "size": size, "deliveries_per_round": conns * conns}),
                "deliveries/s",
            ),
            Scenario::Connect { close } => (
                if close { "churn" } else { "connect" },
                json!({"handshakes": env.handshakes, "concurrency": 100, "close": close}),
                "handshakes/s",
            ),
            Scenario::Hold => (
                "hold",
                json!({"connections": env.hold}),
                "bytes per connection",
            ),
        };
        out_rows.push(json!({
            "id": row.id,
            "label": row.label,
            "scenario": kind,
            "params": params,
            "unit": unit,
            "best_peer": best_peer(servers, row, res).map(|b| b.0.id),
            "servers": cells,
        }));
    }
    json!({
        "tool": "compare",
        "date": date,
        "machine": mach,
        "load_average": {"start": load_start, "end": load_end},
        "wall_s": wall,
        "config": {
            "repetitions": env.reps,
            "duration_s": env.duration,
            "warmup_s": env.warmup,
            "server_core": env.args.server_core,
            "load_core": env.args.load_core,
            "ours": OURS,
            "peer_nodelay": env.args.peer_nodelay,
            "servers": servers.iter().map(|s| json!({"id": s.id, "label": s.label})).collect::<Vec<_>>(),
            "skipped": env.skipped,
        },
        "rows": out_rows,
    })
}

/// The scenarios of `--scenarios`; an unknown name is an error (a typo would otherwise
/// run nothing).
fn scenarios(list: &str) -> Result<Vec<String>, String> {
    const KNOWN: [&str; 7] = [
        "echo", "rate", "flood", "fanout", "connect", "churn", "hold",
    ];
    let scen: Vec<String> = list.split(',').map(|x| x.trim().to_string()).collect();
    match scen.iter().find(|s| !KNOWN.contains(&s.as_str())) {
        Some(bad) => Err(format!(
            "unknown scenario {bad:?} in --scenarios (known: {})",
            KNOWN.join(", ")
        )),
        None => Ok(scen),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_formatting() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(commas(1_294_976.4), "1,294,976");
        assert_eq!(commas(999.0), "999");
        assert_eq!(pad("µs", 4, true), "  µs");
        let d = date_utc();
        assert_eq!(d.len(), "2026-11-25 11:58 UTC".len(), "{d}");
    }

    #[test]
    fn scenario_names_are_checked() {
        assert_eq!(
            scenarios("connect, churn,hold").unwrap(),
            ["connect", "churn", "hold"]
        );
        let e = scenarios("echo,conect").unwrap_err();
        assert!(e.contains("\"conect\"") && e.contains("churn"), "{e}");
    }

    #[test]
    fn uwebsockets_is_an_optional_peer() {
        let u = SERVERS.iter().find(|s| s.id == "uwebsockets").unwrap();
        assert!(u.is_peer() && !u.is_raw() && u.ceiling().is_none());
        assert!(matches!(
            u.kind,
            Kind::External("uwebsockets-echo", "bench/peers/uwebsockets/build.sh")
        ));
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        assert!(root.join("bench/peers/uwebsockets/build.sh").exists());
        // the best peer of a row is chosen among all peers, uWebSockets included
        let row = &echo_rows()[0];
        let mut res = Results::default();
        for (id, v) in [("uwebsockets", 3.0), ("fastwebsockets", 2.0), (OURS, 1.0)] {
            let s = Sample {
                value: v,
                ..Sample::default()
            };
            res.samples.insert((row.id.clone(), id.into()), vec![s]);
        }
        let best = best_peer(&SERVERS, row, &res).map(|b| b.0.id);
        assert_eq!(best, Some("uwebsockets"));
    }

    /// The paired ratio takes the most frugal peer by median and pairs runs by
    /// repetition: a drift that slows every server of one repetition cancels out.
    #[test]
    fn paired_cpu_pairs_runs_by_repetition() {
        let row = &echo_rows()[0];
        let mut res = Results::default();
        let put = |res: &mut Results, id: &str, us: &[(usize, f64)]| {
            let v = us
                .iter()
                .map(|&(rep, u)| Sample {
                    value: 1.0,
                    server_us: Some(u),
                    rep,
                    ..Sample::default()
                })
                .collect();
            res.samples.insert((row.id.clone(), id.into()), v);
        };
        // repetition 1 ran on a machine twice as slow for everyone
        put(&mut res, OURS, &[(0, 4.0), (1, 8.0), (2, 4.4)]);
        put(&mut res, "uwebsockets", &[(0, 5.0), (1, 10.0), (2, 5.2)]);
        // a peer with a higher median is not the frugal one; a missing repetition of
        // the frugal peer pairs fewer runs
        put(&mut res, "fastwebsockets", &[(0, 6.0), (1, 6.0), (2, 6.0)]);
        let (peer, r, n) = paired_cpu(&SERVERS, row, &res, OURS).unwrap();
        assert_eq!((peer.id, n), ("uwebsockets", 3));
        // 1.25, 1.25, 5.2/4.4 (the ratio of the medians would be 5.2/4.4)
        assert!((r - 1.25).abs() < 1e-12, "{r}");
        put(&mut res, "uwebsockets", &[(0, 5.0), (2, 6.0)]);
        let (_, r, n) = paired_cpu(&SERVERS, row, &res, OURS).unwrap();
        assert_eq!(n, 2);
        assert!((r - (1.25 + 6.0 / 4.4) / 2.0).abs() < 1e-12, "{r}");
        // the same runs under a row whose figure is latency, or bytes: no paired CPU
        for sc in [
            Scenario::Rate {
                conns: 100,
                size: 20,
            },
            Scenario::Hold,
        ] {
            let other = Row {
                id: row.id.clone(),
                label: row.label.clone(),
                sc,
            };
            assert!(paired_cpu(&SERVERS, &other, &res, OURS).is_none());
        }
        // no peer with a CPU figure: nothing to pair
        let mut none = Results::default();
        none.samples
            .insert((row.id.clone(), OURS.into()), vec![Sample::default()]);
        assert!(paired_cpu(&SERVERS, row, &none, OURS).is_none());
    }

    #[test]
    fn samples_from_a_report() {
        let r = json!({
            "messages": {"received_per_s": 1000.0},
            "latency_us": {"p50": 1.0, "p99": 2.0, "p99_9": 3.0, "max": 4.0},
            "latency_hist": "",
            "errors_total": 0,
            "cpu": {"server_us_per_msg": 5.0, "load_us_per_msg": 6.0,
                    "server_busiest_thread": 0.9, "load_busiest_thread": 0.95},
        });
        let sc = Scenario::Echo {
            conns: 1,
            size: 20,
            inflight: 1,
        };
        let s = sample_of(sc, &r);
        assert_eq!(s.value, 1000.0);
        assert_eq!(s.lat, Some([1.0, 2.0, 3.0, 4.0]));
        assert!(s.load_bound && !s.contended);
        let m = med_of(&[s.clone(), s], 0);
        assert_eq!((m.n, m.load_bound, m.spread), (2, 2, 0.0));
    }
}
