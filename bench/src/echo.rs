//! A closed-loop echo driver on Soliton's client role: `conns` connections, each with
//! `inflight` messages of `size` bytes outstanding, on one thread (mio, edge-triggered).
//! It counts echoes that come back whole and equal in length to what was sent.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use soliton::proto::handshake::{self, ClientRequest, HeadLimits, HeadScanner, Response};
use soliton::proto::{Connection, Event, Limits, OpCode, Role, Status};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct EchoParams {
    /// Server address.
    pub addr: SocketAddr,
    /// Connections.
    pub conns: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Messages in flight per connection.
    pub inflight: usize,
    /// Measured time (after connecting and a warm-up).
    pub duration: Duration,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// A server process whose CPU time to sample over the measured window.
    pub server_pid: Option<u32>,
}

/// What came back.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoResult {
    /// Echoes received during the measured window.
    pub messages: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Errors (connection failures, short or wrong echoes).
    pub errors: u64,
    /// CPU seconds this process used during the window.
    pub cpu: f64,
    /// CPU seconds the server process used during the window (if its pid was given).
    pub server_cpu: f64,
}

impl EchoResult {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Client {
    sock: TcpStream,
    open: bool,
    scanner: HeadScanner,
    accept: [u8; 28],
    conn: Connection,
    rx: Vec<u8>,
    asm: Vec<u8>,
    tx: Vec<u8>,
    tx_off: usize,
}

/// CPU seconds (user + system) of this process.
pub fn process_cpu() -> f64 {
    proc_cpu("self")
}

/// CPU seconds (user + system) of process `pid` from /proc.
pub fn proc_cpu(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = s.rsplit(')').next() else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn flush(c: &mut Client) -> io::Result<()> {
    while c.tx_off < c.tx.len() {
        match c.sock.write(&c.tx[c.tx_off..]) {
            Ok(n) => c.tx_off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    c.tx.clear();
    c.tx_off = 0;
    Ok(())
}

/// Runs the closed loop and returns the measured window's figures.
pub fn run(p: EchoParams) -> io::Result<EchoResult> {
    let mut poll = Poll::new()?;
    let mut clients = Vec::with_capacity(p.conns);
    let payload = vec![b'x'; p.size];
    let host = p.addr.to_string();
    for i in 0..p.conns {
        let mut sock = TcpStream::connect(p.addr)?;
        sock.set_nodelay(true)?;
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        let mut tx = Vec::new();
        let nonce = (i as u128 + 1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)
            .to_le_bytes();
        let req = ClientRequest {
            host: &host,
            path: "/",
            ..Default::default()
        };
        let accept = handshake::write_client_request(&mut tx, &req, nonce);
        clients.push(Client {
            sock,
            open: false,
            scanner: HeadScanner::new(),
            accept,
            conn: Connection::new(Role::Client, Limits::default(), 0x5eed ^ i as u64),
            rx: Vec::new(),
            asm: Vec::new(),
            tx,
            tx_off: 0,
        });
    }
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let measure_from = start + p.warmup;
    let end = measure_from + p.duration;
    let mut measuring = false;
    let mut res = EchoResult::default();
    let mut cpu0 = 0.0;
    let mut srv0 = 0.0;
    let mut buf = vec![0u8; 256 * 1024];
    let mut opened = 0;
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        let now = Instant::now();
        if !measuring && now >= measure_from {
            measuring = true;
            res.messages = 0;
            cpu0 = process_cpu();
            srv0 = p.server_pid.map_or(0.0, |pid| proc_cpu(&pid.to_string()));
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut clients[i];
            if ev.is_writable() && flush(c).is_err() {
                res.errors += 1;
                continue;
            }
            if !ev.is_readable() {
                continue;
            }
            loop {
                let n = match c.sock.read(&mut buf) {
                    Ok(0) => {
                        res.errors += 1;
                        let _ = poll.registry().deregister(&mut c.sock);
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        res.errors += 1;
                        break;
                    }
                };
                c.rx.extend_from_slice(&buf[..n]);
                let mut pos = 0;
                if !c.open {
                    match c.scanner.feed(&c.rx, &HeadLimits::default()) {
                        Ok(Status::Complete(h)) => {
                            let ok = Response::parse(&c.rx[..h], &HeadLimits::default())
                                .ok()
                                .and_then(|r| handshake::check_response(&r, &c.accept, &[]).ok())
                                .is_some();
                            if !ok {
                                res.errors += 1;
                                break;
                            }
                            c.open = true;
                            opened += 1;
                            pos = h;
                            for _ in 0..p.inflight {
                                let _ =
                                    c.conn
                                        .write_frame(OpCode::Binary, true, &payload, &mut c.tx);
                            }
                        }
                        Ok(Status::Partial) => continue,
                        Err(_) => {
                            res.errors += 1;
                            break;
                        }
                    }
                }
                loop {
                    match c.conn.poll_read(&mut c.rx[pos..], &mut c.asm, &mut c.tx) {
                        Ok((n, Some(Event::Message(m)))) => {
                            pos += n;
                            if m.as_bytes().len() == p.size {
                                res.messages += 1;
                            } else {
                                res.errors += 1;
                            }
                            let _ = c
                                .conn
                                .write_frame(OpCode::Binary, true, &payload, &mut c.tx);
                        }
                        Ok((n, Some(_))) => pos += n,
                        Ok((n, None)) => {
                            pos += n;
                            break;
                        }
                        Err(_) => {
                            res.errors += 1;
                            pos = c.rx.len();
                            break;
                        }
                    }
                }
                c.rx.drain(..pos);
                if n < buf.len() {
                    break;
                }
            }
            if flush(c).is_err() {
                res.errors += 1;
            }
        }
        if opened == 0 && now > start + Duration::from_secs(5) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no connection opened",
            ));
        }
    }
    res.elapsed = end - measure_from;
    res.cpu = process_cpu() - cpu0;
    res.server_cpu = p
        .server_pid
        .map_or(0.0, |pid| proc_cpu(&pid.to_string()) - srv0);
    Ok(res)
}
