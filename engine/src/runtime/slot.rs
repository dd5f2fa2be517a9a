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

/// Per-connection flags.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Flags {
    pub(crate) dirty: bool,
    pub(crate) backpressured: bool,
    pub(crate) close_after_flush: bool,
    pub(crate) ping_sent: bool,
    /// Over `max_buffered`, a failed layer, a failed socket: drop with RST.
    pub(crate) reset: bool,
    /// The socket's read side ended (EOF or error).
    pub(crate) ended: bool,
    /// The application paused reading.
    pub(crate) paused: bool,
    /// Reading is held back because the outgoing queue is over the limit.
    pub(crate) throttled: bool,
}

/// One connection. What only some connections need lives in [`Cold`], allocated on
/// demand and freed when idle.
pub(crate) struct Slot<D> {
    pub(crate) token: Token,
    pub(crate) seq: u64,
    pub(crate) phase: Phase,
    pub(crate) flags: Flags,
    pub(crate) close_code: Option<CloseCode>,
    /// Bytes handed to the driver and not yet reported written.
    pub(crate) wire: u32,
    /// Milliseconds (timer clock) of the last read.
    pub(crate) last_read: u64,
    /// The deadline that matters now (ms), 0 for none.
    pub(crate) timer: u64,
    pub(crate) proto: Connection,
    /// What the application sent, not yet handed to the layer and the driver.
    pub(crate) out: OutQueue,
    pub(crate) cold: Option<Box<Cold>>,
    pub(crate) layer: Option<Box<dyn Layer>>,
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
    pub(crate) client: Option<Box<super::connect::ClientHandshake>>,
    /// Why the connection failed, for `on_error` when it is finished.
    pub(crate) error: Option<super::handler::ConnError>,
}

impl Cold {
    fn is_idle(&self) -> bool {
        self.carry.is_empty()
            && self.assembly.is_empty()
            && self.topics.is_empty()
            && self.close_reason.is_empty()
            && self.error.is_none()
    }
}

impl<D> Slot<D> {
    pub(crate) fn cold(&mut self) -> &mut Cold {
        self.cold.get_or_insert_with(Box::default)
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

/// Slots by token index.
pub(crate) struct Slots<D> {
    v: Vec<Option<Slot<D>>>,
    len: usize,
}

impl<D> Slots<D> {
    pub(crate) fn new() -> Self {
        Slots {
            v: Vec::new(),
            len: 0,
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
        self.get_mut(t.index()).filter(|s| s.token == t)
    }

    pub(crate) fn insert(&mut self, slot: Slot<D>) -> usize {
        let idx = slot.token.index();
        if self.v.len() <= idx {
            self.v.resize_with(idx + 1, || None);
        }
        debug_assert!(self.v[idx].is_none(), "the driver reused a held token");
        self.v[idx] = Some(slot);
        self.len += 1;
        idx
    }

    pub(crate) fn remove(&mut self, idx: usize) -> Option<Slot<D>> {
        let s = self.v.get_mut(idx)?.take()?;
        self.len -= 1;
        Some(s)
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
