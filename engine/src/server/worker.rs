//! What every backend shares: the connection slab, handshake and frame processing,
//! handler dispatch, topics, timers and cross-worker commands. Backends only move
//! bytes: they call [`Core::on_read`] with received bytes, write what
//! [`Core::take_dirty`] names, and report completions.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{self, IoSlice};
use std::os::fd::{OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::proto::close::CloseCode;
use crate::proto::conn::{Connection, Event, HeaderBytes, Message, ReadyState, Role};
use crate::proto::frame::{OpCode, Status};
use crate::proto::handshake::{self, HeadScanner, Negotiation, Request};
use crate::sys;

use super::config::Config;
use super::handler::{CloseInfo, ConnId, Handler, HttpResponse, UpgradeRequest, WebSocket};
use super::queue::{OutQueue, Pool};

/// What `send` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    /// Written or queued.
    Sent,
    /// Queued, but the connection is over its backpressure limit: wait for
    /// `on_drain` before sending more.
    Backpressure,
    /// Not sent: the connection is closing or was dropped for exceeding
    /// `max_buffered`.
    Dropped,
}

/// Serializes a whole unmasked (server) frame once, for sharing among receivers.
pub(crate) fn serialize(msg: Message<'_>) -> Vec<u8> {
    let payload = msg.as_bytes();
    let header = HeaderBytes::unmasked(msg.opcode(), true, payload.len());
    let mut v = Vec::with_capacity(header.as_slice().len() + payload.len());
    v.extend_from_slice(header.as_slice());
    v.extend_from_slice(payload);
    v
}

/// Work sent to a worker from another thread.
#[derive(Debug)]
pub(crate) enum Command {
    Publish { topic: Arc<str>, frame: Arc<[u8]> },
    Send { id: ConnId, frame: Arc<[u8]> },
    Shutdown { deadline: Instant },
}

/// A worker's inbox: commands plus the function that wakes its event loop.
pub(crate) struct Mailbox {
    queue: Mutex<Vec<Command>>,
    waker: Mutex<Option<Box<dyn Fn() + Send>>>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

impl Mailbox {
    pub(crate) fn new() -> Self {
        Mailbox {
            queue: Mutex::new(Vec::new()),
            waker: Mutex::new(None),
        }
    }

    pub(crate) fn set_waker(&self, w: Box<dyn Fn() + Send>) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    }

    pub(crate) fn post(&self, cmd: Command) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(cmd);
        if let Some(w) = self
            .waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            w();
        }
    }

    fn take(&self, into: &mut Vec<Command>) {
        std::mem::swap(
            &mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()),
            into,
        );
    }
}

/// State shared by every worker of one server.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Reading the request head.
    Handshake,
    /// Frames flow (the proto state tells OPEN or CLOSING).
    Open,
    /// An HTTP response is being flushed; then the connection closes.
    HttpThenClose,
    /// Write side shut; reading and dropping until EOF or the deadline.
    Lingering,
}

/// Per-connection flags.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flags {
    pub(crate) dirty: bool,
    pub(crate) backpressured: bool,
    pub(crate) close_after_flush: bool,
    pub(crate) ping_sent: bool,
    pub(crate) reset: bool,
    /// io_uring: a send is in flight (its chunks are sealed).
    pub(crate) sending: bool,
}

/// One connection: kept small, since an idle connection costs this much. What only
/// some connections need lives in [`Cold`], allocated on demand.
pub(crate) struct Slot<D> {
    pub(crate) fd: OwnedFd,
    pub(crate) gen: u32,
    pub(crate) phase: Phase,
    pub(crate) flags: Flags,
    pub(crate) close_code: Option<CloseCode>,
    /// Milliseconds since the worker's epoch of the last read.
    pub(crate) last_read: u64,
    /// The deadline that matters now (ms since epoch), 0 for none.
    pub(crate) timer: u64,
    pub(crate) proto: Connection,
    pub(crate) out: OutQueue,
    pub(crate) cold: Option<Box<Cold>>,
    pub(crate) data: Option<D>,
}

/// Per-connection state that an idle, open connection does not need.
#[derive(Debug, Default)]
pub(crate) struct Cold {
    /// Request head scanner (handshake only).
    pub(crate) scanner: HeadScanner,
    /// Received bytes not consumed yet (a partial frame, or the request head).
    pub(crate) carry: Vec<u8>,
    /// A fragmented message being assembled.
    pub(crate) assembly: Vec<u8>,
    /// Topics this connection is subscribed to.
    pub(crate) topics: Vec<u32>,
    /// The peer's close reason.
    pub(crate) close_reason: Box<str>,
}

