//! Deadlines of one worker, in milliseconds since its epoch: a heap of (deadline, slot,
//! sequence). A slot keeps the one deadline that matters to it now; an entry whose slot
//! is gone, reused, or moved on to another deadline is skipped when it comes up.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::handler::{ConnError, Handler};
use super::slot::Phase;
use super::worker::Worker;
use super::ws::mark_dirty;
use crate::proto::close::CloseCode;
use crate::proto::conn::Role;
use crate::proto::OpCode;

#[derive(Debug)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(u64, usize, u64)>>,
    epoch: Instant,
    now: Instant,
    now_ms: u64,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        let now = Instant::now();
        Timers {
            heap: BinaryHeap::new(),
            // a second back, so that every time is at least 1000 ms (0 means "none")
            epoch: now - Duration::from_secs(1),
            now,
            now_ms: 1000,
        }
    }

    /// Sets the clock for this loop iteration.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
    }

    pub(crate) fn now(&self) -> Instant {
        self.now
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The deadline `after` from now, in ms.
    pub(crate) fn after(&self, after: Duration) -> u64 {
        self.now_ms + after.as_millis() as u64
    }

    /// The instant of a deadline kept in ms.
    pub(crate) fn instant_of(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    pub(crate) fn push(&mut self, at: u64, idx: usize, seq: u64) {
        self.heap.push(Reverse((at, idx, seq)));
    }

    /// The earliest deadline (possibly of a stale entry: waking for it is harmless).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|r| self.instant_of(r.0 .0))
    }

    /// The next entry due by now, removed; or `None`, with the next deadline left in
    /// `next`.
    pub(crate) fn pop_due(&mut self, next: &mut Option<Instant>) -> Option<(u64, usize, u64)> {
        let &Reverse((at, idx, seq)) = self.heap.peek()?;
        if at > self.now_ms {
            *next = Some(self.instant_of(at));
            return None;
        }
        self.heap.pop();
        Some((at, idx, seq))
    }
}

impl<H: Handler> Worker<H> {
    pub(crate) fn arm_idle(&mut self, idx: usize) {
        if let Some(t) = self.rt.cfg.idle_timeout {
            let Some(slot) = self.slots.get_mut(idx) else {
                return;
            };
            let at = slot.last_read + t.as_millis() as u64;
            slot.timer = at;
            self.rt.timers.push(at, idx, slot.seq);
        }
    }

    /// Fires due timers.
    pub(crate) fn on_timers(&mut self) {
        let mut next = None;
        while let Some((at, idx, seq)) = self.rt.timers.pop_due(&mut next) {
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            if slot.seq != seq || slot.timer != at {
                continue;
            }
            slot.timer = 0;
            match slot.phase {
                Phase::Connecting => self.finish(idx, Some(ConnError::ConnectTimeout)),
                Phase::Handshake if slot.proto.role() == Role::Client => {
                    self.finish(idx, Some(ConnError::Timeout))
                }
                Phase::Handshake => self.http_error(idx, 408, "handshake timeout"),
                Phase::Lingering | Phase::HttpThenClose => self.finish(idx, None),
                Phase::Open if slot.proto.close_sent() => {
                    // the peer never answered our close
                    slot.flags.close_after_flush = true;
                    mark_dirty(slot, &mut self.rt.dirty, idx);
                }
                Phase::Open => {
                    let Some(idle) = self.rt.cfg.idle_timeout else {
                        continue;
                    };
                    let idle = idle.as_millis() as u64;
                    let now = self.rt.timers.now_ms();
                    if slot.last_read + idle > now {
                        self.arm_idle(idx);
                    } else if !slot.flags.ping_sent {
                        slot.flags.ping_sent = true;
                        self.rt.ctl.clear();
                        let _ = slot
                            .proto
                            .write_frame(OpCode::Ping, true, b"", &mut self.rt.ctl);
                        slot.out.push_bytes(&mut self.rt.pool, &self.rt.ctl);
                        mark_dirty(slot, &mut self.rt.dirty, idx);
                        let at = now + idle;
                        slot.timer = at;
                        self.rt.timers.push(at, idx, seq);
                    } else {
                        self.call(idx, |_, ws| ws.close(CloseCode::GOING_AWAY, "idle timeout"));
                    }
                }
            }
        }
    }
}
