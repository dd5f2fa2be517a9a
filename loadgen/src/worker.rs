//! The load on Soliton's client role: one [`Load`] handler per engine worker thread
//! (`soliton::client`), the same drivers (io_uring or epoll), the same loop, the same
//! protocol code as the server.
//!
//! Per loop iteration the engine delivers the events (opens, echoes, closes) to the
//! handler's callbacks, then calls [`Load::on_tick`]: connections are opened there (at
//! the ramp, within the pending limit), open-loop sends that fell due are made there,
//! and it says when it next needs to run (the schedule's next send). Nothing is
//! allocated per message: a payload is written straight into the connection's queue
//! (`send_with`: the 16-byte stamp, then the template), and masked there by the engine.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use soliton::client::{
    Client, ClientHandle, CloseInfo, ConnError, ConnId, ConnectRequest, Handler, WebSocket,
    WorkerCtx,
};
use soliton::proto::{CloseCode, Message, OpCode};
use soliton::server::Backend;

type StatsOut = Arc<Mutex<Option<mpsc::Sender<(usize, Stats)>>>>;

use crate::procfs::{self, instant_of, ns_of};
use crate::stats::{new_hist, ErrKind, Shared, Stats, NEVER};
use crate::target::{Nodes, Target};

/// Bytes at the start of every payload: send time and sequence number.
pub(crate) const STAMP: usize = 16;
/// The stamp's last byte, so that foreign messages are told apart.
const STAMP_MAGIC: u8 = b'Z';
/// Most bytes queued on one connection before sends are skipped.
const BACKLOG_CAP: usize = 4 << 20;
/// Most messages one flood fill queues on a connection.
const FILL_MAX: usize = 1 << 16;
/// Housekeeping period (stalls, live counters, progress histograms).
const TICK: u64 = 100_000_000;
/// Receive buffer size: a 16 KiB message with its header fits in one.
const BUF_SIZE: usize = 32 * 1024;
/// Fewest and most io_uring receive buffers per worker. The kernel takes them in ring
/// order, so every buffer is written in turn: about one per connection keeps the memory
/// the kernel copies into small enough to stay in cache. Running short is no loss: the
/// receive ends with ENOBUFS, the data waits in the socket, and it is armed again.
const BUFS_MIN: usize = 16;
const BUFS_MAX: usize = 1024;
/// epoll's receive buffer.
const EPOLL_BUF: usize = 256 * 1024;
/// Longest sleep of a worker (it reads the controller's phase changes on waking).
const MAX_WAIT: u64 = 250_000_000;
/// Longest sleep of a worker that does not wake for answers (`--rx-time kernel`).
/// Answers left unread slow the server's TCP down (its acknowledgements and window
/// updates wait for the read): with one publisher at 50/s to 1,000 subscribers, sleeping
/// from one send to the next (20 ms) took the median latency from 2.8 to 7.5 ms; a
/// millisecond at most left it at 2.8 (200 µs: 2.5-2.7).
const BATCH_SLEEP_MAX: u64 = 1_000_000;

/// `d` rounded down to a multiple of `tick` (unchanged when `tick` is 0).
fn quantize(d: u64, tick: u64) -> u64 {
    d.checked_div(tick).map_or(d, |n| n * tick)
}

/// Spreads the low 56 bits of `x` over 8 bytes, 7 bits each (little-endian: the
/// lowest 7 bits in the first byte): the top bit of every byte stays clear.
#[inline(always)]
fn spread7(x: u64) -> u64 {
    // halves of 28 bits into 32-bit lanes, quarters of 14 into 16-bit lanes, then
    // sevenths into bytes: 12 operations instead of 24
    let x = x & 0x00ff_ffff_ffff_ffff;
    let x = (x & 0x0fff_ffff) | (x << 4) & 0x0fff_ffff_0000_0000;
    let x = (x & 0x0000_3fff_0000_3fff) | (x << 2) & 0x3fff_0000_3fff_0000;
    (x & 0x007f_007f_007f_007f) | (x << 1) & 0x7f00_7f00_7f00_7f00
}

/// The inverse of [`spread7`] (the top bit of each byte ignored).
#[inline(always)]
fn gather7(y: u64) -> u64 {
    let y = (y & 0x007f_007f_007f_007f) | (y >> 1) & 0x3f80_3f80_3f80_3f80;
    let y = (y & 0x0000_3fff_0000_3fff) | (y >> 2) & 0x0fff_c000_0fff_c000;
    (y & 0x0fff_ffff) | (y >> 4) & 0x00ff_ffff_f000_0000
}

