//! The async bridge (feature `tokio`): an application on tokio awaits connection
//! events and sends with backpressure, while the connections stay on the engine's own
//! worker threads. Nothing here runs the engine inside tokio, and the engine knows no
//! runtime: the two sides meet in a bounded queue (workers to tokio) and in the
//! workers' mailboxes (tokio to workers), as any other thread would.
//!
//! ```text
//!  worker threads (one BridgeHandler each)              tokio tasks
//!
//!  on_open / on_message / on_close ──► bounded queue ──► Events::next().await
//!    full: pause that connection,     (capacity events)          │
//!    keep its one message; resumed ◄── refill task, posted once   │
//!    when the queue is half empty      the queue is half empty    │
//!                                                                 ▼
//!  mailbox ◄─────────── ServerHandle::send ◄───────────── Bridge::send(..).await
//!  on_drain (or a check posted after a Backpressure) ──► wakes that await
//! ```
//!
//! Memory is bounded on both paths. Incoming: at most `capacity` events in the queue,
//! plus per paused connection the one message it was delivering when the queue was
//! full (pausing takes effect at once: nothing more of that connection is read or
//! delivered until it resumes, and TCP's window then slows its peer). Outgoing:
//! [`Bridge::send`] returns once the connection's queue is back under the server's
//! `backpressure_limit`, so a task that awaits each send holds at most one message
//! beyond it.
//!
//! ```no_run
//! use soliton::bridge::{self, BridgeOptions, Event};
//! use soliton::server::Server;
//!
//! # async fn run() -> std::io::Result<()> {
//! let builder = Server::builder().addr("127.0.0.1:9001".parse().unwrap());
//! let (bridge, mut events) = bridge::serve(builder, BridgeOptions::new())?;
//! while let Some(ev) = events.next().await {
//!     match ev {
//!         Event::Open { id, path, .. } => {
//!             bridge.subscribe(id, &path);
//!         }
//!         Event::Message { id, payload } => {
//!             // an echo: returns once the connection can take more
//!             if bridge.send(id, payload.as_message()).await.is_err() {
//!                 continue; // it closed meanwhile
//!             }
//!         }
//!         Event::Close { id, code, .. } => println!("{id} closed with {code:?}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{oneshot, Notify};

use crate::proto::Message;
use crate::server::{
    Builder, CloseCode, CloseInfo, ConnId, Handler, Reject, SendStatus, ServerHandle,
    UpgradeRequest, WebSocket, WorkerCtx,
};

/// The default queue capacity, in events.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Decides an upgrade request on the worker (synchronously): `Err` refuses it.
type AcceptFn = dyn Fn(&UpgradeRequest<'_, '_>) -> Result<(), Reject> + Send + Sync;

/// How the bridge serves: the queue's capacity, which upgrades to accept, which
/// request headers an [`Event::Open`] carries.
#[derive(Clone)]
pub struct BridgeOptions {
    capacity: usize,
    accept: Option<Arc<AcceptFn>>,
    headers: Vec<String>,
}

impl std::fmt::Debug for BridgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeOptions")
            .field("capacity", &self.capacity)
            .field("accept", &self.accept.as_ref().map(|_| "fn"))
            .field("headers", &self.headers)
            .finish()
    }
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            capacity: DEFAULT_CAPACITY,
            accept: None,
            headers: Vec::new(),
        }
    }
}

impl BridgeOptions {
    /// Every upgrade accepted, a queue of [`DEFAULT_CAPACITY`] events, no headers kept.
    pub fn new() -> Self {
        Self::default()
    }

    /// Most events waiting for [`Events::next`] (at least 1). Past it, connections
    /// that have something to deliver are paused until the application has taken half
    /// of the queue.
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n.max(1);
        self
    }

    /// Decides each upgrade request on its worker, before any event: `Err` refuses it
    /// with that HTTP status (no event follows). It runs on the worker's thread, so it
    /// must not block (keep it to checks on the request).
    pub fn accept(
        mut self,
        f: impl Fn(&UpgradeRequest<'_, '_>) -> Result<(), Reject> + Send + Sync + 'static,
    ) -> Self {
        self.accept = Some(Arc::new(f));
        self
    }

    /// A request header that [`Event::Open`] carries (every occurrence, in order);
    /// e.g. `cookie` or `authorization`. Case-insensitive.
    pub fn header(mut self, name: &str) -> Self {
        self.headers.push(name.to_ascii_lowercase());
        self
    }
}

