//! One worker: a thread with its own [`Driver`], connection table, buffer pool, timers
//! and topics, running one loop for either backend and both roles.
//!
//! ```text
//! loop {
//!     on_tick          the handler's own work
//!     flush            every connection written to: its queue (through its layer) goes
//!                      to the driver; FIN, resets, closes and read pauses likewise
//!     submit_and_wait  the driver submits and sleeps until events, a wake-up or the
//!                      next deadline
//!     dispatch         the driver reports (Sink): accepted, connected, received, sent,
//!                      closed, woken; the worker runs the protocol and the handler
//!     commands, timers, shutdown
//! }
//! ```
//!
//! The worker makes no system call: everything it needs from the sockets is a request
//! to the driver, made between dispatches.

use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod commands;
mod connect;
mod publish;
pub(crate) use publish::Batches;
mod read;
mod timeouts;
mod upgrade;

use super::config::Config;
use super::ctx::{TimerTask, WorkerCtx};
use super::error::ConnError;
use super::handler::{CloseInfo, Handler};
use super::id::ConnId;
use super::mailbox::{Command, Shared};
use super::rt::{seed, Rt};
use super::slot::{Phase, Slots};
use super::timers::Timers;
use super::topics::Topics;
use super::ws::{mark_dirty, ConnCtx, WebSocket};
use crate::driver::{Chunk, Driver, Sink, Token};
use crate::pool::Pool;
use crate::proto::close::CloseCode;
use crate::proto::conn::Role;

/// How long a lingering close waits for the peer's FIN at most.
const LINGER: Duration = Duration::from_secs(2);

/// How long after the churn count passes `release_memory_after` the worker releases
/// the allocator's free memory (and again after as long, while the churn goes on): a
/// storm still under way frees more meanwhile, and a sustained one costs one release
/// a second.
const RELEASE_DELAY: Duration = Duration::from_secs(1);

/// After a release for churn, with `churn` connections opened or closed since the
/// last one and `tail` telling whether that was already the storm's last: (release
/// again a second later, that one being the last). While the storm goes on (a tenth of
/// `after` within the second) it repeats; after it, one more if anything came or went
/// meanwhile; then nothing until the count passes `after` again.
fn release_again(after: usize, churn: usize, tail: bool) -> (bool, bool) {
    if after == 0 {
        (false, false)
    } else if churn >= (after / 10).max(1) {
        (true, false)
    } else if churn > 0 && !tail {
        (true, true)
    } else {
        (false, false)
    }
}

/// One worker's state.
pub(crate) struct Worker<H: Handler> {
    pub(crate) handler: H,
    pub(crate) slots: Slots<H::Data>,
    pub(crate) rt: Rt,
    pub(crate) commands: Vec<Command>,
    pub(crate) shutdown: Option<Instant>,
    /// Scratch for a layer's output.
    plain: Vec<u8>,
    /// When the handler wants `on_tick` at the latest.
    tick_wish: Option<Instant>,
    listening: bool,
    /// The waker was woken: read the mailbox.
    commands_pending: bool,
    /// When to hand the allocator's free memory back (after churn).
    release_at: Option<Instant>,
    /// The release scheduled is the storm's last, for its stragglers.
    release_tail: bool,
    /// When the driver wants to look at its receive buffers again.
    buffers_at: Option<Instant>,
}

/// Size past which a layer's output is handed to the driver as a chunk of its own.
const WIRE_CHUNK: usize = 64 * 1024;

/// A partial frame that lacks at least this many bytes is read into behind (epoll).
const READ_BEHIND_MIN: usize = 8 * 1024;
/// The smallest read of a connection with writes queued under read-side flow control
/// (below it, reads would cost more system calls than the memory they save).
const READ_MIN: usize = 4 * 1024;