/// Writes the stamp: time stamp (56 bits) and sequence (49 bits), 7 bits per byte so
/// that every byte is ASCII (a text payload stays valid UTF-8), then the magic byte.
#[inline]
pub(crate) fn encode_stamp(ts: u64, seq: u64) -> [u8; STAMP] {
    let lo = spread7(ts);
    let hi = spread7(seq & ((1 << 49) - 1)) | (STAMP_MAGIC as u64) << 56;
    (u128::from(lo) | u128::from(hi) << 64).to_le_bytes()
}

/// Reads a stamp back: (time stamp, sequence), or `None` for a payload that is not ours.
#[inline]
pub(crate) fn decode_stamp(p: &[u8]) -> Option<(u64, u64)> {
    let s: &[u8; STAMP] = p.get(..STAMP)?.try_into().ok()?;
    let lo = u64::from_le_bytes(s[..8].try_into().ok()?);
    let hi = u64::from_le_bytes(s[8..].try_into().ok()?);
    if s[15] != STAMP_MAGIC || (lo | hi) & 0x8080_8080_8080_8080 != 0 {
        return None;
    }
    Some((gather7(lo), gather7(hi & 0x00ff_ffff_ffff_ffff)))
}

/// What fills a payload after its stamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Payload {
    /// One byte repeated.
    X,
    /// JSON-like text: words and numbers.
    Json,
    /// Incompressible (ASCII letters for text messages).
    Random,
}

/// A payload template of `size` bytes (the stamp's 16 are overwritten per message).
fn template(kind: Payload, size: usize, text: bool, seed: u64) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "user", "room", "lobby", "price", "bid", "ask", "status", "online", "message", "hello",
        "update", "id",
    ];
    let mut r = seed | 1;
    let mut next = move || {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        r
    };
    let mut v = Vec::with_capacity(size + 64);
    match kind {
        Payload::X => v.resize(size, b'x'),
        Payload::Random => {
            while v.len() < size {
                let x = next();
                v.push(if text { b'a' + (x % 26) as u8 } else { x as u8 });
            }
        }
        Payload::Json => {
            v.push(b'[');
            while v.len() < size {
                let x = next();
                let w1 = WORDS[(x % 12) as usize];
                let w2 = WORDS[((x >> 8) % 12) as usize];
                let n = (x >> 16) % 100_000;
                v.extend_from_slice(format!(r#"{{"{w1}":"{w2}","n":{n}}},"#).as_bytes());
            }
        }
    }
    v.truncate(size);
    v
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
    /// Open flood: every connection sends as fast as its socket takes messages, keeping
    /// about `window` bytes queued in user space (the engine's backpressure limit), with
    /// no cap on messages in flight.
    Flood,
}

/// A worker's orders.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) index: usize,
    pub(crate) threads: usize,
    pub(crate) core: Option<usize>,
    pub(crate) target: Arc<Target>,
    /// Fanout: where subscribers connect, if not to `target` (spread over these).
    pub(crate) subscriber_targets: Arc<Vec<Target>>,
    /// Fanout across nodes: deliveries are counted per node too (publishers on node 0,
    /// subscribers on their URL's).
    pub(crate) nodes: Arc<Nodes>,
    pub(crate) sources: Arc<Vec<std::net::IpAddr>>,
    pub(crate) mode: Mode,
    pub(crate) size: usize,
    pub(crate) text: bool,
    pub(crate) payload: Payload,
    /// Keep compression context where the server allows it.
    pub(crate) dedicated: bool,
    /// Connections per second for this worker (0: as fast as `max_pending` allows).
    pub(crate) ramp: f64,
    /// Most handshakes in progress at once (connect --close: most connections alive).
    pub(crate) max_pending: usize,
    pub(crate) connect_timeout: u64,
    pub(crate) stall_timeout: u64,
    pub(crate) close_timeout: u64,
    /// Open-loop tick, ns (0: none).
    pub(crate) tick: u64,
    /// Open loop: answers timed by the kernel's receive time stamps; the loop sleeps
    /// from one send (or tick) to the next (1 ms at most) instead of waking for each
    /// answer.
    pub(crate) rx_kernel: bool,
    /// Connections this worker opens (at most at once), to size its receive buffers.
    pub(crate) conns: usize,
    /// Flood: bytes kept queued per connection.
    pub(crate) window: Option<usize>,
    pub(crate) shared: Arc<Shared>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// TCP connect and opening handshake.
    Opening,
    Open,
    /// A close frame went out or came in; waiting for the end.
    Closing,
}

/// One connection's figures (the engine's per-connection data).
#[derive(Debug)]
pub(crate) struct Conn {
    state: State,
    we_closed: bool,
    stalled: bool,
    publisher: bool,
    /// A close frame from the server came before we closed (counted once).
    server_closed: bool,
    started: u64,
    last_rx: u64,
    outstanding: u64,
    seq: u64,
    expect: u64,
    /// Fanout across nodes: the index of this connection's node in `Stats::nodes`.
    node: u16,
}