/// A message's payload, owned (it crossed threads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A text message (UTF-8, checked by the engine).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Payload {
    /// The message to send back (an echo) or on to others.
    pub fn as_message(&self) -> Message<'_> {
        match self {
            Payload::Text(s) => Message::Text(s),
            Payload::Binary(b) => Message::Binary(b),
        }
    }

    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Text(s) => s.as_bytes(),
            Payload::Binary(b) => b,
        }
    }
}

impl From<Message<'_>> for Payload {
    fn from(m: Message<'_>) -> Self {
        match m {
            Message::Text(s) => Payload::Text(s.to_owned()),
            Message::Binary(b) => Payload::Binary(b.to_vec()),
        }
    }
}

/// What happened to a connection. A connection's events come in order: one `Open`,
/// its messages, one `Close`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The connection is open.
    Open {
        /// The connection (for [`Bridge::send`] and the rest).
        id: ConnId,
        /// The request's path (without the query).
        path: String,
        /// The request's query, if any.
        query: Option<String>,
        /// The subprotocol agreed, if any.
        protocol: Option<String>,
        /// The peer's address.
        peer: Option<SocketAddr>,
        /// The request headers named in [`BridgeOptions::header`] (lowercase names).
        headers: Vec<(String, String)>,
    },
    /// A whole message.
    Message {
        /// The connection.
        id: ConnId,
        /// What it carried.
        payload: Payload,
    },
    /// The connection is closed: nothing more comes from it, and sends to it fail.
    Close {
        /// The connection.
        id: ConnId,
        /// The peer's close code (1005 if its close frame had none, 1006 if none came).
        code: CloseCode,
        /// The peer's reason.
        reason: String,
        /// Both close frames crossed before the TCP connection closed.
        clean: bool,
    },
}

impl Event {
    /// The connection this event is about.
    pub fn id(&self) -> ConnId {
        match self {
            Event::Open { id, .. } | Event::Message { id, .. } | Event::Close { id, .. } => *id,
        }
    }
}

/// The connection is gone (or the server stopped): the message was not sent, or was
/// queued and the connection closed before it could take more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the connection is closed")
    }
}

impl std::error::Error for Closed {}

/// Starts a server whose every worker runs the bridge's handler: the connections'
/// events come out of the [`Events`] stream, and the [`Bridge`] acts on connections.
/// The workers are the engine's own threads (as with [`Builder::start`]); call this
/// from anywhere, a tokio task included (it returns once every worker runs).
pub fn serve(builder: Builder, opts: BridgeOptions) -> io::Result<(Bridge, Events)> {
    let limit = builder.cfg().backpressure_limit;
    let workers = builder.cfg().workers.max(1);
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            events: VecDeque::new(),
            stalled: vec![false; workers],
            live: 0,
            gone: false,
        }),
        notify: Notify::new(),
        capacity: opts.capacity,
    });
    let opts = Arc::new(opts);
    let s = shared.clone();
    let handle = builder.start_with(move |worker, _| BridgeHandler::new(worker, &s, &opts))?;
    Ok((
        Bridge {
            handle: handle.clone(),
            limit,
        },
        Events { shared, handle },
    ))
}

/// Acts on the bridge's connections from async code (or any thread): cheap to clone,
/// `Send` and `Sync`. What it does goes through the connection's worker's mailbox.
#[derive(Clone, Debug)]
pub struct Bridge {
    handle: ServerHandle,
    limit: usize,
}

impl Bridge {
    /// Sends a message to connection `id`, and returns once the connection can take
    /// more: at once while its outgoing queue is under the server's
    /// `backpressure_limit`, otherwise when it has drained back to it. The message is
    /// queued when this is called (dropping the future does not take it back).
    /// `Err(Closed)` if the connection is gone, closing, or closed before draining.
    pub async fn send(&self, id: ConnId, msg: Message<'_>) -> Result<(), Closed> {
        match self.handle.send(id, msg) {
            SendStatus::Sent => Ok(()),
            SendStatus::Backpressure => self.drained(id).await,
            SendStatus::Dropped => Err(Closed),
        }
    }

