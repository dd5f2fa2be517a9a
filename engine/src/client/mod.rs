//! The client role as an engine API: the same thread-per-core workers, drivers and
//! [`Handler`] as the server, connections opened to `ws://` URLs.
//!
//! ```no_run
//! use soliton::client::{Client, ConnectRequest};
//! use soliton::proto::Message;
//! use soliton::server::{Handler, WebSocket};
//!
//! struct Hello;
//! impl Handler for Hello {
//!     type Data = ();
//!     fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
//!         ws.send_text("hello");
//!     }
//!     fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
//!         println!("got {msg:?}");
//!         ws.close(soliton::proto::CloseCode::NORMAL, "bye");
//!     }
//! }
//!
//! let client = Client::builder().workers(1).start(|_worker| Hello).unwrap();
//! let req = ConnectRequest::new("ws://127.0.0.1:9001/chat")
//!     .unwrap()
//!     .protocols(["chat"])
//!     .header("Cookie", "session=abc");
//! client.connect(req, ());
//! ```

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use crate::proto::deflate::{ClientOffer, ClientWindowOffer, DeflateConfig, DeflateMode};

use crate::layer::LayerFactory;
use crate::proto::close::CloseCode;
use crate::proto::conn::{Limits, Message};
use crate::runtime::mailbox::{Command, ConnOp, Shared};
use crate::runtime::request::Pending;
use crate::runtime::PostError;
use crate::runtime::Remote;
use crate::runtime::{Backend, Config};
pub use crate::runtime::{
    CloseInfo, ConnError, ConnId, ConnectRequest, Handler, SendStatus, UrlError, WebSocket,
    WorkerCtx,
};

/// Entry point: [`Client::builder`].
#[derive(Debug)]
pub struct Client;

impl Client {
    /// A builder: one worker, [`Backend::Auto`], no pinning, no idle timeout; the
    /// limits of [`Config::default`] otherwise.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            cfg: Config {
                workers: 1,
                pin_cores: false,
                idle_timeout: None,
                ..Config::default()
            },
        }
    }
}

/// Builds and starts a client runtime.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    cfg: Config,
}

impl ClientBuilder {
    crate::runtime::config::common_setters!();

    /// Time to wait for the server's close frame after ours.
    pub fn close_timeout(mut self, d: Duration) -> Self {
        self.cfg.close_timeout = d;
        self
    }
    /// The compression policy for connections that offer permessage-deflate
    /// (`ConnectRequest::deflate`): its memLevel and threshold, and with `Dedicated`,
    /// context takeover where the server allows it.
    pub fn deflate(mut self, d: DeflateConfig) -> Self {
        self.cfg.deflate = d;
        self
    }

    /// `wss://`: whom to trust, and the session cache, for requests that bring no
    /// [`TlsConnector`](crate::tls::TlsConnector) of their own (default: the system's
    /// roots).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, c: crate::tls::TlsConnector) -> Self {
        self.cfg.tls_client = Some(c);
        self
    }

    /// Starts the workers; returns once each runs (or the first set-up error).
    /// `factory(i)` makes worker `i`'s handler on its thread.
    pub fn start<H, F>(self, factory: F) -> io::Result<ClientHandle<H::Data>>
    where
        H: Handler,
        H::Data: Send,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let cfg = Arc::new(self.cfg);
        let shared = Arc::new(Shared::new(cfg.workers, std::any::TypeId::of::<H>()));
        let listeners = (0..cfg.workers).map(|_| None).collect();
        let (threads, backend) = crate::runtime::spawn(
            cfg,
            shared.clone(),
            Arc::new(factory),
            listeners,
            "soliton-client",
            None,
        )?;
        Ok(ClientHandle {
            remote: Remote { shared },
            backend,
            threads,
            next: AtomicUsize::new(0),
            _data: PhantomData,
        })
    }
}

/// A running client, usable from any thread.
#[derive(Debug)]
pub struct ClientHandle<D> {
    remote: Remote,
    backend: Backend,
    threads: Vec<JoinHandle<io::Result<()>>>,
    next: AtomicUsize,
    _data: PhantomData<fn(D)>,
}

impl<D: Send + 'static> ClientHandle<D> {
    /// The backend the workers run.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Workers.
    pub fn workers(&self) -> usize {
        self.remote.shared.mailboxes.len()
    }

    /// Opens a connection on the next worker (round robin). The outcome comes to the
    /// handler: `on_open`, or `on_error` and `on_close`. Returns false (and drops
    /// `data`) if the client has stopped.
    pub fn connect(&self, req: ConnectRequest, data: D) -> bool {
        let w = self.next.fetch_add(1, Ordering::Relaxed) % self.workers();
        self.connect_on(w, req, data)
    }

    /// Opens a connection on worker `worker`.
    pub fn connect_on(&self, worker: usize, req: ConnectRequest, data: D) -> bool {
        self.remote.post(
            worker,
            Command::Connect(Box::new(Pending {
                req,
                data: Box::new(data),
            })),
        )
    }

    /// Sends a message to one connection, as `ServerHandle::send` does.
    pub fn send(&self, id: ConnId, msg: Message<'_>) -> SendStatus {
        self.remote.send(id, msg)
    }

    /// Starts the close handshake of connection `id` (as `ServerHandle::close`).
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> bool {
        self.remote
            .conn_op(id, ConnOp::Close(code, Box::from(reason)))
    }

    /// Drops connection `id` at once, without a close handshake.
    pub fn terminate(&self, id: ConnId) -> bool {
        self.remote.conn_op(id, ConnOp::Terminate)
    }

    /// Connections held by each worker (every state).
    pub fn connections(&self) -> Vec<usize> {
        self.remote.connections()
    }

    /// Runs `f` on worker `worker`'s thread with its handler and context (as
    /// `ServerHandle::post`).
    pub fn post<H: Handler<Data = D>>(
        &self,
        worker: usize,
        f: impl FnOnce(&mut H, &mut WorkerCtx<'_, D>) + Send + 'static,
    ) -> Result<(), PostError> {
        self.remote.run::<H>(worker, Box::new(f))
    }

    /// Every worker's counters now, as `ServerHandle::metrics` (no handshake statuses or
    /// accepts on a client).
    pub fn metrics(&self) -> crate::metrics::Snapshot {
        self.remote.metrics_reader().snapshot()
    }

    /// A reader of the counters for other threads.
    pub fn metrics_reader(&self) -> crate::metrics::Reader {
        self.remote.metrics_reader()
    }

    /// Closes every connection (1001), waits for the close handshakes up to `grace`,
    /// then stops the workers.
    pub fn shutdown(self, grace: Duration) -> io::Result<()> {
        self.remote.shutdown(grace);
        self.join()
    }

    /// Waits for the workers to stop (they stop only on `shutdown`).
    pub fn join(self) -> io::Result<()> {
        crate::runtime::join(self.threads)
    }
}