/// The handler of one worker.
pub(crate) struct Load {
    plan: Plan,
    stats: Stats,
    /// Latencies outside the measured window, for the progress line.
    interval: Histogram<u64>,
    /// The window's latencies as of the last progress reading.
    latency_seen: Histogram<u64>,
    template: Vec<u8>,
    opcode: OpCode,
    /// The connect request per source address (or one, without --source).
    requests: Vec<ConnectRequest>,
    /// Fanout: subscribers' requests, when they go elsewhere than publishers'.
    subscriber_requests: Vec<ConnectRequest>,
    /// Open connections, for the schedule and the housekeeping (those that closed since
    /// are dropped from it when next met).
    open_ids: Vec<ConnId>,
    /// Connections not yet open (for the close at the end).
    opening: Vec<ConnId>,
    now: u64,
    /// The engine's instant that `now` was converted from.
    clock: Option<Instant>,
    go: u64,
    ms: u64,
    me: u64,
    closing: bool,
    finished: bool,
    open: u64,
    pending: u64,
    live: u64,
    failed: u64,
    outstanding: u64,
    track: bool,
    /// Connection attempts made (the k-th has global index k * threads + index).
    attempted: usize,
    ramp_base: Option<(u64, usize)>,
    /// Open-loop schedule: messages dispatched so far.
    sched: u64,
    rr: usize,
    next_tick: u64,
    echo_started: bool,
    close_grace: u64,
    out: StatsOut,
}

impl Load {
    fn new(plan: Plan, out: StatsOut) -> Load {
        let size = plan.size.max(STAMP);
        let base = plan
            .target
            .req
            .clone()
            .timeout(std::time::Duration::from_nanos(plan.connect_timeout));
        let requests = if plan.sources.is_empty() {
            vec![base]
        } else {
            plan.sources
                .iter()
                .map(|ip| base.clone().source(*ip))
                .collect()
        };
        let track = matches!(
            plan.mode,
            Mode::Echo { .. } | Mode::Rate { .. } | Mode::Flood
        );
        let close_grace = plan.close_timeout;
        Load {
            opcode: if plan.text {
                OpCode::Text
            } else {
                OpCode::Binary
            },
            template: template(plan.payload, size, plan.text, plan.index as u64 + 7),
            requests,
            subscriber_requests: plan
                .subscriber_targets
                .iter()
                .map(|t| {
                    t.req
                        .clone()
                        .timeout(std::time::Duration::from_nanos(plan.connect_timeout))
                })
                .collect(),
            stats: Stats::with_nodes(plan.nodes.urls.len()),
            plan,
            interval: new_hist(),
            latency_seen: new_hist(),
            open_ids: Vec::new(),
            opening: Vec::new(),
            now: procfs::now_ns(),
            clock: None,
            go: NEVER,
            ms: NEVER,
            me: NEVER,
            closing: false,
            finished: false,
            open: 0,
            pending: 0,
            live: 0,
            failed: 0,
            outstanding: 0,
            track,
            attempted: 0,
            ramp_base: None,
            sched: 0,
            rr: 0,
            next_tick: 0,
            echo_started: false,
            close_grace,
            out,
        }
    }

    /// Queues one message stamped with `ts` on `ws`; false once the connection's queue
    /// is over the backpressure limit (or the message was not queued).
    #[inline(always)]
    fn send(&mut self, ws: &mut WebSocket<'_, Conn>, ts: u64) -> bool {
        if ws.buffered_amount() > BACKLOG_CAP {
            self.stats.error(ErrKind::Backlog, 1);
            return false;
        }
        let len = self.template.len();
        let c = ws.data();
        let stamp = encode_stamp(ts, c.seq);
        let tail = &self.template[STAMP..];
        let status = ws.send_with(self.opcode, len, |v| {
            v.extend_from_slice(&stamp);
            v.extend_from_slice(tail);
        });
        if status == soliton::client::SendStatus::Dropped {
            self.stats.error(ErrKind::Unsent, 1);
            return false;
        }
        let now = self.now;
        let c = ws.data();
        c.seq += 1;
        if self.track {
            if c.outstanding == 0 {
                // the stall clock starts with the first unanswered message
                c.last_rx = now;
            }
            c.outstanding += 1;
            self.outstanding += 1;
        }
        self.stats.sent_total += 1;
        if ts >= self.ms && ts < self.me {
            self.stats.sent += 1;
            self.stats.bytes_sent += len as u64;
        }
        status == soliton::client::SendStatus::Sent
    }

