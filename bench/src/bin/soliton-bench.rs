//! `soliton-bench`: the main job. Starts `soliton-server` (built beside this binary)
//! on each backend, pinned to one core, drives it with a closed-loop echo client on the
//! other core, and prints a results table.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use soliton_bench::echo::{self, EchoParams};

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
    /// Core for the load.
    #[arg(long, default_value_t = 0)]
    load_core: usize,
    /// Backends to run (comma-separated: uring, epoll).
    #[arg(long, default_value = "uring,epoll")]
    backends: String,
    /// First port to use (one per backend).
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

fn start_server(backend: &str, port: u16, core: usize) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name("soliton-server");
    if !bin.exists() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p soliton-bench`",
            bin.display()
        ));
    }
    let child = Command::new(&bin)
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

fn main() {
    let a = Args::parse();
    if let Some(c) = core_affinity::get_core_ids().and_then(|ids| ids.get(a.load_core).copied()) {
        core_affinity::set_for_current(c);
    }
    let rows = [
        ("100 conns x 20 B", 100, 20, 1),
        ("10 conns x 16 KiB", 10, 16 * 1024, 1),
        ("100 conns x 20 B, 16 in flight", 100, 20, 16),
    ];
    println!(
        "{:<8} {:<32} {:>12} {:>10} {:>14} {:>14} {:>7}",
        "backend", "scenario", "msg/s", "MB/s", "server us/msg", "load us/msg", "errors"
    );
    let mut failed = false;
    for (bi, backend) in a.backends.split(',').map(str::trim).enumerate() {
        let port = a.port + bi as u16;
        let server = match start_server(backend, port, a.server_core) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("soliton-bench: {e}");
                failed = true;
                continue;
            }
        };
        for (name, conns, size, inflight) in rows {
            let p = EchoParams {
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                conns,
                size,
                inflight,
                duration: Duration::from_secs_f64(a.duration),
                warmup: Duration::from_millis(500),
                server_pid: Some(server.0.id()),
            };
            match echo::run(p) {
                Ok(r) => {
                    let rate = r.rate();
                    let per = |cpu: f64| cpu / r.messages.max(1) as f64 * 1e6;
                    println!(
                        "{:<8} {:<32} {:>12.0} {:>10.1} {:>14.2} {:>14.2} {:>7}{}",
                        backend,
                        name,
                        rate,
                        rate * size as f64 / 1e6,
                        per(r.server_cpu),
                        per(r.cpu),
                        r.errors,
                        if r.cpu > r.server_cpu {
                            "  load-bound"
                        } else {
                            ""
                        }
                    );
                    failed |= r.errors > 0 || r.messages == 0;
                }
                Err(e) => {
                    eprintln!("soliton-bench: {backend} {name}: {e}");
                    failed = true;
                }
            }
        }
        drop(server);
    }
    println!("(closed loop; CPU from /proc/PID/stat over the measured window; 'load-bound': the load used more CPU than the server)");
    if failed {
        std::process::exit(1);
    }
}
