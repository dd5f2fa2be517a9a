//! The connection table: one [`Slot`] per connection, indexed by its driver token's
//! index (dense, not reused while the connection holds it), kept small because an idle
//! connection costs what its slot does.

use std::net::SocketAddr;

use crate::driver::Token;
use crate::layer::Layer;
use crate::pool::{OutQueue, Pool};
use crate::proto::close::CloseCode;
use crate::proto::handshake::HeadScanner;
use crate::proto::Connection;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Client: the TCP connect is under way.
    Connecting,
    /// Server: reading the request head. Client: the request is out, reading the
    /// response head.
    Handshake,
    /// Frames flow (the proto state tells OPEN or CLOSING).
    Open,
    /// An HTTP response is being flushed; then the connection closes.
    HttpThenClose,
    /// Write side shut; reading and dropping until EOF or the deadline.
    Lingering,
}

crate::bits::bit_flags! {
    /// Per-connection flags, one bit each (an idle connection costs what its slot does).
    Flags:
    /// In the worker's list of connections to flush.
    dirty set_dirty = 1;
    /// `send` reported backpressure; `on_drain` is owed.
    backpressured set_backpressured = 2;
    /// Shut the write side once what is queued is handed to the driver.
    close_after_flush set_close_after_flush = 4;
    /// The idle ping went out.
    ping_sent set_ping_sent = 8;
    /// Over `max_buffered`, a failed layer, a failed socket: drop with RST.
    reset set_reset = 16;
    /// The application paused reading.
    paused set_paused = 32;
    /// Reading is held back because the outgoing queue is over the limit.
    throttled set_throttled = 64;
}

/// One connection. What only some connections need lives in [`Cold`], allocated on
/// demand and freed when idle.
pub(crate) struct Slot<D> {
    /// The generation of the driver's token (its index is the slot's).
    pub(crate) gen: u32,
    /// The connection's sequence number (48 bits, see [`Slot::seq`]): low 32 bits.
    seq_lo: u32,
    /// Its high 16 bits (two fields rather than a `u64`: 2 bytes less a slot).
    seq_hi: u16,
    pub(crate) phase: Phase,
    pub(crate) flags: Flags,
    pub(crate) close_code: Option<CloseCode>,
    /// Bytes handed to the driver and not yet reported written.
    pub(crate) wire: u32,
    /// Milliseconds (timer clock, low 32 bits) of the last read.
    pub(crate) last_read: u32,
    /// The deadline that matters now ([`ms32`] of it), 0 for none.
    pub(crate) timer: u32,
    /// When this slot's entry in the timer heap is due ([`ms32`]), 0 for none.
    pub(crate) sched: u32,
    pub(crate) proto: Connection,
    /// What the application sent, not yet handed to the layer and the driver.
    pub(crate) out: OutQueue,
    pub(crate) cold: Option<Box<Cold>>,
    /// The permessage-deflate parameter set agreed (its code in the worker's
    /// `Codecs`), 0 for none.
    pub(crate) deflate: u8,
    pub(crate) data: Option<D>,
}

/// Per-connection state that an idle, open connection does not need.
#[derive(Debug, Default)]
pub(crate) struct Cold {
    /// Request (or response) head scanner: handshake only.
    pub(crate) scanner: HeadScanner,
    /// Received bytes not consumed yet (a partial frame, or the head).
    pub(crate) carry: Vec<u8>,
    /// A fragmented message being assembled.
    pub(crate) assembly: Vec<u8>,
    /// Topics this connection is subscribed to.
    pub(crate) topics: Vec<u32>,
    /// The peer's close reason.
    pub(crate) close_reason: Box<str>,
    /// The peer's address (handshake only).
    pub(crate) peer: Option<SocketAddr>,
    /// The subprotocol agreed (handshake and `on_open` only).
    pub(crate) protocol: Option<Box<str>>,
    /// Client role: what the handshake response is checked against.
    pub(crate) client: Option<Box<super::request::ClientHandshake>>,
    /// Why the connection failed, for `on_error` when it is finished.
    pub(crate) error: Option<super::error::ConnError>,
    /// The connection's layer (TLS, ...): a connection with one keeps its `Cold`.
    pub(crate) layer: Option<Box<dyn Layer>>,
    /// Its own compressor and decompressor (context takeover), once made.
    pub(crate) codec: Option<Box<super::deflate::OwnCodec>>,
    /// A deferred upgrade waiting for the application's verdict.
    pub(crate) deferred: Option<Box<Deferred>>,
}