    /// Returns once connection `id`'s outgoing queue is at or under the
    /// `backpressure_limit` (at once if it already is); `Err(Closed)` if it is gone or
    /// closes first.
    pub async fn drained(&self, id: ConnId) -> Result<(), Closed> {
        let (tx, rx) = oneshot::channel();
        let limit = self.limit;
        self.handle
            .post::<BridgeHandler>(id.worker_index(), move |h, ctx| {
                h.wait_drain(ctx, id, limit, tx)
            })
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Connection `id`'s outgoing bytes not yet written to its socket, as its worker
    /// sees them (`None` if it is gone).
    pub async fn buffered_amount(&self, id: ConnId) -> Option<usize> {
        let (tx, rx) = oneshot::channel();
        self.handle
            .post::<BridgeHandler>(id.worker_index(), move |_, ctx| {
                if let Some(n) = ctx.with(id, |ws| ws.buffered_amount()) {
                    let _ = tx.send(n);
                }
            })
            .ok()?;
        rx.await.ok()
    }

    /// Publishes to every subscriber of `topic` on every worker (serialized once).
    /// Subscribers over their backpressure limit still get it, up to `max_buffered`.
    pub fn publish(&self, topic: &str, msg: Message<'_>) {
        self.handle.publish(topic, msg)
    }

    /// Subscribes connection `id` to `topic` (applied at its worker's next loop
    /// iteration). False if its worker has stopped.
    pub fn subscribe(&self, id: ConnId, topic: &str) -> bool {
        self.handle.subscribe(id, topic)
    }

    /// Unsubscribes connection `id` from `topic`.
    pub fn unsubscribe(&self, id: ConnId, topic: &str) -> bool {
        self.handle.unsubscribe(id, topic)
    }

    /// Starts the close handshake of connection `id`.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> bool {
        self.handle.close(id, code, reason)
    }

    /// Drops connection `id` at once, without a close handshake.
    pub fn terminate(&self, id: ConnId) -> bool {
        self.handle.terminate(id)
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The server's handle (`send` without waiting, `num_subscribers`, `shutdown`,
    /// ...). Its `shutdown` and `join` block the calling thread: from async code, call
    /// them in `spawn_blocking`.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }
}

/// The connections' events, in order per connection: [`Events::next`] until `None`
/// (the server has stopped and every event was taken). Dropping it discards what is
/// waiting and what comes later, and resumes the paused connections.
#[derive(Debug)]
pub struct Events {
    shared: Arc<Shared>,
    handle: ServerHandle,
}

impl Events {
    /// The next event; `None` once the server has stopped and every event was taken.
    /// Cancel-safe (in `select!`, an event is never lost).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(next) = self.poll_queue() {
                return next;
            }
            // a push into the empty queue after the check above leaves a permit
            self.shared.notify.notified().await;
        }
    }

    /// The next event if one is waiting (never waits): `None` if none is.
    pub fn try_next(&mut self) -> Option<Event> {
        self.poll_queue().flatten()
    }

    /// `Some(event)`, `Some(None)` at the end, `None` if the queue is empty for now.
    fn poll_queue(&mut self) -> Option<Option<Event>> {
        let mut q = self.shared.lock();
        let Some(ev) = q.events.pop_front() else {
            return (q.live == 0).then_some(None);
        };
        // connections paused because the queue was full resume once half of it is free:
        // one task per worker that has some, not one per event taken
        let mut wake = Vec::new();
        if q.events.len() <= self.shared.capacity / 2 {
            for (w, s) in q.stalled.iter_mut().enumerate() {
                if std::mem::take(s) {
                    wake.push(w);
                }
            }
        }
        drop(q);
        for w in wake {
            post_refill(&self.handle, w);
        }
        Some(Some(ev))
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let mut q = self.shared.lock();
        q.gone = true;
        q.events.clear();
        let wake: Vec<usize> = q
            .stalled
            .iter_mut()
            .enumerate()
            .filter_map(|(w, s)| std::mem::take(s).then_some(w))
            .collect();
        drop(q);
        for w in wake {
            post_refill(&self.handle, w);
        }
    }
}

fn post_refill(handle: &ServerHandle, worker: usize) {
    // a stopped worker has nothing left to resume
    let _ = handle.post::<BridgeHandler>(worker, |h, ctx| h.refill(ctx));
}

/// What the workers and the application share.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the application when an event lands in the empty queue (or the last
    /// worker stops).
    notify: Notify,
    capacity: usize,
}