impl<H: Handler> Worker<H> {
    pub(crate) fn new(
        index: usize,
        cfg: Arc<Config>,
        handler: H,
        shared: Arc<Shared>,
        handle: Option<crate::server::ServerHandle>,
    ) -> Self {
        Worker {
            handler,
            slots: Slots::new(),
            rt: Rt {
                index,
                cfg,
                pool: Pool::default(),
                ctl: Vec::new(),
                dirty: Vec::new(),
                topics: Topics::default(),
                publishes: Vec::new(),
                timers: Timers::new(),
                shared: shared.clone(),
                reading_changed: Vec::new(),
                closes: Vec::new(),
                shutdowns: Vec::new(),
                seq: 0,
                rng: seed() ^ index as u64,
                direct: None,
                codecs: Default::default(),
                fanout: Vec::new(),
                batches: Default::default(),
                handle,
                app_timers: Default::default(),
                metrics: shared.metrics[index].clone(),
                arrived: None,
                clocks: None,
                batch_io: false,
            },
            commands: Vec::new(),
            shutdown: None,
            plain: Vec::new(),
            tick_wish: None,
            listening: false,
            commands_pending: false,
            release_at: None,
            release_tail: false,
            buffers_at: None,
        }
    }

    /// Runs the loop until shutdown. `listener`: accept connections on it (server).
    pub(crate) fn run(
        mut self,
        mut driver: Driver,
        listener: Option<std::os::fd::OwnedFd>,
    ) -> io::Result<()> {
        let mailbox = self.rt.shared.mailboxes[self.rt.index].clone();
        mailbox.set_waker(driver.waker());
        if let Some(l) = listener {
            driver.listen(l)?;
            self.listening = true;
        }
        // commands posted before the waker was set
        self.on_commands(&mut driver);
        let r = self.run_loop(&mut driver);
        mailbox
            .closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        r
    }

    fn run_loop(&mut self, driver: &mut Driver) -> io::Result<()> {
        loop {
            self.tick(driver);
            self.flush(driver);
            let deadline = self.next_deadline();
            match deadline {
                Some(until) if self.rt.batch_io => {
                    driver.submit_and_sleep(until)?;
                    self.rt.timers.set_now(Instant::now());
                    // what falls due at the wake goes out before what arrived during
                    // the sleep is read
                    self.tick(driver);
                    self.flush(driver);
                    driver.submit_and_gather()?;
                }
                _ => driver.submit_and_wait(deadline)?,
            }
            self.rt.timers.set_now(Instant::now());
            driver.dispatch(self);
            if self.rt.cfg.rx_timestamps {
                // what is processed outside a read has no time of arrival
                self.rt.arrived = None;
                self.rt.clocks = None;
            }
            if self.commands_pending {
                self.commands_pending = false;
                self.on_commands(driver);
            }
            self.on_timers();
            self.on_app_timers(driver);
            self.release_memory(driver);
            self.buffers_at = driver.tend_buffers(self.rt.timers.now());
            if self.shutdown.is_some() {
                if self.listening {
                    self.listening = false;
                    driver.stop_listening();
                }
                if self.shutdown_done() {
                    self.flush(driver);
                    return Ok(());
                }
            }
        }
    }

    fn next_deadline(&mut self) -> Option<Instant> {
        let next = self.rt.timers.next();
        let app = if self.rt.app_timers.is_empty() {
            None
        } else {
            self.rt.app_timers.next()
        };
        let mut d = [next, self.tick_wish, app, self.release_at, self.buffers_at]
            .into_iter()
            .flatten()
            .min();
        if self.shutdown.is_some() {
            let soon = self.rt.timers.now() + Duration::from_millis(50);
            d = Some(d.map_or(soon, |t| t.min(soon)));
        }
        d
    }

    /// Hands the allocator's free memory, and the pages of the driver's empty receive
    /// buffers, back a while after connection churn (see
    /// [`Config::release_memory_after`]): a second after the count passes the setting,
    /// and again a second later as long as the storm goes on (a tenth of the setting
    /// within the second), then once more if any connection came or went in the last
    /// second (the stragglers: a lingering close ends up to 2 s after the storm, and
    /// one at the end of the tables keeps them from shrinking), so that the last release
    /// comes after its last connection ([`release_again`]).
    fn release_memory(&mut self, driver: &mut Driver) {
        let after = self.rt.cfg.release_memory_after;
        let now = self.rt.timers.now();
        match self.release_at {
            None if after != 0 && self.slots.churn() >= after => {
                self.slots.take_churn();
                self.release_at = Some(now + RELEASE_DELAY);
            }
            Some(at) if now >= at => {
                self.compact_tables(driver);
                driver.release_memory();
                crate::alloc::release_free_memory();
                let more = self.slots.take_churn();
                let (again, tail) = release_again(after, more, self.release_tail);
                self.release_tail = tail;
                self.release_at = again.then(|| now + RELEASE_DELAY);
            }
            _ => {}
        }
    }

