//! One worker thread: an edge-triggered mio event loop over its share of the
//! connections, driving Soliton's sans-I/O client role.
//!
//! Per loop iteration: wait for events (or the next scheduled send), read every ready
//! socket into one shared buffer (a partial frame is kept on its connection and
//! presented again in front of the next read), handle every frame in it, queue what to
//! send on each connection, then write each connection's queue once. Nothing is
//! allocated per message: frames are built in the connection's reusable send buffer,
//! masked by the engine with a fresh key per frame, and the 16-byte stamp is patched in
//! after masking.
//!
//! Two I/O drivers share all of this: epoll (mio), and io_uring (`ring`): there every
//! send of an iteration goes in the one `io_uring_enter` that then waits, receives are
//! multishot into a provided buffer ring, and a connect is a poll for writability.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use soliton::proto::handshake::{self, ClientRequest, HeadLimits, HeadScanner, Response};
use soliton::proto::{CloseCode, Connection, Event, Limits, OpCode, Role, Status};

use crate::stats::{new_hist, ErrKind, Shared, Stats, NEVER};
use crate::sys;
use crate::target::Target;

mod ring;

/// Bytes at the start of every payload: send time and sequence number.
pub(crate) const STAMP: usize = 16;
/// The stamp's last byte, so that foreign messages are told apart.
const STAMP_MAGIC: u8 = b'Z';
/// Most bytes queued on one connection before sends are skipped.
const BACKLOG_CAP: usize = 4 << 20;
/// Shared read buffer size.
const RBUF: usize = 256 * 1024;
/// Least free space behind an incomplete frame before reading into a connection's own
/// buffer.
const RX_MIN_ROOM: usize = 4096;
/// Growth step of a connection's own buffer.
const RX_GROW: usize = 16 * 1024;
/// Housekeeping period (timeouts, live counters, progress histograms).
const TICK: u64 = 100_000_000;
const TIMER_TOKEN: Token = Token(usize::MAX - 1);

/// Writes the stamp: time stamp (56 bits) and sequence (49 bits), 7 bits per byte so
/// that every byte is ASCII (a text payload stays valid UTF-8), then the magic byte.
#[inline]
pub(crate) fn encode_stamp(ts: u64, seq: u64) -> [u8; STAMP] {
    let mut s = [0u8; STAMP];
    for (i, b) in s[..8].iter_mut().enumerate() {
        *b = ((ts >> (7 * i)) & 0x7f) as u8;
    }
    for (i, b) in s[8..15].iter_mut().enumerate() {
        *b = ((seq >> (7 * i)) & 0x7f) as u8;
    }
    s[15] = STAMP_MAGIC;
    s
}

/// Reads a stamp back: (time stamp, sequence), or `None` for a payload that is not ours.
#[inline]
pub(crate) fn decode_stamp(p: &[u8]) -> Option<(u64, u64)> {
    let s: &[u8; STAMP] = p.get(..STAMP)?.try_into().ok()?;
    if s[15] != STAMP_MAGIC || s.iter().any(|&b| b >= 0x80) {
        return None;
    }
    let mut ts = 0u64;
    for (i, &b) in s[..8].iter().enumerate() {
        ts |= (b as u64) << (7 * i);
    }
    let mut seq = 0u64;
    for (i, &b) in s[8..15].iter().enumerate() {
        seq |= (b as u64) << (7 * i);
    }
    Some((ts, seq))
}

/// The workers' socket I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Io {
    /// mio (epoll), edge-triggered.
    Epoll,
    /// io_uring (see `ring`).
    Uring,
}

impl Io {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Io::Epoll => "epoll",
            Io::Uring => "io_uring",
        }
    }
}

/// What the worker does with its connections.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// Closed loop: `inflight` messages outstanding per connection.
    Echo { inflight: u32 },
    /// Open loop: this worker's share of the total rate, on a fixed schedule.
    Rate { rate: f64 },
    /// Handshakes; `close` closes each connection once open.
    Connect { close: bool },
    /// Connections held idle.
    Hold,
    /// Publishers (global index below `publishers`) send on a schedule at this worker's
    /// share of the rate; every connection receives.
    Fanout { rate: f64, publishers: usize },
}

/// A worker's orders.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) index: usize,
    pub(crate) threads: usize,
    pub(crate) core: Option<usize>,
    pub(crate) target: Arc<Target>,
    pub(crate) sources: Arc<Vec<std::net::IpAddr>>,
    pub(crate) mode: Mode,
    pub(crate) size: usize,
    pub(crate) text: bool,
    /// Connections per second for this worker (0: as fast as `max_pending` allows).
    pub(crate) ramp: f64,
    /// Most handshakes in progress at once (connect --close: most connections alive).
    pub(crate) max_pending: usize,
    pub(crate) connect_timeout: u64,
    pub(crate) stall_timeout: u64,
    pub(crate) close_timeout: u64,
    pub(crate) io: Io,
    /// Connections this worker opens (at most at once), to size its receive buffers.
    pub(crate) conns: usize,
    pub(crate) shared: Arc<Shared>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Free,
    Connecting,
    Handshake,
    Open,
    /// A close frame went out or came in; waiting for the server to close TCP.
    Closing,
    /// Failed: flush what is queued (a close frame), then drop.
    Failing,
}

