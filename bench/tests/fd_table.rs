//! A one-worker `soliton-server`'s main thread leaves the worker's descriptor table
//! (`--shared-fd-table` keeps one): the worker's sockets are in its table alone, the
//! signals still reach the main thread (SIGHUP reloads, SIGTERM closes), and a shutdown
//! still closes the listener at once (the main thread's copy of it was closed too, or
//! connections would queue on it until the process exits). Real processes on
//! loopback: epoll, io_uring (asked for by name) and `auto`.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

mod common;

use common::ServerProcess;

/// A one-worker server on loopback with these flags besides.
fn start_one_worker(flags: &[&str]) -> ServerProcess {
    let mut args = vec!["--port", "0", "--threads", "1", "--no-pin"];
    args.extend_from_slice(flags);
    ServerProcess::start(&args, WAIT).unwrap_or_else(|e| panic!("soliton-server: {e}"))
}

fn signal(server: &ServerProcess, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// The sockets in the worker's descriptor table and in the main thread's.
fn worker_and_main_sockets(pid: u32) -> (HashSet<String>, HashSet<String>) {
    let threads = sockets_by_thread(pid);
    let of = |name: &str| {
        threads
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| panic!("no thread {name}: {threads:?}"))
    };
    (of("soliton-0"), of("soliton-server"))
}

/// The sockets (inodes) in the descriptor table of each thread, by thread name.
fn sockets_by_thread(pid: u32) -> Vec<(String, HashSet<String>)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let mut socks = HashSet::new();
        for fd in std::fs::read_dir(t.path().join("fd")).unwrap().flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if target.starts_with("socket:") {
                    socks.insert(target);
                }
            }
        }
        out.push((name.trim().to_string(), socks));
    }
    out
}

/// An open WebSocket connection (the upgrade answered with 101).
fn open_ws(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "no answer to the upgrade");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    s
}

/// `backend` as `--backend` takes it; `running`: what the listening line must name
/// (None for `auto`, which runs what the kernel allows).
fn one_worker(backend: &str, running: Option<&str>) {
    let mut server = start_one_worker(&["--backend", backend, "--shutdown-grace", "10"]);
    if let Some(b) = running {
        let line = server.wait_line("listening on");
        assert!(line.contains(&format!("({b},")), "{line}");
    }
    let conn = open_ws(server.addr);
    let (worker, main) = worker_and_main_sockets(server.child.id());
    // the listener and the connection: in the worker's table, not in the main thread's
    assert!(worker.len() >= 2, "worker's sockets: {worker:?}");
    assert!(
        worker.is_disjoint(&main),
        "shared sockets: worker {worker:?}, main {main:?}"
    );

    // the signals still reach the main thread
    signal(&server, "-HUP");
    server.next_line("SIGHUP: reloaded");
    signal(&server, "-TERM");
    server.next_line("closing connections");
    // the connection is still open (this client does not answer the close frame, so
    // the server waits out its grace): the listener must already be closed
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(server.addr) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break,
            Ok(_) | Err(_) => {
                assert!(Instant::now() < deadline, "the listener was not closed");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server should still be waiting for the close handshake"
    );
    drop(conn);
    let end = Instant::now() + WAIT;
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "the server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_one_worker_server_leaves_the_main_thread_out_of_its_table_epoll() {
    one_worker("epoll", Some("Epoll"));
}

/// io_uring asked for by name: on a kernel without it the server does not start (no
/// silent fallback), and the listening line must say so.
#[test]
fn a_one_worker_server_leaves_the_main_thread_out_of_its_table_io_uring() {
    one_worker("uring", Some("IoUring"));
}

/// `--backend auto`, the default: SIGHUP refused every reload under it (the backend in
/// force is the one it chose).
#[test]
fn a_one_worker_server_leaves_the_main_thread_out_of_its_table_auto() {
    one_worker("auto", None);
}

#[test]
fn shared_fd_table_keeps_one_table() {
    let server = start_one_worker(&["--backend", "epoll", "--shared-fd-table"]);
    let _conn = open_ws(server.addr);
    let (worker, main) = worker_and_main_sockets(server.child.id());
    assert!(worker.len() >= 2, "worker's sockets: {worker:?}");
    assert_eq!(worker, main);
}

/// The raw TCP echo (`--mode raw-tcp`) leaves the table too: it says that it listens
/// (it used to wait forever for its worker's set-up channel to close, so it never did,
/// and, with the signals blocked while it waited, a SIGINT would not have stopped it),
/// echoes, and stops on SIGINT.
#[test]
fn the_raw_tcp_echo_starts_echoes_and_stops_on_sigint() {
    let mut server = start_one_worker(&["--mode", "raw-tcp", "--backend", "epoll"]);
    let (worker, main) = worker_and_main_sockets(server.child.id());
    assert!(!worker.is_empty() && worker.is_disjoint(&main));
    let mut c = TcpStream::connect(server.addr).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"ping").unwrap();
    let mut b = [0u8; 4];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    signal(&server, "-INT");
    let end = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < end, "the raw echo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}
