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

mod config;
mod epoll;
mod handler;
mod queue;
#[cfg(target_os = "linux")]
mod uring;
mod worker;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use config::{Backend, Config};
pub use handler::{CloseInfo, ConnId, Handler, HttpResponse, Reject, UpgradeRequest, WebSocket};
pub use worker::SendStatus;

use crate::proto::conn::{Limits, Message};
use crate::proto::handshake::OriginPolicy;
use crate::sys;
use worker::{Command, Core, Mailbox, Shared};

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
    /// Replaces the whole configuration.
    pub fn config(mut self, cfg: Config) -> Self {
        self.cfg = cfg;
        self
    }
    /// Address to listen on (port 0 picks a free one).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.cfg.addr = addr;
        self
    }
    /// Worker threads.
    pub fn workers(mut self, n: usize) -> Self {
        self.cfg.workers = n.max(1);
        self
    }
    /// I/O backend.
    pub fn backend(mut self, b: Backend) -> Self {
        self.cfg.backend = b;
        self
    }
    /// Pin workers to cores, starting at `first_core`; `None` leaves them unpinned.
    pub fn pin(mut self, first_core: Option<usize>) -> Self {
        self.cfg.pin_cores = first_core.is_some();
        self.cfg.first_core = first_core.unwrap_or(0);
        self
    }
    /// Frame and message size limits.
    pub fn limits(mut self, l: Limits) -> Self {
        self.cfg.limits = l;
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
    /// Idle timeout (ping, then close); `None` disables it.
    pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
        self.cfg.idle_timeout = d;
        self
    }
    /// Backpressure limit and hard cap on buffered outgoing bytes.
    pub fn buffered_limits(mut self, backpressure: usize, max: usize) -> Self {
        self.cfg.backpressure_limit = backpressure;
        self.cfg.max_buffered = max.max(backpressure);
        self
    }

    /// Receive buffers: io_uring's provided ring (`count` buffers of `size` bytes per
    /// worker) and the epoll worker's buffer (`epoll_size` bytes).
    pub fn receive_buffers(mut self, count: u16, size: usize, epoll_size: usize) -> Self {
        self.cfg.uring_buffers = count.max(2);
        self.cfg.uring_buffer_size = size.max(512);
        self.cfg.recv_buffer_size = epoll_size.max(512);
        self
    }

    /// `TCP_NODELAY` on every connection; default on (see [`Config::nodelay`]).
    pub fn nodelay(mut self, on: bool) -> Self {
        self.cfg.nodelay = on;
        self
    }

    /// Benchmark ceiling: a raw TCP echo (no WebSocket) on the same loop and buffers.
    pub fn raw_tcp_echo(mut self, on: bool) -> Self {
        self.cfg.raw_tcp_echo = on;
        self
    }

    /// Binds every worker's listener and starts the workers. `factory(i)` makes worker
    /// `i`'s handler on that worker's thread.
    pub fn start<H, F>(self, factory: F) -> io::Result<ServerHandle>
    where
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let mut cfg = self.cfg;
        let (backend, why) = resolve_backend(cfg.backend);
        eprintln!("soliton: backend {backend:?} ({why})");
        cfg.backend = backend;
        // The first listener fixes the port (port 0 picks one); the rest share it.
        let first = sys::listener(cfg.addr, cfg.backlog)?;
        let addr = sys::local_addr(&first)?;
        cfg.addr = addr;
        let mut listeners = vec![first];
        for _ in 1..cfg.workers {
            listeners.push(sys::listener(addr, cfg.backlog)?);
        }
        let cfg = Arc::new(cfg);
        let shared = Arc::new(Shared {
            mailboxes: (0..cfg.workers).map(|_| Arc::new(Mailbox::new())).collect(),
        });
        let factory = Arc::new(factory);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut threads = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let cfg = cfg.clone();
            let shared = shared.clone();
            let factory = factory.clone();
            let core_id = (cfg.pin_cores && !cores.is_empty())
                .then(|| cores[(cfg.first_core + i) % cores.len()]);
            let t = std::thread::Builder::new()
                .name(format!("soliton-{i}"))
                .spawn(move || {
                    if let Some(c) = core_id {
                        core_affinity::set_for_current(c);
                    }
                    let core = Core::new(i, cfg.clone(), factory(i), shared);
                    let r = match cfg.backend {
                        #[cfg(target_os = "linux")]
                        Backend::IoUring => uring::run(core, listener),
                        _ => epoll::run(core, listener),
                    };
                    if let Err(e) = &r {
                        eprintln!("soliton: worker {i} stopped: {e}");
                    }
                    r
                })?;
            threads.push(t);
        }
        Ok(ServerHandle {
            addr,
            backend,
            shared,
            threads,
        })
    }
}

/// Picks the backend for `Auto` and says why.
fn resolve_backend(b: Backend) -> (Backend, String) {
    match b {
        Backend::Epoll => (Backend::Epoll, "asked for".into()),
        #[cfg(target_os = "linux")]
        Backend::IoUring | Backend::Auto => match uring::probe() {
            Ok(()) => (Backend::IoUring, "kernel supports what it needs".into()),
            Err(why) if b == Backend::Auto => {
                (Backend::Epoll, format!("io_uring unavailable: {why}"))
            }
            Err(why) => (
                Backend::Epoll,
                format!("io_uring asked for but unavailable: {why}"),
            ),
        },
        #[cfg(not(target_os = "linux"))]
        _ => (Backend::Epoll, "io_uring needs Linux".into()),
    }
}

/// A running server, usable from any thread.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    backend: Backend,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl ServerHandle {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The backend the workers run.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Publishes to `topic` on every worker; the frame is serialized once and shared
    /// by every receiver.
    pub fn publish(&self, topic: &str, msg: Message<'_>) {
        let frame: Arc<[u8]> = Arc::from(worker::serialize(msg));
        let topic: Arc<str> = Arc::from(topic);
        for mb in &self.shared.mailboxes {
            mb.post(Command::Publish {
                topic: topic.clone(),
                frame: frame.clone(),
            });
        }
    }

    /// Sends a message to one connection (dropped if it is gone or closing).
    pub fn send(&self, id: ConnId, msg: Message<'_>) {
        if let Some(mb) = self.shared.mailboxes.get(id.worker()) {
            mb.post(Command::Send {
                id,
                frame: Arc::from(worker::serialize(msg)),
            });
        }
    }

    /// Graceful shutdown: stop accepting, close every connection with 1001, wait for
    /// the close handshakes up to `grace`, then drop what is left and join the workers.
    pub fn shutdown(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for mb in &self.shared.mailboxes {
            mb.post(Command::Shutdown { deadline });
        }
        self.join();
    }

    /// Waits for the workers to stop.
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}
