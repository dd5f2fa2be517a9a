//! The raw-TCP ceiling's server side: every byte received is written back as is, with
//! no handshake and no framing, on Soliton's own drivers (the same receive buffers,
//! write queues and batching as the WebSocket server, none of its protocol work).
//! `soliton-server --mode raw-tcp` runs it; it is the driver API used on its own.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use soliton::driver::{self, Backend, Chunk, Driver, DriverConfig, Pool, Sink, Token, Waker};

struct Echo {
    pool: Pool,
    writes: Vec<(Token, Vec<u8>)>,
    closed: Vec<Token>,
}

impl Sink for Echo {
    fn accepted(&mut self, _: Token, _: Option<SocketAddr>) {}
    fn connected(&mut self, _: Token, _: io::Result<()>) {}
    fn received(&mut self, token: Token, data: &mut [u8]) {
        let mut v = self.pool.get();
        v.extend_from_slice(data);
        self.writes.push((token, v));
    }
    fn sent(&mut self, _: Token, _: usize) {}
    fn closed(&mut self, token: Token, _: Option<io::Error>) {
        self.closed.push(token);
    }
    fn woken(&mut self) {}
}

/// A running raw echo server.
#[derive(Debug)]
pub struct RawEcho {
    stop: Arc<AtomicBool>,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    /// The bound address.
    pub addr: SocketAddr,
    /// The backend running.
    pub backend: Backend,
}

impl RawEcho {
    /// Starts `threads` workers on `addr` (pinned from `first_core` when given).
    pub fn start(
        addr: SocketAddr,
        cfg: DriverConfig,
        threads: usize,
        first_core: Option<usize>,
    ) -> io::Result<RawEcho> {
        let first = driver::listener(addr, 4096)?;
        let addr = driver::local_addr(&first)?;
        let mut listeners = vec![first];
        for _ in 1..threads.max(1) {
            listeners.push(driver::listener(addr, 4096)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut handles = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let cfg = cfg.clone();
            let stop = stop.clone();
            let tx = tx.clone();
            let core = first_core
                .filter(|_| !cores.is_empty())
                .map(|f| cores[(f + i) % cores.len()]);
            // named as the engine's workers are
            let builder = std::thread::Builder::new().name(format!("soliton-{i}"));
            handles.push(builder.spawn(move || -> io::Result<()> {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                let mut d = match Driver::new(&cfg) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                        return Err(e);
                    }
                };
                let _ = tx.send(Ok((d.waker(), d.backend())));
                // `start` waits until every worker's sender is gone
                drop(tx);
                d.listen(l)?;
                let mut echo = Echo {
                    pool: Pool::default(),
                    writes: Vec::new(),
                    closed: Vec::new(),
                };
                while !stop.load(Ordering::Relaxed) {
                    for (t, v) in echo.writes.drain(..) {
                        d.write(t, Chunk::Owned(v));
                    }
                    for t in echo.closed.drain(..) {
                        d.close(t, false);
                    }
                    d.reclaim(&mut echo.pool);
                    d.submit_and_wait(None)?;
                    d.dispatch(&mut echo);
                }
                Ok(())
            })?);
        }
        drop(tx);
        let mut wakers = Vec::new();
        let mut backend = Backend::Epoll;
        for r in rx {
            let (w, b) = r?;
            wakers.push(w);
            backend = b;
        }
        Ok(RawEcho {
            stop,
            wakers,
            threads: handles,
            addr,
            backend,
        })
    }

    /// Stops the workers and waits for them.
    pub fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for w in &self.wakers {
            w.wake();
        }
        for t in self.threads {
            t.join()
                .map_err(|_| io::Error::other("raw echo worker panicked"))??;
        }
        Ok(())
    }
}