#[derive(Debug)]
struct Conn {
    sock: Option<TcpStream>,
    state: State,
    proto: Connection,
    scanner: HeadScanner,
    accept: [u8; 28],
    /// Bytes of an incomplete head or frame (`rx[rx_lo..rx_hi]`), presented again with
    /// what the next read brings, which is read straight in behind them.
    rx: Vec<u8>,
    rx_lo: usize,
    rx_hi: usize,
    asm: Vec<u8>,
    tx: Vec<u8>,
    tx_off: usize,
    dirty: bool,
    /// io_uring: a send is in flight (its bytes are held by the ring, `in_flight` of
    /// them); what is queued meanwhile waits in `tx`.
    sending: bool,
    in_flight: usize,
    /// io_uring: the last sent buffer, reused for the next queue.
    spare: Vec<u8>,
    /// io_uring: a multishot receive, or a connect's poll, is armed.
    recv_armed: bool,
    poll_armed: bool,
    we_closed: bool,
    stalled: bool,
    publisher: bool,
    started: u64,
    /// When the close handshake (or the failure) began.
    since: u64,
    last_rx: u64,
    outstanding: u64,
    seq: u64,
    expect: u64,
    gen: u32,
}

impl Conn {
    fn empty() -> Conn {
        Conn {
            sock: None,
            state: State::Free,
            proto: Connection::new(Role::Client, Limits::default(), 1),
            scanner: HeadScanner::new(),
            accept: [0; 28],
            rx: Vec::new(),
            rx_lo: 0,
            rx_hi: 0,
            asm: Vec::new(),
            tx: Vec::new(),
            tx_off: 0,
            dirty: false,
            sending: false,
            in_flight: 0,
            spare: Vec::new(),
            recv_armed: false,
            poll_armed: false,
            we_closed: false,
            stalled: false,
            publisher: false,
            started: 0,
            since: 0,
            last_rx: 0,
            outstanding: 0,
            seq: 0,
            expect: 0,
            gen: 0,
        }
    }
}

/// Everything but the connections and the read buffer, so that both can be borrowed
/// beside it.
struct Ctx {
    plan: Plan,
    stats: Stats,
    /// Latencies for the progress line (whole run).
    interval: Histogram<u64>,
    template: Vec<u8>,
    opcode: OpCode,
    dirty: Vec<usize>,
    dead: Vec<usize>,
    now: u64,
    go: u64,
    ms: u64,
    me: u64,
    closing: bool,
    open: u64,
    pending: u64,
    live: u64,
    failed: u64,
    outstanding: u64,
    /// Whether replies are expected (echo, rate): outstanding counts are kept.
    track: bool,
    /// Connections stay idle (hold, connect): free their buffers.
    idle_mode: bool,
    /// How long a closing connection may wait for the server: --close-timeout, plus
    /// 100 µs per connection closed at once at the end of the run.
    close_grace: u64,
    rng: u64,
}