impl Cold {
    fn is_idle(&self) -> bool {
        self.carry.is_empty()
            && self.assembly.is_empty()
            && self.topics.is_empty()
            && self.close_reason.is_empty()
    }
}

impl<D> Slot<D> {
    pub(crate) fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    fn has_carry(&self) -> bool {
        self.cold.as_ref().is_some_and(|c| !c.carry.is_empty())
    }

    /// Frees the cold part once nothing in it is in use.
    fn trim(&mut self, pool: &mut Pool) {
        if self.phase != Phase::Handshake && self.cold.as_ref().is_some_and(|c| c.is_idle()) {
            if let Some(mut c) = self.cold.take() {
                pool.put(std::mem::take(&mut c.carry));
                pool.put(std::mem::take(&mut c.assembly));
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Topics {
    by_name: HashMap<Arc<str>, u32>,
    members: HashMap<u32, HashSet<usize>>,
    names: HashMap<u32, Arc<str>>,
    next: u32,
}

impl Topics {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.next;
        self.next += 1;
        let name: Arc<str> = Arc::from(name);
        self.by_name.insert(name.clone(), id);
        self.names.insert(id, name);
        id
    }

    fn remove_member(&mut self, id: u32, idx: usize) {
        if let Some(m) = self.members.get_mut(&id) {
            m.remove(&idx);
            if m.is_empty() {
                self.members.remove(&id);
                if let Some(name) = self.names.remove(&id) {
                    self.by_name.remove(&name);
                }
            }
        }
    }
}

/// The per-connection part of the API, lent to handler callbacks.
pub(crate) struct ConnCtx<'a> {
    pub(crate) id: ConnId,
    idx: usize,
    fd: RawFd,
    direct_write_min: usize,
    proto: &'a mut Connection,
    out: &'a mut OutQueue,
    flags: &'a mut Flags,
    cold: &'a mut Option<Box<Cold>>,
    timer: &'a mut u64,
    pool: &'a mut Pool,
    topics: &'a mut Topics,
    publishes: &'a mut Vec<(Arc<str>, Arc<[u8]>)>,
    dirty: &'a mut Vec<usize>,
    timers: &'a mut BinaryHeap<Reverse<(u64, usize, u32)>>,
    gen: u32,
    cfg: &'a Config,
    now_ms: u64,
    ctl: &'a mut Vec<u8>,
}

fn mark_dirty(flags: &mut Flags, dirty: &mut Vec<usize>, idx: usize) {
    if !flags.dirty {
        flags.dirty = true;
        dirty.push(idx);
    }
}

impl ConnCtx<'_> {
    pub(crate) fn send(&mut self, msg: Message<'_>) -> SendStatus {
        let payload = msg.as_bytes();
        let Ok(header) = self.proto.frame_header(msg.opcode(), true, payload.len()) else {
            return SendStatus::Dropped;
        };
        if self.flags.reset {
            return SendStatus::Dropped;
        }
        let mut written = 0;
        if payload.len() >= self.direct_write_min && self.out.is_empty() {
            let iov = [IoSlice::new(header.as_slice()), IoSlice::new(payload)];
            written = sys::writev(self.fd, &iov).unwrap_or(0);
        }
        let h = header.as_slice();
        if written == 0 {
            self.out.push_frame(self.pool, &header, payload);
        } else if written < h.len() {
            self.out.push_pair(self.pool, &h[written..], payload);
        } else {
            self.out
                .push_bytes(self.pool, &payload[written - h.len()..]);
        }
        self.after_queue()
    }

    fn after_queue(&mut self) -> SendStatus {
        if !self.out.is_empty() {
            mark_dirty(self.flags, self.dirty, self.idx);
        }
        if self.out.len() > self.cfg.max_buffered {
            self.flags.reset = true;
            return SendStatus::Dropped;
        }
        if self.out.len() > self.cfg.backpressure_limit {
            self.flags.backpressured = true;
            SendStatus::Backpressure
        } else {
            SendStatus::Sent
        }
    }

    pub(crate) fn control(&mut self, op: OpCode, payload: &[u8]) -> SendStatus {
        self.ctl.clear();
        if self.proto.write_frame(op, true, payload, self.ctl).is_err() {
            return SendStatus::Dropped;
        }
        self.out.push_bytes(self.pool, self.ctl);
        self.after_queue()
    }

    pub(crate) fn close(&mut self, code: CloseCode, reason: &str) {
        if self.proto.close_sent() {
            return;
        }
        self.ctl.clear();
        self.proto.close(Some(code), reason, self.ctl);
        self.out.push_bytes(self.pool, self.ctl);
        mark_dirty(self.flags, self.dirty, self.idx);
        let at = self.now_ms + self.cfg.close_timeout.as_millis() as u64;
        *self.timer = at;
        self.timers.push(Reverse((at, self.idx, self.gen)));
    }

    pub(crate) fn buffered(&self) -> usize {
        self.out.len()
    }

    pub(crate) fn ready_state(&self) -> ReadyState {
        self.proto.ready_state()
    }

    pub(crate) fn subscribe(&mut self, topic: &str) {
        let id = self.topics.id(topic);
        if self.topics.members.entry(id).or_default().insert(self.idx) {
            self.cold.get_or_insert_with(Box::default).topics.push(id);
        }
    }

    pub(crate) fn unsubscribe(&mut self, topic: &str) {
        if let Some(&id) = self.topics.by_name.get(topic) {
            self.topics.remove_member(id, self.idx);
            if let Some(c) = self.cold.as_mut() {
                c.topics.retain(|&t| t != id);
            }
        }
    }

    pub(crate) fn publish(&mut self, topic: &str, frame: Arc<[u8]>) {
        self.publishes.push((Arc::from(topic), frame));
    }
}

/// One worker's state, driven by a backend.
pub(crate) struct Core<H: Handler> {
    pub(crate) index: usize,
    pub(crate) cfg: Arc<Config>,
    pub(crate) handler: H,
    pub(crate) slots: Slab<Slot<H::Data>>,
    gen: u32,
    pub(crate) pool: Pool,
    ctl: Vec<u8>,
    dirty: Vec<usize>,
    topics: Topics,
    publishes: Vec<(Arc<str>, Arc<[u8]>)>,
    timers: BinaryHeap<Reverse<(u64, usize, u32)>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) now: Instant,
    epoch: Instant,
    now_ms: u64,
    pub(crate) shutdown: Option<Instant>,
    commands: Vec<Command>,
    /// Backends that can write synchronously (epoll) let `send` write large payloads
    /// at once.
    /// Payloads of at least this many bytes to a connection with nothing queued are
    /// written at once with `writev` (`usize::MAX`: never).
    pub(crate) direct_write_min: usize,
    /// Backends with operations in flight (io_uring) take finished slots from here, to
    /// cancel their operations and keep buffers alive until the completions arrive.
    pub(crate) keep_reaped: bool,
    pub(crate) reaped: Vec<(usize, Slot<H::Data>)>,
}

