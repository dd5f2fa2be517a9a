//! The per-worker state that callbacks may touch besides their own connection: the
//! buffer pool, the lists of what to flush and tell the driver, topics, timers, the
//! mailboxes, and the making of a connection's slot.

use std::any::Any;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::Config;
use super::mailbox::Shared;
use super::slot::{Phase, Slot, Slots};
use super::timers::Timers;
use super::topics::Topics;
use crate::driver::Token;
use crate::pool::Pool;
use crate::proto::conn::{Connection, Role};

/// The worker state that callbacks may touch besides their own connection.
pub(crate) struct Rt {
    pub(crate) index: usize,
    pub(crate) cfg: Arc<Config>,
    pub(crate) pool: Pool,
    pub(crate) ctl: Vec<u8>,
    /// Connections written to since the last flush.
    pub(crate) dirty: Vec<usize>,
    pub(crate) topics: Topics,
    pub(crate) publishes: Vec<(Arc<str>, Arc<[u8]>)>,
    pub(crate) timers: Timers,
    pub(crate) shared: Arc<Shared>,
    /// Connections whose reading should start or stop (pause, throttle).
    pub(crate) reading_changed: Vec<usize>,
    /// Tokens to give back to the driver (with a reset or not).
    pub(crate) closes: Vec<(Token, bool)>,
    /// Tokens whose write side to shut once their queue is written.
    pub(crate) shutdowns: Vec<Token>,
    /// The last connection's sequence number (for ids).
    pub(crate) seq: u64,
    /// Randomness for client keys and masks (seeded from the OS's per-process keys).
    pub(crate) rng: u64,
    /// The socket being received from may be written to at once (epoll), with this.
    pub(crate) direct: Option<crate::driver::Immediate>,
    /// permessage-deflate: parameter sets, shared codecs, own codecs' memory.
    pub(crate) codecs: super::deflate::Codecs,
    /// Scratch: the receivers of a publish.
    pub(crate) fanout: Vec<usize>,
    /// Where published frames up to `BATCH_FRAME_MAX` are written once for all their
    /// receivers.
    pub(crate) batches: super::worker::Batches,
    /// The server's handle (none for a client's workers).
    pub(crate) handle: Option<crate::server::ServerHandle>,
    /// The application's timers.
    pub(crate) app_timers: AppTimers,
    /// This worker's counters (`shared.metrics[index]`, without the lookup).
    pub(crate) metrics: Arc<crate::metrics::WorkerMetrics>,
    /// Receive time stamps: when the read being processed reached the socket, on the
    /// monotonic clock (`None` outside a read, or for a read without one).
    pub(crate) arrived: Option<Instant>,
    /// This loop iteration's reading of both clocks (monotonic, and the wall clock in
    /// ns since the Unix epoch), taken at its first time stamp to convert them.
    pub(crate) clocks: Option<(Instant, u64)>,
    /// The handler asked the loop to sleep until its wish without waking for sockets.
    pub(crate) batch_io: bool,
}

impl Rt {
    /// Converts a kernel receive time stamp (ns since the Unix epoch) to the monotonic
    /// clock, through this iteration's reading of both clocks.
    pub(crate) fn monotonic_of(&mut self, realtime_ns: u64) -> Instant {
        let (mono, wall) = *self.clocks.get_or_insert_with(|| {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            (Instant::now(), wall)
        });
        if realtime_ns <= wall {
            mono.checked_sub(Duration::from_nanos(wall - realtime_ns))
                .unwrap_or(mono)
        } else {
            // a time stamp "after" the clock reading: the wall clock was stepped back
            mono
        }
    }
}

/// The application's timers on one worker: tasks by deadline, cancellable by id.
#[derive(Default)]
pub(crate) struct AppTimers {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Live timers' tasks (a `TimerTask<H>` each); a cancelled one is removed here and
    /// its heap entry skipped when it comes up.
    live: HashMap<u64, Box<dyn Any>>,
    next: u64,
}

impl std::fmt::Debug for AppTimers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTimers")
            .field("live", &self.live.len())
            .finish()
    }
}

impl AppTimers {
    pub(crate) fn add(&mut self, at: Instant, task: Box<dyn Any>) -> u64 {
        self.next += 1;
        self.heap.push(Reverse((at, self.next)));
        self.live.insert(self.next, task);
        self.next
    }

    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        let found = self.live.remove(&id).is_some();
        if self.live.is_empty() {
            self.heap.clear();
        }
        found
    }

    /// No timer is set (the loop's common case: nothing to look at).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The earliest deadline (possibly a cancelled timer's: waking for it is harmless).
    pub(crate) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|r| r.0 .0)
    }

    /// The next task due by `now`, removed.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Box<dyn Any>> {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(t) = self.live.remove(&id) {
                return Some(t);
            }
        }
        None
    }
}

impl Rt {
    /// A new slot for `token`, with its first deadline `timeout` from now.
    pub(crate) fn new_slot<D>(
        &mut self,
        slots: &mut Slots<D>,
        token: Token,
        role: Role,
        phase: Phase,
        data: Option<D>,
        timeout: Duration,
    ) -> usize {
        self.seq += 1;
        let seq = self.seq;
        let at = self.timers.after(timeout);
        let layer = self.cfg.layer.as_ref().and_then(|f| f.make());
        let mask_seed = super::request::next_rand(&mut self.rng) | 1;
        let proto = Connection::new(role, self.cfg.limits, mask_seed);
        let cold = Some(Box::new(super::slot::Cold {
            layer,
            ..Default::default()
        }));
        let mut slot = Slot::new(token.gen(), seq, phase, proto, cold, data);
        slot.last_read = self.timers.now_ms() as u32;
        let idx = slots.insert(token, slot);
        self.metrics.connections_open.add(1);
        if let Some(slot) = slots.get_mut(idx) {
            self.timers.arm(&mut slot.timer, &mut slot.sched, at, idx);
        }
        idx
    }
}

pub(crate) fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