/// The queue and, under the same lock, which workers wait for room in it: a worker
/// finds the queue full and marks itself in one step, so the application, which looks
/// at the marks when it takes an event, cannot miss one.
#[derive(Debug)]
struct Queue {
    events: VecDeque<Event>,
    /// Worker `i` has paused connections with events to deliver, and no refill task
    /// is on its way to it.
    stalled: Vec<bool>,
    /// Workers whose handler exists (the end of the stream is when none does).
    live: usize,
    /// The application dropped [`Events`]: events are discarded.
    gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `ev` unless the queue is full: then worker `worker` is marked stalled and
    /// the event comes back (`Some`).
    #[must_use]
    fn push(&self, worker: usize, ev: Event) -> Option<Event> {
        let mut q = self.lock();
        if q.gone {
            return None;
        }
        if q.events.len() >= self.capacity {
            q.stalled[worker] = true;
            return Some(ev);
        }
        let was_empty = q.events.is_empty();
        q.events.push_back(ev);
        drop(q);
        if was_empty {
            self.notify.notify_one();
        }
        None
    }
}

/// Per connection, on its worker.
#[derive(Debug)]
struct ConnData {
    /// What `Event::Open` will carry (taken at `on_open`).
    open: Option<Box<OpenInfo>>,
    /// `Event::Open` was delivered (or is in the backlog): a `Close` follows it.
    opened: bool,
    /// Paused with events in the worker's backlog: more go behind them.
    backlogged: bool,
}

#[derive(Debug)]
struct OpenInfo {
    path: String,
    query: Option<String>,
    peer: Option<SocketAddr>,
    headers: Vec<(String, String)>,
}

/// The handler on every worker of a bridged server.
struct BridgeHandler {
    worker: usize,
    shared: Arc<Shared>,
    opts: Arc<BridgeOptions>,
    /// Events of paused connections that did not fit in the queue (one message each,
    /// plus its `Close` if it closed meanwhile), delivered in `order`.
    backlog: HashMap<ConnId, VecDeque<Event>>,
    order: VecDeque<ConnId>,
    /// Sends waiting for a connection to drain ([`Bridge::drained`]).
    drain_waiters: HashMap<ConnId, Vec<oneshot::Sender<()>>>,
}

impl BridgeHandler {
    fn new(worker: usize, shared: &Arc<Shared>, opts: &Arc<BridgeOptions>) -> Self {
        shared.lock().live += 1;
        BridgeHandler {
            worker,
            shared: shared.clone(),
            opts: opts.clone(),
            backlog: HashMap::new(),
            order: VecDeque::new(),
            drain_waiters: HashMap::new(),
        }
    }

    /// Queues `ev` for the application, or (queue full) keeps it and pauses the
    /// connection until a refill.
    fn deliver(&mut self, ws: &mut WebSocket<'_, ConnData>, ev: Event) {
        let id = ws.id();
        if ws.data().backlogged {
            // not reached while pausing stops delivery at once; kept so that the order
            // would hold anyway
            self.backlog.entry(id).or_default().push_back(ev);
            ws.pause();
            return;
        }
        if let Some(ev) = self.shared.push(self.worker, ev) {
            ws.data().backlogged = true;
            self.backlog.insert(id, VecDeque::from([ev]));
            self.order.push_back(id);
            ws.pause();
        }
    }

    /// Moves backlogged events into the queue, oldest connection first, and resumes
    /// each connection whose events all went; marks the worker stalled again if the
    /// queue fills first.
    fn refill(&mut self, ctx: &mut WorkerCtx<'_, ConnData>) {
        let shared = self.shared.clone();
        let mut q = shared.lock();
        let was_empty = q.events.is_empty();
        let mut resumed = Vec::new();
        while let Some(&id) = self.order.front() {
            if let Some(events) = self.backlog.get_mut(&id) {
                if !q.gone {
                    while q.events.len() < shared.capacity {
                        match events.pop_front() {
                            Some(ev) => q.events.push_back(ev),
                            None => break,
                        }
                    }
                    if !events.is_empty() {
                        q.stalled[self.worker] = true;
                        break;
                    }
                }
                self.backlog.remove(&id);
            }
            self.order.pop_front();
            resumed.push(id);
        }
        let notify = was_empty && !q.events.is_empty();
        drop(q);
        if notify {
            shared.notify.notify_one();
        }
        for id in resumed {
            // gone already if its Close was in the backlog
            ctx.with(id, |ws| {
                ws.data().backlogged = false;
                ws.resume();
            });
        }
    }

