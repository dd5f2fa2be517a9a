//! A deferred upgrade: the token of each upgrade request is checked by a slow
//! "database" on threads of its own, and the worker goes on serving meanwhile.
//!
//! ```sh
//! cargo run --release -p soliton --example deferred_upgrade -- --port 9003
//! curl -s http://127.0.0.1:9003/health                 # answered at once, always
//! cargo run --release -p soliton --example client -- ws://127.0.0.1:9003/ws \
//!     --header 'Authorization: Bearer token-alice'
//! ```
//!
//! The WebSocket is `/ws`, with the token as `Authorization: Bearer TOKEN` or, for
//! browsers (which cannot set that header on a WebSocket), `/ws?token=TOKEN` (a query
//! ends up in access logs: prefer short-lived tokens there). The known tokens are
//! `token-alice` and `token-bob`; each lookup takes 50 to 200 ms. An unknown token is
//! 401 once the lookup answers, a missing one 401 at once. Once open, the server greets
//! with the user's name and the time the check took, then echoes.
//!
//! How it works: `on_upgrade_request` calls `req.defer()` and hands the
//! `PendingUpgrade` to the database's thread pool, then returns `Upgrade::Defer`. The
//! connection waits in the CONNECTING state (the handshake timeout still applies:
//! 408 when it passes) while the worker serves everything else; the pool thread
//! accepts (with the connection's data) or rejects, and the worker answers 101 or the
//! HTTP status at its next loop iteration. A `PendingUpgrade` dropped without a
//! verdict answers 500, so a lookup that panics or a queue that is gone never leaves a
//! client hanging. The server runs one worker thread, to make the point: `/health`
//! and open connections are served while upgrades wait.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use soliton::proto::handshake::Request;
use soliton::proto::Message;
use soliton::server::{Backend, Builder, Handler, HttpResponse, PendingUpgrade, Reject};
use soliton::server::{Server, ServerHandle, Upgrade, UpgradeRequest, WebSocket};

/// The "database": token -> user.
const USERS: &[(&str, &str)] = &[("token-alice", "alice"), ("token-bob", "bob")];

/// A lookup for the database's threads: the token, and the upgrade to complete.
struct Lookup {
    token: String,
    pending: PendingUpgrade,
    asked: Instant,
}

/// A connection's data, made on a database thread (so it must be `Send`) and handed
/// to the worker with the accept.
struct User {
    name: String,
    /// How long the check took.
    waited: Duration,
}

/// Starts `threads` database threads taking lookups from one queue, each taking a
/// time in `latency_ms`; they stop when every `Sender` is gone (when the server's
/// handlers are).
fn database(
    threads: usize,
    latency_ms: RangeInclusive<u64>,
    in_flight: Arc<AtomicUsize>,
) -> Sender<Lookup> {
    let (tx, rx) = channel::<Lookup>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads {
        let (rx, in_flight, latency_ms) = (rx.clone(), in_flight.clone(), latency_ms.clone());
        thread::Builder::new()
            .name(format!("database-{i}"))
            .spawn(move || lookups(&rx, latency_ms, &in_flight))
            .expect("spawn a database thread");
    }
    tx
}