/// How long a lingering close waits for the peer's FIN at most.
const LINGER: Duration = Duration::from_secs(2);

impl<H: Handler> Core<H> {
    pub(crate) fn new(index: usize, cfg: Arc<Config>, handler: H, shared: Arc<Shared>) -> Self {
        Core {
            index,
            cfg,
            handler,
            slots: Slab::new(),
            gen: 0,
            pool: Pool::default(),
            ctl: Vec::new(),
            dirty: Vec::new(),
            topics: Topics::default(),
            publishes: Vec::new(),
            timers: BinaryHeap::new(),
            shared,
            now: Instant::now(),
            // a second back, so that every time is at least 1000 ms (0 means "none")
            epoch: Instant::now() - Duration::from_secs(1),
            now_ms: 1000,
            shutdown: None,
            commands: Vec::new(),
            direct_write_min: usize::MAX,
            keep_reaped: false,
            reaped: Vec::new(),
        }
    }

    pub(crate) fn id_of(&self, idx: usize) -> ConnId {
        ConnId::new(self.index, idx, self.slots[idx].gen)
    }

    /// A new TCP connection. Returns its slot, or `None` if it was refused (503).
    pub(crate) fn on_accept(&mut self, fd: OwnedFd) -> Option<usize> {
        if self.cfg.nodelay {
            let _ = sys::set_nodelay(sys::raw(&fd));
        }
        if self.slots.len() >= self.cfg.max_connections || self.shutdown.is_some() {
            let mut resp = Vec::new();
            handshake::write_error_response(&mut resp, 503, "too many connections\n", &[]);
            let _ = sys::writev(sys::raw(&fd), &[IoSlice::new(&resp)]);
            return None;
        }
        self.gen = self.gen.wrapping_add(1);
        let raw = self.cfg.raw_tcp_echo;
        let at = if raw {
            0
        } else {
            self.now_ms + self.cfg.handshake_timeout.as_millis() as u64
        };
        let idx = self.slots.insert(Slot {
            fd,
            gen: self.gen,
            phase: if raw { Phase::Open } else { Phase::Handshake },
            flags: Flags::default(),
            close_code: None,
            last_read: self.now_ms,
            timer: at,
            proto: Connection::new(Role::Server, self.cfg.limits, 0),
            out: OutQueue::default(),
            cold: (!raw).then(Box::default),
            data: None,
        });
        if !raw {
            self.timers.push(Reverse((at, idx, self.gen)));
        }
        Some(idx)
    }

