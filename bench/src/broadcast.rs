//! A closed-loop fan-out client in the manner of uWebSockets' `benchmarks/broadcast_test.c`:
//! `conns` WebSocket connections to a server that publishes every message to every
//! connection (the sender too); each round, every connection sends one binary message of
//! `size` bytes, and the next round starts when every connection has received all
//! `conns` messages of the round, so a round is `conns`² deliveries. `compare` drives its
//! fan-out rows with it and divides the server's CPU time by the deliveries.
//!
//! Unlike `broadcast_test.c`, which counts bytes, it parses every frame the server sends
//! (one unmasked binary frame of exactly `size` bytes each) and fails on anything else
//! (a close, a text frame, a wrong length, more messages in a round than were sent), so
//! a server that drops, duplicates or corrupts deliveries cannot pass as fast. One
//! thread, mio, edge-triggered; the handshake is written by hand (a fixed key) and the
//! answer must be `101`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::cpu::{proc_cpu, process_cpu};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct FanoutParams {
    /// Server address.
    pub addr: SocketAddr,
    /// Connections; each publishes one message a round and receives all `conns`.
    pub conns: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Rounds run before measuring (after every connection is upgraded), at least this
    /// long.
    pub warmup: Duration,
    /// Measured time, at least: the window ends at the first round boundary past it.
    pub duration: Duration,
    /// A server process whose CPU time to sample over the measured window.
    pub server_pid: Option<u32>,
}

/// What came back.
#[derive(Clone, Copy, Debug, Default)]
pub struct FanoutResult {
    /// Whole rounds in the measured window.
    pub rounds: u64,
    /// Deliveries in the window: `rounds` × `conns`².
    pub deliveries: u64,
    /// Length of the measured window (round boundary to round boundary).
    pub elapsed: Duration,
    /// CPU seconds this process used during the window.
    pub cpu: f64,
    /// CPU seconds of the server process during the window.
    pub server_cpu: f64,
}