    /// Flood: queues messages on `ws` until its queue is over the window (the engine's
    /// backpressure limit); `on_drain` calls it again once the queue is back under.
    fn fill(&mut self, ws: &mut WebSocket<'_, Conn>) {
        let now = self.now;
        if self.closing || now < self.go || now >= self.me || ws.data().state != State::Open {
            return;
        }
        // bounded, whatever the window: a loop iteration must end
        for _ in 0..FILL_MAX {
            if !self.send(ws, now) {
                return;
            }
        }
    }

    /// Messages outstanding on a connection that ended are lost.
    fn lose(&mut self, c: &mut Conn) {
        self.stats.error(ErrKind::NoReply, c.outstanding);
        self.outstanding -= c.outstanding;
        c.outstanding = 0;
    }

    /// Starts connections up to the target, within the ramp and the pending limit.
    fn open_more(&mut self, w: &mut WorkerCtx<'_, Conn>, target: usize) {
        let (threads, index) = (self.plan.threads, self.plan.index);
        let limit = self.plan.max_pending as u64;
        let close_mode = matches!(self.plan.mode, Mode::Connect { close: true });
        loop {
            let gi = self.attempted * threads + index;
            if gi >= target {
                self.ramp_base = None;
                return;
            }
            let busy = if close_mode { self.live } else { self.pending };
            if busy >= limit {
                return;
            }
            if self.plan.ramp > 0.0 {
                let (t0, a0) = *self.ramp_base.get_or_insert((self.now, self.attempted));
                let allowed = ((self.now - t0) as f64 * self.plan.ramp / 1e9) as usize + 1 + a0;
                if self.attempted >= allowed {
                    return;
                }
            }
            self.attempted += 1;
            self.stats.attempts += 1;
            if self.stats.first_attempt == NEVER {
                self.stats.first_attempt = self.now;
            }
            let src = if self.requests.len() > 1 {
                (gi / threads.max(1)) % self.requests.len()
            } else {
                0
            };
            // the k-th subscriber of a fanout (none: a publisher, or another scenario)
            let sub = match self.plan.mode {
                Mode::Fanout { publishers, .. } if gi >= publishers => Some(gi - publishers),
                _ => None,
            };
            let node = sub.map_or(0, |k| self.plan.nodes.of_subscriber(k));
            let conn = Conn {
                state: State::Opening,
                we_closed: false,
                stalled: false,
                publisher: matches!(self.plan.mode, Mode::Fanout { publishers, .. } if gi < publishers),
                server_closed: false,
                started: self.now,
                last_rx: self.now,
                outstanding: 0,
                seq: 0,
                expect: 0,
                node,
            };
            let req = match (sub, self.subscriber_requests.len()) {
                (Some(k), n) if n > 0 => &self.subscriber_requests[k % n],
                _ => &self.requests[src],
            };
            match w.connect(req, conn) {
                Ok(id) => {
                    self.pending += 1;
                    self.live += 1;
                    self.opening.push(id);
                }
                Err((e, _)) => {
                    self.stats.error(err_kind(&e), 1);
                    self.failed += 1;
                }
            }
        }
    }

    /// Echo's first messages at go; the open-loop schedule.
    fn schedule(&mut self, w: &mut WorkerCtx<'_, Conn>) {
        if self.go == NEVER || self.now < self.go {
            return;
        }
        match self.plan.mode {
            Mode::Echo { inflight } => {
                if !self.echo_started {
                    self.echo_started = true;
                    let now = self.now;
                    for id in self.open_ids.clone() {
                        w.with(id, |ws| {
                            if ws.data().state == State::Open {
                                for _ in 0..inflight {
                                    self.send(ws, now);
                                }
                            }
                        });
                    }
                }
            }
            Mode::Flood => {
                if !self.echo_started {
                    self.echo_started = true;
                    for id in self.open_ids.clone() {
                        w.with(id, |ws| self.fill(ws));
                    }
                }
            }
            Mode::Rate { rate } | Mode::Fanout { rate, .. } => {
                if rate <= 0.0 {
                    return;
                }
                let fanout = matches!(self.plan.mode, Mode::Fanout { .. });
                let end = self.now.min(self.me.saturating_sub(1));
                if end < self.go {
                    return;
                }
                // the ticks that have begun (every send due by the last one goes now)
                let end = self.go + quantize(end - self.go, self.plan.tick);
                let due = ((end - self.go) as f64 * rate / 1e9) as u64 + 1;
                while self.sched < due {
                    let intended = self.go + self.due_at(self.sched, rate);
                    // next open connection (publishers only, for fanout)
                    let mut sent = false;
                    let mut tries = self.open_ids.len();
                    while tries > 0 && !self.open_ids.is_empty() {
                        tries -= 1;
                        let i = self.rr % self.open_ids.len();
                        let r = w.with(self.open_ids[i], |ws| {
                            let c = ws.data();
                            if c.state != State::Open || (fanout && !c.publisher) {
                                return false;
                            }
                            self.send(ws, intended);
                            true
                        });
                        match r {
                            // closed since: forget it
                            None => {
                                self.open_ids.swap_remove(i);
                            }
                            Some(done) => {
                                self.rr = i + 1;
                                if done {
                                    sent = true;
                                    break;
                                }
                            }
                        }
                    }
                    if !sent {
                        if intended >= self.ms && intended < self.me {
                            self.stats.error(ErrKind::Unsent, due - self.sched);
                        }
                        self.sched = due;
                        break;
                    }
                    self.sched += 1;
                }
            }
            Mode::Connect { .. } | Mode::Hold => {}
        }
    }