/// What a deferred upgrade keeps of its request for the 101.
#[derive(Debug)]
pub(crate) struct Deferred {
    pub(crate) accept: [u8; 28],
    /// The subprotocol chosen at the request.
    pub(crate) protocol: Option<Box<str>>,
    /// The subprotocols the client offered.
    pub(crate) offered: Vec<Box<str>>,
    pub(crate) agreement: Option<crate::proto::deflate::Agreement>,
    /// Header fields added at the request.
    pub(crate) headers: Vec<(String, String)>,
}

impl Cold {
    fn is_idle(&self) -> bool {
        self.carry.is_empty()
            && self.assembly.is_empty()
            && self.topics.is_empty()
            && self.close_reason.is_empty()
            && self.error.is_none()
            && self.layer.is_none()
            && self.codec.is_none()
    }
}

impl<D> Slot<D> {
    /// A slot for connection `seq` (48 bits: [`crate::runtime::id`]) on driver token
    /// `gen`, with nothing queued and no deadline.
    pub(crate) fn new(
        gen: u32,
        seq: u64,
        phase: Phase,
        proto: Connection,
        cold: Option<Box<Cold>>,
        data: Option<D>,
    ) -> Self {
        let seq = seq & crate::runtime::id::SEQ_MASK;
        Slot {
            gen,
            seq_lo: seq as u32,
            seq_hi: (seq >> 32) as u16,
            phase,
            flags: Flags::default(),
            close_code: None,
            wire: 0,
            last_read: 0,
            timer: 0,
            sched: 0,
            proto,
            out: OutQueue::default(),
            cold,
            deflate: 0,
            data,
        }
    }

    /// The connection's sequence number (unique on its worker).
    #[inline]
    pub(crate) fn seq(&self) -> u64 {
        (self.seq_hi as u64) << 32 | self.seq_lo as u64
    }

    /// The driver's token for this slot, at index `idx`.
    #[inline]
    pub(crate) fn token(&self, idx: usize) -> Token {
        Token::new(idx, self.gen)
    }

    pub(crate) fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
    }

    /// Whether the timer heap's entry due `at`, at this slot's index, is this slot's
    /// live one (see `timers`' module docs).
    #[inline]
    pub(crate) fn owns_timer(&self, at: u64) -> bool {
        self.sched == ms32(at)
    }

    pub(crate) fn has_carry(&self) -> bool {
        self.cold.as_ref().is_some_and(|c| !c.carry.is_empty())
    }

    /// Bytes queued and not yet written: the application's and the driver's.
    pub(crate) fn buffered(&self) -> usize {
        self.out.len() + self.wire as usize
    }

    /// Frees the cold part once nothing in it is in use.
    pub(crate) fn trim(&mut self, pool: &mut Pool) {
        if self.phase == Phase::Open && self.cold.as_ref().is_some_and(|c| c.is_idle()) {
            if let Some(mut c) = self.cold.take() {
                pool.put(std::mem::take(&mut c.carry));
                pool.put(std::mem::take(&mut c.assembly));
            }
        }
    }
}

/// A deadline as a slot keeps it: its low 32 bits, never 0 (0 is "none"). Slots keep
/// 32-bit times to stay small; the heap keeps the full 64-bit deadline.
#[inline]
pub(crate) fn ms32(at: u64) -> u32 {
    (at as u32).max(1)
}

/// Slots by token index.
pub(crate) struct Slots<D> {
    v: Vec<Option<Slot<D>>>,
    len: usize,
    /// Slots taken and given back since [`Slots::take_churn`]: connection churn, after
    /// which the worker hands the allocator's free memory back (`release_memory_after`).
    churn: usize,
}