/// Runs a worker to the end and returns its figures.
pub(crate) fn run(plan: Plan) -> Stats {
    if let Some(core) = plan.core {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
    sys::set_timer_slack_1us();
    let shared = plan.shared.clone();
    let live = &shared.workers[plan.index];
    live.tid.store(sys::current_tid() as u64, Relaxed);
    let stats = match Worker::new(plan) {
        Ok(mut w) => {
            w.run();
            w.cx.stats
        }
        Err(e) => {
            eprintln!("soliton-load: worker cannot start: {e}");
            let mut s = Stats::new();
            s.error(ErrKind::Io, 1);
            s
        }
    };
    live.done.store(true, Relaxed);
    stats
}

/// The epoll driver's state.
struct EpollIo {
    poll: Poll,
    events: Events,
    timer: sys::Timer,
    tokens: Vec<(usize, bool, bool, bool)>,
}

impl EpollIo {
    fn new() -> io::Result<EpollIo> {
        let poll = Poll::new()?;
        let timer = sys::Timer::new()?;
        poll.registry()
            .register(&mut SourceFd(&timer.raw()), TIMER_TOKEN, Interest::READABLE)?;
        Ok(EpollIo {
            poll,
            events: Events::with_capacity(1024),
            timer,
            tokens: Vec::with_capacity(1024),
        })
    }
}

enum Driver {
    Epoll(EpollIo),
    Uring(Box<ring::UringIo>),
}

struct Worker {
    io: Driver,
    conns: Vec<Conn>,
    free: Vec<usize>,
    rbuf: Vec<u8>,
    cx: Ctx,
    /// Connection attempts made (the k-th has global index k * threads + index).
    attempted: usize,
    /// Ramp accounting: (time, attempts) when the current ramp started.
    ramp_base: Option<(u64, usize)>,
    /// Open-loop schedule: messages dispatched so far.
    sched: u64,
    /// Round-robin cursor over connections for the schedule.
    rr: usize,
    next_tick: u64,
    echo_started: bool,
    polls: u64,
    polled_events: u64,
    spins: u64,
}

impl Worker {
    fn new(plan: Plan) -> io::Result<Worker> {
        let io = match plan.io {
            Io::Epoll => Driver::Epoll(EpollIo::new()?),
            // the ring is made here, on the worker's thread: its only submitter
            Io::Uring => match ring::UringIo::new(plan.conns) {
                Ok(u) => Driver::Uring(Box::new(u)),
                Err(e) => {
                    eprintln!(
                        "soliton-load: worker {}: io_uring unavailable ({e}); using epoll",
                        plan.index
                    );
                    Driver::Epoll(EpollIo::new()?)
                }
            },
        };
        let size = plan.size.max(STAMP);
        let template = vec![b'x'; size];
        let opcode = if plan.text {
            OpCode::Text
        } else {
            OpCode::Binary
        };
        let rng = seed(plan.index as u64);
        let track = matches!(plan.mode, Mode::Echo { .. } | Mode::Rate { .. });
        let mode = plan.mode;
        let close_timeout = plan.close_timeout;
        Ok(Worker {
            io,
            conns: Vec::new(),
            free: Vec::new(),
            rbuf: vec![0; RBUF],
            cx: Ctx {
                plan,
                stats: Stats::new(),
                interval: new_hist(),
                template,
                opcode,
                dirty: Vec::new(),
                dead: Vec::new(),
                now: sys::now_ns(),
                go: NEVER,
                ms: NEVER,
                me: NEVER,
                closing: false,
                open: 0,
                pending: 0,
                live: 0,
                failed: 0,
                outstanding: 0,
                track,
                idle_mode: matches!(mode, Mode::Hold | Mode::Connect { .. }),
                close_grace: close_timeout,
                rng,
            },
            attempted: 0,
            ramp_base: None,
            sched: 0,
            rr: 0,
            next_tick: 0,
            echo_started: false,
            polls: 0,
            polled_events: 0,
            spins: 0,
        })
    }

    fn run(&mut self) {
        let shared = self.cx.plan.shared.clone();
        self.cx.now = sys::now_ns();
        loop {
            // one clock reading per iteration: the one taken right after the poll
            let now = self.cx.now;
            self.cx.go = shared.go.load(Relaxed);
            self.cx.ms = shared.measure_start.load(Relaxed);
            self.cx.me = shared.measure_end.load(Relaxed);
            let deadline = shared.deadline.load(Relaxed);
            if now >= deadline {
                break;
            }
            if !self.cx.closing && now >= shared.close_at.load(Relaxed) {
                self.begin_close();
            }
            if self.cx.closing && self.cx.live == 0 {
                break;
            }
            if !self.cx.closing {
                self.open_more(shared.target_conns.load(Relaxed));
                self.schedule();
            }
            self.flush_dirty();
            self.reap();
            if now >= self.next_tick {
                self.tick();
            }
            // sleep until the next event or the next thing to do
            let wake = self.next_wake(deadline);
            let spin = wake <= now + 20_000;
            if spin {
                self.spins += 1;
            }
            let waited = match self.io {
                Driver::Epoll(_) => self.epoll_wait(wake, spin),
                Driver::Uring(_) => self.uring_wait(wake, spin),
            };
            if let Err(e) = waited {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.cx.stats.error(ErrKind::Io, 1);
                    break;
                }
            }
            self.cx.now = sys::now_ns();
            self.polls += 1;
            match self.io {
                Driver::Epoll(_) => self.epoll_dispatch(),
                Driver::Uring(_) => self.uring_dispatch(),
            }
        }
        self.finish();
    }

    fn epoll_wait(&mut self, wake: u64, spin: bool) -> io::Result<()> {
        let Driver::Epoll(e) = &mut self.io else {
            return Ok(());
        };
        let timeout = if spin {
            std::time::Duration::ZERO
        } else {
            e.timer.arm(wake);
            std::time::Duration::from_millis(250)
        };
        e.poll.poll(&mut e.events, Some(timeout))
    }

    fn epoll_dispatch(&mut self) {
        let Driver::Epoll(e) = &mut self.io else {
            return;
        };
        self.polled_events += e.events.iter().count() as u64;
        // tokens are copied out first: the handlers borrow the worker mutably
        let mut tokens = std::mem::take(&mut e.tokens);
        tokens.clear();
        for ev in e.events.iter() {
            let hup = ev.is_read_closed() || ev.is_error();
            let r = ev.is_readable() || hup;
            let w = ev.is_writable() || ev.is_error();
            tokens.push((ev.token().0, r, w, hup));
        }
        for &(tok, readable, writable, hup) in &tokens {
            self.on_event(tok, readable, writable, hup);
        }
        if let Driver::Epoll(e) = &mut self.io {
            e.tokens = tokens;
        }
    }

    /// When the loop must wake next at the latest.
    fn next_wake(&self, deadline: u64) -> u64 {
        let cx = &self.cx;
        let mut wake = self.next_tick.min(deadline);
        let shared = &cx.plan.shared;
        if !cx.closing {
            wake = wake.min(shared.close_at.load(Relaxed));
        }
        if cx.go == NEVER {
            wake = wake.min(cx.now + 1_000_000);
        }
        if !cx.closing {
            if let Some(rate) = self.rate() {
                if cx.go != NEVER && rate > 0.0 {
                    let next = cx.go + (self.sched as f64 * 1e9 / rate) as u64;
                    if next < cx.me {
                        wake = wake.min(next);
                    }
                }
            }
            if let Some((t0, a0)) = self.ramp_base {
                let r = cx.plan.ramp;
                if r > 0.0 {
                    let next = t0 + ((self.attempted - a0) as f64 * 1e9 / r) as u64;
                    wake = wake.min(next.max(cx.now + 100_000));
                }
            }
        }
        wake
    }

    fn rate(&self) -> Option<f64> {
        match self.cx.plan.mode {
            Mode::Rate { rate } | Mode::Fanout { rate, .. } => Some(rate),
            _ => None,
        }
    }

    fn on_event(&mut self, tok: usize, readable: bool, writable: bool, hup: bool) {
        if tok == TIMER_TOKEN.0 {
            return;
        }
        let i = tok & 0xffff_ffff;
        let gen = (tok >> 32) as u32;
        let Some(c) = self.conns.get(i) else { return };
        if c.gen != gen || c.sock.is_none() {
            return;
        }
        let state = c.state;
        match state {
            State::Free => {}
            State::Connecting => {
                if readable || writable {
                    self.finish_connect(i, writable && !hup);
                }
            }
            _ => {
                if writable {
                    mark_dirty(&mut self.conns[i], i, &mut self.cx.dirty);
                }
                if readable {
                    self.on_readable(i, hup);
                }
            }
        }
    }

    /// The TCP connect finished (or failed): send the upgrade request. `writable`: the
    /// event said so, which for a connecting socket means connected unless SO_ERROR
    /// says otherwise.
    fn finish_connect(&mut self, i: usize, writable: bool) {
        let c = &mut self.conns[i];
        let Some(sock) = c.sock.as_ref() else { return };
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                let k = ErrKind::of_connect(&e);
                self.cx.conn_failed(c, i, k);
                return;
            }
            Ok(None) => {}
        }
        if !writable {
            match sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
                Err(e) => {
                    let k = ErrKind::of_connect(&e);
                    self.cx.conn_failed(c, i, k);
                    return;
                }
            }
        }
        let t = &self.cx.plan.target;
        let protocols: Vec<&str> = t.protocols.iter().map(String::as_str).collect();
        let extra: Vec<(&str, &str)> = t
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let req = ClientRequest {
            host: &t.host,
            path: &t.path,
            protocols: &protocols,
            extensions: None,
            origin: t.origin.as_deref(),
            extra: &extra,
        };
        let a = next_rand(&mut self.cx.rng);
        let b = next_rand(&mut self.cx.rng);
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&a.to_le_bytes());
        nonce[8..].copy_from_slice(&b.to_le_bytes());
        c.tx.clear();
        c.tx_off = 0;
        c.accept = handshake::write_client_request(&mut c.tx, &req, nonce);
        c.state = State::Handshake;
        mark_dirty(c, i, &mut self.cx.dirty);
    }

    /// Reads until the socket is drained. `hup`: the peer's FIN is known to have
    /// arrived, so read to the end even after a short read.
    fn on_readable(&mut self, i: usize, hup: bool) {
        loop {
            let c = &mut self.conns[i];
            if matches!(c.state, State::Free | State::Failing) {
                return;
            }
            // With an incomplete frame pending, read straight in behind it on the
            // connection's own buffer; otherwise into the shared buffer (no copy).
            let direct = c.rx_hi > c.rx_lo;
            let mut own = Vec::new();
            if direct {
                if c.rx.len() - c.rx_hi < RX_MIN_ROOM {
                    c.rx.copy_within(c.rx_lo..c.rx_hi, 0);
                    c.rx_hi -= c.rx_lo;
                    c.rx_lo = 0;
                    if c.rx.len() - c.rx_hi < RX_MIN_ROOM {
                        let want = (c.rx.len() * 2).max(c.rx_hi + RX_GROW);
                        c.rx.resize(want, 0);
                    }
                }
                own = std::mem::take(&mut c.rx);
            }
            let (buf, lo, start): (&mut [u8], usize, usize) = if direct {
                (&mut own[..], c.rx_lo, c.rx_hi)
            } else {
                (&mut self.rbuf[..], 0, 0)
            };
            let room = buf.len() - start;
            let Some(sock) = c.sock.as_mut() else { return };
            let res = sock.read(&mut buf[start..]);
            let n = match res {
                Ok(0) => {
                    if direct {
                        c.rx = own;
                    }
                    self.cx.on_eof(c, i);
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    if direct {
                        c.rx = own;
                    }
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return,
                        io::ErrorKind::Interrupted => continue,
                        _ => {
                            self.cx.on_read_error(c, i, &e);
                            return;
                        }
                    }
                }
            };
            let end = start + n;
            let used = self.cx.process(c, i, &mut buf[lo..end]);
            if direct {
                c.rx = own;
                c.rx_lo = lo + used;
                c.rx_hi = end;
            } else if c.state != State::Free && used < end {
                let left = end - used;
                if c.rx.len() < left + RX_MIN_ROOM {
                    c.rx.resize(left + RX_GROW, 0);
                }
                c.rx[..left].copy_from_slice(&self.rbuf[used..end]);
                c.rx_lo = 0;
                c.rx_hi = left;
            }
            if c.rx_lo == c.rx_hi || c.state == State::Free {
                c.rx_lo = 0;
                c.rx_hi = 0;
                // idle connections (hold, connect) keep no buffer
                if self.cx.idle_mode && !c.rx.is_empty() {
                    c.rx = Vec::new();
                }
            }
            if n < room && !hup && c.state == State::Open {
                // a short read drained the socket; the next bytes raise a new edge (a
                // FIN that came with these bytes is flagged by `hup`)
                return;
            }
        }
    }

    /// Starts connections up to the target, within the ramp and the pending limit.
    fn open_more(&mut self, target: usize) {
        let p = &self.cx.plan;
        let (threads, index) = (p.threads, p.index);
        let limit = p.max_pending as u64;
        let close_mode = matches!(p.mode, Mode::Connect { close: true });
        loop {
            let gi = self.attempted * threads + index;
            if gi >= target {
                self.ramp_base = None;
                return;
            }
            let busy = if close_mode {
                self.cx.live
            } else {
                self.cx.pending
            };
            if busy >= limit {
                return;
            }
            if self.cx.plan.ramp > 0.0 {
                let (t0, a0) = *self.ramp_base.get_or_insert((self.cx.now, self.attempted));
                let allowed =
                    ((self.cx.now - t0) as f64 * self.cx.plan.ramp / 1e9) as usize + 1 + a0;
                if self.attempted >= allowed {
                    return;
                }
            }
            self.attempted += 1;
            self.open_one(gi);
        }
    }

    fn open_one(&mut self, gi: usize) {
        let cx = &mut self.cx;
        cx.stats.attempts += 1;
        if cx.stats.first_attempt == NEVER {
            cx.stats.first_attempt = cx.now;
        }
        let addr = cx.plan.target.addr;
        let src = (!cx.plan.sources.is_empty())
            .then(|| cx.plan.sources[(gi / cx.plan.threads.max(1)) % cx.plan.sources.len()]);
        let sock = match start_connect(addr, src) {
            Ok(s) => s,
            Err(e) => {
                cx.stats.error(ErrKind::of_connect(&e), 1);
                cx.failed += 1;
                return;
            }
        };
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(Conn::empty());
                self.conns.len() - 1
            }
        };
        let c = &mut self.conns[i];
        c.gen = c.gen.wrapping_add(1);
        let mut sock = sock;
        match &mut self.io {
            Driver::Epoll(e) => {
                let token = Token(((c.gen as usize) << 32) | i);
                if let Err(e) = e.poll.registry().register(
                    &mut sock,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    cx.stats.error(ErrKind::of_connect(&e), 1);
                    cx.failed += 1;
                    self.free.push(i);
                    return;
                }
            }
            Driver::Uring(u) => {
                use std::os::fd::AsRawFd;
                u.ring
                    .poll_writable(sock.as_raw_fd(), ring::ud(ring::K_POLL, i, c.gen));
                c.poll_armed = true;
            }
        }
        let seed = next_rand(&mut cx.rng);
        c.sock = Some(sock);
        c.state = State::Connecting;
        c.proto = Connection::new(Role::Client, Limits::default(), seed);
        c.scanner = HeadScanner::new();
        c.rx_lo = 0;
        c.rx_hi = 0;
        c.asm.clear();
        c.tx.clear();
        c.tx_off = 0;
        c.dirty = false;
        c.sending = false;
        c.in_flight = 0;
        c.recv_armed = false;
        c.we_closed = false;
        c.stalled = false;
        c.publisher = matches!(cx.plan.mode, Mode::Fanout { publishers, .. } if gi < publishers);
        c.started = cx.now;
        c.last_rx = cx.now;
        c.outstanding = 0;
        c.seq = 0;
        c.expect = 0;
        cx.pending += 1;
        cx.live += 1;
    }

    /// Echo's first messages at go; the open-loop schedule.
    fn schedule(&mut self) {
        let cx = &mut self.cx;
        if cx.go == NEVER || cx.now < cx.go {
            return;
        }
        match cx.plan.mode {
            Mode::Echo { inflight } => {
                if !self.echo_started {
                    self.echo_started = true;
                    for i in 0..self.conns.len() {
                        let c = &mut self.conns[i];
                        if c.state == State::Open {
                            for _ in 0..inflight {
                                cx.send(c, i, cx.now);
                            }
                        }
                    }
                }
            }
            Mode::Rate { rate } | Mode::Fanout { rate, .. } => {
                if rate <= 0.0 {
                    return;
                }
                let fanout = matches!(cx.plan.mode, Mode::Fanout { .. });
                let end = cx.now.min(cx.me.saturating_sub(1));
                if end < cx.go {
                    return;
                }
                let due = ((end - cx.go) as f64 * rate / 1e9) as u64 + 1;
                let n = self.conns.len();
                while self.sched < due {
                    let intended = cx.go + (self.sched as f64 * 1e9 / rate) as u64;
                    // next open connection (publishers only, for fanout)
                    let mut found = None;
                    for _ in 0..n {
                        let i = self.rr;
                        self.rr = if self.rr + 1 >= n { 0 } else { self.rr + 1 };
                        let c = &self.conns[i];
                        if c.state == State::Open && (!fanout || c.publisher) {
                            found = Some(i);
                            break;
                        }
                    }
                    let Some(i) = found else {
                        if intended >= cx.ms && intended < cx.me {
                            cx.stats.error(ErrKind::Unsent, due - self.sched);
                        }
                        self.sched = due;
                        break;
                    };
                    cx.send(&mut self.conns[i], i, intended);
                    self.sched += 1;
                }
            }
            Mode::Connect { .. } | Mode::Hold => {}
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.cx.dirty);
        for &i in &dirty {
            let c = &mut self.conns[i];
            c.dirty = false;
            if c.sock.is_none() || c.state == State::Free {
                continue;
            }
            match &mut self.io {
                Driver::Epoll(_) => match flush(c) {
                    Ok(_) => {
                        if c.state == State::Failing && c.tx_off >= c.tx.len() {
                            self.cx.kill(c, i);
                        }
                    }
                    Err(e) => self.cx.on_read_error(c, i, &e),
                },
                Driver::Uring(u) => {
                    ring::start_send(&mut u.ring, c, i);
                    if c.state == State::Failing && !c.sending && c.tx_off >= c.tx.len() {
                        self.cx.kill(c, i);
                    }
                }
            }
        }
        dirty.clear();
        if self.cx.dirty.is_empty() {
            self.cx.dirty = dirty;
        }
    }

    /// Drops the connections that ended in this iteration.
    fn reap(&mut self) {
        let dead = std::mem::take(&mut self.cx.dead);
        for &i in &dead {
            let c = &mut self.conns[i];
            match &mut self.io {
                // closing the descriptor also removes it from the epoll set
                Driver::Epoll(_) => drop(c.sock.take()),
                Driver::Uring(u) => u.release(c, i),
            }
            c.state = State::Free;
            c.rx_lo = 0;
            c.rx_hi = 0;
            // give back memory held for large messages
            if c.rx.len() > 256 * 1024 {
                c.rx = Vec::new();
            }
            for v in [&mut c.asm, &mut c.tx, &mut c.spare] {
                if v.capacity() > 256 * 1024 {
                    *v = Vec::new();
                } else {
                    v.clear();
                }
            }
            self.free.push(i);
        }
        self.cx.dead = dead;
        self.cx.dead.clear();
    }

    /// Timeouts, live counters and the progress histogram.
    fn tick(&mut self) {
        let now = self.cx.now;
        self.next_tick = now + TICK;
        let cx = &mut self.cx;
        let ct = cx.plan.connect_timeout;
        let st = cx.plan.stall_timeout;
        let cl = cx.close_grace;
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            match c.state {
                State::Connecting if now - c.started > ct => {
                    cx.conn_failed(c, i, ErrKind::ConnectTimeout);
                }
                State::Handshake if now - c.started > ct => {
                    cx.conn_failed(c, i, ErrKind::HandshakeTimeout);
                }
                State::Open
                    if c.outstanding > 0 && !c.stalled && now.saturating_sub(c.last_rx) > st =>
                {
                    c.stalled = true;
                    cx.stats.error(ErrKind::Stall, 1);
                }
                State::Closing | State::Failing if now.saturating_sub(c.since) > cl => {
                    if c.we_closed && !c.proto.close_received() {
                        cx.stats.error(ErrKind::CloseTimeout, 1);
                    }
                    cx.kill(c, i);
                }
                _ => {}
            }
        }
        self.reap();
        self.publish();
    }

    fn publish(&mut self) {
        let cx = &mut self.cx;
        let live = &cx.plan.shared.workers[cx.plan.index];
        live.attempted.store(cx.stats.attempts, Relaxed);
        live.open.store(cx.open, Relaxed);
        live.failed.store(cx.failed, Relaxed);
        live.handshakes.store(cx.stats.handshakes, Relaxed);
        live.sent.store(cx.stats.sent_total, Relaxed);
        live.received.store(cx.stats.received_total, Relaxed);
        live.errors.store(cx.stats.errors_total(), Relaxed);
        live.outstanding.store(cx.outstanding, Relaxed);
        live.live.store(cx.live, Relaxed);
        if !cx.interval.is_empty() {
            if let Ok(mut h) = live.interval.lock() {
                let _ = h.add(&cx.interval);
            }
            cx.interval.reset();
        }
    }

    /// Sends a close (1000) on every open connection; unanswered messages count.
    fn begin_close(&mut self) {
        let cx = &mut self.cx;
        cx.closing = true;
        cx.stats.open_at_close = cx.open;
        cx.close_grace = cx.plan.close_timeout + cx.open * cx.plan.threads as u64 * 100_000;
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            match c.state {
                State::Open => {
                    cx.stats.error(ErrKind::NoReply, c.outstanding);
                    cx.outstanding -= c.outstanding;
                    c.outstanding = 0;
                    c.we_closed = true;
                    c.proto.close(Some(CloseCode::NORMAL), "", &mut c.tx);
                    c.state = State::Closing;
                    c.since = cx.now;
                    cx.open -= 1;
                    mark_dirty(c, i, &mut cx.dirty);
                }
                State::Connecting | State::Handshake => {
                    // not open yet when the run ends: not an error of the server's
                    cx.pending -= 1;
                    cx.kill(c, i);
                }
                _ => {}
            }
        }
        self.flush_dirty();
        self.reap();
    }

    fn finish(&mut self) {
        let cx = &mut self.cx;
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            match c.state {
                State::Free => {}
                State::Closing if c.we_closed => {
                    cx.stats.error(ErrKind::CloseTimeout, 1);
                    cx.kill(c, i);
                }
                State::Open => {
                    cx.stats.error(ErrKind::NoReply, c.outstanding);
                    cx.kill(c, i);
                }
                _ => cx.kill(c, i),
            }
        }
        self.reap();
        self.publish();
        if std::env::var_os("SOLITON_LOAD_DEBUG").is_some() {
            eprintln!(
                "worker {}: {} polls ({} with a zero timeout), {} events ({:.2} per poll)",
                self.cx.plan.index,
                self.polls,
                self.spins,
                self.polled_events,
                self.polled_events as f64 / self.polls.max(1) as f64
            );
            if let Driver::Uring(u) = &self.io {
                eprintln!("worker {}: io_uring: {}", self.cx.plan.index, u.counters());
            }
        }
    }
}