impl FanoutResult {
    /// Deliveries per second.
    pub fn rate(&self) -> f64 {
        self.deliveries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

const REQUEST: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// The masked binary frame every connection sends each round.
fn client_frame(size: usize) -> Vec<u8> {
    let mut f = vec![0x82];
    match size {
        0..=125 => f.push(0x80 | size as u8),
        126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(size as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(size as u64).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    f.extend_from_slice(&key);
    f.extend((0..size).map(|i| (b'a' + (i % 26) as u8) ^ key[i % 4]));
    f
}

/// Where a connection is in the byte stream it receives.
enum Rx {
    /// Reading the HTTP response (bytes so far).
    Handshake(Vec<u8>),
    /// Reading frame headers (up to 10 bytes buffered), or skipping `skip` payload bytes.
    Frames {
        head: [u8; 10],
        have: usize,
        skip: u64,
    },
}

struct Conn {
    sock: TcpStream,
    rx: Rx,
    /// Bytes of `REQUEST` or of this round's frame still to write.
    out_off: usize,
    out_len: usize,
    /// The handshake request is what is being written (else the round's frame).
    out_handshake: bool,
    /// Messages received this round.
    got: usize,
}

fn err(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Writes what `c` still owes until the socket would block.
fn flush(c: &mut Conn, frame: &[u8]) -> io::Result<()> {
    while c.out_off < c.out_len {
        let src = if c.out_handshake {
            REQUEST.as_bytes()
        } else {
            frame
        };
        match c.sock.write(&src[c.out_off..c.out_len]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => c.out_off += w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Consumes `data` as server frames: returns how many whole messages it completed.
fn frames(rx: &mut Rx, mut data: &[u8], size: usize) -> io::Result<usize> {
    let Rx::Frames { head, have, skip } = rx else {
        unreachable!("frames() after the handshake only")
    };
    let mut done = 0;
    while !data.is_empty() {
        if *skip > 0 {
            let n = (*skip).min(data.len() as u64) as usize;
            *skip -= n as u64;
            data = &data[n..];
            if *skip == 0 {
                done += 1;
            }
            continue;
        }
        // header: 2 bytes, then 0, 2 or 8 length bytes (server frames are not masked)
        let need = |h: &[u8]| match h[1] & 0x7f {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        while *have < 2 && !data.is_empty() {
            head[*have] = data[0];
            *have += 1;
            data = &data[1..];
        }
        if *have < 2 {
            break;
        }
        let want = need(&head[..]);
        while *have < want && !data.is_empty() {
            head[*have] = data[0];
            *have += 1;
            data = &data[1..];
        }
        if *have < want {
            break;
        }
        if head[0] != 0x82 || head[1] & 0x80 != 0 {
            return Err(err(format!(
                "expected an unmasked final binary frame, got header {:02x} {:02x}",
                head[0], head[1]
            )));
        }
        let len = match want {
            4 => u64::from(u16::from_be_bytes([head[2], head[3]])),
            10 => u64::from_be_bytes(head[2..10].try_into().expect("8 bytes")),
            _ => u64::from(head[1] & 0x7f),
        };
        if len != size as u64 {
            return Err(err(format!("a {len}-byte message, expected {size}")));
        }
        *have = 0;
        if len == 0 {
            done += 1;
        } else {
            *skip = len;
        }
    }
    Ok(done)
}

/// Runs rounds (connect, upgrade, warm up, measure) and returns the window's figures.
/// `stop` ends it early (the result then covers what was measured).
pub fn run(p: FanoutParams, stop: &AtomicBool) -> io::Result<FanoutResult> {
    let n = p.conns.max(1);
    let frame = client_frame(p.size);
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut sock = TcpStream::connect(p.addr)?;
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        conns.push(Conn {
            sock,
            rx: Rx::Handshake(Vec::new()),
            out_off: 0,
            out_len: REQUEST.len(),
            out_handshake: true,
            got: 0,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut res = FanoutResult::default();
    let mut upgraded = 0;
    let mut satisfied = 0;
    let begin = Instant::now();
    let mut last_progress = Instant::now();
    // set when every connection is upgraded
    let mut started: Option<Instant> = None;
    let mut t0: Option<(Instant, f64, f64)> = None;
    let server_cpu = || p.server_pid.map_or(0.0, |pid| proc_cpu(&pid.to_string()));
    let start_round = |conns: &mut Vec<Conn>, frame: &[u8]| -> io::Result<()> {
        for c in conns.iter_mut() {
            c.out_handshake = false;
            c.got = 0;
            c.out_off = 0;
            c.out_len = frame.len();
            flush(c, frame)?;
        }
        Ok(())
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        if started.is_none() && now > begin + Duration::from_secs(10) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("only {upgraded} of {n} connections upgraded in 10 s"),
            ));
        }
        if now > last_progress + Duration::from_secs(10) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "a round stalled for 10 s: {satisfied} of {n} connections had all \
                     {n} messages"
                ),
            ));
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if ev.is_writable() && c.out_off < c.out_len {
                flush(c, &frame)?;
            }
            if !ev.is_readable() && !ev.is_read_closed() {
                continue;
            }
            loop {
                let r = match c.sock.read(&mut buf) {
                    Ok(0) => return Err(err(format!("connection {i} closed by the server"))),
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let mut data = &buf[..r];
                if let Rx::Handshake(h) = &mut c.rx {
                    h.extend_from_slice(data);
                    let Some(end) = h.windows(4).position(|w| w == b"\r\n\r\n") else {
                        if h.len() > 16 * 1024 {
                            return Err(err("a handshake response past 16 KiB".into()));
                        }
                        continue;
                    };
                    if !h.starts_with(b"HTTP/1.1 101") {
                        let line = String::from_utf8_lossy(&h[..h.len().min(80)]).into_owned();
                        return Err(err(format!("handshake refused: {line}")));
                    }
                    let rest = h.len() - (end + 4);
                    // frames sent before the first round cannot come: nothing was published
                    if rest > 0 {
                        return Err(err("bytes after the handshake before any round".into()));
                    }
                    c.rx = Rx::Frames {
                        head: [0; 10],
                        have: 0,
                        skip: 0,
                    };
                    upgraded += 1;
                    last_progress = Instant::now();
                    data = &[];
                }
                if !data.is_empty() {
                    c.got += frames(&mut c.rx, data, p.size)?;
                    if c.got > n {
                        return Err(err(format!(
                            "connection {i} got {} messages in a round of {n}",
                            c.got
                        )));
                    }
                    if c.got == n {
                        satisfied += 1;
                    }
                }
                if r < buf.len() {
                    break;
                }
            }
        }
        if started.is_none() && upgraded == n {
            started = Some(Instant::now());
            last_progress = Instant::now();
            start_round(&mut conns, &frame)?;
        } else if satisfied == n {
            satisfied = 0;
            let now = Instant::now();
            last_progress = now;
            let s = started.expect("rounds start once upgraded");
            match t0 {
                None if now >= s + p.warmup => t0 = Some((now, process_cpu(), server_cpu())),
                None => {}
                Some((t, cpu, srv)) => {
                    res.rounds += 1;
                    if now >= t + p.duration {
                        res.elapsed = now - t;
                        res.cpu = process_cpu() - cpu;
                        res.server_cpu = server_cpu() - srv;
                        break;
                    }
                }
            }
            start_round(&mut conns, &frame)?;
        }
    }
    res.deliveries = res.rounds * (n * n) as u64;
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(size: usize) -> Vec<u8> {
        let mut f = client_frame(size);
        f[1] &= 0x7f;
        let hl = f.len() - size - 4;
        f.drain(hl..hl + 4);
        f
    }

    #[test]
    fn frames_are_counted_across_any_split() {
        for size in [0, 20, 125, 126, 1024, 70_000] {
            let one = server_frame(size);
            let stream: Vec<u8> = (0..3).flat_map(|_| one.iter().copied()).collect();
            for cut in [1, 2, 3, 7, 11, 4096] {
                let mut rx = Rx::Frames {
                    head: [0; 10],
                    have: 0,
                    skip: 0,
                };
                let mut got = 0;
                for chunk in stream.chunks(cut) {
                    got += frames(&mut rx, chunk, size).unwrap();
                }
                assert_eq!(got, 3, "size {size}, pieces of {cut}");
            }
        }
    }

    #[test]
    fn a_wrong_length_or_a_close_is_an_error() {
        let mut rx = Rx::Frames {
            head: [0; 10],
            have: 0,
            skip: 0,
        };
        assert!(frames(&mut rx, &server_frame(21), 20).is_err());
        let mut rx = Rx::Frames {
            head: [0; 10],
            have: 0,
            skip: 0,
        };
        assert!(frames(&mut rx, &[0x88, 0x02, 0x03, 0xe8], 20).is_err());
    }
}