    /// Gives back the room the connection tables kept after connections left: the
    /// timer heap's stale entries and spare room, the slot table's free tail, the
    /// driver's socket records', and the buffers both pools keep (before the
    /// allocator's release, which then returns it).
    fn compact_tables(&mut self, driver: &mut Driver) {
        let slots = &self.slots;
        self.rt
            .timers
            .compact(|at, idx| slots.get(idx).is_some_and(|s| s.owns_timer(at)));
        self.slots.compact();
        self.rt.pool.clear();
        driver.compact();
    }

    /// Runs the handler's `on_tick`.
    fn tick(&mut self, driver: &mut Driver) {
        let Worker {
            handler, slots, rt, ..
        } = self;
        let mut w = WorkerCtx { slots, rt, driver };
        self.tick_wish = catch_unwind(AssertUnwindSafe(|| handler.on_tick(&mut w)))
            .ok()
            .flatten();
        self.run_publishes();
    }

    /// Runs the application's timers that are due.
    fn on_app_timers(&mut self, driver: &mut Driver) {
        if self.rt.app_timers.is_empty() {
            return;
        }
        let now = self.rt.timers.now();
        while let Some(task) = self.rt.app_timers.pop_due(now) {
            if let Ok(task) = task.downcast::<TimerTask<H>>() {
                self.run_task(driver, *task);
            }
        }
    }

