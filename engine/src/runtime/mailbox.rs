//! Work for a worker from other threads: a queue of commands and the driver's waker.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::handler::Reject;
use super::id::ConnId;
use crate::driver::Waker;
use crate::proto::close::CloseCode;

/// Something to do on a worker's thread.
pub(crate) enum Command {
    Publish {
        topic: Arc<str>,
        frame: Arc<[u8]>,
    },
    Send {
        id: ConnId,
        frame: Arc<[u8]>,
    },
    /// Something to do to one connection, by id, from another thread.
    Conn {
        id: ConnId,
        op: ConnOp,
    },
    /// A deferred upgrade's verdict.
    Upgrade {
        id: ConnId,
        verdict: Verdict,
    },
    /// Application code for the worker's thread: a `Task<H>` of the worker's handler
    /// type (checked when posted).
    Run(Box<dyn Any + Send>),
    Connect(Box<super::request::Pending>),
    /// New settings (those that may change while running).
    Reconfigure(Arc<super::config::Config>),
    Shutdown {
        deadline: Instant,
    },
}

/// What a handle asks of one connection.
#[derive(Debug)]
pub(crate) enum ConnOp {
    Close(CloseCode, Box<str>),
    Terminate,
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
}

/// How the application completed a deferred upgrade.
pub(crate) enum Verdict {
    Accept {
        /// The connection's data (`Box<H::Data>`, checked on the worker).
        data: Box<dyn Any + Send>,
        protocol: Option<String>,
        headers: Vec<(String, String)>,
    },
    Reject(Reject),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Publish { topic, .. } => write!(f, "Publish({topic})"),
            Command::Send { id, .. } => write!(f, "Send({id})"),
            Command::Conn { id, op } => write!(f, "Conn({id}, {op:?})"),
            Command::Upgrade { id, verdict } => match verdict {
                Verdict::Accept { .. } => write!(f, "Upgrade({id}, accept)"),
                Verdict::Reject(r) => write!(f, "Upgrade({id}, reject {})", r.status),
            },
            Command::Run(_) => f.write_str("Run"),
            Command::Reconfigure(_) => f.write_str("Reconfigure"),
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
        self.wake();
    }

    fn wake(&self) {
        if let Some(w) = self
            .waker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            w.wake();
        }
    }

    /// Posts every command in `cmds` (left empty) with one wake-up.
    #[cfg(feature = "nats")]
    pub(crate) fn post_all(&self, cmds: &mut Vec<Command>) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(cmds);
        self.wake();
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
    /// Subscribers of each topic over all workers (topics with none are removed).
    pub(crate) subscribers: Mutex<HashMap<Arc<str>, usize>>,
    /// The workers' handler type: what posted tasks and deferred data must match.
    pub(crate) handler: TypeId,
    /// The backpressure limit and `max_buffered` in force, for sends from other
    /// threads (they may change while running).
    pub(crate) send_limits: [AtomicUsize; 2],
    /// Each worker's counters (written by that worker only).
    pub(crate) metrics: Vec<Arc<crate::metrics::WorkerMetrics>>,
    /// The bridge to other nodes, set at start (feature `nats`).
    #[cfg(feature = "nats")]
    pub(crate) cluster: std::sync::OnceLock<crate::cluster::Bridge>,
}

impl Shared {
    pub(crate) fn set_send_limits(&self, cfg: &super::config::Config) {
        self.send_limits[0].store(cfg.backpressure_limit, Ordering::Relaxed);
        self.send_limits[1].store(cfg.max_buffered, Ordering::Relaxed);
    }

    pub(crate) fn new(workers: usize, handler: TypeId) -> Shared {
        Shared {
            mailboxes: (0..workers).map(|_| Arc::new(Mailbox::default())).collect(),
            congested: Mutex::default(),
            subscribers: Mutex::default(),
            handler,
            send_limits: [AtomicUsize::new(0), AtomicUsize::new(0)],
            metrics: (0..workers).map(|_| Arc::default()).collect(),
            #[cfg(feature = "nats")]
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// A topic gained (`true`) or lost a subscriber on some worker.
    pub(crate) fn count_subscriber(&self, topic: &str, joined: bool) {
        let mut m = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        if joined {
            match m.get_mut(topic) {
                Some(n) => *n += 1,
                None => {
                    let t: Arc<str> = Arc::from(topic);
                    self.interest(&t, true);
                    m.insert(t, 1);
                }
            }
        } else if let Some(n) = m.get_mut(topic) {
            *n -= 1;
            if *n == 0 {
                if let Some((t, _)) = m.remove_entry(topic) {
                    self.interest(&t, false);
                }
            }
        }
    }

    /// The first local subscriber of `topic` joined, or the last left (called under
    /// the `subscribers` lock, so the calls come in the order of the changes): the
    /// cluster bridge takes or drops its broker subscription.
    fn interest(&self, topic: &Arc<str>, on: bool) {
        #[cfg(feature = "nats")]
        if let Some(c) = self.cluster.get() {
            c.interest(topic, on);
        }
        #[cfg(not(feature = "nats"))]
        let _ = (topic, on);
    }

    /// A publish made on this node (by a worker or a handle), for the other nodes.
    #[inline]
    pub(crate) fn forward(&self, topic: &Arc<str>, frame: &Arc<[u8]>) {
        #[cfg(feature = "nats")]
        if let Some(c) = self.cluster.get() {
            c.publish(topic, frame);
        }
        #[cfg(not(feature = "nats"))]
        let _ = (topic, frame);
    }

    pub(crate) fn num_subscribers(&self, topic: &str) -> usize {
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .copied()
            .unwrap_or(0)
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