    /// Stalls, live counters and the progress histogram.
    fn housekeeping(&mut self, w: &mut WorkerCtx<'_, Conn>) {
        self.next_tick = self.now + TICK;
        let now = self.now;
        let st = self.plan.stall_timeout;
        let mut stalls = 0;
        self.open_ids.retain(|&id| {
            w.with(id, |ws| {
                let c = ws.data();
                if c.outstanding > 0 && !c.stalled && now.saturating_sub(c.last_rx) > st {
                    c.stalled = true;
                    stalls += 1;
                }
            })
            .is_some()
        });
        self.stats.error(ErrKind::Stall, stalls);
        self.opening
            .retain(|id| w.with(*id, |ws| ws.data().state == State::Opening) == Some(true));
        self.publish();
    }

    fn publish(&mut self) {
        let live = &self.plan.shared.workers[self.plan.index];
        live.attempted.store(self.stats.attempts, Relaxed);
        live.open.store(self.open, Relaxed);
        live.failed.store(self.failed, Relaxed);
        live.handshakes.store(self.stats.handshakes, Relaxed);
        live.sent.store(self.stats.sent_total, Relaxed);
        live.received.store(self.stats.received_total, Relaxed);
        live.errors.store(self.stats.errors_total(), Relaxed);
        live.outstanding.store(self.outstanding, Relaxed);
        live.published_at.store(self.now, Relaxed);
        live.live.store(self.live, Relaxed);
        let grown = self.stats.latency.len() > self.latency_seen.len();
        if !self.interval.is_empty() || grown {
            if let Ok(mut h) = live.interval.lock() {
                let _ = h.add(&self.interval);
                if grown {
                    let mut d = self.stats.latency.clone();
                    let _ = d.subtract(&self.latency_seen);
                    let _ = h.add(&d);
                    self.latency_seen = self.stats.latency.clone();
                }
            }
            self.interval.reset();
        }
    }

    /// Sends a close (1000) on every open connection; unanswered messages count.
    /// Connections not open yet are dropped (not an error of the server's).
    fn begin_close(&mut self, w: &mut WorkerCtx<'_, Conn>) {
        self.closing = true;
        self.stats.open_at_close = self.open;
        self.close_grace = self.plan.close_timeout + self.open * self.plan.threads as u64 * 100_000;
        for id in std::mem::take(&mut self.open_ids) {
            w.with(id, |ws| {
                let c = ws.data();
                if c.state != State::Open {
                    return;
                }
                self.stats.error(ErrKind::NoReply, c.outstanding);
                self.outstanding -= c.outstanding;
                c.outstanding = 0;
                c.we_closed = true;
                c.state = State::Closing;
                self.open -= 1;
                ws.close(CloseCode::NORMAL, "");
            });
        }
        for id in std::mem::take(&mut self.opening) {
            w.with(id, |ws| {
                if ws.data().state == State::Opening {
                    ws.data().state = State::Closing;
                    self.pending -= 1;
                    self.live -= 1;
                    ws.terminate();
                }
            });
        }
    }

    /// The end of the run: what is still open or closing is counted and dropped.
    fn finish(&mut self) {
        self.finished = true;
        self.publish();
        let stats = std::mem::replace(&mut self.stats, Stats::new());
        if let Some(tx) = self.out.lock().ok().and_then(|g| g.clone()) {
            let _ = tx.send((self.plan.index, stats));
        }
        self.plan.shared.workers[self.plan.index]
            .done
            .store(true, Relaxed);
    }
}

