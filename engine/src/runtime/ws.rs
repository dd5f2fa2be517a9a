//! The handle to one connection that callbacks get: [`WebSocket`], over the worker's
//! per-connection context ([`ConnCtx`]).

use std::io::IoSlice;
use std::sync::Arc;

use super::deflate::keeps_context;
use super::id::ConnId;
use super::rt::Rt;
use super::slot::{Phase, Slot};
use crate::pool::BatchSlice;
use crate::proto::close::CloseCode;
use crate::proto::conn::{Message, ReadyState, Role};
use crate::proto::OpCode;

/// Payloads of at least this many bytes are written at once where the driver allows
/// it (`ConnCtx::send_direct`), header and payload gathered from where they lie;
/// smaller ones are copied into the queue and go out as one buffer. Measured (server
/// CPU per echo, medians of 5 interleaved runs): a 1 KiB echo costs 10 % less copied
/// and sent from one buffer than gathered from two (epoll), 4 KiB still a few percent
/// less, 16 KiB is level at 10 connections, and at 200 connections the direct write
/// costs 20-25 % less on either backend (no copy, and none of the queue chunks whose
/// page faults a copy of every echo brings).
const DIRECT_MIN: usize = 8 * 1024;
/// Payloads up to this many bytes (a frame with a two-byte header) take
/// `ConnCtx::send_small`.
const SMALL_MAX: usize = 125;

/// What `send` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendStatus {
    /// Queued (written at the end of this loop iteration).
    Sent,
    /// Queued, but the connection is over its backpressure limit: wait for
    /// `on_drain` before sending more.
    Backpressure,
    /// Not sent: the connection is closing, gone, or was dropped for exceeding
    /// `max_buffered`.
    Dropped,
}

/// Serializes a whole unmasked (server) frame once, for sharing among receivers.
pub(crate) fn serialize(msg: Message<'_>) -> Vec<u8> {
    let payload = msg.as_bytes();
    let header = crate::proto::conn::HeaderBytes::unmasked(msg.opcode(), true, payload.len());
    let mut v = Vec::with_capacity(header.as_slice().len() + payload.len());
    v.extend_from_slice(header.as_slice());
    v.extend_from_slice(payload);
    v
}

pub(crate) fn mark_dirty<D>(slot: &mut Slot<D>, dirty: &mut Vec<usize>, idx: usize) {
    if !slot.flags.dirty() {
        slot.flags.set_dirty(true);
        dirty.push(idx);
    }
}

/// One connection and the worker state its callbacks may touch.
pub(crate) struct ConnCtx<'a, D> {
    pub(crate) id: ConnId,
    pub(crate) idx: usize,
    pub(crate) slot: &'a mut Slot<D>,
    pub(crate) rt: &'a mut Rt,
}

