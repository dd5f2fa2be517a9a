//! The server runtime: one worker thread per core, each with its own `SO_REUSEPORT`
//! listener, event loop, connection slab and buffer pool.
//!
//! ```no_run
//! use soliton::proto::Message;
//! use soliton::server::{Handler, Reject, Server, UpgradeRequest, WebSocket};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     type Data = ();
//!     fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
//!         Ok(())
//!     }
//!     fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
//!         ws.send(msg);
//!     }
//! }
//!
//! let server = Server::builder()
//!     .addr("127.0.0.1:9001".parse().unwrap())
//!     .start(|_worker| Echo)
//!     .unwrap();
//! server.join();
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::proto::close::CloseCode;
pub use crate::runtime::{
    Backend, CloseInfo, Config, ConnError, ConnId, Handler, HttpResponse, PendingUpgrade,
    PostError, Reject, SendStatus, TimerId, Upgrade, UpgradeRequest, WebSocket, WorkerCtx,
};

pub use crate::proto::deflate::{DeflateConfig, DeflateMode};

use crate::driver;
use crate::layer::LayerFactory;
use crate::proto::conn::{Limits, Message};
use crate::proto::handshake::OriginPolicy;
use crate::runtime::mailbox::{ConnOp, Shared};
use crate::runtime::Remote;

/// Entry point: [`Server::builder`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the default [`Config`].
    pub fn builder() -> Builder {
        Builder {
            cfg: Config::default(),
            #[cfg(feature = "nats")]
            cluster: None,
        }
    }
}

/// Builds and starts a server.
#[derive(Debug, Clone)]
pub struct Builder {
    cfg: Config,
    #[cfg(feature = "nats")]
    cluster: Option<crate::cluster::NatsConfig>,
}

impl Builder {
    crate::runtime::config::common_setters!();

    /// The configuration as built so far (the bridge reads its limits).
    #[cfg(feature = "tokio")]
    pub(crate) fn cfg(&self) -> &Config {
        &self.cfg
    }

    /// Address to listen on (port 0 picks a free one).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.cfg.addr = addr;
        self
    }
    /// Origin policy.
    pub fn origins(mut self, o: OriginPolicy) -> Self {
        self.cfg.handshake.origins = o;
        self
    }
    /// Supported subprotocols, most preferred first.
    pub fn protocols<I: IntoIterator<Item = S>, S: Into<String>>(mut self, p: I) -> Self {
        self.cfg.handshake.protocols = p.into_iter().map(Into::into).collect();
        self
    }
    /// Most connections per worker.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.cfg.max_connections = n;
        self
    }
    /// Handshake timeout.
    pub fn handshake_timeout(mut self, d: Duration) -> Self {
        self.cfg.handshake_timeout = d;
        self
    }

    /// Serves `wss://`: every connection goes through TLS with these settings (see
    /// [`TlsAcceptor`](crate::tls::TlsAcceptor)); its handshake is covered by the
    /// handshake timeout.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, t: &crate::tls::TlsAcceptor) -> Self {
        self.cfg.layer = Some(t.factory());
        self
    }

    /// permessage-deflate policy (off by default) and the budget for dedicated state.
    pub fn deflate(mut self, d: DeflateConfig, budget: usize) -> Self {
        self.cfg.deflate = d;
        self.cfg.deflate_budget = budget;
        self
    }

    /// Shares topics with other servers through a NATS broker (see
    /// [`cluster`](crate::cluster)): a publish here reaches the subscribers of its topic
    /// on every node. `start` connects to the broker first and fails if it cannot, or
    /// if the settings are wrong (the subject prefix, the URL).
    #[cfg(feature = "nats")]
    pub fn cluster(mut self, c: crate::cluster::NatsConfig) -> Self {
        self.cluster = Some(c);
        self
    }

    /// Binds every worker's listener and starts the workers; returns once every
    /// worker runs, or with the first set-up error (a bind, an io_uring ring that cannot
    /// be made). `factory(i)` makes worker `i`'s handler on that worker's thread.
    pub fn start<H, F>(self, factory: F) -> io::Result<ServerHandle>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        self.start_with(move |i, _| factory(i))
    }

    /// As [`Builder::start`], with the server's handle given to the factory too (to
    /// keep in the handler: send to connections of other workers, post tasks, ...).
    pub fn start_with<H, F>(self, factory: F) -> io::Result<ServerHandle>
    where
        H: Handler,
        F: Fn(usize, &ServerHandle) -> H + Send + Sync + 'static,
    {
        let mut cfg = self.cfg;
        let (backend, why) = cfg.backend.resolve().map_err(io::Error::other)?;
        tracing::info!(backend = backend.name(), why, "backend chosen");
        cfg.backend = backend;
        // The first listener fixes the port (port 0 picks one); the rest share it.
        let first = driver::listener(cfg.addr, cfg.backlog)?;
        let addr = driver::local_addr(&first)?;
        cfg.addr = addr;
        let mut listeners = vec![Some(first)];
        for _ in 1..cfg.workers {
            listeners.push(Some(driver::listener(addr, cfg.backlog)?));
        }
        let cfg = Arc::new(cfg);
        let shared = Arc::new(Shared::new(cfg.workers, std::any::TypeId::of::<H>()));
        #[cfg(feature = "nats")]
        if let Some(c) = &self.cluster {
            let bridge = crate::cluster::Bridge::start(c, shared.mailboxes.clone())?;
            let _ = shared.cluster.set(bridge);
        }
        let handle = ServerHandle {
            inner: Arc::new(Inner {
                addr,
                backend,
                config: Mutex::new(cfg.clone()),
                remote: Remote {
                    shared: shared.clone(),
                },
                threads: Mutex::new(Vec::new()),
            }),
        };
        let h = handle.clone();
        let (threads, _) = crate::runtime::spawn(
            cfg,
            shared,
            Arc::new(move |i| factory(i, &h)),
            listeners,
            "soliton",
            Some(handle.clone()),
        )?;
        *handle
            .inner
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = threads;
        Ok(handle)
    }
}

