//! Work for a worker from other threads: a queue of commands and the driver's waker.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::id::ConnId;
use crate::driver::Waker;

/// Something to do on a worker's thread.
pub(crate) enum Command {
    Publish { topic: Arc<str>, frame: Arc<[u8]> },
    Send { id: ConnId, frame: Arc<[u8]> },
    Connect(Box<super::request::Pending>),
    Shutdown { deadline: Instant },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Publish { topic, .. } => write!(f, "Publish({topic})"),
            Command::Send { id, .. } => write!(f, "Send({id})"),
            Command::Connect(_) => f.write_str("Connect"),
            Command::Shutdown { .. } => f.write_str("Shutdown"),
        }
    }
}

/// A worker's inbox. The waker is set once the worker's driver exists; it owns its
/// descriptor (shared with the driver), so posting after the worker ended is harmless.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    queue: Mutex<Vec<Command>>,
    waker: Mutex<Option<Waker>>,
    /// Bytes of `Send` frames posted and not yet taken by the worker.
    pub(crate) pending_bytes: AtomicUsize,
    /// The worker has stopped: nothing posted will run.
    pub(crate) closed: AtomicBool,
}

impl Mailbox {
    pub(crate) fn set_waker(&self, w: Waker) {
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
            w.wake();
        }
    }

    pub(crate) fn take(&self, into: &mut Vec<Command>) {
        std::mem::swap(
            &mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()),
            into,
        );
    }

    pub(crate) fn add_pending(&self, n: usize) -> usize {
        self.pending_bytes.fetch_add(n, Ordering::Relaxed) + n
    }

    pub(crate) fn sub_pending(&self, n: usize) {
        self.pending_bytes.fetch_sub(n, Ordering::Relaxed);
    }
}

/// State shared by every worker of one server or client.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) mailboxes: Vec<Arc<Mailbox>>,
    /// Connections over their backpressure limit, for handles on other threads
    /// (updated when a connection crosses the limit, not per message).
    pub(crate) congested: Mutex<std::collections::HashSet<ConnId>>,
    /// Each worker's counters (written by that worker only).
    pub(crate) metrics: Vec<Arc<crate::metrics::WorkerMetrics>>,
}

impl Shared {
    pub(crate) fn new(workers: usize) -> Shared {
        Shared {
            mailboxes: (0..workers).map(|_| Arc::new(Mailbox::default())).collect(),
            congested: Mutex::default(),
            metrics: (0..workers).map(|_| Arc::default()).collect(),
        }
    }

    pub(crate) fn set_congested(&self, id: ConnId, on: bool) {
        let mut s = self.congested.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            s.insert(id);
        } else {
            s.remove(&id);
        }
    }

    pub(crate) fn is_congested(&self, id: ConnId) -> bool {
        self.congested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)
    }
}
