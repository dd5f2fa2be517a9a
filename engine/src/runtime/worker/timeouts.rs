//! What happens when a connection's deadline passes: handshake 408 (or a client's
//! timeout), the end of a linger, a close the peer never answered, the idle ping and
//! the idle close.

use super::Worker;
use crate::proto::close::CloseCode;
use crate::proto::conn::Role;
use crate::proto::OpCode;
use crate::runtime::error::ConnError;
use crate::runtime::handler::Handler;
use crate::runtime::slot::Phase;
use crate::runtime::timers::{full, MAX_TIMEOUT};
use crate::runtime::ws::mark_dirty;

impl<H: Handler> Worker<H> {
    pub(crate) fn arm_idle(&mut self, idx: usize) {
        if let Some(t) = self.rt.cfg.idle_timeout {
            let Some(slot) = self.slots.get_mut(idx) else {
                return;
            };
            let now = self.rt.timers.now_ms();
            let at = full(now, slot.last_read) + t.min(MAX_TIMEOUT).as_millis() as u64;
            self.rt
                .timers
                .arm(&mut slot.timer, &mut slot.sched, at, idx);
        }
    }

    /// Fires due timers.
    pub(crate) fn on_timers(&mut self) {
        let mut next = None;
        while let Some((at, idx)) = self.rt.timers.pop_due(&mut next) {
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            if !slot.owns_timer(at) {
                continue; // another connection's, or stale
            }
            slot.sched = 0;
            if slot.timer == 0 {
                continue;
            }
            let deadline = full(self.rt.timers.now_ms(), slot.timer);
            if deadline > at {
                // the deadline moved on since this entry was pushed
                self.rt
                    .timers
                    .arm(&mut slot.timer, &mut slot.sched, deadline, idx);
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
                    slot.flags.set_close_after_flush(true);
                    mark_dirty(slot, &mut self.rt.dirty, idx);
                }
                Phase::Open => {
                    let Some(idle) = self.rt.cfg.idle_timeout else {
                        continue;
                    };
                    let idle = idle.as_millis() as u64;
                    let now = self.rt.timers.now_ms();
                    if full(now, slot.last_read) + idle > now {
                        self.arm_idle(idx);
                    } else if !slot.flags.ping_sent() {
                        slot.flags.set_ping_sent(true);
                        // idle: its own compressor may go (the peer keeps its history;
                        // a new one simply starts without)
                        if let Some(c) = slot.cold.as_mut() {
                            self.rt.codecs.drop_own_deflater(&mut c.codec);
                        }
                        self.rt.ctl.clear();
                        let _ = slot
                            .proto
                            .write_frame(OpCode::Ping, true, b"", &mut self.rt.ctl);
                        slot.out.push_bytes(&mut self.rt.pool, &self.rt.ctl);
                        mark_dirty(slot, &mut self.rt.dirty, idx);
                        let at = now + idle;
                        self.rt
                            .timers
                            .arm(&mut slot.timer, &mut slot.sched, at, idx);
                    } else {
                        self.call(idx, |_, ws| ws.close(CloseCode::GOING_AWAY, "idle timeout"));
                    }
                }
            }
        }
    }
}