    /// Sets the clock for this loop iteration.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
    }

    /// The instant of a deadline kept in ms since the epoch.
    fn instant_of(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Bytes received on `idx`. `data` may be unmasked in place.
    pub(crate) fn on_read(&mut self, idx: usize, data: &mut [u8]) {
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        slot.last_read = self.now_ms;
        if self.cfg.raw_tcp_echo {
            // the benchmark ceiling: same queue, cork and write path, no WebSocket
            slot.out.push_bytes(&mut self.pool, data);
            mark_dirty(&mut slot.flags, &mut self.dirty, idx);
            return;
        }
        slot.flags.ping_sent = false;
        if slot.phase == Phase::Lingering || slot.phase == Phase::HttpThenClose {
            return;
        }
        if slot.has_carry() || slot.phase == Phase::Handshake {
            let cold = slot.cold();
            if cold.carry.capacity() == 0 {
                cold.carry = self.pool.get();
            }
            cold.carry.extend_from_slice(data);
            self.process_carry(idx);
        } else {
            let used = self.process(idx, data);
            if let Some(slot) = self.slots.get_mut(idx) {
                if used < data.len() && slot.phase != Phase::Lingering {
                    let mut c = self.pool.get();
                    c.extend_from_slice(&data[used..]);
                    slot.cold().carry = c;
                } else {
                    slot.trim(&mut self.pool);
                }
            }
        }
    }

    /// Processes what is in `idx`'s carry buffer (backends that read straight into it
    /// call this after growing it).
    pub(crate) fn process_carry(&mut self, idx: usize) {
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        let mut carry = std::mem::take(&mut slot.cold().carry);
        let used = self.process(idx, &mut carry);
        carry.drain(..used.min(carry.len()));
        match self.slots.get_mut(idx) {
            Some(slot) if !carry.is_empty() && slot.phase != Phase::Lingering => {
                slot.cold().carry = carry
            }
            Some(slot) => {
                self.pool.put(carry);
                slot.trim(&mut self.pool);
            }
            None => self.pool.put(carry),
        }
    }

    /// The carry buffer of `idx`, if a partial frame is pending in it.
    pub(crate) fn carry_mut(&mut self, idx: usize) -> Option<&mut Vec<u8>> {
        let slot = self.slots.get_mut(idx)?;
        let cold = slot.cold.as_mut()?;
        (!cold.carry.is_empty()).then_some(&mut cold.carry)
    }

    /// Processes `buf` for `idx`; returns how many bytes were used.
    fn process(&mut self, idx: usize, buf: &mut [u8]) -> usize {
        let mut start = 0;
        if self.slots[idx].phase == Phase::Handshake {
            match self.handshake(idx, buf) {
                Some(n) => start = n,
                // an incomplete head stays in the carry buffer until the rest arrives
                None if self
                    .slots
                    .get(idx)
                    .is_some_and(|s| s.phase == Phase::Handshake) =>
                {
                    return 0
                }
                None => return buf.len(),
            }
        }
        if self.slots.get(idx).is_some_and(|s| s.phase == Phase::Open) {
            start + self.frames(idx, &mut buf[start..])
        } else {
            buf.len()
        }
    }

    /// Handles the request head; returns the head's length once the connection is
    /// open, or `None` (need more, or the connection is answered and closing).
    fn handshake(&mut self, idx: usize, buf: &mut [u8]) -> Option<usize> {
        let cfg = self.cfg.clone();
        let slot = &mut self.slots[idx];
        let head_len = match slot.cold().scanner.feed(buf, &cfg.handshake.limits) {
            Ok(Status::Complete(n)) => n,
            Ok(Status::Partial) => return None,
            Err(e) => {
                self.http_error(idx, e.status(), e.as_str());
                return None;
            }
        };
        let req = match Request::parse(&buf[..head_len], &cfg.handshake.limits) {
            Ok(r) => r,
            Err(e) => {
                self.http_error(idx, e.status(), e.as_str());
                return None;
            }
        };
        let accepted = match handshake::negotiate(&req, &cfg.handshake) {
            Ok(Negotiation::Upgrade(a)) => a,
            Ok(Negotiation::Http) => {
                let handler = &mut self.handler;
                let resp = catch_unwind(AssertUnwindSafe(|| handler.on_http(&req)))
                    .unwrap_or_else(|_| HttpResponse::new(500, "internal error\n"));
                let headers: Vec<(&str, &str)> = resp
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.respond_and_close(idx, resp.status, &resp.body, &headers);
                return None;
            }
            Err(e) => {
                self.http_error(idx, e.status(), e.as_str());
                return None;
            }
        };
        let peer = sys::peer_addr(sys::raw(&self.slots[idx].fd));
        let up = UpgradeRequest {
            request: &req,
            peer,
            protocol: std::cell::Cell::new(
                accepted
                    .protocol
                    .and_then(|chosen| req.protocols().find(|p| *p == chosen)),
            ),
            headers: Default::default(),
        };
        let handler = &mut self.handler;
        let data = match catch_unwind(AssertUnwindSafe(|| handler.on_upgrade(&up))) {
            Ok(Ok(d)) => d,
            Ok(Err(rej)) => {
                self.respond_and_close(idx, rej.status, &rej.body, &[]);
                return None;
            }
            Err(_) => {
                self.respond_and_close(idx, 500, "internal error\n", &[]);
                return None;
            }
        };
        let accepted = handshake::Accepted {
            protocol: up.protocol.get(),
            ..accepted
        };
        let extra = up.headers.into_inner();
        let extra: Vec<(&str, &str)> = extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.ctl.clear();
        handshake::write_accept_response(&mut self.ctl, &accepted, None, &extra);
        let slot = &mut self.slots[idx];
        slot.out.push_bytes(&mut self.pool, &self.ctl);
        mark_dirty(&mut slot.flags, &mut self.dirty, idx);
        slot.phase = Phase::Open;
        slot.data = Some(data);
        slot.timer = 0;
        slot.cold().scanner = HeadScanner::new();
        self.arm_idle(idx);
        self.dispatch(idx, |h, ws| h.on_open(ws));
        Some(head_len)
    }

    fn arm_idle(&mut self, idx: usize) {
        if let Some(t) = self.cfg.idle_timeout {
            let slot = &mut self.slots[idx];
            let at = slot.last_read + t.as_millis() as u64;
            slot.timer = at;
            self.timers.push(Reverse((at, idx, slot.gen)));
        }
    }

    fn http_error(&mut self, idx: usize, status: u16, why: &str) {
        let body = format!("{why}\n");
        self.respond_and_close(idx, status, &body, &[]);
    }

    fn respond_and_close(&mut self, idx: usize, status: u16, body: &str, extra: &[(&str, &str)]) {
        self.ctl.clear();
        handshake::write_error_response(&mut self.ctl, status, body, extra);
        let slot = &mut self.slots[idx];
        slot.out.push_bytes(&mut self.pool, &self.ctl);
        slot.phase = Phase::HttpThenClose;
        slot.flags.close_after_flush = true;
        mark_dirty(&mut slot.flags, &mut self.dirty, idx);
    }

    /// Runs `f` with the handler and a [`WebSocket`] for `idx`; a panic closes the
    /// connection with 1011.
    fn dispatch<R>(
        &mut self,
        idx: usize,
        f: impl FnOnce(&mut H, &mut WebSocket<'_, H::Data>) -> R,
    ) -> Option<R> {
        let id = self.id_of(idx);
        let Core {
            slots,
            handler,
            pool,
            topics,
            publishes,
            dirty,
            timers,
            cfg,
            now_ms,
            ctl,
            direct_write_min,
            ..
        } = self;
        let slot = slots.get_mut(idx)?;
        let data = slot.data.as_mut()?;
        let mut ws = WebSocket {
            ctx: ConnCtx {
                id,
                idx,
                fd: sys::raw(&slot.fd),
                direct_write_min: *direct_write_min,
                proto: &mut slot.proto,
                out: &mut slot.out,
                flags: &mut slot.flags,
                cold: &mut slot.cold,
                timer: &mut slot.timer,
                pool,
                topics,
                publishes,
                dirty,
                timers,
                gen: slot.gen,
                cfg,
                now_ms: *now_ms,
                ctl,
            },
            data,
        };
        let r = catch_unwind(AssertUnwindSafe(|| f(handler, &mut ws)));
        match r {
            Ok(r) => Some(r),
            Err(_) => {
                self.fail_internal(idx);
                None
            }
        }
    }

    /// A callback panicked: close the connection with 1011, as a close of our own
    /// (the peer's reply completes it; `close_timeout` bounds the wait).
    fn fail_internal(&mut self, idx: usize) {
        if self.slots.contains(idx) && self.slots[idx].data.is_some() {
            self.dispatch(idx, |_, ws| {
                ws.close(CloseCode::INTERNAL_ERROR, "handler panicked")
            });
        } else if let Some(slot) = self.slots.get_mut(idx) {
            slot.flags.close_after_flush = true;
            mark_dirty(&mut slot.flags, &mut self.dirty, idx);
        }
    }

    /// Runs frames through the protocol and the handler; returns bytes used.
    fn frames(&mut self, idx: usize, buf: &mut [u8]) -> usize {
        let mut assembly = self.slots[idx]
            .cold
            .as_mut()
            .map(|c| std::mem::take(&mut c.assembly))
            .unwrap_or_default();
        let mut pos = 0;
        loop {
            let slot = &mut self.slots[idx];
            self.ctl.clear();
            let r = slot
                .proto
                .poll_read(&mut buf[pos..], &mut assembly, &mut self.ctl);
            if !self.ctl.is_empty() {
                slot.out.push_bytes(&mut self.pool, &self.ctl);
                mark_dirty(&mut slot.flags, &mut self.dirty, idx);
            }
            match r {
                Ok((n, Some(ev))) => {
                    pos += n;
                    let closing = matches!(ev, Event::Close { .. });
                    if let Event::Close { code, reason } = ev {
                        slot.close_code = Some(code.unwrap_or(CloseCode::NO_STATUS));
                        if !reason.is_empty() {
                            slot.cold().close_reason = Box::from(reason);
                        }
                        if slot.proto.should_close_transport() {
                            // nothing may be left to write: make sure a flush runs so the
                            // TCP close follows at once
                            slot.flags.close_after_flush = true;
                            mark_dirty(&mut slot.flags, &mut self.dirty, idx);
                        }
                    }
                    let alive = match ev {
                        Event::Message(m) => self.dispatch(idx, |h, ws| h.on_message(ws, m)),
                        Event::Ping(p) => self.dispatch(idx, |h, ws| h.on_ping(ws, p)),
                        Event::Pong(p) => self.dispatch(idx, |h, ws| h.on_pong(ws, p)),
                        Event::Close { .. } => Some(()),
                    };
                    if alive.is_none() || closing {
                        pos = buf.len();
                        break;
                    }
                }
                Ok((n, None)) => {
                    pos += n;
                    break;
                }
                Err(e) => {
                    slot.close_code = Some(e.close_code());
                    slot.flags.close_after_flush = true;
                    pos = buf.len();
                    break;
                }
            }
        }
        if let Some(slot) = self.slots.get_mut(idx) {
            if assembly.is_empty() {
                self.pool.put(assembly);
            } else {
                slot.cold().assembly = assembly;
            }
        }
        self.run_publishes();
        pos
    }

    /// Delivers publishes queued by handlers: one shared frame for every receiver.
    fn run_publishes(&mut self) {
        while let Some((topic, frame)) = self.publishes.pop() {
            for (i, mb) in self.shared.mailboxes.iter().enumerate() {
                if i != self.index {
                    mb.post(Command::Publish {
                        topic: topic.clone(),
                        frame: frame.clone(),
                    });
                }
            }
            self.publish_local(&topic, &frame);
        }
    }

    fn publish_local(&mut self, topic: &str, frame: &Arc<[u8]>) {
        let Some(&id) = self.topics.by_name.get(topic) else {
            return;
        };
        let Some(members) = self.topics.members.get(&id) else {
            return;
        };
        for &idx in members {
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            if slot.proto.close_sent() || slot.flags.reset {
                continue;
            }
            slot.out.push_shared(&mut self.pool, frame.clone());
            mark_dirty(&mut slot.flags, &mut self.dirty, idx);
            if slot.out.len() > self.cfg.max_buffered {
                slot.flags.reset = true;
            } else if slot.out.len() > self.cfg.backpressure_limit {
                slot.flags.backpressured = true;
            }
        }
    }

    /// Connections with bytes to write since the last call.
    pub(crate) fn take_dirty(&mut self, into: &mut Vec<usize>) {
        into.clear();
        std::mem::swap(into, &mut self.dirty);
        for &idx in into.iter() {
            if let Some(s) = self.slots.get_mut(idx) {
                s.flags.dirty = false;
            }
        }
    }

    /// Writes `idx`'s queue with `writev` until it is empty or the socket is full.
    pub(crate) fn flush_sync(&mut self, idx: usize) {
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        let fd = sys::raw(&slot.fd);
        while !slot.out.is_empty() && !slot.flags.reset {
            let mut iov = [IoSlice::new(&[]); 64];
            let n = slot.out.iovecs(&mut iov);
            match sys::writev(fd, &iov[..n]) {
                Ok(w) => slot.out.advance(w, &mut self.pool),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    slot.out.clear(&mut self.pool);
                    slot.flags.reset = true;
                }
            }
        }
        self.after_write(idx);
    }

    /// After bytes were written (or the queue changed): backpressure drain, closing.
    /// Returns false if the connection is gone.
    pub(crate) fn after_write(&mut self, idx: usize) -> bool {
        let Some(slot) = self.slots.get_mut(idx) else {
            return false;
        };
        if slot.flags.reset {
            let _ = sys::set_linger_zero(sys::raw(&slot.fd));
            self.finish(idx);
            return false;
        }
        if !slot.out.is_empty() {
            return true;
        }
        if slot.flags.backpressured && slot.out.len() <= self.cfg.backpressure_limit {
            slot.flags.backpressured = false;
            if self.dispatch(idx, |h, ws| h.on_drain(ws)).is_none() {
                return self.slots.contains(idx);
            }
            if !self.slots[idx].out.is_empty() {
                return true;
            }
        }
        let slot = &mut self.slots[idx];
        if slot.flags.close_after_flush && slot.phase != Phase::Lingering {
            // the server closes TCP first: FIN now, then read until the peer's FIN
            let _ = sys::shutdown_write(sys::raw(&slot.fd));
            slot.phase = Phase::Lingering;
            let at = self.now_ms + LINGER.min(self.cfg.close_timeout).as_millis() as u64;
            slot.timer = at;
            self.timers.push(Reverse((at, idx, slot.gen)));
        }
        true
    }

    /// The peer closed its side (EOF) or the socket failed.
    pub(crate) fn on_eof(&mut self, idx: usize) {
        self.finish(idx);
    }

    /// Removes `idx`: tells the handler, leaves its topics, and closes the descriptor
    /// (or hands the slot to the backend through `reaped`).
    pub(crate) fn finish(&mut self, idx: usize) {
        let Some(mut slot) = self.slots.try_remove(idx) else {
            return;
        };
        let mut cold = slot.cold.take().unwrap_or_default();
        for t in cold.topics.drain(..) {
            self.topics.remove_member(t, idx);
        }
        if let Some(data) = slot.data.take() {
            let clean = slot.proto.was_clean();
            let code = if clean || slot.close_code.is_some() && slot.proto.close_received() {
                slot.close_code.unwrap_or(CloseCode::NO_STATUS)
            } else if slot.proto.failed() {
                slot.close_code.unwrap_or(CloseCode::ABNORMAL)
            } else {
                CloseCode::ABNORMAL
            };
            let info = CloseInfo {
                code,
                reason: &cold.close_reason,
                was_clean: clean,
            };
            let id = ConnId::new(self.index, idx, slot.gen);
            let handler = &mut self.handler;
            let _ = catch_unwind(AssertUnwindSafe(|| handler.on_close(id, data, info)));
        }
        self.pool.put(std::mem::take(&mut cold.carry));
        self.pool.put(std::mem::take(&mut cold.assembly));
        if self.keep_reaped {
            self.reaped.push((idx, slot));
        }
    }

    /// Fires due timers. Returns the time of the next one.
    pub(crate) fn on_tick(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, idx, gen))) = self.timers.peek() {
            if at > self.now_ms {
                return Some(self.instant_of(at));
            }
            self.timers.pop();
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            if slot.gen != gen || slot.timer != at {
                continue;
            }
            slot.timer = 0;
            match slot.phase {
                Phase::Handshake => {
                    self.http_error(idx, 408, "handshake timeout");
                }
                Phase::Lingering | Phase::HttpThenClose => {
                    self.finish(idx);
                }
                Phase::Open if slot.proto.close_sent() => {
                    // the peer never answered our close
                    slot.flags.close_after_flush = true;
                    if !slot.flags.sending {
                        slot.out.clear(&mut self.pool);
                    }
                    self.after_write(idx);
                }
                Phase::Open => {
                    let Some(idle) = self.cfg.idle_timeout else {
                        continue;
                    };
                    let idle = idle.as_millis() as u64;
                    if slot.last_read + idle > self.now_ms {
                        self.arm_idle(idx);
                    } else if !slot.flags.ping_sent {
                        slot.flags.ping_sent = true;
                        self.ctl.clear();
                        let _ = slot
                            .proto
                            .write_frame(OpCode::Ping, true, b"", &mut self.ctl);
                        slot.out.push_bytes(&mut self.pool, &self.ctl);
                        mark_dirty(&mut slot.flags, &mut self.dirty, idx);
                        let at = self.now_ms + idle;
                        slot.timer = at;
                        self.timers.push(Reverse((at, idx, gen)));
                    } else {
                        self.dispatch(idx, |_, ws| ws.close(CloseCode::GOING_AWAY, "idle timeout"));
                    }
                }
            }
        }
        None
    }

    /// Runs commands from other threads.
    pub(crate) fn on_commands(&mut self) {
        let mut cmds = std::mem::take(&mut self.commands);
        self.shared.mailboxes[self.index].take(&mut cmds);
        for c in cmds.drain(..) {
            match c {
                Command::Publish { topic, frame } => self.publish_local(&topic, &frame),
                Command::Send { id, frame } => {
                    let idx = id.idx();
                    let Some(slot) = self.slots.get_mut(idx) else {
                        continue;
                    };
                    if slot.gen & 0xffff != id.gen16()
                        || slot.phase != Phase::Open
                        || slot.proto.close_sent()
                    {
                        continue;
                    }
                    slot.out.push_shared(&mut self.pool, frame);
                    mark_dirty(&mut slot.flags, &mut self.dirty, idx);
                }
                Command::Shutdown { deadline } => self.begin_shutdown(deadline),
            }
        }
        self.commands = cmds;
    }

    fn begin_shutdown(&mut self, deadline: Instant) {
        self.shutdown = Some(deadline);
        let open: Vec<usize> = self.slots.iter().map(|(i, _)| i).collect();
        for idx in open {
            match self.slots[idx].phase {
                Phase::Open => {
                    self.dispatch(idx, |_, ws| {
                        ws.close(CloseCode::GOING_AWAY, "server shutdown")
                    });
                }
                Phase::Handshake => {
                    self.http_error(idx, 503, "server shutting down");
                }
                _ => {}
            }
        }
    }

    /// During shutdown: whether every connection is gone or the deadline passed (then
    /// the rest are dropped).
    pub(crate) fn shutdown_done(&mut self) -> bool {
        let Some(deadline) = self.shutdown else {
            return false;
        };
        if self.slots.is_empty() {
            return true;
        }
        if self.now >= deadline {
            let all: Vec<usize> = self.slots.iter().map(|(i, _)| i).collect();
            for idx in all {
                self.finish(idx);
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    /// An idle connection's slot is what the ≤ 256 B per idle connection budget pays
    /// for, with the slab's own overhead and the kernel's socket outside it.
    #[test]
    fn idle_slot_stays_small() {
        let size = size_of::<super::Slot<()>>();
        assert!(size <= 160, "Slot<()> grew to {size} bytes");
    }
}
