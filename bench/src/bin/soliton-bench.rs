//! `soliton-bench`: the main job. Starts `soliton-server` (built beside this binary)
//! on each backend, pinned to one core, drives it with `soliton-load echo` (closed
//! loop) pinned to the other core, and prints a results table: `ws://` rows, then
//! `wss://` rows against the same server binary serving TLS with a self-signed
//! certificate made at its start (`--tls-self-signed`; the load skips verification).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

/// Self-contained echo benchmark: server and load on loopback, one core each.
#[derive(Debug, Parser)]
#[command(name = "soliton-bench", version)]
struct Args {
    /// Seconds measured per row (after a 0.5 s warm-up).
    #[arg(long, default_value_t = 1.5)]
    duration: f64,
    /// Core for the server (the load runs on --load-core).
    #[arg(long, default_value_t = 1)]
    server_core: usize,
    /// Core for the load generator.
    #[arg(long, default_value_t = 0)]
    load_core: usize,
    /// Backends to run (comma-separated: uring, epoll).
    #[arg(long, default_value = "uring,epoll")]
    backends: String,
    /// First port to use (two per backend: ws:// and wss://).
    #[arg(long, default_value_t = 19001)]
    port: u16,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(backend: &str, port: u16, core: usize, tls: bool) -> Result<Server, String> {
    let bin = sibling("soliton-server")?;
    let child = Command::new(&bin)
        .args(tls.then_some("--tls-self-signed"))
        .args([
            "--backend",
            backend,
            "--threads",
            "1",
            "--port",
            &port.to_string(),
        ])
        .args(["--first-core", &core.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let server = Server(child);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "soliton-server ({backend}) did not listen on {addr}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// A figure from a soliton-load report, or NaN.
fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// The binary `name` built beside this one.
fn sibling(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name(name);
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it with `cargo build --release -p soliton-bench -p soliton-load`",
            bin.display()
        ))
    }
}

/// One run of soliton-load against the server on `port` (closed loop, or an open flood
/// when `inflight` is 0); its JSON report.
fn load(
    a: &Args,
    port: u16,
    server_pid: u32,
    (conns, size, inflight, tls): (usize, usize, usize, bool),
    json: &Path,
) -> Result<Value, String> {
    let _ = std::fs::remove_file(json);
    let scheme = if tls { "wss" } else { "ws" };
    let mut cmd = Command::new(sibling("soliton-load")?);
    if inflight == 0 {
        cmd.arg("flood");
    } else {
        cmd.arg("echo");
    }
    cmd.arg(format!("{scheme}://127.0.0.1:{port}/"))
        .args(tls.then_some("--insecure"))
        .args(["-c", &conns.to_string(), "-s", &size.to_string()]);
    if inflight == 0 {
        // the echoes queued in socket buffers at the end take a while to come back
        cmd.args(["--drain", "10s"]);
    } else {
        cmd.args(["--inflight", &inflight.to_string()]);
    }
    let out = cmd
        .args(["-d", &format!("{}s", a.duration), "--warmup", "0.5s"])
        .args(["--cores", &a.load_core.to_string(), "-q"])
        .args(["--server-pid", &server_pid.to_string(), "--json"])
        .arg(json)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start soliton-load: {e}"))?;
    let text = std::fs::read_to_string(json).map_err(|_| {
        format!(
            "soliton-load ({}) wrote no report: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("soliton-load report: {e}"))
}

/// Prints one row of the table; true when the run failed (errors, nothing measured, or
/// a message not answered).
fn print_row(backend: &str, name: &str, r: &Value) -> bool {
    let rate = num(r, &["messages", "received_per_s"]);
    let errors = r["errors_total"].as_u64().unwrap_or(0);
    let sent = r["messages"]["sent_total"].as_u64();
    let received = r["messages"]["received_total"].as_u64();
    println!(
        "{:<8} {:<32} {:>10.0} {:>8.1} {:>9.0} {:>9.0} {:>10.3} {:>10.3} {:>8.1} {:>6}{}",
        backend,
        name,
        rate,
        num(r, &["messages", "mb_per_s_in"]),
        num(r, &["latency_us", "p50"]),
        num(r, &["latency_us", "p99"]),
        num(r, &["cpu", "server_us_per_msg"]),
        num(r, &["cpu", "load_us_per_msg"]),
        num(r, &["cpu", "server_rss_peak"]) / 1048576.0,
        errors,
        if r["cpu"]["load_bound"].as_bool() == Some(true) {
            "  load-bound"
        } else {
            ""
        }
    );
    // every message sent came back, and something was measured
    errors > 0 || rate.is_nan() || rate <= 0.0 || sent != received
}

fn main() {
    let a = Args::parse();
    let rows = [
        ("100 conns x 20 B", (100, 20, 1, false)),
        ("10 conns x 16 KiB", (10, 16 * 1024, 1, false)),
        ("100 conns x 20 B, 1024 in flight", (100, 20, 1024, false)),
        ("100 conns x 20 B, open flood", (100, 20, 0, false)),
        ("wss: 100 conns x 20 B", (100, 20, 1, true)),
        ("wss: 10 conns x 16 KiB", (10, 16 * 1024, 1, true)),
    ];
    let json = std::env::temp_dir().join(format!("soliton-bench-{}.json", std::process::id()));
    println!(
        "{:<8} {:<32} {:>10} {:>8} {:>9} {:>9} {:>10} {:>10} {:>8} {:>6}",
        "backend",
        "scenario",
        "msg/s",
        "MB/s",
        "p50 us",
        "p99 us",
        "server",
        "load",
        "srv RSS",
        "errors"
    );
    println!(
        "{:<86} {:>10} {:>10} {:>8}",
        "", "us/msg", "us/msg", "peak MiB"
    );
    let mut failed = false;
    for (bi, backend) in a.backends.split(',').map(str::trim).enumerate() {
        for tls in [false, true] {
            let port = a.port + 2 * bi as u16 + u16::from(tls);
            let server = match start_server(backend, port, a.server_core, tls) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("soliton-bench: {e}");
                    failed = true;
                    continue;
                }
            };
            for (name, row) in rows.iter().filter(|(_, r)| r.3 == tls) {
                match load(&a, port, server.0.id(), *row, &json) {
                    Ok(r) => failed |= print_row(backend, name, &r),
                    Err(e) => {
                        eprintln!("soliton-bench: {backend} {name}: {e}");
                        failed = true;
                    }
                }
            }
            drop(server);
        }
    }
    let _ = std::fs::remove_file(&json);
    println!(
        "(soliton-load echo, closed loop: a new message for every echo; the open flood: \
         soliton-load flood, every connection writing as fast as its socket takes messages; \
         CPU from /proc/PID/stat over the measured window; srv RSS: the server's highest RSS \
         during the run; 'load-bound': the load generator's busiest \
         thread was busier than the server's, so the rate is the load's, and server us/msg \
         is the figure to compare)"
    );
    if failed {
        std::process::exit(1);
    }
}