impl<D> ConnCtx<'_, D> {
    fn mark_dirty(&mut self) {
        mark_dirty(self.slot, &mut self.rt.dirty, self.idx);
    }

    pub(crate) fn send(&mut self, msg: Message<'_>) -> SendStatus {
        let payload = msg.as_bytes();
        if self.slot.deflate != 0 {
            return self.send_compressed(msg.opcode(), payload);
        }
        if payload.len() <= SMALL_MAX && self.slot.proto.role() == Role::Server {
            return self.send_small(msg.opcode(), payload);
        }
        if payload.len() >= DIRECT_MIN {
            if let Some(s) = self.send_direct(msg.opcode(), payload) {
                return s;
            }
        }
        self.send_with(msg.opcode(), payload.len(), |v| {
            v.extend_from_slice(payload)
        })
    }

    /// A server's frame of at most 125 payload bytes (a two-byte header, no mask):
    /// appended behind the last queued chunk where it has room, with none of the
    /// general path's header encoding and length bookkeeping (half the instructions of
    /// a pipelined 20 B echo's send went there).
    #[inline(always)]
    fn send_small(&mut self, opcode: OpCode, payload: &[u8]) -> SendStatus {
        let slot = &mut *self.slot;
        if slot.flags.reset() || slot.phase != Phase::Open || slot.proto.close_sent() {
            return SendStatus::Dropped;
        }
        let head = [0x80 | opcode as u8, payload.len() as u8];
        slot.out.push_small(&mut self.rt.pool, head, payload);
        self.after_queue()
    }

    /// A message on a connection that agreed to permessage-deflate: compressed (RSV1)
    /// with the worker's or its own compressor when that makes it smaller and it is
    /// over the threshold, as it is otherwise; either way written straight into the
    /// queue.
    fn send_compressed(&mut self, opcode: OpCode, payload: &[u8]) -> SendStatus {
        if self.slot.flags.reset() || self.slot.phase != Phase::Open {
            return SendStatus::Dropped;
        }
        let rt = &mut *self.rt;
        let slot = &mut *self.slot;
        let Some(params) = rt.codecs.params(slot.deflate) else {
            return SendStatus::Dropped;
        };
        let cfg = rt.cfg.deflate;
        let role = slot.proto.role();
        let own = if keeps_context(role, params, &cfg) {
            let own = &mut slot.cold.get_or_insert_with(Box::default).codec;
            rt.codecs
                .own_deflater(own, role, params, &cfg, rt.cfg.deflate_budget)
        } else {
            None
        };
        let deflater = match own {
            Some(d) => d,
            None => rt
                .codecs
                .shared_deflater(params.max_window_bits(role), &cfg),
        };
        let proto = &mut slot.proto;
        let r = slot.out.push_with(&mut rt.pool, payload.len() + 64, |v| {
            let at = v.len();
            proto
                .write_compressed(deflater, opcode, payload, v)
                .map(|_| v.len() - at)
        });
        let Ok(wire) = r else {
            return SendStatus::Dropped;
        };
        rt.codecs.sent_payload += payload.len() as u64;
        rt.codecs.sent_wire += wire as u64;
        self.after_queue()
    }

    /// A large payload to the connection being read, with nothing queued before it and
    /// no layer to go through (epoll): written at once from where it lies (the receive buffer, for an echo),
    /// header and payload in one `writev`; only what the socket does not take is copied
    /// into the queue. `None`: not possible here, send as usual.
    fn send_direct(&mut self, opcode: OpCode, payload: &[u8]) -> Option<SendStatus> {
        let w = self.rt.direct?;
        let slot = &mut *self.slot;
        if w.token() != slot.token(self.idx)
            || slot.proto.role() != Role::Server
            || slot.cold.as_ref().is_some_and(|c| c.layer.is_some())
            || !slot.out.is_empty()
            || slot.wire != 0
            || slot.flags.reset()
            || slot.phase != Phase::Open
        {
            return None;
        }
        let Ok(header) = slot.proto.frame_header(opcode, true, payload.len()) else {
            return Some(SendStatus::Dropped);
        };
        let h = header.as_slice();
        let n = w.write(&[IoSlice::new(h), IoSlice::new(payload)]);
        self.rt.metrics.bytes_out.add(n as u64);
        let pool = &mut self.rt.pool;
        if n < h.len() {
            slot.out.push_pair(pool, &h[n..], payload);
        } else if n < h.len() + payload.len() {
            slot.out.push_bytes(pool, &payload[n - h.len()..]);
        }
        Some(self.after_queue())
    }

    /// Queues a data frame of `len` bytes that `fill` appends (exactly `len`) to the
    /// vector it is given: no staging copy of the payload.
    pub(crate) fn send_with(
        &mut self,
        opcode: OpCode,
        len: usize,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> SendStatus {
        if self.slot.flags.reset() || self.slot.phase != Phase::Open {
            return SendStatus::Dropped;
        }
        if self.slot.deflate != 0 {
            // compression needs the whole payload first
            let mut staged = self.rt.pool.get();
            fill(&mut staged);
            staged.resize(len, 0);
            let s = self.send_compressed(opcode, &staged);
            self.rt.pool.put(staged);
            return s;
        }
        let slot = &mut *self.slot;
        let Ok((header, mask)) = slot.proto.send_header(opcode, true, len) else {
            return SendStatus::Dropped;
        };
        slot.out
            .push_frame_with(&mut self.rt.pool, &header, len, mask, fill);
        self.after_queue()
    }

    /// Queues a serialized frame shared with other receivers (a publish, or a send from
    /// another thread), under the same limits as `send`: copied when small, else held
    /// (see `OutQueue::push_published`).
    pub(crate) fn send_shared(&mut self, frame: &Arc<[u8]>) -> SendStatus {
        self.slot.out.push_published(&mut self.rt.pool, frame);
        self.after_queue()
    }

    /// Queues published frames written into the worker's batch (see
    /// `OutQueue::push_slice`; `fresh`: it may take a new range).
    pub(crate) fn send_slice(
        &mut self,
        slice: &BatchSlice,
        frame: &Arc<[u8]>,
        fresh: bool,
    ) -> SendStatus {
        self.slot
            .out
            .push_slice(&mut self.rt.pool, slice, frame, fresh);
        self.after_queue()
    }

    /// After a data message was queued: [`Self::check_queue`], and the message counted
    /// unless that dropped the connection.
    #[inline(always)]
    pub(crate) fn after_queue(&mut self) -> SendStatus {
        let s = self.check_queue();
        if s != SendStatus::Dropped {
            self.rt.metrics.messages_out.add(1);
        }
        s
    }

    /// After anything was queued: the limits (drop, backpressure).
    #[inline(always)]
    fn check_queue(&mut self) -> SendStatus {
        self.mark_dirty();
        let buffered = self.slot.buffered();
        if buffered > self.rt.cfg.max_buffered {
            self.slot.flags.set_reset(true);
            return SendStatus::Dropped;
        }
        if buffered > self.rt.cfg.backpressure_limit {
            if !self.slot.flags.backpressured() {
                self.rt.metrics.backpressure_events.add(1);
                self.slot.flags.set_backpressured(true);
                self.rt.shared.set_congested(self.id, true);
            }
            SendStatus::Backpressure
        } else {
            SendStatus::Sent
        }
    }

    pub(crate) fn control(&mut self, op: OpCode, payload: &[u8]) -> SendStatus {
        if self.slot.phase != Phase::Open {
            return SendStatus::Dropped;
        }
        self.rt.ctl.clear();
        if self
            .slot
            .proto
            .write_frame(op, true, payload, &mut self.rt.ctl)
            .is_err()
        {
            return SendStatus::Dropped;
        }
        self.slot.out.push_bytes(&mut self.rt.pool, &self.rt.ctl);
        self.check_queue()
    }

    pub(crate) fn close(&mut self, code: CloseCode, reason: &str) {
        if self.slot.proto.close_sent() || self.slot.phase != Phase::Open {
            return;
        }
        self.rt.ctl.clear();
        self.slot.proto.close(Some(code), reason, &mut self.rt.ctl);
        self.slot.out.push_bytes(&mut self.rt.pool, &self.rt.ctl);
        self.mark_dirty();
        let at = self.rt.timers.after(self.rt.cfg.close_timeout);
        let slot = &mut *self.slot;
        self.rt
            .timers
            .arm(&mut slot.timer, &mut slot.sched, at, self.idx);
    }

    pub(crate) fn terminate(&mut self) {
        self.slot.flags.set_reset(true);
        self.slot.flags.set_close_after_flush(true);
        self.mark_dirty();
    }

    pub(crate) fn set_paused(&mut self, paused: bool) {
        if self.slot.flags.paused() != paused {
            self.slot.flags.set_paused(paused);
            self.rt.reading_changed.push(self.idx);
        }
    }

    pub(crate) fn subscribe(&mut self, topic: &str) {
        let id = self.rt.topics.id(topic);
        if self.rt.topics.add_member(id, self.idx) {
            self.slot.cold().topics.push(id);
            self.rt.shared.count_subscriber(topic, true);
        }
    }

    pub(crate) fn unsubscribe(&mut self, topic: &str) {
        if let Some(id) = self.rt.topics.find(topic) {
            if self.rt.topics.remove_member(id, self.idx).is_some() {
                self.rt.shared.count_subscriber(topic, false);
            }
            if let Some(c) = self.slot.cold.as_mut() {
                c.topics.retain(|&t| t != id);
            }
        }
    }

    pub(crate) fn publish(&mut self, topic: &str, frame: Arc<[u8]>) {
        self.rt.publishes.push((Arc::from(topic), frame));
    }
}