    /// A send got `Backpressure`: `tx` fires once `id` is at or under `limit`. Runs
    /// after the send's frame was queued (the same mailbox, in order), so a queue over
    /// the limit now has `on_drain` owed.
    fn wait_drain(
        &mut self,
        ctx: &mut WorkerCtx<'_, ConnData>,
        id: ConnId,
        limit: usize,
        tx: oneshot::Sender<()>,
    ) {
        match ctx.with(id, |ws| ws.buffered_amount() <= limit) {
            Some(true) => {
                let _ = tx.send(());
            }
            Some(false) => self.drain_waiters.entry(id).or_default().push(tx),
            // gone: dropping `tx` tells the sender
            None => {}
        }
    }
}

impl std::fmt::Debug for BridgeHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeHandler")
            .field("worker", &self.worker)
            .field("backlog", &self.backlog.len())
            .field("drain_waiters", &self.drain_waiters.len())
            .finish()
    }
}

impl Handler for BridgeHandler {
    type Data = ConnData;

    fn on_upgrade(&mut self, req: &UpgradeRequest<'_, '_>) -> Result<ConnData, Reject> {
        if let Some(accept) = &self.opts.accept {
            accept(req)?;
        }
        let r = req.request;
        let headers = r
            .headers()
            .iter()
            .filter(|h| {
                self.opts
                    .headers
                    .iter()
                    .any(|n| h.name.eq_ignore_ascii_case(n))
            })
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        Ok(ConnData {
            open: Some(Box::new(OpenInfo {
                path: r.path().to_owned(),
                query: r.query().map(str::to_owned),
                peer: req.peer,
                headers,
            })),
            opened: false,
            backlogged: false,
        })
    }

    fn on_open(&mut self, ws: &mut WebSocket<'_, ConnData>) {
        let protocol = ws.protocol().map(str::to_owned);
        let data = ws.data();
        data.opened = true;
        let info = data.open.take().map_or_else(
            || OpenInfo {
                path: String::new(),
                query: None,
                peer: None,
                headers: Vec::new(),
            },
            |b| *b,
        );
        let ev = Event::Open {
            id: ws.id(),
            path: info.path,
            query: info.query,
            protocol,
            peer: info.peer,
            headers: info.headers,
        };
        self.deliver(ws, ev);
    }

    fn on_message(&mut self, ws: &mut WebSocket<'_, ConnData>, msg: Message<'_>) {
        let ev = Event::Message {
            id: ws.id(),
            payload: msg.into(),
        };
        self.deliver(ws, ev);
    }

    fn on_drain(&mut self, ws: &mut WebSocket<'_, ConnData>) {
        if let Some(waiters) = self.drain_waiters.remove(&ws.id()) {
            for tx in waiters {
                let _ = tx.send(());
            }
        }
    }

    fn on_close(&mut self, id: ConnId, data: ConnData, info: CloseInfo<'_>) {
        // waiting sends learn of it (their senders dropped)
        self.drain_waiters.remove(&id);
        if !data.opened {
            return;
        }
        let ev = Event::Close {
            id,
            code: info.code,
            reason: info.reason.to_owned(),
            clean: info.was_clean,
        };
        if data.backlogged {
            if let Some(events) = self.backlog.get_mut(&id) {
                events.push_back(ev);
                return;
            }
        }
        // a closed connection cannot be paused: its Close waits in the backlog (one
        // event per connection) until there is room
        if let Some(ev) = self.shared.push(self.worker, ev) {
            self.backlog.insert(id, VecDeque::from([ev]));
            self.order.push_back(id);
        }
    }
}

impl Drop for BridgeHandler {
    /// The worker stopped: what its backlog holds (the last messages and the `Close`
    /// of connections closed at shutdown) goes to the queue past its capacity, so
    /// that the application sees every connection's end before the stream's.
    fn drop(&mut self) {
        let mut q = self.shared.lock();
        if !q.gone {
            for id in self.order.drain(..) {
                if let Some(events) = self.backlog.remove(&id) {
                    q.events.extend(events);
                }
            }
        }
        q.live -= 1;
        drop(q);
        self.shared.notify.notify_one();
    }
}
