//! [`WorkerCtx`]: what a handler's `on_tick` gets — the worker's connections by id,
//! and new client connections.

use std::time::{Duration, Instant};

use super::error::ConnError;
use super::handler::Handler;
use super::id::ConnId;
use super::request::{next_rand, ClientHandshake, ConnectRequest};
use super::rt::Rt;
use super::slot::{Phase, Slots};
use super::ws::{mark_dirty, ConnCtx, WebSocket};
use crate::driver::Driver;
use crate::proto::conn::Role;
use crate::proto::handshake::{self, ClientRequest};

/// Application code to run on a worker with its handler and context: what
/// [`ServerHandle::post`](crate::server::ServerHandle::post) sends.
pub(crate) type Task<H> =
    Box<dyn for<'c> FnOnce(&mut H, &mut WorkerCtx<'c, <H as Handler>::Data>) + Send>;

/// A timer's task (made and run on its worker: need not be `Send`).
pub(crate) type TimerTask<H> =
    Box<dyn for<'c> FnOnce(&mut H, &mut WorkerCtx<'c, <H as Handler>::Data>)>;

/// A timer set on a worker ([`WorkerCtx::set_timer`]), to cancel it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    worker: usize,
    id: u64,
}

impl Rt {
    pub(crate) fn set_timer<H: Handler>(&mut self, after: Duration, task: TimerTask<H>) -> TimerId {
        assert!(
            std::any::TypeId::of::<H>() == self.shared.handler,
            "set_timer::<H>: H must be the type of this worker's handler"
        );
        let at = self.timers.now() + after.min(super::timers::MAX_TIMEOUT);
        TimerId {
            worker: self.index,
            id: self.app_timers.add(at, Box::new(task)),
        }
    }

    pub(crate) fn cancel_timer(&mut self, t: TimerId) -> bool {
        t.worker == self.index && self.app_timers.cancel(t.id)
    }
}

/// A worker's context: its connections by id, new client connections, timers. What
/// [`Handler::on_tick`](super::Handler::on_tick), timers and tasks posted to the worker
/// get.
pub struct WorkerCtx<'a, D> {
    pub(crate) slots: &'a mut Slots<D>,
    pub(crate) rt: &'a mut Rt,
    pub(crate) driver: &'a mut Driver,
}

impl<D> std::fmt::Debug for WorkerCtx<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerCtx")
            .field("worker", &self.rt.index)
            .finish()
    }
}