/// One database thread: a query at a time.
fn lookups(rx: &Mutex<Receiver<Lookup>>, latency_ms: RangeInclusive<u64>, in_flight: &AtomicUsize) {
    let (least, most) = (*latency_ms.start(), *latency_ms.end());
    loop {
        // the lock is held only while waiting for the next job
        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(Lookup {
            token,
            pending,
            asked,
        }) = job
        else {
            return; // every sender is gone: the server has stopped
        };
        thread::sleep(Duration::from_millis(least + random() % (most - least + 1)));
        let user = USERS.iter().find(|(t, _)| *t == token).map(|(_, u)| *u);
        // accept or reject from this thread: the verdict goes to the connection's
        // worker (false if the server has stopped; a client gone meanwhile is ignored)
        match user {
            Some(name) => pending.accept(User {
                name: name.to_owned(),
                waited: asked.elapsed(),
            }),
            None => pending.reject(Reject::new(401, "unknown token\n")),
        };
        in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One per worker thread.
struct Gate {
    db: Sender<Lookup>,
    in_flight: Arc<AtomicUsize>,
}

impl Handler for Gate {
    type Data = User;

    fn on_http(&mut self, req: &Request<'_>) -> HttpResponse {
        match req.path() {
            "/health" => {
                let n = self.in_flight.load(Ordering::Relaxed);
                HttpResponse::new(200, format!("ok: {n} lookups in flight\n"))
            }
            _ => HttpResponse::new(404, "GET /health, or a WebSocket at /ws\n"),
        }
    }

    /// Implemented instead of `on_upgrade`, to answer later.
    fn on_upgrade_request(&mut self, req: &UpgradeRequest<'_, '_>) -> Upgrade<User> {
        if req.request.path() != "/ws" {
            return Upgrade::Reject(Reject::new(404, "the WebSocket is at /ws\n"));
        }
        // what can be refused without the database is refused at once
        let Some(token) = token(req.request) else {
            return Upgrade::Reject(Reject::new(401, "a token, please\n"));
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let lookup = Lookup {
            token: token.to_owned(),
            pending: req.defer(),
            asked: Instant::now(),
        };
        if self.db.send(lookup).is_err() {
            // the pool is gone; the lookup and its PendingUpgrade are dropped: 500
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
        Upgrade::Defer
    }

    fn on_open(&mut self, ws: &mut WebSocket<'_, User>) {
        let u = ws.data();
        let hello = format!(
            "hello {}: your token took {} ms to check",
            u.name,
            u.waited.as_millis()
        );
        ws.send_text(&hello);
    }

    fn on_message(&mut self, ws: &mut WebSocket<'_, User>, msg: Message<'_>) {
        ws.send(msg);
    }
}

/// `Authorization: Bearer TOKEN`, else `?token=TOKEN`.
fn token<'r>(req: &Request<'r>) -> Option<&'r str> {
    let bearer = req
        .header_str("authorization")
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = || {
        req.query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
    };
    bearer.or_else(query).filter(|t| !t.is_empty())
}

/// A number from the OS-seeded SipHash: the simulated latency's jitter.
fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// Starts the server on the builder's address with a database of `db_threads`
/// threads, each lookup taking a time in `latency_ms` (`pub(crate)`:
/// tests/tests/examples.rs runs it too).
pub(crate) fn start(
    builder: Builder,
    db_threads: usize,
    latency_ms: RangeInclusive<u64>,
) -> io::Result<ServerHandle> {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let db = database(db_threads, latency_ms, in_flight.clone());
    builder.start(move |_worker| Gate {
        db: db.clone(),
        in_flight: in_flight.clone(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (port, backend) = args()?;
    let server = start(
        Server::builder()
            .addr(SocketAddr::from(([127, 0, 0, 1], port)))
            .backend(backend)
            .workers(1),
        4,
        50..=200,
    )?;
    println!(
        "deferred_upgrade: ws://{0}/ws (token-alice, token-bob), http://{0}/health ({1}); \
         Ctrl-C to stop",
        server.local_addr(),
        server.backend().name()
    );
    wait_for_ctrl_c()?;
    println!("deferred_upgrade: shutting down");
    server.shutdown(Duration::from_secs(2))?;
    Ok(())
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_ctrl_c() -> io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?
        .forever()
        .next();
    Ok(())
}

const USAGE: &str = "usage: deferred_upgrade [--port N] [--backend auto|uring|epoll]";

/// `--port N` (default 9003) and `--backend auto|uring|epoll` (default auto).
fn args() -> Result<(u16, Backend), String> {
    let (mut port, mut backend) = (9003, Backend::Auto);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--port" => port = value()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--backend" => backend = value()?.parse()?,
            _ => return Err(USAGE.into()),
        }
    }
    Ok((port, backend))
}