fn err_kind(e: &ConnError) -> ErrKind {
    match e {
        ConnError::Connect(e) => ErrKind::of_connect(e),
        ConnError::ConnectTimeout => ErrKind::ConnectTimeout,
        ConnError::Timeout => ErrKind::HandshakeTimeout,
        ConnError::Status(s) => ErrKind::HandshakeStatus(*s),
        ConnError::Handshake(_) => ErrKind::HandshakeInvalid,
        ConnError::Protocol(_) => ErrKind::Protocol,
        ConnError::Io(e) => match e.raw_os_error() {
            Some(libc::ECONNRESET | libc::EPIPE) => ErrKind::Reset,
            _ => ErrKind::Io,
        },
        ConnError::Overflow => ErrKind::Backlog,
        ConnError::Layer(why) => {
            // the count says how many; the first one says why (a certificate not trusted...)
            static TOLD: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !TOLD.swap(true, Relaxed) {
                eprintln!("soliton-load: first TLS failure: {why}");
            }
            ErrKind::Tls
        }
        _ => ErrKind::Io,
    }
}

impl Handler for Load {
    type Data = Conn;

    fn on_open(&mut self, ws: &mut WebSocket<'_, Conn>) {
        if self.finished {
            return;
        }
        let now = self.now_of(ws);
        let id = ws.id();
        let close_mode = matches!(self.plan.mode, Mode::Connect { close: true });
        let c = ws.data();
        c.state = State::Open;
        c.last_rx = now;
        let started = c.started;
        if !close_mode {
            self.open_ids.push(id);
        }
        if ws.tls().is_some_and(|t| t.resumed) {
            self.stats.tls_resumed += 1;
        }
        self.pending -= 1;
        self.open += 1;
        self.stats.handshakes += 1;
        self.stats.last_handshake = now;
        self.stats
            .connect
            .saturating_record(now.saturating_sub(started).max(1));
        if now >= self.ms && now < self.me {
            self.stats.handshakes_window += 1;
        }
        match self.plan.mode {
            Mode::Connect { close: true } => {
                let c = ws.data();
                c.we_closed = true;
                c.state = State::Closing;
                self.open -= 1;
                ws.close(CloseCode::NORMAL, "");
            }
            Mode::Echo { inflight } if self.go != NEVER && now >= self.go && now < self.me => {
                for _ in 0..inflight {
                    self.send(ws, now);
                }
            }
            Mode::Flood if self.echo_started => self.fill(ws),
            _ => {}
        }
    }

    #[inline]
    fn on_message(&mut self, ws: &mut WebSocket<'_, Conn>, msg: Message<'_>) {
        if self.finished {
            return;
        }
        let now = self.now_of(ws);
        // the kernel's time of arrival where it gives one (the loop may have slept
        // past it), else the loop's
        let rx = ws.received_at().map_or(now, ns_of);
        let b = msg.as_bytes();
        let len = b.len();
        let stamp = decode_stamp(b);
        let c = ws.data();
        c.last_rx = now;
        c.stalled = false;
        self.stats.received_total += 1;
        let Some((ts, seq)) = stamp else {
            self.stats.error(ErrKind::Payload, 1);
            return;
        };
        let lat = rx.saturating_sub(ts).max(1);
        // one record per message: the window's histogram, or the one for the rest (the
        // progress line reads both, the window's as its growth since the last reading)
        if ts >= self.ms && ts < self.me {
            self.stats.latency.saturating_record(lat);
            self.stats.received += 1;
            self.stats.bytes_received += len as u64;
            // across nodes: the same again in the receiver's node (an index, no lookup)
            if let Some(n) = self.stats.nodes.get_mut(c.node as usize) {
                n.received += 1;
                n.latency.saturating_record(lat);
            }
        } else {
            self.interval.saturating_record(lat);
        }
        if let Mode::Echo { .. } | Mode::Rate { .. } | Mode::Flood = self.plan.mode {
            if len != self.template.len() || seq != c.expect || c.outstanding == 0 {
                self.stats.error(ErrKind::Payload, 1);
            }
            c.expect = seq + 1;
            if c.outstanding > 0 {
                c.outstanding -= 1;
                self.outstanding -= 1;
            }
            if matches!(self.plan.mode, Mode::Echo { .. })
                && now < self.me
                && !self.closing
                && c.state == State::Open
            {
                self.send(ws, now);
            }
        }
    }

    fn on_drain(&mut self, ws: &mut WebSocket<'_, Conn>) {
        if !self.finished && matches!(self.plan.mode, Mode::Flood) {
            self.now_of(ws);
            self.fill(ws);
        }
    }

    fn on_error(&mut self, _id: ConnId, c: &mut Conn, e: &ConnError) {
        if self.finished || c.state == State::Closing && c.we_closed {
            return;
        }
        self.stats.error(err_kind(e), 1);
        c.server_closed = true; // counted: on_close adds nothing more
    }

