//! What the server and the client share: worker threads, each running one loop over
//! its own [`Driver`](crate::driver::Driver) for connections of either role.
//!
//! Modules depend downwards only:
//!
//! | layer | module | holds |
//! | --- | --- | --- |
//! | data | `id`, `config`, `error`, `request` | [`ConnId`], [`Config`], [`ConnError`], [`ConnectRequest`] |
//! | data | `slot`, `timers`, `topics`, `mailbox` | one connection's state and the table; deadlines; topic membership; commands from other threads |
//! | state | `rt` | what callbacks may touch besides their connection (pool, flush lists, topics, timers) |
//! | API | `ws`, `ctx`, `handler` | [`WebSocket`], [`WorkerCtx`], the [`Handler`] trait |
//! | loop | `worker` (`read`, `upgrade`, `connect`, `timeouts`, `commands`, `publish`) | the loop, the driver's [`Sink`](crate::driver::Sink), flushing; bytes to frames to callbacks; both handshakes; what deadlines do; commands; publishing |

pub(crate) mod config;
pub(crate) mod ctx;
pub(crate) mod deflate;
pub(crate) mod error;
pub(crate) mod handler;
pub(crate) mod id;
pub(crate) mod mailbox;
pub(crate) mod request;
pub(crate) mod rt;
pub(crate) mod slot;
pub(crate) mod timers;
pub(crate) mod topics;
pub(crate) mod worker;
pub(crate) mod ws;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

pub use config::{Backend, Config};
pub use ctx::{TimerId, WorkerCtx};
pub use error::ConnError;
pub use handler::{
    CloseInfo, Handler, HttpResponse, PendingUpgrade, Reject, Upgrade, UpgradeRequest,
};
pub use id::ConnId;
pub use request::{ConnectRequest, UrlError};
pub use ws::{SendStatus, WebSocket};

use crate::driver::{Driver, DriverConfig};
use mailbox::Shared;

/// The driver settings of a runtime configuration.
fn driver_config(cfg: &Config) -> DriverConfig {
    DriverConfig {
        backend: cfg.backend,
        uring_buffers: cfg.uring_buffers,
        uring_buffer_size: cfg.uring_buffer_size,
        recv_buffer_size: cfg.recv_buffer_size,
        nodelay: cfg.nodelay,
        rx_timestamps: cfg.rx_timestamps,
    }
}

/// Starts `cfg.workers` worker threads (worker `i` accepts on `listeners[i]` when
/// given). Returns once every worker has made its driver, or the first set-up error.
pub(crate) fn spawn<H, F>(
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    factory: Arc<F>,
    listeners: Vec<Option<OwnedFd>>,
    name: &str,
    handle: Option<crate::server::ServerHandle>,
) -> io::Result<(Vec<JoinHandle<io::Result<()>>>, Backend)>
where
    H: Handler,
    F: Fn(usize) -> H + Send + Sync + 'static,
{
    shared.set_send_limits(&cfg);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<Backend>>();
    let mut threads = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let cfg = cfg.clone();
        let shared = shared.clone();
        let factory = factory.clone();
        let ready = ready_tx.clone();
        let handle = handle.clone();
        let core_id =
            (cfg.pin_cores && !cores.is_empty()).then(|| cores[(cfg.first_core + i) % cores.len()]);
        let t = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                if let Some(c) = core_id {
                    core_affinity::set_for_current(c);
                }
                // the driver is made on its own thread (io_uring's SINGLE_ISSUER)
                let driver = match Driver::new(&driver_config(&cfg)) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ =
                            ready.send(Err(io::Error::new(e.kind(), format!("worker {i}: {e}"))));
                        return Err(e);
                    }
                };
                let handler = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    factory(i)
                })) {
                    Ok(h) => h,
                    Err(_) => {
                        let e =
                            io::Error::other(format!("worker {i}: the handler factory panicked"));
                        let _ = ready.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                let _ = ready.send(Ok(driver.backend()));
                drop(ready);
                let worker = worker::Worker::new(i, cfg, handler, shared, handle);
                worker.run(driver, listener)
            })?;
        threads.push(t);
    }
    drop(ready_tx);
    let mut backend = Backend::Epoll;
    let mut first_err = None;
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok(Ok(b)) => backend = b,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(io::Error::other("a worker died during set-up"));
            }
        }
    }
    if let Some(e) = first_err {
        // stop the workers that did start
        for mb in &shared.mailboxes {
            mb.post(mailbox::Command::Shutdown {
                deadline: std::time::Instant::now(),
            });
        }
        for t in threads {
            let _ = t.join();
        }
        return Err(e);
    }
    Ok((threads, backend))
}