/// The handle to one open connection, lent to callbacks.
pub struct WebSocket<'a, D> {
    pub(crate) ctx: ConnCtx<'a, D>,
}

impl<D> std::fmt::Debug for WebSocket<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("id", &self.id())
            .field("ready_state", &self.ready_state())
            .finish()
    }
}

impl<D> WebSocket<'_, D> {
    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.ctx.id
    }

    /// When this loop iteration's events were collected (one clock reading per
    /// iteration, shared by every callback in it).
    pub fn now(&self) -> std::time::Instant {
        self.ctx.rt.timers.now()
    }

    /// With receive time stamps on ([`Config::rx_timestamps`](crate::server::Config::rx_timestamps)):
    /// when the kernel received the data that completed this message (for a read of
    /// several TCP segments, the last one's time), on the clock of
    /// [`Instant`](std::time::Instant). `None` without them, outside `on_message`, or
    /// for a message that completed from bytes held back earlier (a paused connection).
    /// It is earlier than [`Self::now`] by the time the data waited to be read.
    pub fn received_at(&self) -> Option<std::time::Instant> {
        self.ctx.rt.arrived
    }

    /// The connection's data.
    pub fn data(&mut self) -> &mut D {
        self.ctx
            .slot
            .data
            .as_mut()
            .expect("a WebSocket is lent only for a connection with data")
    }

    /// The subprotocol agreed in the handshake (`None` if none was): available in
    /// `on_open`; keep it in the connection's data if needed later.
    pub fn protocol(&self) -> Option<&str> {
        self.ctx.slot.cold.as_ref()?.protocol.as_deref()
    }

    /// What the connection's TLS agreed (`wss://`): version, cipher suite, whether the
    /// session was resumed, the SNI host name; `None` on a plain connection.
    pub fn tls(&self) -> Option<crate::layer::TlsInfo> {
        self.ctx.slot.cold.as_ref()?.layer.as_ref()?.tls()
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> SendStatus {
        self.ctx.send(Message::Text(text))
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, bytes: &[u8]) -> SendStatus {
        self.ctx.send(Message::Binary(bytes))
    }

    /// Sends a message (e.g. the one received, for an echo).
    pub fn send(&mut self, msg: Message<'_>) -> SendStatus {
        self.ctx.send(msg)
    }

    /// Sends a data message of `len` bytes written in place by `fill`, which must
    /// append exactly `len` bytes to the vector it gets (fewer are padded with zeros,
    /// more are cut). For [`OpCode::Text`] the bytes must be UTF-8. Saves the copy a
    /// payload assembled elsewhere would cost.
    pub fn send_with(
        &mut self,
        opcode: OpCode,
        len: usize,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> SendStatus {
        match opcode {
            OpCode::Text | OpCode::Binary => self.ctx.send_with(opcode, len, fill),
            _ => SendStatus::Dropped,
        }
    }

    /// Sends a ping (payload cut to 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> SendStatus {
        self.ctx.control(OpCode::Ping, payload)
    }

    /// Starts the close handshake with this code and reason.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.ctx.close(code, reason)
    }

    /// Drops the connection at once, without a close handshake (the peer gets a TCP
    /// reset; `on_close` reports 1006).
    pub fn terminate(&mut self) {
        self.ctx.terminate()
    }

    /// Stops reading from this connection (TCP's window then slows the peer) until
    /// [`WebSocket::resume`]. It takes effect at once: no further message of this
    /// connection is delivered, even one already received (that waits, in order, for
    /// the resume), so a handler that pauses holds at most the message it was given.
    pub fn pause(&mut self) {
        self.ctx.set_paused(true)
    }

    /// Reads from this connection again after [`WebSocket::pause`].
    pub fn resume(&mut self) {
        self.ctx.set_paused(false)
    }

    /// Bytes queued and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.ctx.slot.buffered()
    }

    /// The ready state.
    pub fn ready_state(&self) -> ReadyState {
        match self.ctx.slot.phase {
            Phase::Connecting | Phase::Handshake => ReadyState::Connecting,
            Phase::Open => self.ctx.slot.proto.ready_state(),
            Phase::HttpThenClose | Phase::Lingering => {
                if self.ctx.slot.proto.ready_state() == ReadyState::Closed {
                    ReadyState::Closed
                } else {
                    ReadyState::Closing
                }
            }
        }
    }

    /// Subscribes this connection to a topic.
    pub fn subscribe(&mut self, topic: &str) {
        self.ctx.subscribe(topic)
    }

    /// Unsubscribes this connection from a topic.
    pub fn unsubscribe(&mut self, topic: &str) {
        self.ctx.unsubscribe(topic)
    }

    /// A timer on this connection's worker: see
    /// [`WorkerCtx::set_timer`](super::WorkerCtx::set_timer).
    pub fn set_timer<H: super::Handler<Data = D>>(
        &mut self,
        after: std::time::Duration,
        f: impl FnOnce(&mut H, &mut super::WorkerCtx<'_, D>) + 'static,
    ) -> super::TimerId {
        self.ctx.rt.set_timer::<H>(after, Box::new(f))
    }

    /// Cancels a timer of this worker (see [`WebSocket::set_timer`]).
    pub fn cancel_timer(&mut self, t: super::TimerId) -> bool {
        self.ctx.rt.cancel_timer(t)
    }

    /// The server's handle, to act on other connections from any thread or keep for
    /// later (`None` for a client's connections).
    pub fn server(&self) -> Option<&crate::server::ServerHandle> {
        self.ctx.rt.handle.as_ref()
    }

    /// Publishes a message to every subscriber of `topic` on every worker (this
    /// connection too, if subscribed). The frame is serialized once and shared.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) {
        self.ctx.publish(topic, Arc::from(serialize(msg)))
    }
}