    fn on_close(&mut self, _id: ConnId, mut c: Conn, info: CloseInfo<'_>) {
        if self.finished {
            return;
        }
        self.live = self.live.saturating_sub(1);
        match c.state {
            State::Opening => {
                self.pending -= 1;
                self.failed += 1;
                if !c.server_closed {
                    self.stats.error(ErrKind::HandshakeEof, 1);
                }
            }
            State::Open => {
                self.open -= 1;
                self.lose(&mut c);
                self.failed += 1;
                if !c.server_closed {
                    let k = if info.code == CloseCode::ABNORMAL {
                        ErrKind::Eof
                    } else {
                        ErrKind::Close(info.code.get())
                    };
                    self.stats.error(k, 1);
                }
            }
            State::Closing => {
                if c.we_closed {
                    if info.was_clean {
                        self.stats.clean_closes += 1;
                    } else if info.code == CloseCode::ABNORMAL && !c.server_closed {
                        self.stats.error(ErrKind::CloseTimeout, 1);
                    }
                }
            }
        }
    }

    fn on_tick(&mut self, w: &mut WorkerCtx<'_, Conn>) -> Option<Instant> {
        if self.finished {
            return None;
        }
        self.clock = Some(w.now());
        self.now = ns_of(w.now());
        let now = self.now;
        let shared = self.plan.shared.clone();
        self.go = shared.go.load(Relaxed);
        self.ms = shared.measure_start.load(Relaxed);
        self.me = shared.measure_end.load(Relaxed);
        let deadline = shared.deadline.load(Relaxed);
        if now >= deadline || (self.closing && self.live == 0) {
            let (payload, wire) = w.compression();
            self.stats.deflate_payload = payload;
            self.stats.deflate_wire = wire;
            self.finish();
            return None;
        }
        if !self.closing && now >= shared.close_at.load(Relaxed) {
            self.begin_close(w);
        }
        if !self.closing {
            self.open_more(w, shared.target_conns.load(Relaxed));
            self.schedule(w);
        }
        if now >= self.next_tick {
            self.housekeeping(w);
        }
        // answers timed by the kernel need not wake the worker: it sleeps until the next
        // send falls due (a tick, a send of its own without ticks, a millisecond at
        // most) and reads everything that came meanwhile in one go. Without ticks that
        // still halves the wake-ups at high rates, where every answer came between two
        // sends and woke the worker once more (40,000 msg/s, medians of 3: 11.7 -> 9.9 us
        // of load CPU per message on epoll, 13.1 -> 9.8 on io_uring, the same latency)
        let batch = self.plan.rx_kernel && self.go != NEVER && now < self.me && !self.closing;
        w.batch_wakeups(batch);
        let mut wake = self.next_wake(deadline);
        if batch {
            wake = wake.min(now + BATCH_SLEEP_MAX);
        }
        Some(instant_of(wake))
    }
}

impl Load {
    /// The time of this loop iteration's events, on the process clock (converted once
    /// per iteration: every callback of one iteration gets the same instant).
    #[inline]
    fn now_of(&mut self, ws: &WebSocket<'_, Conn>) -> u64 {
        let t = ws.now();
        if self.clock != Some(t) {
            self.clock = Some(t);
            self.now = ns_of(t);
        }
        self.now
    }

    /// When (ns after go) the `k`-th scheduled message goes out: its exact time,
    /// rounded up to the tick that sends it.
    fn due_at(&self, k: u64, rate: f64) -> u64 {
        let exact = (k as f64 * 1e9 / rate) as u64;
        let t = self.plan.tick;
        if t == 0 {
            exact
        } else {
            exact.div_ceil(t) * t
        }
    }

    /// When the loop must wake next at the latest.
    fn next_wake(&self, deadline: u64) -> u64 {
        let shared = &self.plan.shared;
        let mut wake = self.next_tick.min(deadline).min(self.now + MAX_WAIT);
        if !self.closing {
            wake = wake.min(shared.close_at.load(Relaxed));
        }
        if self.go == NEVER {
            wake = wake.min(self.now + 1_000_000);
        }
        if !self.closing {
            if let Mode::Rate { rate } | Mode::Fanout { rate, .. } = self.plan.mode {
                if self.go != NEVER && rate > 0.0 {
                    let next = self.go + self.due_at(self.sched, rate);
                    if next < self.me {
                        wake = wake.min(next);
                    }
                }
            }
            if let Some((t0, a0)) = self.ramp_base {
                let r = self.plan.ramp;
                if r > 0.0 {
                    let next = t0 + ((self.attempted - a0) as f64 * 1e9 / r) as u64;
                    wake = wake.min(next.max(self.now + 100_000));
                }
            }
        }
        wake
    }
}

