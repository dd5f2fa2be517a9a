//! The connection state machine around `proto::Connection`: bytes in (carried across
//! reads when a frame or head is partial), the opening handshake of either role, frames
//! to handler callbacks, and what the protocol sends by itself.

use super::Worker;
use crate::proto::close::CloseCode;
use crate::proto::conn::{Event, Role};
use crate::proto::frame::frame_len_hint;
use crate::runtime::deflate::{peer_resets, Codecs};
use crate::runtime::error::ConnError;
use crate::runtime::handler::Handler;
use crate::runtime::slot::Phase;
use crate::runtime::ws::mark_dirty;

/// A carry of up to this many bytes gets its own small buffer.
const SMALL_CARRY: usize = 256;

impl<H: Handler> Worker<H> {
    /// Plain bytes received on `idx` (after its layer). `data` may be unmasked in place.
    pub(crate) fn on_read(&mut self, idx: usize, data: &mut [u8]) {
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        slot.last_read = self.rt.timers.now_ms() as u32;
        slot.flags.set_ping_sent(false);
        if slot.phase == Phase::Lingering || slot.phase == Phase::HttpThenClose {
            return;
        }
        // reading is stopped, but io_uring's receives already under way still complete:
        // their bytes wait in the carry, unprocessed, until reading resumes
        let stopped = slot.phase == Phase::Open && (slot.flags.throttled() || slot.flags.paused());
        if stopped || slot.phase == Phase::Handshake {
            let cold = slot.cold();
            if cold.carry.capacity() == 0 {
                cold.carry = self.rt.pool.get();
            }
            cold.carry.extend_from_slice(data);
            if !stopped {
                self.process_carry(idx);
            }
            return;
        }
        // A frame split across reads: copy into the carry only what completes it (not
        // the whole read), process it there, then the rest of the read in place.
        let mut data = data;
        loop {
            let Some(slot) = self.slots.get_mut(idx) else {
                return;
            };
            if !slot.has_carry() {
                break;
            }
            if slot.phase != Phase::Open || slot.flags.throttled() || slot.flags.paused() {
                // reading stopped (at the limit, or by the application): the rest of the
                // read waits behind the carry, in order
                if slot.phase != Phase::Lingering {
                    slot.cold().carry.extend_from_slice(data);
                }
                return;
            }
            let carry = &mut slot.cold().carry;
            let before = carry.len();
            let mut take = 0;
            loop {
                let need = frame_len_hint(carry);
                if carry.len() >= need || take == data.len() {
                    break;
                }
                let k = (need - carry.len()).min(data.len() - take);
                carry.extend_from_slice(&data[take..take + k]);
                take += k;
            }
            self.process_carry(idx);
            data = &mut data[take..];
            if data.is_empty() {
                return;
            }
            let left = self
                .slots
                .get(idx)
                .and_then(|s| s.cold.as_ref())
                .map_or(0, |c| c.carry.len());
            if take == 0 && left >= before {
                // nothing moved (cannot happen with a whole frame in front; kept so that
                // this loop always ends): keep the order and wait for the next read
                if let Some(slot) = self.slots.get_mut(idx) {
                    slot.cold().carry.extend_from_slice(data);
                }
                return;
            }
        }
        let used = self.process(idx, data);
        if let Some(slot) = self.slots.get_mut(idx) {
            if used < data.len() && slot.phase != Phase::Lingering {
                let rest = &data[used..];
                // a small remainder (the head of the next frame) gets a buffer of its
                // size, not a pooled one of up to 256 KiB: under a flood every
                // connection holds one between reads
                let mut c = if rest.len() <= SMALL_CARRY {
                    Vec::with_capacity(SMALL_CARRY)
                } else {
                    self.rt.pool.get()
                };
                c.extend_from_slice(rest);
                slot.cold().carry = c;
            } else {
                slot.trim(&mut self.rt.pool);
            }
        }
    }