/// A running server, usable from any thread: cheap to clone (every clone is the same
/// server), `Send` and `Sync`. The handler factory gets it
/// ([`Builder::start_with`]), and so do callbacks ([`WebSocket::server`],
/// [`WorkerCtx::server`]).
///
/// What it does to a connection by id goes through that connection's worker's
/// mailbox and happens at the worker's next loop iteration; an id whose connection
/// has gone is ignored.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

/// Settings that cannot change while the server runs, given to
/// [`ServerHandle::reconfigure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconfigureError(pub Vec<&'static str>);

impl std::fmt::Display for ReconfigureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot change while running (restart to change): {}",
            self.0.join(", ")
        )
    }
}

impl std::error::Error for ReconfigureError {}

#[derive(Debug)]
struct Inner {
    addr: SocketAddr,
    backend: Backend,
    remote: Remote,
    /// The configuration in force.
    config: Mutex<Arc<Config>>,
    threads: Mutex<Vec<JoinHandle<io::Result<()>>>>,
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The backend the workers run (never [`Backend::Auto`]).
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.inner.remote.shared.mailboxes.len()
    }

    /// Connections held by each worker (in every state: handshakes and closing ones
    /// too), as the workers last stored them (once per loop iteration that changed
    /// the number).
    pub fn connections(&self) -> Vec<usize> {
        self.inner.remote.connections()
    }

    /// Publishes to `topic` on every worker; the frame is serialized once and shared
    /// by every receiver.
    pub fn publish(&self, topic: &str, msg: Message<'_>) {
        self.inner.remote.publish(topic, msg)
    }

    /// Sends a message to one connection from any thread, under the same limits as
    /// [`WebSocket::send`]: `Backpressure` while the connection is over its
    /// backpressure limit (or this worker's queue of sends from other threads is),
    /// `Dropped` if the id is not a connection of this server or the worker's queue of
    /// such sends is over `max_buffered` (the message is not queued). A connection
    /// pushed past `max_buffered` is dropped, as with `send`.
    pub fn send(&self, id: ConnId, msg: Message<'_>) -> SendStatus {
        self.inner.remote.send(id, msg)
    }

    /// Starts the close handshake of connection `id` with this code and reason (as
    /// [`WebSocket::close`]). False if its worker has stopped.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> bool {
        self.inner
            .remote
            .conn_op(id, ConnOp::Close(code, Box::from(reason)))
    }

    /// Drops connection `id` at once, without a close handshake (as
    /// [`WebSocket::terminate`]; uWebSockets' `end` against `close`). Works in every
    /// state, a handshake under way included.
    pub fn terminate(&self, id: ConnId) -> bool {
        self.inner.remote.conn_op(id, ConnOp::Terminate)
    }

    /// Subscribes connection `id` to `topic`.
    pub fn subscribe(&self, id: ConnId, topic: &str) -> bool {
        self.inner
            .remote
            .conn_op(id, ConnOp::Subscribe(Arc::from(topic)))
    }

    /// Unsubscribes connection `id` from `topic`.
    pub fn unsubscribe(&self, id: ConnId, topic: &str) -> bool {
        self.inner
            .remote
            .conn_op(id, ConnOp::Unsubscribe(Arc::from(topic)))
    }

    /// Subscribers of `topic` on all workers (as the workers have applied them: a
    /// subscribe posted from another thread counts once its worker ran it).
    pub fn num_subscribers(&self, topic: &str) -> usize {
        self.inner.remote.shared.num_subscribers(topic)
    }

    /// The cluster bridge's state and counters; `None` without
    /// [`Builder::cluster`].
    #[cfg(feature = "nats")]
    pub fn cluster_stats(&self) -> Option<crate::cluster::ClusterStats> {
        self.inner.remote.shared.cluster.get().map(|c| c.stats())
    }

    /// Runs `f` on worker `worker`'s thread with its handler and context, at its next
    /// loop iteration, without locks: `H` is the handler type the server was started
    /// with ([`PostError::WrongHandler`] otherwise). A panic in `f` is caught.
    pub fn post<H: Handler>(
        &self,
        worker: usize,
        f: impl FnOnce(&mut H, &mut WorkerCtx<'_, H::Data>) + Send + 'static,
    ) -> Result<(), PostError> {
        self.inner.remote.run::<H>(worker, Box::new(f))
    }

    /// The configuration in force (as last given to [`ServerHandle::reconfigure`]).
    pub fn config(&self) -> Config {
        (*self.current()).clone()
    }

    fn current(&self) -> Arc<Config> {
        self.inner
            .config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes settings while the server runs: `f` edits a copy of the configuration
    /// in force; every worker takes the copy at its next loop iteration. What may
    /// change: the limits (frame and message sizes, head limits), the Origin policy,
    /// subprotocols, `max_connections`, the timeouts, `backpressure_limit`,
    /// `max_buffered`, `read_throttle`, and the TLS certificates (a new
    /// [`TlsAcceptor`](crate::tls::TlsAcceptor)'s factory in `layer`). New connections
    /// get the new settings; open ones keep their frame and message limits and the
    /// deadlines already set. Anything else changed is an error naming it, and nothing
    /// is applied.
    pub fn reconfigure(&self, f: impl FnOnce(&mut Config)) -> Result<(), ReconfigureError> {
        let mut guard = self.inner.config.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (**guard).clone();
        f(&mut next);
        next.max_buffered = next.max_buffered.max(next.backpressure_limit);
        let fixed = guard.fixed_changes(&next);
        if !fixed.is_empty() {
            return Err(ReconfigureError(fixed));
        }
        let next = Arc::new(next);
        let remote = &self.inner.remote;
        remote.shared.set_send_limits(&next);
        for w in 0..self.workers() {
            remote.post(
                w,
                crate::runtime::mailbox::Command::Reconfigure(next.clone()),
            );
        }
        *guard = next;
        Ok(())
    }

    /// Every worker's counters now (see [`crate::metrics`]).
    pub fn metrics(&self) -> crate::metrics::Snapshot {
        self.inner.remote.metrics_reader().snapshot()
    }

    /// A reader of the counters for other threads (e.g. [`crate::metrics::serve`]);
    /// it stays valid after the server stopped (the counts then stay as they were).
    pub fn metrics_reader(&self) -> crate::metrics::Reader {
        self.inner.remote.metrics_reader()
    }

    /// Graceful shutdown: stop accepting, close every connection with 1001, wait for
    /// the close handshakes up to `grace`, then drop what is left and join the workers.
    /// Not from a worker's own thread (it would wait for itself).
    pub fn shutdown(&self, grace: Duration) -> io::Result<()> {
        self.inner.remote.shutdown(grace);
        self.join()
    }

    /// Waits for the workers to stop; the first worker that failed or panicked is the
    /// error. A second call (or a call on another clone) after the first returned is
    /// `Ok` at once. Not from a worker's own thread.
    pub fn join(&self) -> io::Result<()> {
        let mut threads = self.inner.threads.lock().unwrap_or_else(|e| e.into_inner());
        let r = crate::runtime::join(std::mem::take(&mut *threads));
        #[cfg(feature = "nats")]
        if let Some(c) = self.inner.remote.shared.cluster.get() {
            c.stop();
        }
        r
    }
}