/// The workers of a run: a Soliton client runtime whose handlers are [`Load`]s.
pub(crate) struct Running {
    client: ClientHandle<Conn>,
    rx: mpsc::Receiver<(usize, Stats)>,
    out: StatsOut,
    threads: usize,
}

/// Starts one engine worker per plan, on `backend`.
pub(crate) fn start(plans: Vec<Plan>, backend: Backend) -> std::io::Result<Running> {
    let threads = plans.len().max(1);
    let most = plans.iter().map(|p| p.conns).max().unwrap_or(1);
    let bufs = most.clamp(BUFS_MIN, BUFS_MAX).next_power_of_two() as u16;
    let close = plans.first().map_or(2_000_000_000, |p| p.close_timeout);
    let dedicated = plans.first().is_some_and(|p| p.dedicated);
    let rx_kernel = plans.first().is_some_and(|p| p.rx_kernel);
    // flood: the window is the backpressure limit (send says when to stop, on_drain
    // when to go on); otherwise a cap that only a server not answering reaches
    let backpressure = plans.first().and_then(|p| p.window).unwrap_or(BACKLOG_CAP);
    let (tx, rx) = mpsc::channel();
    let out: StatsOut = Arc::new(Mutex::new(Some(tx)));
    let plans: Arc<Mutex<Vec<Option<Plan>>>> =
        Arc::new(Mutex::new(plans.into_iter().map(Some).collect()));
    let out2 = out.clone();
    let client = Client::builder()
        .deflate(soliton::client::DeflateConfig {
            mode: if dedicated {
                soliton::client::DeflateMode::Dedicated
            } else {
                soliton::client::DeflateMode::Shared
            },
            threshold: 0,
            ..Default::default()
        })
        .workers(threads)
        .backend(backend)
        .pin(None)
        .idle_timeout(None)
        .close_timeout(std::time::Duration::from_nanos(close))
        .buffered_limits(backpressure, 64 << 20)
        // the answers are read whatever the length of our own queue
        .read_throttle(false)
        .receive_timestamps(rx_kernel)
        .receive_buffers(bufs, BUF_SIZE, EPOLL_BUF)
        .start(move |i| {
            let plan = plans
                .lock()
                .ok()
                .and_then(|mut p| p.get_mut(i).and_then(Option::take))
                .expect("one plan per worker");
            // on the worker's own thread
            if let Some(core) = plan.core {
                core_affinity::set_for_current(core_affinity::CoreId { id: core });
            }
            soliton::driver::set_timer_slack_1us();
            let live = &plan.shared.workers[plan.index];
            live.tid.store(procfs::current_tid() as u64, Relaxed);
            Load::new(plan, out2.clone())
        })?;
    Ok(Running {
        client,
        rx,
        out,
        threads,
    })
}

impl Running {
    /// Waits for every worker's figures (they come once the run's deadline passes or
    /// every connection is closed), then stops the workers.
    pub(crate) fn finish(self, deadline: u64) -> Vec<Stats> {
        let mut got: Vec<Option<Stats>> = (0..self.threads).map(|_| None).collect();
        // a little past the deadline the workers must have reported
        let until = instant_of(deadline) + std::time::Duration::from_secs(2);
        while got.iter().any(Option::is_none) {
            let left = until.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((i, s)) => {
                    if let Some(g) = got.get_mut(i) {
                        *g = Some(s);
                    }
                }
                Err(_) => break,
            }
        }
        if let Ok(mut g) = self.out.lock() {
            *g = None;
        }
        if let Err(e) = self.client.shutdown(std::time::Duration::ZERO) {
            eprintln!("soliton-load: {e}");
        }
        got.into_iter()
            .map(|s| {
                s.unwrap_or_else(|| {
                    let mut s = Stats::new();
                    s.error(ErrKind::Io, 1);
                    s
                })
            })
            .collect()
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
        // the byte layout is the reference one: 7 bits per byte, lowest first
        let mut x = 0x1234_5678_9abc_def1u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (ts, seq) = (x >> 8, x & ((1 << 49) - 1));
            let s = encode_stamp(ts, seq);
            for (i, b) in s[..8].iter().enumerate() {
                assert_eq!(*b, ((ts >> (7 * i)) & 0x7f) as u8);
            }
            for (i, b) in s[8..15].iter().enumerate() {
                assert_eq!(*b, ((seq >> (7 * i)) & 0x7f) as u8);
            }
            assert_eq!(decode_stamp(&s), Some((ts, seq)));
        }
        let mut bad = encode_stamp(1, 2);
        bad[3] |= 0x80;
        assert_eq!(decode_stamp(&bad), None);
        assert_eq!(decode_stamp(b"hello world, this is not a stamp"), None);
        assert_eq!(decode_stamp(b"short"), None);
    }
}