fn mark_dirty(c: &mut Conn, i: usize, dirty: &mut Vec<usize>) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(i);
    }
}

/// Writes what is queued; `Ok(true)` when all of it went.
fn flush(c: &mut Conn) -> io::Result<bool> {
    let Some(sock) = c.sock.as_mut() else {
        return Ok(true);
    };
    while c.tx_off < c.tx.len() {
        match sock.write(&c.tx[c.tx_off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => c.tx_off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.tx.clear();
    c.tx_off = 0;
    Ok(true)
}

fn start_connect(addr: SocketAddr, src: Option<std::net::IpAddr>) -> io::Result<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    sock.set_tcp_nodelay(true)?;
    if let Some(ip) = src {
        use std::os::fd::AsRawFd;
        sys::set_bind_no_port(sock.as_raw_fd());
        sock.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(sock.into()))
}

fn seed(index: u64) -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (t ^ (index + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (std::process::id() as u64) << 32) | 1
}

fn next_rand(s: &mut u64) -> u64 {
    // splitmix64
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Ctx {
    /// Queues one message stamped with `ts` on `c`.
    #[inline]
    fn send(&mut self, c: &mut Conn, i: usize, ts: u64) {
        if c.tx.len() - c.tx_off + c.in_flight > BACKLOG_CAP {
            self.stats.error(ErrKind::Backlog, 1);
            return;
        }
        let start = c.tx.len();
        if c.proto
            .write_frame(self.opcode, true, &self.template, &mut c.tx)
            .is_err()
        {
            self.stats.error(ErrKind::Unsent, 1);
            return;
        }
        // patch the stamp over the masked template: the key is the 4 bytes before the
        // payload
        let len = self.template.len();
        let p = c.tx.len() - len;
        debug_assert!(p >= start + 6);
        let key = [c.tx[p - 4], c.tx[p - 3], c.tx[p - 2], c.tx[p - 1]];
        let stamp = encode_stamp(ts, c.seq);
        for (k, (d, s)) in c.tx[p..p + STAMP].iter_mut().zip(stamp).enumerate() {
            *d = s ^ key[k & 3];
        }
        c.seq += 1;
        if self.track {
            if c.outstanding == 0 {
                // the stall clock starts with the first unanswered message
                c.last_rx = self.now;
            }
            c.outstanding += 1;
            self.outstanding += 1;
        }
        self.stats.sent_total += 1;
        if ts >= self.ms && ts < self.me {
            self.stats.sent += 1;
            self.stats.bytes_sent += len as u64;
        }
        mark_dirty(c, i, &mut self.dirty);
    }

    /// Handles `buf` (earlier incomplete bytes, then what was just read) and returns
    /// how much of it was consumed: the rest is an incomplete head or frame.
    fn process(&mut self, c: &mut Conn, i: usize, buf: &mut [u8]) -> usize {
        let end = buf.len();
        let mut pos = 0;
        if c.state == State::Handshake {
            match c.scanner.feed(buf, &HeadLimits::default()) {
                Ok(Status::Partial) => return 0,
                Err(_) => {
                    self.conn_failed(c, i, ErrKind::HandshakeInvalid);
                    return end;
                }
                Ok(Status::Complete(h)) => {
                    let protocols: Vec<&str> = self
                        .plan
                        .target
                        .protocols
                        .iter()
                        .map(String::as_str)
                        .collect();
                    let verdict = match Response::parse(&buf[..h], &HeadLimits::default()) {
                        Err(_) => Err(ErrKind::HandshakeInvalid),
                        Ok(r) if r.status() != 101 => Err(ErrKind::HandshakeStatus(r.status())),
                        Ok(r) => handshake::check_response(&r, &c.accept, &protocols)
                            .map(|_| ())
                            .map_err(|_| ErrKind::HandshakeInvalid),
                    };
                    if let Err(k) = verdict {
                        self.conn_failed(c, i, k);
                        return end;
                    }
                    pos = h;
                    self.on_open(c, i);
                }
            }
        }
        if !matches!(c.state, State::Open | State::Closing) {
            return end;
        }
        loop {
            match c.proto.poll_read(&mut buf[pos..end], &mut c.asm, &mut c.tx) {
                Ok((n, Some(ev))) => {
                    pos += n;
                    match ev {
                        Event::Message(m) => {
                            let b = m.as_bytes();
                            let len = b.len();
                            let stamp = decode_stamp(b);
                            self.on_message(c, i, len, stamp);
                        }
                        Event::Ping(_) => mark_dirty(c, i, &mut self.dirty),
                        Event::Pong(_) => {}
                        Event::Close { code, .. } => {
                            if !c.we_closed {
                                let code = code.map_or(1005, |c| c.get());
                                self.stats.error(ErrKind::Close(code), 1);
                                self.lose(c);
                                if c.state == State::Open {
                                    self.open -= 1;
                                }
                                self.failed += 1;
                            } else {
                                self.stats.clean_closes += 1;
                            }
                            c.state = State::Closing;
                            c.since = self.now;
                            mark_dirty(c, i, &mut self.dirty);
                        }
                    }
                }
                Ok((n, None)) => {
                    pos += n;
                    break;
                }
                Err(_) => {
                    self.stats.error(ErrKind::Protocol, 1);
                    self.lose(c);
                    if c.state == State::Open {
                        self.open -= 1;
                        self.failed += 1;
                    }
                    c.state = State::Failing;
                    c.since = self.now;
                    mark_dirty(c, i, &mut self.dirty);
                    return end;
                }
            }
        }
        pos
    }

    fn on_open(&mut self, c: &mut Conn, i: usize) {
        c.state = State::Open;
        c.last_rx = self.now;
        self.pending -= 1;
        self.open += 1;
        self.stats.handshakes += 1;
        self.stats.last_handshake = self.now;
        let lat = self.now.saturating_sub(c.started);
        self.stats.connect.saturating_record(lat.max(1));
        if self.now >= self.ms && self.now < self.me {
            self.stats.handshakes_window += 1;
        }
        // the request's buffer is not needed any more
        if c.tx_off >= c.tx.len() {
            c.tx = Vec::new();
            c.tx_off = 0;
        }
        match self.plan.mode {
            Mode::Connect { close: true } => {
                c.we_closed = true;
                c.proto.close(Some(CloseCode::NORMAL), "", &mut c.tx);
                c.state = State::Closing;
                c.since = self.now;
                self.open -= 1;
                mark_dirty(c, i, &mut self.dirty);
            }
            Mode::Echo { inflight }
                if self.go != NEVER && self.now >= self.go && self.now < self.me =>
            {
                for _ in 0..inflight {
                    self.send(c, i, self.now);
                }
            }
            _ => {}
        }
    }

    #[inline]
    fn on_message(&mut self, c: &mut Conn, i: usize, len: usize, stamp: Option<(u64, u64)>) {
        let now = self.now;
        c.last_rx = now;
        c.stalled = false;
        self.stats.received_total += 1;
        let Some((ts, seq)) = stamp else {
            self.stats.error(ErrKind::Payload, 1);
            return;
        };
        let lat = now.saturating_sub(ts).max(1);
        self.interval.saturating_record(lat);
        if ts >= self.ms && ts < self.me {
            self.stats.latency.saturating_record(lat);
            self.stats.received += 1;
            self.stats.bytes_received += len as u64;
        }
        match self.plan.mode {
            Mode::Echo { .. } | Mode::Rate { .. } => {
                if len != self.template.len() || seq != c.expect || c.outstanding == 0 {
                    self.stats.error(ErrKind::Payload, 1);
                }
                c.expect = seq + 1;
                if c.outstanding > 0 {
                    c.outstanding -= 1;
                    self.outstanding -= 1;
                }
                if matches!(self.plan.mode, Mode::Echo { .. }) && now < self.me && !self.closing {
                    self.send(c, i, now);
                }
            }
            _ => {}
        }
    }

    /// Messages outstanding on a connection that ended are lost.
    fn lose(&mut self, c: &mut Conn) {
        self.stats.error(ErrKind::NoReply, c.outstanding);
        self.outstanding -= c.outstanding;
        c.outstanding = 0;
    }

    fn on_eof(&mut self, c: &mut Conn, i: usize) {
        match c.state {
            State::Connecting | State::Handshake => self.conn_failed(c, i, ErrKind::HandshakeEof),
            State::Open => {
                self.stats.error(ErrKind::Eof, 1);
                self.lose(c);
                self.open -= 1;
                self.failed += 1;
                self.kill(c, i);
            }
            _ => self.kill(c, i),
        }
    }

    fn on_read_error(&mut self, c: &mut Conn, i: usize, e: &io::Error) {
        let k = match e.raw_os_error() {
            Some(libc::ECONNRESET | libc::EPIPE) => ErrKind::Reset,
            _ => ErrKind::Io,
        };
        match c.state {
            State::Connecting | State::Handshake => self.conn_failed(c, i, k),
            State::Open => {
                self.stats.error(k, 1);
                self.lose(c);
                self.open -= 1;
                self.failed += 1;
                self.kill(c, i);
            }
            State::Closing if c.we_closed || c.proto.close_received() => self.kill(c, i),
            _ => {
                self.stats.error(k, 1);
                self.kill(c, i);
            }
        }
    }

    /// A connection that never opened.
    fn conn_failed(&mut self, c: &mut Conn, i: usize, k: ErrKind) {
        self.stats.error(k, 1);
        if matches!(c.state, State::Connecting | State::Handshake) {
            self.pending -= 1;
        }
        self.failed += 1;
        self.kill(c, i);
    }

    /// Ends a connection: its socket is dropped after this iteration.
    fn kill(&mut self, c: &mut Conn, i: usize) {
        if c.state == State::Free {
            return;
        }
        c.state = State::Free;
        self.live -= 1;
        self.dead.push(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip() {
        for (ts, seq) in [
            (0, 0),
            (1, 2),
            ((1 << 56) - 1, (1 << 49) - 1),
            (123_456_789, 42),
        ] {
            let s = encode_stamp(ts, seq);
            assert!(std::str::from_utf8(&s).is_ok());
            assert_eq!(decode_stamp(&s), Some((ts, seq)));
        }
        assert_eq!(decode_stamp(b"hello world, this is not a stamp"), None);
        assert_eq!(decode_stamp(b"short"), None);
    }
}
