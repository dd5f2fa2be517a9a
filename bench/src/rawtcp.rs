//! A raw TCP closed-loop echo client (no WebSocket): `conns` connections, each keeping
//! `inflight` messages of `size` bytes outstanding and sending a new one for every `size`
//! bytes that come back, on one thread (mio, edge-triggered), like `soliton-load echo`
//! without the framing. `compare` drives the raw-TCP ceiling (`soliton-server --mode
//! raw-tcp`) with it, because `soliton-load` speaks only WebSocket.
//!
//! A message is `size` echoed bytes; TCP has no message boundaries, so a message is
//! counted when the byte count of a connection passes the next multiple of `size`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::cpu::{proc_cpu, process_cpu};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct RawParams {
    /// Server address.
    pub addr: SocketAddr,
    /// Connections.
    pub conns: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Messages in flight per connection.
    pub inflight: usize,
    /// Warm-up before measuring (after every connection is open).
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// A server process whose CPU time to sample over the measured window.
    pub server_pid: Option<u32>,
}

/// What came back.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawResult {
    /// Messages (of `size` bytes) echoed during the measured window.
    pub messages: u64,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// Connections that failed (refused, reset, closed by the server).
    pub errors: u64,
    /// CPU seconds this process used during the window (the client thread: the
    /// caller is expected to sleep meanwhile).
    pub cpu: f64,
    /// CPU seconds of the server process during the window.
    pub server_cpu: f64,
}

impl RawResult {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Conn {
    sock: TcpStream,
    /// Connected (its first writable event came, with no error).
    open: bool,
    /// Bytes still to be written.
    owed: usize,
    /// Bytes received towards the next whole message.
    partial: usize,
    dead: bool,
}

/// Writes what `c` owes from `payload` until the socket would block.
fn flush(c: &mut Conn, payload: &[u8]) -> io::Result<()> {
    while c.owed > 0 {
        let n = c.owed.min(payload.len());
        match c.sock.write(&payload[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => c.owed -= w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs the closed loop (connect, warm up, measure) and returns the window's figures.
/// `stop` ends it early (the result then covers what was measured).
pub fn run(p: RawParams, stop: &AtomicBool) -> io::Result<RawResult> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(p.conns);
    let size = p.size.max(1);
    // what a connection owes goes out in writes of up to 64 KiB
    let payload = vec![b'x'; 64 * 1024];
    for i in 0..p.conns {
        let mut sock = TcpStream::connect(p.addr)?;
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        conns.push(Conn {
            sock,
            open: false,
            owed: 0,
            partial: 0,
            dead: false,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut res = RawResult::default();
    let mut opened = 0;
    let begin = Instant::now();
    // the warm-up starts when every connection is open
    let mut measure_from: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    let mut t0: Option<Instant> = None;
    let (mut cpu0, mut srv0) = (0.0, 0.0);
    let server_cpu = || p.server_pid.map_or(0.0, |pid| proc_cpu(&pid.to_string()));
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || end.is_some_and(|e| now >= e) {
            break;
        }
        if measure_from.is_none() && now > begin + Duration::from_secs(10) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("only {opened} of {} connections opened in 10 s", p.conns),
            ));
        }
        if t0.is_none() && measure_from.is_some_and(|m| now >= m) {
            t0 = Some(now);
            res.messages = 0;
            cpu0 = process_cpu();
            srv0 = server_cpu();
        }
        poll.poll(&mut events, Some(Duration::from_millis(20)))?;
        let measuring = t0.is_some();
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if c.dead {
                continue;
            }
            if !c.open && (ev.is_writable() || ev.is_readable()) {
                if !matches!(c.sock.take_error(), Ok(None)) || c.sock.peer_addr().is_err() {
                    c.dead = true;
                    res.errors += 1;
                    continue;
                }
                let _ = c.sock.set_nodelay(true);
                c.open = true;
                c.owed = size * p.inflight.max(1);
                opened += 1;
                if opened == p.conns {
                    let now = Instant::now();
                    measure_from = Some(now + p.warmup);
                    end = Some(now + p.warmup + p.duration);
                }
            }
            if ev.is_readable() {
                loop {
                    match c.sock.read(&mut buf) {
                        Ok(0) => {
                            c.dead = true;
                            res.errors += 1;
                            break;
                        }
                        Ok(n) => {
                            let total = c.partial + n;
                            let whole = total / size;
                            c.partial = total % size;
                            c.owed += whole * size;
                            if measuring {
                                res.messages += whole as u64;
                            }
                            if n < buf.len() {
                                // a short read drained the socket: the next bytes raise
                                // a new edge
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => {
                            c.dead = true;
                            res.errors += 1;
                            break;
                        }
                    }
                }
            }
            if !c.dead && c.owed > 0 && flush(c, &payload).is_err() {
                c.dead = true;
                res.errors += 1;
            }
        }
    }
    if let Some(t0) = t0 {
        res.cpu = process_cpu() - cpu0;
        res.server_cpu = server_cpu() - srv0;
        res.elapsed = Instant::now() - t0;
    }
    Ok(res)
}
