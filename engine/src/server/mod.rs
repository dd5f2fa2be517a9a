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
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::runtime::{
    Backend, CloseInfo, Config, ConnError, ConnId, Handler, HttpResponse, Reject, SendStatus,
    UpgradeRequest, WebSocket, WorkerCtx,
};

pub use crate::proto::deflate::{DeflateConfig, DeflateMode};

use crate::driver;
use crate::layer::LayerFactory;
use crate::proto::conn::{Limits, Message};
use crate::proto::handshake::OriginPolicy;
use crate::runtime::mailbox::Shared;
use crate::runtime::Remote;

/// Entry point: [`Server::builder`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the default [`Config`].
    pub fn builder() -> Builder {
        Builder {
            cfg: Config::default(),
        }
    }
}

/// Builds and starts a server.
#[derive(Debug, Clone)]
pub struct Builder {
    cfg: Config,
}

impl Builder {
    crate::runtime::config::common_setters!();

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

    /// Binds every worker's listener and starts the workers; returns once every
    /// worker runs, or with the first set-up error (a bind, an io_uring ring that cannot
    /// be made). `factory(i)` makes worker `i`'s handler on that worker's thread.
    pub fn start<H, F>(self, factory: F) -> io::Result<ServerHandle>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
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
        let shared = Arc::new(Shared::new(cfg.workers));
        let (threads, backend) = crate::runtime::spawn(
            cfg.clone(),
            shared.clone(),
            Arc::new(factory),
            listeners,
            "soliton",
        )?;
        Ok(ServerHandle {
            addr,
            backend,
            remote: Remote { cfg, shared },
            threads,
        })
    }
}

/// A running server, usable from any thread.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    backend: Backend,
    remote: Remote,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend the workers run (never [`Backend::Auto`]).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Publishes to `topic` on every worker; the frame is serialized once and shared
    /// by every receiver.
    pub fn publish(&self, topic: &str, msg: Message<'_>) {
        self.remote.publish(topic, msg)
    }

    /// Sends a message to one connection from any thread, under the same limits as
    /// [`WebSocket::send`]: `Backpressure` while the connection is over its
    /// backpressure limit (or this worker's queue of sends from other threads is),
    /// `Dropped` if the id is not a connection of this server or the worker's queue of
    /// such sends is over `max_buffered` (the message is not queued). A connection
    /// pushed past `max_buffered` is dropped, as with `send`.
    pub fn send(&self, id: ConnId, msg: Message<'_>) -> SendStatus {
        self.remote.send(id, msg)
    }

    /// Every worker's counters now (see [`crate::metrics`]).
    pub fn metrics(&self) -> crate::metrics::Snapshot {
        self.remote.metrics_reader().snapshot()
    }

    /// A reader of the counters for other threads (e.g. [`crate::metrics::serve`]);
    /// it stays valid after the server stopped (the counts then stay as they were).
    pub fn metrics_reader(&self) -> crate::metrics::Reader {
        self.remote.metrics_reader()
    }

    /// Graceful shutdown: stop accepting, close every connection with 1001, wait for
    /// the close handshakes up to `grace`, then drop what is left and join the workers.
    pub fn shutdown(self, grace: Duration) -> io::Result<()> {
        self.remote.shutdown(grace);
        self.join()
    }

    /// Waits for the workers to stop; the first worker that failed or panicked is the
    /// error.
    pub fn join(self) -> io::Result<()> {
        crate::runtime::join(self.threads)
    }
}
