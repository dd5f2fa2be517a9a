//! The application's side: the [`Handler`] trait and the [`WebSocket`] handle.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::proto::close::CloseCode;
use crate::proto::conn::{Message, ReadyState};
use crate::proto::handshake::Request;

use super::worker::{ConnCtx, SendStatus};

/// A connection's id: unique within a server run, usable from any thread through
/// [`crate::server::ServerHandle::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(crate) u64);

impl ConnId {
    pub(crate) fn new(worker: usize, idx: usize, gen: u32) -> Self {
        ConnId((worker as u64) << 48 | ((gen as u64) & 0xffff) << 32 | idx as u64)
    }
    pub(crate) fn worker(self) -> usize {
        (self.0 >> 48) as usize
    }
    pub(crate) fn idx(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
    pub(crate) fn gen16(self) -> u32 {
        ((self.0 >> 32) & 0xffff) as u32
    }
    /// The raw value (for logs).
    pub fn get(self) -> u64 {
        self.0
    }
}

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
    /// Body (sent as `text/plain; charset=utf-8`).
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
}

impl<'b> UpgradeRequest<'_, 'b> {
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

/// How a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseInfo<'a> {
    /// The peer's close code (1005 if its close frame had none, 1006 if none came).
    pub code: CloseCode,
    /// The peer's reason.
    pub reason: &'a str,
    /// Both close frames crossed before the TCP connection closed.
    pub was_clean: bool,
}

/// The application. One instance per worker thread, made by the factory given to
/// [`crate::server::Server::start`]; callbacks for one worker run on its thread.
///
/// A panic in a callback is caught: the connection it was about is closed with 1011
/// (the worker and its other connections go on). The handler's own state may then be
/// inconsistent, as with any caught panic.
pub trait Handler: 'static {
    /// Per-connection data, made by [`Handler::on_upgrade`].
    type Data: 'static;

    /// An upgrade request passed the protocol checks and the Origin policy: accept it
    /// (returning the connection's data) or refuse it with an HTTP status.
    fn on_upgrade(&mut self, req: &UpgradeRequest<'_, '_>) -> Result<Self::Data, Reject>;

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

    /// The outgoing buffer fell below the backpressure limit after `send` reported
    /// [`SendStatus::Backpressure`].
    fn on_drain(&mut self, ws: &mut WebSocket<'_, Self::Data>) {
        let _ = ws;
    }

    /// The connection is CLOSED; its data is handed back.
    fn on_close(&mut self, id: ConnId, data: Self::Data, info: CloseInfo<'_>) {
        let _ = (id, data, info);
    }

    /// A plain HTTP request (not an upgrade). Default: 426 with `Upgrade: websocket`.
    fn on_http(&mut self, req: &Request<'_>) -> HttpResponse {
        let _ = req;
        HttpResponse::upgrade_required()
    }
}

/// The handle to one open connection, lent to callbacks.
pub struct WebSocket<'a, D> {
    pub(crate) ctx: ConnCtx<'a>,
    pub(crate) data: &'a mut D,
}

impl<D> std::fmt::Debug for WebSocket<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("id", &self.id())
            .field("ready_state", &self.ready_state())
            .finish()
    }
}

impl<D> WebSocket<'_, D> {
    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.ctx.id
    }

    /// The connection's data.
    pub fn data(&mut self) -> &mut D {
        self.data
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) -> SendStatus {
        self.ctx.send(Message::Text(text))
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, bytes: &[u8]) -> SendStatus {
        self.ctx.send(Message::Binary(bytes))
    }

    /// Sends a message (e.g. the one received, for an echo).
    pub fn send(&mut self, msg: Message<'_>) -> SendStatus {
        self.ctx.send(msg)
    }

    /// Sends a ping (payload cut to 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> SendStatus {
        self.ctx.control(crate::proto::OpCode::Ping, payload)
    }

    /// Starts the close handshake with this code and reason.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.ctx.close(code, reason)
    }

    /// Bytes queued and not yet written to the socket.
    pub fn buffered_amount(&self) -> usize {
        self.ctx.buffered()
    }

    /// The ready state.
    pub fn ready_state(&self) -> ReadyState {
        self.ctx.ready_state()
    }

    /// Subscribes this connection to a topic.
    pub fn subscribe(&mut self, topic: &str) {
        self.ctx.subscribe(topic)
    }

    /// Unsubscribes this connection from a topic.
    pub fn unsubscribe(&mut self, topic: &str) {
        self.ctx.unsubscribe(topic)
    }

    /// Publishes a message to every subscriber of `topic` on every worker (this
    /// connection too, if subscribed). The frame is serialized once and shared.
    pub fn publish(&mut self, topic: &str, msg: Message<'_>) {
        self.ctx
            .publish(topic, Arc::from(super::worker::serialize(msg)))
    }
}