    /// Processes what is in `idx`'s carry buffer (after it grew).
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
                self.rt.pool.put(carry);
                slot.trim(&mut self.rt.pool);
            }
            None => self.rt.pool.put(carry),
        }
    }

    /// Processes `buf` for `idx`; returns how many bytes were used.
    fn process(&mut self, idx: usize, buf: &mut [u8]) -> usize {
        let mut start = 0;
        if let Some(slot) = self.slots.get(idx) {
            if slot.phase == Phase::Handshake && self.is_deferred(idx) {
                // the request is answered later: what follows it waits (bounded like a
                // head)
                if buf.len() > self.rt.cfg.handshake.limits.max_head {
                    self.http_error(idx, 400, "data before the upgrade was answered");
                    return buf.len();
                }
                return 0;
            }
            if slot.phase == Phase::Handshake {
                let head = match slot.proto.role() {
                    Role::Server => self.server_handshake(idx, buf),
                    Role::Client => self.client_handshake(idx, buf),
                };
                match head {
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
        }
        if self.slots.get(idx).is_some_and(|s| s.phase == Phase::Open) {
            start + self.frames(idx, &mut buf[start..])
        } else if self.is_deferred(idx) {
            start
        } else {
            buf.len()
        }
    }

    /// Runs frames through the protocol and the handler; returns bytes used.
    fn frames(&mut self, idx: usize, buf: &mut [u8]) -> usize {
        let Some(slot) = self.slots.get_mut(idx) else {
            return buf.len();
        };
        let mut assembly = slot
            .cold
            .as_mut()
            .map(|c| std::mem::take(&mut c.assembly))
            .unwrap_or_default();
        let mut pos = 0;
        loop {
            let Some(slot) = self.slots.get_mut(idx) else {
                pos = buf.len();
                break;
            };
            if slot.flags.paused() {
                // the handler paused reading (in a callback just now): what is left
                // waits in the carry, in order, until it resumes
                break;
            }
            self.rt.ctl.clear();
            let r = if slot.deflate == 0 || !slot.proto.may_inflate(&buf[pos..]) {
                slot.proto
                    .poll_read(&mut buf[pos..], &mut assembly, &mut self.rt.ctl)
            } else {
                // compression agreed: the worker's decompressor or the connection's own
                let role = slot.proto.role();
                let inflater = match self.rt.codecs.params(slot.deflate) {
                    Some(p) if peer_resets(role, p) => Some(self.rt.codecs.shared_inflater()),
                    Some(p) => {
                        let own = &mut slot.cold.get_or_insert_with(Box::default).codec;
                        Some(Codecs::own_inflater(own, role, p))
                    }
                    None => None,
                };
                slot.proto.poll_read_with(
                    &mut buf[pos..],
                    &mut assembly,
                    &mut self.rt.ctl,
                    inflater,
                )
            };
            if !self.rt.ctl.is_empty() {
                slot.out.push_bytes(&mut self.rt.pool, &self.rt.ctl);
                mark_dirty(slot, &mut self.rt.dirty, idx);
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
                            // the server closes TCP first (RFC 6455 §7.1.1): a flush runs
                            // so that the close follows what is queued
                            slot.flags.set_close_after_flush(true);
                            mark_dirty(slot, &mut self.rt.dirty, idx);
                        }
                    }
                    let alive = match ev {
                        Event::Message(m) => {
                            self.rt.metrics.messages_in.add(1);
                            self.call(idx, |h, ws| h.on_message(ws, m))
                        }
                        Event::Ping(p) => self.call(idx, |h, ws| h.on_ping(ws, p)),
                        Event::Pong(p) => self.call(idx, |h, ws| h.on_pong(ws, p)),
                        Event::Close { .. } => Some(()),
                    };
                    if alive.is_none() || closing {
                        pos = buf.len();
                        break;
                    }
                    if self.rt.cfg.read_throttle
                        && self
                            .slots
                            .get(idx)
                            .is_some_and(|s| s.buffered() > self.rt.cfg.backpressure_limit)
                    {
                        // over the limit: the rest waits in the carry until the queue
                        // drains (read-side flow control; the caller stops reading)
                        break;
                    }
                }
                Ok((n, None)) => {
                    pos += n;
                    break;
                }
                Err(e) => {
                    slot.close_code = Some(e.close_code());
                    slot.flags.set_close_after_flush(true);
                    mark_dirty(slot, &mut self.rt.dirty, idx);
                    self.record_error(idx, ConnError::Protocol(e));
                    pos = buf.len();
                    break;
                }
            }
        }
        if let Some(slot) = self.slots.get_mut(idx) {
            if assembly.is_empty() {
                self.rt.pool.put(assembly);
            } else {
                slot.cold().assembly = assembly;
            }
        }
        self.run_publishes();
        pos
    }

    /// The connection is open: the handshake's leftovers go, idle timing starts, and
    /// the handler hears of it.
    pub(crate) fn opened(&mut self, idx: usize) {
        let Some(slot) = self.slots.get_mut(idx) else {
            return;
        };
        slot.phase = Phase::Open;
        slot.timer = 0;
        if let Some(c) = slot.cold.as_mut() {
            c.scanner = Default::default();
            c.peer = None;
            c.client = None;
        }
        self.arm_idle(idx);
        self.call(idx, |h, ws| h.on_open(ws));
        if let Some(c) = self.slots.get_mut(idx).and_then(|s| s.cold.as_mut()) {
            c.protocol = None;
        }
    }
}