/// The part of a server's or client's handle that talks to the workers.
#[derive(Debug, Clone)]
pub(crate) struct Remote {
    pub(crate) shared: Arc<Shared>,
}

impl Remote {
    pub(crate) fn publish(&self, topic: &str, msg: crate::proto::Message<'_>) {
        let frame: Arc<[u8]> = Arc::from(ws::serialize(msg));
        let topic: Arc<str> = Arc::from(topic);
        self.shared.forward(&topic, &frame);
        for mb in &self.shared.mailboxes {
            mb.post(mailbox::Command::Publish {
                topic: topic.clone(),
                frame: frame.clone(),
            });
        }
    }

    pub(crate) fn send(&self, id: ConnId, msg: crate::proto::Message<'_>) -> SendStatus {
        let Some(mb) = self.shared.mailboxes.get(id.worker()) else {
            return SendStatus::Dropped;
        };
        if mb.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return SendStatus::Dropped;
        }
        let frame: Arc<[u8]> = Arc::from(ws::serialize(msg));
        let n = frame.len();
        let pending = mb.add_pending(n);
        let backpressure_limit =
            self.shared.send_limits[0].load(std::sync::atomic::Ordering::Relaxed);
        let max_buffered = self.shared.send_limits[1].load(std::sync::atomic::Ordering::Relaxed);
        if pending > max_buffered {
            mb.sub_pending(n);
            return SendStatus::Dropped;
        }
        mb.post(mailbox::Command::Send { id, frame });
        if pending > backpressure_limit || self.shared.is_congested(id) {
            SendStatus::Backpressure
        } else {
            SendStatus::Sent
        }
    }

    /// Something to do to connection `id` on its worker; false if that worker is gone.
    pub(crate) fn conn_op(&self, id: ConnId, op: mailbox::ConnOp) -> bool {
        self.post(id.worker(), mailbox::Command::Conn { id, op })
    }

    pub(crate) fn run<H: Handler>(
        &self,
        worker: usize,
        task: ctx::Task<H>,
    ) -> Result<(), PostError> {
        if std::any::TypeId::of::<H>() != self.shared.handler {
            return Err(PostError::WrongHandler);
        }
        if self.post(worker, mailbox::Command::Run(Box::new(task))) {
            Ok(())
        } else {
            Err(PostError::Stopped)
        }
    }

    pub(crate) fn connections(&self) -> Vec<usize> {
        self.shared
            .metrics
            .iter()
            .map(|m| m.connections_open.get() as usize)
            .collect()
    }

    pub(crate) fn post(&self, worker: usize, cmd: mailbox::Command) -> bool {
        match self.shared.mailboxes.get(worker) {
            Some(mb) if !mb.closed.load(std::sync::atomic::Ordering::Relaxed) => {
                mb.post(cmd);
                true
            }
            _ => false,
        }
    }

    pub(crate) fn metrics_reader(&self) -> crate::metrics::Reader {
        crate::metrics::Reader::new(self.shared.metrics.clone())
    }

    pub(crate) fn shutdown(&self, grace: std::time::Duration) {
        let deadline = std::time::Instant::now() + grace;
        for mb in &self.shared.mailboxes {
            mb.post(mailbox::Command::Shutdown { deadline });
        }
    }
}

/// Why a task could not be posted to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostError {
    /// No such worker, or it has stopped.
    Stopped,
    /// The task's handler type is not the workers' handler type.
    WrongHandler,
}

impl std::fmt::Display for PostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PostError::Stopped => "no such worker, or it has stopped",
            PostError::WrongHandler => "the task is for another handler type than the workers'",
        })
    }
}

impl std::error::Error for PostError {}

/// Waits for `threads`; the first failure or panic is the error.
pub(crate) fn join(threads: Vec<JoinHandle<io::Result<()>>>) -> io::Result<()> {
    let mut result = Ok(());
    for (i, t) in threads.into_iter().enumerate() {
        let r = match t.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::new(e.kind(), format!("worker {i}: {e}"))),
            Err(p) => {
                let what = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".into());
                Err(io::Error::other(format!("worker {i} panicked: {what}")))
            }
        };
        if result.is_ok() {
            result = r;
        }
    }
    result
}