    /// Runs application code with the handler and the worker's context; a panic in it
    /// is caught (the worker goes on).
    pub(crate) fn run_task(
        &mut self,
        driver: &mut Driver,
        f: impl FnOnce(&mut H, &mut WorkerCtx<'_, H::Data>),
    ) {
        let Worker {
            handler, slots, rt, ..
        } = self;
        let mut w = WorkerCtx { slots, rt, driver };
        if catch_unwind(AssertUnwindSafe(|| f(handler, &mut w))).is_err() {
            tracing::warn!(worker = self.rt.index, "a timer or posted task panicked");
        }
        self.run_publishes();
    }

    /// Hands every written-to connection's queue to the driver, then the other requests.
    fn flush(&mut self, driver: &mut Driver) {
        // connections that may read again: what arrived while they were stopped is
        // processed now (before the writes below, which then carry its answers)
        let mut i = 0;
        while i < self.rt.reading_changed.len() {
            let idx = self.rt.reading_changed[i];
            i += 1;
            let resumed = self.slots.get(idx).is_some_and(|s| {
                s.phase == Phase::Open
                    && !(s.flags.paused() || s.flags.throttled())
                    && s.has_carry()
            });
            if resumed {
                self.process_carry(idx);
                self.throttle(idx);
            }
        }
        let mut dirty = std::mem::take(&mut self.rt.dirty);
        for &idx in &dirty {
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            slot.flags.set_dirty(false);
            if slot.flags.reset() {
                let err =
                    (slot.buffered() > self.rt.cfg.max_buffered).then_some(ConnError::Overflow);
                if err.is_some() {
                    self.rt.metrics.slow_consumer_drops.add(1);
                }
                self.finish(idx, err);
                continue;
            }
            let token = slot.token(idx);
            let mut moved = 0usize;
            let mut failed = None;
            match slot.cold.as_mut().and_then(|c| c.layer.as_mut()) {
                None => {
                    // one chunk and nothing queued in the driver (epoll): written now,
                    // without moving it through the driver's queue; only what the
                    // socket does not take is queued (not while over the limit: the
                    // driver's reports of progress drive on_drain and the throttle)
                    // (nor when the write side is to be shut after it: through the
                    // driver's queue, the FIN leaves in the same segment)
                    let now = match slot.out.only_chunk() {
                        Some(b)
                            if !(slot.flags.backpressured()
                                || slot.flags.throttled()
                                || slot.flags.close_after_flush()) =>
                        {
                            driver.write_now(token, b).map(|n| (n, b.len()))
                        }
                        _ => None,
                    };
                    if let Some((n, len)) = now {
                        self.rt.metrics.bytes_out.add(n as u64);
                        // (advance(len) would do too, but clear is 25 instructions
                        // cheaper per one-in-flight echo, callgrind)
                        if n == len {
                            slot.out.clear(&mut self.rt.pool);
                        } else {
                            slot.out.advance(n, &mut self.rt.pool);
                        }
                    }
                    moved += slot.out.len();
                    driver.write_queue(token, &mut slot.out, &mut self.rt.pool);
                }
                Some(layer) => {
                    let pool = &mut self.rt.pool;
                    let mut wire = pool.get();
                    slot.out.take_all(pool, |pool, c| {
                        if failed.is_none() {
                            if let Err(e) = layer.encode(c.bytes(), &mut wire) {
                                failed = Some(e);
                            }
                        }
                        if let Chunk::Owned(v) = c {
                            pool.put(v);
                        }
                        // the driver reports progress a chunk at a time (on_drain,
                        // throttling): a long queue goes out as chunks of about 64 KiB
                        if wire.len() >= WIRE_CHUNK {
                            moved += wire.len();
                            driver.write(
                                token,
                                Chunk::Owned(std::mem::replace(&mut wire, pool.get())),
                            );
                        }
                    });
                    if slot.flags.close_after_flush() && slot.phase != Phase::Lingering {
                        layer.close();
                    }
                    if failed.is_none() && layer.wants_write() {
                        if let Err(e) = layer.flush(&mut wire) {
                            failed = Some(e);
                        }
                    }
                    moved += wire.len();
                    if !wire.is_empty() {
                        driver.write(token, Chunk::Owned(wire));
                    } else {
                        pool.put(wire);
                    }
                }
            }
            slot.wire = slot
                .wire
                .saturating_add(moved.min(u32::MAX as usize) as u32);
            if let Some(e) = failed {
                slot.flags.set_reset(true);
                self.finish(idx, Some(ConnError::Layer(e)));
                continue;
            }
            if slot.flags.close_after_flush() && slot.phase != Phase::Lingering {
                // FIN once the queue is written, then read until the peer's FIN
                driver.shutdown_write(token);
                slot.phase = Phase::Lingering;
                let at = self.rt.timers.after(LINGER.min(self.rt.cfg.close_timeout));
                self.rt
                    .timers
                    .arm(&mut slot.timer, &mut slot.sched, at, idx);
            }
        }
        dirty.clear();
        if self.rt.dirty.is_empty() {
            self.rt.dirty = dirty;
        }
        for t in self.rt.shutdowns.drain(..) {
            driver.shutdown_write(t);
        }
        for idx in std::mem::take(&mut self.rt.reading_changed) {
            if let Some(s) = self.slots.get(idx) {
                driver.set_reading(s.token(idx), !(s.flags.paused() || s.flags.throttled()));
            }
        }
        for (t, reset) in self.rt.closes.drain(..) {
            driver.close(t, reset);
        }
        driver.reclaim(&mut self.rt.pool);
    }

    /// Runs `f` with the handler and a [`WebSocket`] for `idx`; a panic closes the
    /// connection with 1011.
    pub(crate) fn call<R>(
        &mut self,
        idx: usize,
        f: impl FnOnce(&mut H, &mut WebSocket<'_, H::Data>) -> R,
    ) -> Option<R> {
        let slot = self.slots.get_mut(idx)?;
        slot.data.as_ref()?;
        let id = ConnId::new(self.rt.index, slot.seq(), idx);
        let handler = &mut self.handler;
        let mut ws = WebSocket {
            ctx: ConnCtx {
                id,
                idx,
                slot,
                rt: &mut self.rt,
            },
        };
        match catch_unwind(AssertUnwindSafe(|| f(handler, &mut ws))) {
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
        let open = self
            .slots
            .get(idx)
            .is_some_and(|s| s.data.is_some() && s.phase == Phase::Open);
        if open {
            self.call(idx, |_, ws| {
                ws.close(CloseCode::INTERNAL_ERROR, "handler panicked")
            });
        } else if let Some(slot) = self.slots.get_mut(idx) {
            slot.flags.set_close_after_flush(true);
            mark_dirty(slot, &mut self.rt.dirty, idx);
        }
    }

    /// Records why `idx` failed, for `on_error` when it is finished.
    pub(crate) fn record_error(&mut self, idx: usize, e: ConnError) {
        if let Some(slot) = self.slots.get_mut(idx) {
            let cold = slot.cold();
            if cold.error.is_none() {
                cold.error = Some(e);
            }
        }
    }

    /// Removes `idx`: tells the handler (`on_error`, then `on_close`), leaves its
    /// topics, and gives its token back to the driver.
    pub(crate) fn finish(&mut self, idx: usize, err: Option<ConnError>) {
        let Some(mut slot) = self.slots.remove(idx) else {
            return;
        };
        self.rt.metrics.connections_open.sub(1);
        let mut cold = slot.cold.take().unwrap_or_default();
        for t in cold.topics.drain(..) {
            if let Some(name) = self.rt.topics.remove_member(t, idx) {
                self.rt.shared.count_subscriber(&name, false);
            }
        }
        let id = ConnId::new(self.rt.index, slot.seq(), idx);
        if slot.flags.backpressured() {
            self.rt.shared.set_congested(id, false);
        }
        if let Some(mut data) = slot.data.take() {
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
            let handler = &mut self.handler;
            // the first failure recorded is the cause (a socket error may follow it)
            let err = cold.error.take().or(err);
            self.rt.metrics.closed(code.get());
            let error = err.as_ref().map(tracing::field::display);
            tracing::debug!(
                conn = %id,
                code = code.get(),
                reason = info.reason,
                clean,
                error,
                "closed"
            );
            let _ = catch_unwind(AssertUnwindSafe(|| {
                if let Some(e) = &err {
                    handler.on_error(id, &mut data, e);
                }
                handler.on_close(id, data, info)
            }));
        } else if let Some(e) = cold.error.as_ref().or(err.as_ref()) {
            tracing::debug!(conn = %id, error = %e, "failed before opening");
        }
        if let Some(p) = self.rt.codecs.params(slot.deflate) {
            self.rt
                .codecs
                .release(cold.codec.take(), slot.proto.role(), p);
        }
        self.rt.pool.put(std::mem::take(&mut cold.carry));
        self.rt.pool.put(std::mem::take(&mut cold.assembly));
        slot.out.clear(&mut self.rt.pool);
        self.rt.closes.push((slot.token(idx), slot.flags.reset()));
    }

    /// After bytes went out: backpressure relief (`on_drain`), read throttling.
    fn on_sent(&mut self, idx: usize, n: usize) {
        let limit = self.rt.cfg.backpressure_limit;
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        slot.wire = slot.wire.saturating_sub(n.min(u32::MAX as usize) as u32);
        let queued = slot.buffered();
        if queued > limit {
            return;
        }
        // reading resumes once the queue is down to half the limit, so that a resumed
        // connection reads a good part of a buffer rather than a few bytes at a time
        if slot.flags.throttled() && queued <= limit / 2 {
            slot.flags.set_throttled(false);
            self.rt.reading_changed.push(idx);
        }
        if slot.flags.backpressured() {
            slot.flags.set_backpressured(false);
            let id = ConnId::new(self.rt.index, slot.seq(), idx);
            self.rt.shared.set_congested(id, false);
            if slot.phase == Phase::Open && !slot.proto.close_sent() {
                self.call(idx, |h, ws| h.on_drain(ws));
                self.run_publishes();
            }
        }
    }

    /// After reading: stop reading a connection whose outgoing queue is over the
    /// backpressure limit (TCP's window then slows the peer) until it drains.
    fn throttle(&mut self, idx: usize) {
        let limit = self.rt.cfg.backpressure_limit;
        if !self.rt.cfg.read_throttle {
            return;
        }
        if let Some(slot) = self.slots.get_mut(idx) {
            if !slot.flags.throttled() && slot.buffered() > limit {
                slot.flags.set_throttled(true);
                self.rt.reading_changed.push(idx);
            }
        }
    }

    /// Bytes from the driver for `idx`, through its layer if it has one.
    fn on_wire(&mut self, idx: usize, data: &mut [u8]) {
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        let Some(layer) = slot.cold.as_mut().and_then(|c| c.layer.as_mut()) else {
            self.on_read(idx, data);
            return;
        };
        let mut plain = std::mem::take(&mut self.plain);
        plain.clear();
        let r = layer.decode(data, &mut plain);
        let wants = layer.wants_write();
        let peer_closed = layer.peer_closed();
        if wants {
            mark_dirty(slot, &mut self.rt.dirty, idx);
        }
        match r {
            Ok(()) => {
                if !plain.is_empty() {
                    self.on_read(idx, &mut plain);
                }
                let ends = self
                    .slots
                    .get(idx)
                    .is_some_and(|s| s.phase != Phase::Lingering && !s.flags.close_after_flush());
                if peer_closed && ends {
                    // a TLS close_notify: the peer's stream ended, as with a TCP FIN
                    tracing::debug!(conn = idx, "the peer closed its TLS stream (close_notify)");
                    self.finish(idx, None);
                }
            }
            Err(e) if wants => {
                // the layer has an alert (or a plain answer) to send first: it goes
                // out, the write side is shut, and the connection ends at the peer's
                // FIN or the linger timeout, with this error
                tracing::debug!(conn = idx, peer = ?slot.cold.as_ref().and_then(|c| c.peer), error = %e, "layer failed; alert sent");
                slot.flags.set_close_after_flush(true);
                slot.cold().error = Some(ConnError::Layer(e));
            }
            Err(e) => {
                tracing::debug!(conn = idx, error = %e, "layer failed");
                slot.flags.set_reset(true);
                self.finish(idx, Some(ConnError::Layer(e)));
            }
        }
        self.plain = plain;
    }
}

impl<H: Handler> Sink for Worker<H> {
    fn accepted(&mut self, token: Token, peer: Option<SocketAddr>) {
        let cfg = self.rt.cfg.clone();
        self.rt.metrics.connections_accepted.add(1);
        let idx = self.rt.new_slot(
            &mut self.slots,
            token,
            Role::Server,
            Phase::Handshake,
            None,
            cfg.handshake_timeout,
        );
        if let Some(slot) = self.slots.get_mut(idx) {
            slot.cold().peer = peer;
        }
        if self.slots.len() > cfg.max_connections || self.shutdown.is_some() {
            let tls = self.slots.get(idx).is_some_and(|s| {
                s.cold
                    .as_ref()
                    .and_then(|c| c.layer.as_ref())
                    .is_some_and(|l| l.tls().is_some())
            });
            if tls {
                // a 503 through TLS would cost a full handshake first: on a connection
                // refused for load, closing it is the cheaper answer
                tracing::debug!(
                    conn = idx,
                    "over max_connections (or shutting down): closed before TLS"
                );
                self.finish(idx, None);
            } else {
                self.http_error(idx, 503, "too many connections");
            }
        }
    }

    fn connected(&mut self, token: Token, result: io::Result<()>) {
        let Some(slot) = self.slots.by_token(token) else {
            return;
        };
        let idx = token.index();
        match result {
            Ok(()) => {
                slot.phase = Phase::Handshake;
                slot.last_read = self.rt.timers.now_ms() as u32;
                mark_dirty(slot, &mut self.rt.dirty, idx);
            }
            Err(e) => self.finish(idx, Some(ConnError::Connect(e))),
        }
    }

    #[inline]
    fn received(&mut self, token: Token, data: &mut [u8]) {
        if self.slots.by_token(token).is_none() {
            return;
        }
        self.rt.metrics.bytes_in.add(data.len() as u64);
        let idx = token.index();
        self.on_wire(idx, data);
        self.throttle(idx);
    }

    fn arrived(&mut self, realtime_ns: Option<u64>) {
        self.rt.arrived = realtime_ns.map(|ns| self.rt.monotonic_of(ns));
    }

    fn carry(&mut self, token: Token) -> Option<&mut Vec<u8>> {
        let slot = self.slots.by_token(token)?;
        if slot.cold.as_ref().is_some_and(|c| c.layer.is_some()) {
            return None;
        }
        let cold = slot.cold.as_mut()?;
        // Read in behind the carry only for a frame that still lacks a good part of a
        // read: a carry grown to a whole read's size on every connection of a flood of
        // small frames held 16 MB of 30 at 100 connections. A frame lacking less goes
        // through the driver's buffer, and `on_read` copies only what it lacks.
        let c = &cold.carry;
        let lacking = crate::proto::frame::frame_len_hint(c).saturating_sub(c.len());
        (!c.is_empty() && (slot.phase != Phase::Open || lacking >= READ_BEHIND_MIN))
            .then_some(&mut cold.carry)
    }

    fn received_in_carry(&mut self, token: Token, n: usize) {
        let idx = token.index();
        if let Some(slot) = self.slots.by_token(token) {
            self.rt.metrics.bytes_in.add(n as u64);
            slot.last_read = self.rt.timers.now_ms() as u32;
            slot.flags.set_ping_sent(false);
            self.process_carry(idx);
            self.throttle(idx);
        }
    }

    fn immediate(&mut self, w: Option<crate::driver::Immediate>) {
        self.rt.direct = w;
    }

    fn read_budget(&mut self, token: Token) -> usize {
        let Some(s) = self.slots.by_token(token) else {
            return 0;
        };
        if s.flags.paused() || s.flags.throttled() {
            return 0;
        }
        let queued = s.buffered();
        if queued == 0 || !self.rt.cfg.read_throttle {
            return usize::MAX;
        }
        // a connection with writes queued reads about what its queue has room for, so
        // that an echo-like load does not push the queue a whole read past the limit
        // (or leave the rest of that read waiting in the carry)
        self.rt
            .cfg
            .backpressure_limit
            .saturating_sub(queued)
            .max(READ_MIN)
    }

    fn sent(&mut self, token: Token, n: usize) {
        self.rt.metrics.bytes_out.add(n as u64);
        if self.slots.by_token(token).is_some() {
            self.on_sent(token.index(), n);
        }
    }

    fn closed(&mut self, token: Token, error: Option<io::Error>) {
        let Some(slot) = self.slots.by_token(token) else {
            return;
        };
        let idx = token.index();
        let err = match error {
            Some(e) => {
                slot.flags.set_reset(true);
                Some(ConnError::Io(e))
            }
            None => None,
        };
        self.finish(idx, err);
    }

    fn woken(&mut self) {
        self.commands_pending = true;
    }
}

#[cfg(test)]
mod tests {
    use super::release_again;

    /// A storm: releases while it goes on, one more for its stragglers, then none;
    /// quiet after a storm: no tail; off: never.
    #[test]
    fn releases_follow_a_storm_and_its_stragglers_then_stop() {
        // 15,000 closes, then 40 stragglers, then 3 more, then quiet
        assert_eq!(release_again(1000, 15_000, false), (true, false));
        assert_eq!(release_again(1000, 40, false), (true, true));
        assert_eq!(release_again(1000, 3, true), (false, false));
        // a storm that ends cleanly: no churn after the release, no tail
        assert_eq!(release_again(1000, 0, false), (false, false));
        // a storm resuming during the tail goes on as a storm
        assert_eq!(release_again(1000, 500, true), (true, false));
        // steady trickle below a tenth: at most one more release
        assert_eq!(release_again(1000, 99, false), (true, true));
        assert_eq!(release_again(1000, 99, true), (false, false));
        // tiny settings: a tenth rounds up to one connection
        assert_eq!(release_again(5, 1, false), (true, false));
        assert_eq!(release_again(0, 15_000, false), (false, false));
    }
}
