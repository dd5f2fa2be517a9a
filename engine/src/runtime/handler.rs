//! The application's side: the [`Handler`] trait and the plain types its callbacks
//! take. One trait serves both roles: a server's connections start at
//! [`Handler::on_upgrade`], a client's at a connect; from `on_open` on they are the same.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use super::ctx::WorkerCtx;
use super::error::ConnError;
use super::id::ConnId;
use super::mailbox::{Command, Shared, Verdict};
use super::ws::WebSocket;
use super::Remote;
use crate::proto::close::CloseCode;
use crate::proto::conn::Message;
use crate::proto::handshake::Request;

/// A refusal of an upgrade request: the HTTP status and a short body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status, e.g. 401 or 403.
    pub status: u16,
    /// Plain-text body.
    pub body: String,
}

impl Reject {
    /// A refusal with this status and body.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Reject {
            status,
            body: body.into(),
        }
    }
}

/// A plain HTTP response (for requests that are not upgrades).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Extra header fields.
    pub headers: Vec<(String, String)>,
    /// Body (sent as `text/plain; charset=utf-8` unless a `Content-Type` is given).
    pub body: String,
}

impl HttpResponse {
    /// `426 Upgrade Required` with `Upgrade: websocket`: the default answer.
    pub fn upgrade_required() -> Self {
        HttpResponse {
            status: 426,
            headers: Vec::new(),
            body: "this is a WebSocket endpoint\n".into(),
        }
    }

    /// A response with this status and body.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// An upgrade request: the parsed request, what the policy chose, and what the
/// application adds to the answer.
#[derive(Debug)]
pub struct UpgradeRequest<'a, 'b> {
    /// The request; every header is readable (Cookie, Authorization, ...).
    pub request: &'a Request<'b>,
    /// The peer's address.
    pub peer: Option<std::net::SocketAddr>,
    pub(crate) protocol: Cell<Option<&'b str>>,
    pub(crate) headers: RefCell<Vec<(String, String)>>,
    pub(crate) id: ConnId,
    /// The worker's shared state (its mailboxes), for a deferred upgrade's verdict.
    pub(crate) shared: &'a Arc<Shared>,
}

impl<'b> UpgradeRequest<'_, 'b> {
    /// The id the connection will have once open (and has while its upgrade is
    /// deferred).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// A handle to complete this upgrade later, from any thread: return
    /// [`Upgrade::Defer`] from [`Handler::on_upgrade_request`] and call
    /// [`PendingUpgrade::accept`] or [`PendingUpgrade::reject`] when the answer is
    /// known (after a database lookup, say). Until then the connection waits in the
    /// CONNECTING state under the handshake timeout (408 when it passes); a client that
    /// disconnects meanwhile is cleaned up and the verdict is then ignored. A
    /// `PendingUpgrade` dropped without a verdict rejects with 500.
    ///
    /// The subprotocol and the response headers chosen here so far are kept; the
    /// verdict may change the subprotocol and add headers.
    pub fn defer(&self) -> PendingUpgrade {
        PendingUpgrade {
            id: self.id,
            remote: Some(Remote {
                shared: self.shared.clone(),
            }),
        }
    }

    /// The subprotocol that will be answered: by default the server's most preferred
    /// one that the client offered.
    pub fn protocol(&self) -> Option<&'b str> {
        self.protocol.get()
    }

    /// Chooses the subprotocol to answer with, overriding the preference list; it must
    /// be one the client offered (returns false, changing nothing, otherwise).
    pub fn select_protocol(&self, name: &str) -> bool {
        match self.request.protocols().find(|p| *p == name) {
            Some(p) => {
                self.protocol.set(Some(p));
                true
            }
            None => false,
        }
    }

    /// Adds a header field to the 101 response (e.g. `Set-Cookie`).
    pub fn add_response_header(&self, name: &str, value: &str) {
        self.headers
            .borrow_mut()
            .push((name.to_owned(), value.to_owned()));
    }
}

/// The answer to an upgrade request, from [`Handler::on_upgrade_request`].
#[derive(Debug)]
pub enum Upgrade<D> {
    /// Accept, with the connection's data.
    Accept(D),
    /// Refuse with an HTTP status.
    Reject(Reject),
    /// Answer later through the [`PendingUpgrade`] from [`UpgradeRequest::defer`].
    Defer,
}

impl<D> From<Result<D, Reject>> for Upgrade<D> {
    fn from(r: Result<D, Reject>) -> Self {
        match r {
            Ok(d) => Upgrade::Accept(d),
            Err(e) => Upgrade::Reject(e),
        }
    }
}

/// A deferred upgrade, to accept or reject from any thread (see
/// [`UpgradeRequest::defer`]).
#[derive(Debug)]
pub struct PendingUpgrade {
    id: ConnId,
    remote: Option<Remote>,
}

