//! `soliton-server --config FILE`: settings read from a TOML file (the command line
//! wins), and SIGHUP applying a changed file to new connections while the server runs;
//! a change that needs a restart is refused and says so. Real processes on loopback.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

mod common;

use common::ServerProcess;

fn start(args: &[&str]) -> ServerProcess {
    ServerProcess::start(args, WAIT).unwrap_or_else(|e| panic!("soliton-server: {e}"))
}

fn hup(server: &ServerProcess) {
    let ok = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -HUP");
}

/// The status of an upgrade request with this Origin.
fn upgrade_status(addr: SocketAddr, origin: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Origin: {origin}\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "no status line");
        got.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&got);
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_config_file_is_read_and_sighup_applies_a_changed_one() {
    let dir = std::env::temp_dir().join(format!("soliton-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("server.toml");
    // port 1 in the file, port 0 on the command line: the command line wins
    std::fs::write(
        &file,
        "port = 1\nthreads = 1\nno-pin = true\nbackend = \"epoll\"\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let server = start(&["--config", path, "--port", "0"]);
    assert_ne!(server.addr.port(), 1);
    assert_eq!(upgrade_status(server.addr, "https://evil.example"), 101);

    // an Origin allow-list, applied on SIGHUP to new connections
    std::fs::write(
        &file,
        "port = 1\nthreads = 1\nno-pin = true\nbackend = \"epoll\"\n\
         origin = [\"https://good.example\"]\nmax-message = 100\n",
    )
    .unwrap();
    hup(&server);
    server.next_line("SIGHUP: reloaded");
    assert_eq!(upgrade_status(server.addr, "https://evil.example"), 403);
    assert_eq!(upgrade_status(server.addr, "https://good.example"), 101);

    // a setting fixed at start: refused as a whole, the policy in force stays
    std::fs::write(
        &file,
        "port = 1\nthreads = 3\nno-pin = true\nbackend = \"epoll\"\n",
    )
    .unwrap();
    hup(&server);
    let l = server.next_line("SIGHUP: not reloaded");
    assert!(l.contains("workers"), "{l}");
    assert_eq!(upgrade_status(server.addr, "https://evil.example"), 403);

    // a broken file: refused, the server goes on
    std::fs::write(&file, "port = \n").unwrap();
    hup(&server);
    server.next_line("SIGHUP: not reloaded");
    assert_eq!(upgrade_status(server.addr, "https://good.example"), 101);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_config_file_is_a_clear_error_at_start() {
    let dir = std::env::temp_dir().join(format!("soliton-config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "max-message = \"lots\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_soliton-server"))
        .args(["--config", file.to_str().unwrap(), "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("max-message"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_soliton-server"))
        .args(["--config", dir.join("missing.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn metrics_are_served_on_their_own_address() {
    let server = start(&[
        "--port",
        "0",
        "--threads",
        "1",
        "--no-pin",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let l = server.next_line("metrics on http://");
    let at: SocketAddr = l
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    // one upgrade refused (version 8 is not 13), then the counters
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    )
    .unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert!(
        reply.starts_with(b"HTTP/1.1 426"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let get = |path: &str| {
        let mut m = TcpStream::connect(at).unwrap();
        m.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            m,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        let _ = m.read_to_string(&mut body);
        body
    };
    let end = Instant::now() + WAIT;
    loop {
        let body = get("/metrics");
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        if body.contains("soliton_handshakes_total{worker=\"0\",status=\"426\"} 1") {
            break;
        }
        assert!(Instant::now() < end, "the 426 was never counted:\n{body}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(get("/nothing").starts_with("HTTP/1.1 404"));
}