impl<D> WorkerCtx<'_, D> {
    /// This worker's index.
    pub fn worker(&self) -> usize {
        self.rt.index
    }

    /// The time this loop iteration started.
    pub fn now(&self) -> Instant {
        self.rt.timers.now()
    }

    /// Batches wake-ups (default off; it stays as set until set again): the loop no
    /// longer wakes for what arrives on the sockets, but sleeps until the earliest of
    /// `on_tick`'s wish and the worker's timers, then handles everything that came
    /// meanwhile in one go; `on_tick` runs right after each sleep, before those events,
    /// so that what falls due then goes out on time (and again after them, as in every
    /// turn). One wake-up serves many messages, at the cost of up to that
    /// long a delay before each is seen, and as long a delay for commands from other
    /// threads. Where the time of arrival matters, turn on receive time stamps and read
    /// [`WebSocket::received_at`](crate::server::WebSocket::received_at). With no wish
    /// and no timer, the loop waits as usual.
    pub fn batch_wakeups(&mut self, on: bool) {
        self.rt.batch_io = on;
    }

    /// permessage-deflate on this worker so far: the payload bytes of messages sent on
    /// connections that agreed to it, and the bytes their frames took on the wire.
    pub fn compression(&self) -> (u64, u64) {
        (self.rt.codecs.sent_payload, self.rt.codecs.sent_wire)
    }

    /// Connections on this worker (in every state).
    pub fn connections(&self) -> usize {
        self.slots.len()
    }

    /// Runs `f` on this worker's thread, with its handler and context, `after` from now
    /// (at the first loop iteration past it; timers fire in deadline order). `H` is the
    /// worker's handler type (a panic says so if it is not). A panic in `f` is caught.
    pub fn set_timer<H: Handler<Data = D>>(
        &mut self,
        after: Duration,
        f: impl FnOnce(&mut H, &mut WorkerCtx<'_, D>) + 'static,
    ) -> TimerId {
        self.rt.set_timer::<H>(after, Box::new(f))
    }

    /// Cancels a timer of this worker; false if it already fired, was cancelled, or is
    /// another worker's.
    pub fn cancel_timer(&mut self, t: TimerId) -> bool {
        self.rt.cancel_timer(t)
    }

    /// The server's handle (`None` on a client's workers).
    pub fn server(&self) -> Option<&crate::server::ServerHandle> {
        self.rt.handle.as_ref()
    }

    /// Runs `f` with the [`WebSocket`] of connection `id` if it is on this worker and
    /// open. A panic in `f` is not caught here.
    pub fn with<R>(&mut self, id: ConnId, f: impl FnOnce(&mut WebSocket<'_, D>) -> R) -> Option<R> {
        if id.worker() != self.rt.index {
            return None;
        }
        let idx = id.idx();
        let slot = self.slots.get_mut(idx)?;
        if slot.seq() != id.seq() || slot.data.is_none() {
            return None;
        }
        let mut ws = WebSocket {
            ctx: ConnCtx {
                id,
                idx,
                slot,
                rt: &mut *self.rt,
            },
        };
        Some(f(&mut ws))
    }
}

/// Starts `req` on this worker: the socket, the slot, the opening request queued (it
/// goes out once connected). Gives the data back with the error if the socket could
/// not even be made.
pub(crate) fn start<D>(
    slots: &mut Slots<D>,
    rt: &mut Rt,
    driver: &mut Driver,
    req: &ConnectRequest,
    data: D,
) -> Result<ConnId, (ConnError, D)> {
    let token = match driver.connect(req.addr, req.source) {
        Ok(t) => t,
        Err(e) => return Err((ConnError::Connect(e), data)),
    };
    let idx = rt.new_slot(
        slots,
        token,
        Role::Client,
        Phase::Connecting,
        Some(data),
        req.timeout,
    );
    let protocols: Vec<&str> = req.protocols.iter().map(String::as_str).collect();
    let extra: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let offer = req.deflate.map(|o| o.header_value());
    let creq = ClientRequest {
        host: &req.host,
        path: &req.path,
        protocols: &protocols,
        extensions: offer.as_ref().map(|o| o.as_str()),
        origin: req.origin.as_deref(),
        extra: &extra,
    };
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&next_rand(&mut rt.rng).to_le_bytes());
    nonce[8..].copy_from_slice(&next_rand(&mut rt.rng).to_le_bytes());
    rt.ctl.clear();
    let accept = handshake::write_client_request(&mut rt.ctl, &creq, nonce);
    let Some(slot) = slots.get_mut(idx) else {
        unreachable!("the slot was just made");
    };
    if let Some(host) = &req.tls_host {
        #[cfg(feature = "tls")]
        {
            let layer = match req.tls.as_ref().or(rt.cfg.tls_client.as_ref()) {
                Some(c) => c.layer(host),
                None => crate::tls::TlsConnector::system().and_then(|c| c.layer(host)),
            };
            match layer {
                Ok(l) => slot.cold().layer = Some(Box::new(l)),
                Err(e) => {
                    // the socket is made: fail the connection through the worker
                    slot.flags.set_reset(true);
                    slot.cold().error =
                        Some(ConnError::Layer(crate::layer::LayerError(e.to_string())));
                }
            }
        }
        #[cfg(not(feature = "tls"))]
        let _ = host;
    }
    slot.out.push_bytes(&mut rt.pool, &rt.ctl);
    slot.cold().client = Some(Box::new(ClientHandshake {
        accept,
        protocols: req.protocols.clone(),
        deflate: req.deflate,
    }));
    mark_dirty(slot, &mut rt.dirty, idx);
    Ok(ConnId::new(rt.index, slot.seq(), idx))
}

impl<D> WorkerCtx<'_, D> {
    /// Opens a client connection on this worker with `data`; its id now, `on_open` (or
    /// `on_error` and `on_close`) later. The data comes back with the error if the
    /// socket could not be made.
    pub fn connect(&mut self, req: &ConnectRequest, data: D) -> Result<ConnId, (ConnError, D)> {
        start(self.slots, self.rt, self.driver, req, data)
    }
}