impl PendingUpgrade {
    /// The connection's id (the one it keeps once open).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Accepts with the connection's data (which must be the handler's `Data` type:
    /// otherwise the upgrade is refused with 500), answering with the subprotocol
    /// chosen at the request.
    pub fn accept<D: Send + 'static>(self, data: D) -> bool {
        self.accept_with(data, None, Vec::new())
    }

    /// Accepts as [`PendingUpgrade::accept`], choosing the subprotocol (one the client
    /// offered; `None` keeps the one chosen at the request) and adding header fields
    /// to the 101 response. Returns false if the server has stopped.
    pub fn accept_with<D: Send + 'static>(
        mut self,
        data: D,
        protocol: Option<&str>,
        headers: Vec<(String, String)>,
    ) -> bool {
        let verdict = Verdict::Accept {
            data: Box::new(data),
            protocol: protocol.map(str::to_owned),
            headers,
        };
        self.send(verdict)
    }

    /// Refuses with an HTTP status and body. Returns false if the server has stopped.
    pub fn reject(mut self, r: Reject) -> bool {
        self.send(Verdict::Reject(r))
    }

    fn send(&mut self, verdict: Verdict) -> bool {
        let Some(remote) = self.remote.take() else {
            return false;
        };
        remote.post(
            self.id.worker(),
            Command::Upgrade {
                id: self.id,
                verdict,
            },
        )
    }
}

impl Drop for PendingUpgrade {
    fn drop(&mut self) {
        if self.remote.is_some() {
            self.send(Verdict::Reject(Reject::new(
                500,
                "the upgrade was abandoned by the application\n",
            )));
        }
    }
}

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseInfo<'a> {
    /// The peer's close code (1005 if its close frame had none, 1006 if none came or
    /// the connection failed).
    pub code: CloseCode,
    /// The peer's reason.
    pub reason: &'a str,
    /// Both close frames crossed before the TCP connection closed.
    pub was_clean: bool,
}

/// The application. One instance per worker thread, made by the factory given to
/// `start`; callbacks for one worker run on its thread.
///
/// A panic in a callback is caught: the connection it was about is closed with 1011
/// (the worker and its other connections go on). The handler's own state may then be
/// inconsistent, as with any caught panic.
pub trait Handler: 'static {
    /// Per-connection data: made by [`Handler::on_upgrade`] (server) or given to the
    /// connect (client), handed back in [`Handler::on_close`].
    type Data: 'static;

    /// Server: an upgrade request passed the protocol checks and the Origin policy:
    /// accept it (returning the connection's data) or refuse it with an HTTP status.
    /// The default refuses every request with 404: a server's handler implements it.
    fn on_upgrade(&mut self, req: &UpgradeRequest<'_, '_>) -> Result<Self::Data, Reject> {
        let _ = req;
        Err(Reject::new(404, "no WebSocket endpoint here\n"))
    }

    /// Server: the upgrade request as the engine asks it; the default answers with
    /// [`Handler::on_upgrade`]. Implement this one instead to answer some requests
    /// later ([`Upgrade::Defer`], with [`UpgradeRequest::defer`]): authentication that
    /// needs a database need not block the worker.
    fn on_upgrade_request(&mut self, req: &UpgradeRequest<'_, '_>) -> Upgrade<Self::Data> {
        self.on_upgrade(req).into()
    }

    /// Server: a plain HTTP request (not an upgrade). Default: 426 with
    /// `Upgrade: websocket`.
    fn on_http(&mut self, req: &Request<'_>) -> HttpResponse {
        let _ = req;
        HttpResponse::upgrade_required()
    }

    /// The connection is OPEN.
    fn on_open(&mut self, ws: &mut WebSocket<'_, Self::Data>) {
        let _ = ws;
    }

    /// A whole message, borrowed from the receive buffer (no copy).
    fn on_message(&mut self, ws: &mut WebSocket<'_, Self::Data>, msg: Message<'_>);

    /// A ping arrived (the pong is sent by the engine).
    fn on_ping(&mut self, ws: &mut WebSocket<'_, Self::Data>, payload: &[u8]) {
        let _ = (ws, payload);
    }

    /// A pong arrived.
    fn on_pong(&mut self, ws: &mut WebSocket<'_, Self::Data>, payload: &[u8]) {
        let _ = (ws, payload);
    }

    /// The outgoing buffer fell to the backpressure limit or below after `send`
    /// reported [`SendStatus::Backpressure`](super::ws::SendStatus::Backpressure).
    fn on_drain(&mut self, ws: &mut WebSocket<'_, Self::Data>) {
        let _ = ws;
    }

    /// The connection failed (as a browser's `onerror`); [`Handler::on_close`] follows
    /// with 1006 (or the code the connection was failed with).
    fn on_error(&mut self, id: ConnId, data: &mut Self::Data, error: &ConnError) {
        let _ = (id, data, error);
    }

    /// The connection is CLOSED; its data is handed back.
    fn on_close(&mut self, id: ConnId, data: Self::Data, info: CloseInfo<'_>) {
        let _ = (id, data, info);
    }

    /// Called once per event-loop iteration of this worker, after its events: the place
    /// for work of the worker's own (open connections, send on a schedule). Returns when
    /// it wants to be called at the latest (`None`: no wish; it is called on every
    /// iteration anyway). With [`WorkerCtx::batch_wakeups`] on, it is also called right
    /// after each sleep, before the events that came during it.
    fn on_tick(&mut self, worker: &mut WorkerCtx<'_, Self::Data>) -> Option<Instant> {
        let _ = worker;
        None
    }
}