impl<D> Slots<D> {
    pub(crate) fn new() -> Self {
        Slots {
            v: Vec::new(),
            len: 0,
            churn: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub(crate) fn get(&self, idx: usize) -> Option<&Slot<D>> {
        self.v.get(idx).and_then(Option::as_ref)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, idx: usize) -> Option<&mut Slot<D>> {
        self.v.get_mut(idx).and_then(Option::as_mut)
    }

    /// The slot of `t`, if it is the connection that holds that token now.
    #[inline]
    pub(crate) fn by_token(&mut self, t: Token) -> Option<&mut Slot<D>> {
        self.get_mut(t.index()).filter(|s| s.gen == t.gen())
    }

    /// Puts `slot` at `token`'s index (its `gen` is the token's).
    pub(crate) fn insert(&mut self, token: Token, slot: Slot<D>) -> usize {
        let idx = token.index();
        debug_assert_eq!(slot.gen, token.gen());
        if self.v.len() <= idx {
            self.v.resize_with(idx + 1, || None);
        }
        debug_assert!(self.v[idx].is_none(), "the driver reused a held token");
        self.v[idx] = Some(slot);
        self.len += 1;
        self.churn += 1;
        idx
    }

    pub(crate) fn remove(&mut self, idx: usize) -> Option<Slot<D>> {
        let s = self.v.get_mut(idx)?.take()?;
        self.len -= 1;
        self.churn += 1;
        Some(s)
    }

    /// Connections opened and closed since the last call (see the `churn` field).
    pub(crate) fn churn(&self) -> usize {
        self.churn
    }

    /// Starts the churn count again.
    pub(crate) fn take_churn(&mut self) -> usize {
        std::mem::take(&mut self.churn)
    }

    /// Gives back the room past the last slot in use, when that is most of the
    /// table: a table that grew to 15,000 slots holds 1.2 MB after they close.
    /// Indexes are tokens' (the driver's), so only the free tail can go.
    pub(crate) fn compact(&mut self) {
        while matches!(self.v.last(), Some(None)) {
            self.v.pop();
        }
        if crate::alloc::mostly_room(self.v.capacity(), self.v.len()) {
            self.v.shrink_to_fit();
        }
    }

    /// The table's length (up to the last slot in use, or further) and room.
    #[cfg(test)]
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.v.len(), self.v.capacity())
    }

    /// Indexes of every slot.
    pub(crate) fn indexes(&self) -> Vec<usize> {
        self.v
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|_| i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::conn::Role;
    use crate::proto::Limits;

    fn slot(idx: usize) -> Slot<()> {
        let proto = Connection::new(Role::Server, Limits::default(), 1);
        Slot::new(1, idx as u64, Phase::Open, proto, None, Some(()))
    }

    /// After a storm of closes the table gives back its free tail (not past the last
    /// slot in use), and keeps what it needs.
    #[test]
    fn compact_gives_back_the_free_tail() {
        let mut s = Slots::<()>::new();
        for i in 0..15_000 {
            s.insert(Token::new(i, 1), slot(i));
        }
        for i in 0..15_000 {
            if i != 70 && i != 3_000 {
                s.remove(i);
            }
        }
        let (len, cap) = s.size();
        assert!(len == 15_000 && cap >= 15_000);
        s.compact();
        let (len, cap) = s.size();
        assert_eq!(len, 3_001, "not past the last slot in use");
        assert!(cap < 2 * 3_001 + 256, "room {cap}");
        assert!(s.get(70).is_some() && s.get(3_000).is_some() && s.len() == 2);
        s.remove(3_000);
        s.compact();
        assert_eq!(s.size().0, 71);
        // a table mostly in use keeps its room
        let mut s = Slots::<()>::new();
        for i in 0..1_000 {
            s.insert(Token::new(i, 1), slot(i));
        }
        let cap = s.size().1;
        s.remove(999);
        s.compact();
        assert_eq!(s.size(), (999, cap));
        // and grows again after
        s.insert(Token::new(5_000, 1), slot(5_000));
        assert!(s.get(5_000).is_some());
    }

    /// An idle connection's slot, the driver's record of its socket and its timer-heap
    /// entry are what the budget per idle connection pays for (with the kernel's socket outside it).
    #[test]
    fn slot_keeps_48_bit_sequences_and_its_token() {
        let proto = Connection::new(Role::Server, Limits::default(), 1);
        let seq = crate::runtime::id::SEQ_MASK - 5;
        let s: Slot<()> = Slot::new(7, seq, Phase::Open, proto, None, None);
        assert_eq!(s.seq(), seq);
        assert_eq!(s.token(12), Token::new(12, 7));
        let mut t = Slots::new();
        t.insert(Token::new(12, 7), s);
        assert!(t.by_token(Token::new(12, 7)).is_some());
        assert!(t.by_token(Token::new(12, 8)).is_none());
    }

    #[test]
    fn idle_slot_stays_small() {
        let size = size_of::<Option<Slot<()>>>();
        eprintln!(
            "Slot<()> {size} B, Connection {} B, Cold {} B",
            size_of::<Connection>(),
            size_of::<Cold>()
        );
        assert!(size <= 72, "Slot<()> grew to {size} bytes");
        let proto = size_of::<Connection>();
        assert!(proto <= 24, "Connection grew to {proto} bytes");
    }
}
