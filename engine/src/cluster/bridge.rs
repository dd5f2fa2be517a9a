//! The bridge: one writer thread that owns the broker connection (connects, writes
//! `PUB`/`SUB`/`UNSUB`/`PING`, reconnects), and per connection one reader thread that
//! parses what the broker sends and hands messages to the workers.
//!
//! Workers and handles reach it through [`Bridge::publish`] (a `try_send` on a bounded
//! queue: never blocks) and [`Bridge::interest`] (a topic that gained its first or lost
//! its last local subscriber: recorded in a map, the latest state winning, which the
//! writer applies; never lost to a full queue).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::nats::{self, ServerOp};
use super::subject::{topic_of, validate_prefix, write_subject, MAX_SUBJECT};
use super::{ClusterStats, NatsConfig};
use crate::proto::frame::{DecodeRules, FrameHeader};
use crate::proto::{OpCode, Status};
use crate::runtime::mailbox::{Command, Mailbox};

/// What the writer thread is handed.
enum Op {
    Publish(Arc<str>, Arc<[u8]>),
    /// Look at the flags (interest changed, a `PONG` is due, the reader stopped, stop).
    Wake,
}

/// Bytes gathered before a write to the broker.
const WRITE_BATCH: usize = 64 * 1024;
/// How often, at most, drops are logged (summed).
const REPORT_EVERY: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the workers, the writer and the reader.
#[derive(Debug, Default)]
struct State {
    connected: AtomicBool,
    stop: AtomicBool,
    /// Bytes of frames in the queue to the writer.
    queued_bytes: AtomicUsize,
    /// Topics whose local interest changed since the writer last looked: the latest
    /// state (true: has local subscribers).
    interest: Mutex<HashMap<Arc<str>, bool>>,
    interest_dirty: AtomicBool,
    /// Set by the reader: the broker sent `PING`.
    pong_due: AtomicBool,
    /// Our `PING`s not answered yet.
    pings_out: AtomicU32,
    /// Set by the reader when the connection failed, with why.
    lost: Mutex<Option<String>>,
    url: Mutex<String>,
    published: AtomicU64,
    received: AtomicU64,
    dropped_disconnected: AtomicU64,
    dropped_full: AtomicU64,
    dropped_too_large: AtomicU64,
    invalid: AtomicU64,
    reconnects: AtomicU64,
    subscriptions: AtomicUsize,
}

/// A server's bridge to the broker.
#[derive(Debug)]
pub(crate) struct Bridge {
    state: Arc<State>,
    queue_bytes: usize,
    tx: SyncSender<Op>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Publish(t, _) => write!(f, "Publish({t})"),
            Op::Wake => f.write_str("Wake"),
        }
    }
}

impl Bridge {
    /// Checks the settings, connects to the broker (an error names the URL if it
    /// cannot), and starts the writer thread. Messages from the broker go to
    /// `mailboxes`.
    pub(crate) fn start(cfg: &NatsConfig, mailboxes: Vec<Arc<Mailbox>>) -> io::Result<Bridge> {
        validate_prefix(&cfg.subject_prefix)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("NATS: {e}")))?;
        let endpoints = parse_urls(&cfg.url)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("NATS: {e}")))?;
        if cfg.queue == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "NATS: the queue must hold at least one publish",
            ));
        }
        let state = Arc::new(State::default());
        let (tx, rx) = sync_channel(cfg.queue);
        let mut errors = Vec::new();
        let mut first = None;
        for (i, ep) in endpoints.iter().enumerate() {
            match Handshake::run(ep, cfg) {
                Ok(h) => {
                    first = Some((i, h));
                    break;
                }
                Err(e) => errors.push(format!("{}: {e}", ep.shown)),
            }
        }
        let Some((ep, h)) = first else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("cannot connect to NATS at {}", errors.join("; ")),
            ));
        };
        let mut w = Writer {
            cfg: cfg.clone(),
            state: state.clone(),
            rx,
            tx: tx.clone(),
            mailboxes: mailboxes.into(),
            endpoints,
            next_ep: ep,
            conn: None,
            subs: HashMap::new(),
            next_sid: 1,
            out: Vec::with_capacity(WRITE_BATCH * 2),
            subject: Vec::new(),
            batch_pubs: 0,
            backoff: cfg.reconnect_min,
            next_attempt: Instant::now(),
            down_since: None,
            failed_attempts: 0,
            reported: (0, 0, 0),
            last_report: Instant::now(),
        };
        let (url, max_payload) = (h.url.clone(), h.max_payload);
        w.attach(h)?;
        tracing::info!("nats: connected to {url} (max_payload {max_payload} bytes)");
        let thread = std::thread::Builder::new()
            .name("soliton-nats".into())
            .spawn(move || w.run())?;
        Ok(Bridge {
            state,
            queue_bytes: cfg.queue_bytes,
            tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A publish made on this node, for the other nodes. Never blocks.
    pub(crate) fn publish(&self, topic: &Arc<str>, frame: &Arc<[u8]>) {
        if !self.state.connected.load(Relaxed) {
            self.state.dropped_disconnected.fetch_add(1, Relaxed);
            return;
        }
        let n = frame.len();
        if self.state.queued_bytes.fetch_add(n, Relaxed) + n > self.queue_bytes {
            self.state.queued_bytes.fetch_sub(n, Relaxed);
            self.state.dropped_full.fetch_add(1, Relaxed);
            return;
        }
        let dropped = match self.tx.try_send(Op::Publish(topic.clone(), frame.clone())) {
            Ok(()) => return,
            Err(TrySendError::Full(_)) => &self.state.dropped_full,
            Err(TrySendError::Disconnected(_)) => &self.state.dropped_disconnected,
        };
        self.state.queued_bytes.fetch_sub(n, Relaxed);
        dropped.fetch_add(1, Relaxed);
    }

    /// `topic` gained its first local subscriber (`true`) or lost its last. Called
    /// under the lock that counts subscribers, so the latest call is the state.
    pub(crate) fn interest(&self, topic: &Arc<str>, on: bool) {
        lock(&self.state.interest).insert(topic.clone(), on);
        if !self.state.interest_dirty.swap(true, Relaxed) {
            // a full queue: the writer is busy and looks at the flag after its batch
            let _ = self.tx.try_send(Op::Wake);
        }
    }

    pub(crate) fn stats(&self) -> ClusterStats {
        let s = &self.state;
        ClusterStats {
            connected: s.connected.load(Relaxed),
            url: lock(&s.url).clone(),
            published: s.published.load(Relaxed),
            received: s.received.load(Relaxed),
            dropped_disconnected: s.dropped_disconnected.load(Relaxed),
            dropped_full: s.dropped_full.load(Relaxed),
            dropped_too_large: s.dropped_too_large.load(Relaxed),
            invalid: s.invalid.load(Relaxed),
            reconnects: s.reconnects.load(Relaxed),
            subscriptions: s.subscriptions.load(Relaxed),
        }
    }

    /// Stops the threads and closes the broker connection (what is queued is written
    /// first, if the broker takes it). Later calls do nothing.
    pub(crate) fn stop(&self) {
        self.state.stop.store(true, Relaxed);
        let _ = self.tx.try_send(Op::Wake);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One broker address from the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    /// `nats://host:port`, without credentials (for logs and errors).
    shown: String,
    host_port: String,
    user: Option<(String, String)>,
    token: Option<String>,
}

/// `nats://[user:pass@|token@]host[:port]`, comma-separated.
fn parse_urls(s: &str) -> Result<Vec<Endpoint>, String> {
    let mut v = Vec::new();
    for url in s.split(',').map(str::trim) {
        let rest = match url.split_once("://") {
            Some(("nats", r)) => r,
            Some((scheme, _)) => {
                return Err(format!(
                    "{url:?}: the scheme must be nats:// ({scheme}:// is not supported)"
                ))
            }
            None => url,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (cred, host) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
            return Err(format!("{url:?}: not a nats://host:port URL"));
        }
        let has_port = match host.rfind(']') {
            Some(b) => host[b..].contains(':'),
            None => host.contains(':'),
        };
        let host_port = if has_port {
            host.to_owned()
        } else {
            format!("{host}:4222")
        };
        let (user, token) = match cred {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some((u.to_owned(), p.to_owned())), None),
                None => (None, Some(c.to_owned())),
            },
            None => (None, None),
        };
        v.push(Endpoint {
            shown: format!("nats://{host_port}"),
            host_port,
            user,
            token,
        });
    }
    Ok(v)
}

/// A connection that finished the NATS handshake.
#[derive(Debug)]
struct Handshake {
    stream: TcpStream,
    /// Bytes read past the handshake.
    rest: Vec<u8>,
    max_payload: usize,
    url: String,
}

impl Handshake {
    /// TCP connect, `INFO`, `CONNECT` + `PING`, and the `PONG` that says the server took
    /// the `CONNECT` (an `-ERR` instead is the error), all within `connect_timeout`.
    fn run(ep: &Endpoint, cfg: &NatsConfig) -> io::Result<Handshake> {
        let deadline = Instant::now() + cfg.connect_timeout;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for addr in ep.host_port.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, cfg.connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut stream = stream.ok_or(last)?;
        stream.set_nodelay(true)?;
        let mut buf = Vec::with_capacity(4096);
        let info = read_op(&mut stream, &mut buf, deadline, |op| match op {
            ServerOp::Info(json) => Some(Ok(json.to_vec())),
            ServerOp::Err(m) => Some(Err(refused(m))),
            _ => None,
        })?;
        if nats::info_bool(&info, "tls_required") {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the server requires TLS, which this client does not speak",
            ));
        }
        if nats::info_number(&info, "proto").unwrap_or(0) < 1 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the server is too old to leave out a connection's own messages (\"proto\" under 1)",
            ));
        }
        let max_payload = nats::info_number(&info, "max_payload").unwrap_or(1 << 20) as usize;
        let mut out = Vec::new();
        nats::write_connect(
            &mut out,
            &nats::ConnectOptions {
                name: &cfg.name,
                user: ep.user.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                token: ep.token.as_deref(),
            },
        );
        nats::write_ping(&mut out);
        stream.set_write_timeout(Some(cfg.connect_timeout))?;
        stream.write_all(&out)?;
        read_op(&mut stream, &mut buf, deadline, |op| match op {
            ServerOp::Pong => Some(Ok(())),
            ServerOp::Err(m) => Some(Err(refused(m))),
            _ => None,
        })?;
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(Some(cfg.write_timeout))?;
        Ok(Handshake {
            stream,
            rest: buf,
            max_payload,
            url: ep.shown.clone(),
        })
    }
}

fn refused(m: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("refused: {}", String::from_utf8_lossy(m)),
    )
}

/// Reads until `want` takes an operation (others are skipped), by `deadline`; what
/// follows it stays in `buf`.
fn read_op<T>(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    mut want: impl FnMut(ServerOp<'_>) -> Option<io::Result<T>>,
) -> io::Result<T> {
    let mut chunk = [0u8; 4096];
    loop {
        while let Status::Complete((op, n)) = nats::parse(buf, 1 << 20).map_err(bad_data)? {
            let r = want(op);
            buf.drain(..n);
            if let Some(r) = r {
                return r;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no NATS handshake in time",
            ));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn bad_data(e: nats::ParseError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("NATS protocol: {e}"))
}

/// The connection the writer holds.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    reader: JoinHandle<()>,
    max_payload: usize,
}

/// The writer thread's state.
#[derive(Debug)]
struct Writer {
    cfg: NatsConfig,
    state: Arc<State>,
    rx: Receiver<Op>,
    /// For the readers (to wake the writer).
    tx: SyncSender<Op>,
    mailboxes: Arc<[Arc<Mailbox>]>,
    endpoints: Vec<Endpoint>,
    next_ep: usize,
    conn: Option<Conn>,
    /// Topics with local subscribers (subject short enough), by subscription id.
    subs: HashMap<Arc<str>, u64>,
    next_sid: u64,
    out: Vec<u8>,
    subject: Vec<u8>,
    /// Publishes in `out`.
    batch_pubs: u64,
    backoff: Duration,
    next_attempt: Instant,
    down_since: Option<Instant>,
    failed_attempts: u32,
    /// dropped_disconnected, dropped_full, dropped_too_large when last logged.
    reported: (u64, u64, u64),
    last_report: Instant,
}

impl Writer {
    fn run(mut self) {
        let mut last_ping = Instant::now();
        while !self.state.stop.load(Relaxed) {
            if self.conn.is_none() {
                self.wait_and_reconnect();
                last_ping = Instant::now();
                continue;
            }
            let wait = self
                .cfg
                .ping_interval
                .saturating_sub(last_ping.elapsed())
                .min(Duration::from_secs(1));
            match self.rx.recv_timeout(wait) {
                Ok(op) => self.handle(op),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while self.out.len() < WRITE_BATCH {
                match self.rx.try_recv() {
                    Ok(op) => self.handle(op),
                    Err(_) => break,
                }
            }
            if self.state.interest_dirty.load(Relaxed) {
                self.apply_interest();
            }
            if self.state.pong_due.swap(false, Relaxed) {
                nats::write_pong(&mut self.out);
            }
            if last_ping.elapsed() >= self.cfg.ping_interval {
                if self.state.pings_out.load(Relaxed) >= self.cfg.max_pings_out {
                    let n = self.cfg.max_pings_out;
                    self.lose(format!("{n} PINGs unanswered"));
                    continue;
                }
                self.state.pings_out.fetch_add(1, Relaxed);
                nats::write_ping(&mut self.out);
                last_ping = Instant::now();
            }
            let lost = lock(&self.state.lost).take();
            if let Some(why) = lost {
                self.lose(why);
                continue;
            }
            self.flush();
            self.report_drops();
        }
        // stopping: what is queued goes out if the broker takes it
        if self.conn.is_some() {
            while let Ok(op) = self.rx.try_recv() {
                self.handle(op);
            }
            self.apply_interest();
            self.flush();
        }
        if let Some(c) = self.conn.take() {
            self.state.connected.store(false, Relaxed);
            let _ = c.stream.shutdown(Shutdown::Both);
            let _ = c.reader.join();
        }
        self.report_drops();
    }

    fn handle(&mut self, op: Op) {
        let Op::Publish(topic, frame) = op else {
            return;
        };
        self.state.queued_bytes.fetch_sub(frame.len(), Relaxed);
        let Some(c) = &self.conn else {
            self.state.dropped_disconnected.fetch_add(1, Relaxed);
            return;
        };
        write_subject(&mut self.subject, &self.cfg.subject_prefix, &topic);
        if self.subject.len() > MAX_SUBJECT || frame.len() > c.max_payload {
            self.state.dropped_too_large.fetch_add(1, Relaxed);
            return;
        }
        nats::write_pub(&mut self.out, &self.subject, &frame);
        self.batch_pubs += 1;
    }

    /// Applies the interest changes to `subs`, and with a connection to the broker.
    fn apply_interest(&mut self) {
        self.state.interest_dirty.store(false, Relaxed);
        let changes = std::mem::take(&mut *lock(&self.state.interest));
        for (topic, on) in changes {
            if on {
                if self.subs.contains_key(&topic) {
                    continue;
                }
                write_subject(&mut self.subject, &self.cfg.subject_prefix, &topic);
                if self.subject.len() > MAX_SUBJECT {
                    tracing::warn!(
                        "nats: topic of {} bytes kept local: its subject is over {MAX_SUBJECT} bytes",
                        topic.len()
                    );
                    continue;
                }
                let sid = self.next_sid;
                self.next_sid += 1;
                if self.conn.is_some() {
                    nats::write_sub(&mut self.out, &self.subject, sid);
                }
                self.subs.insert(topic, sid);
            } else if let Some(sid) = self.subs.remove(&topic) {
                if self.conn.is_some() {
                    nats::write_unsub(&mut self.out, sid);
                }
            }
        }
        self.state.subscriptions.store(self.subs.len(), Relaxed);
    }

    fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let Some(c) = &mut self.conn else {
            return;
        };
        match c.stream.write_all(&self.out) {
            Ok(()) => {
                self.state.published.fetch_add(self.batch_pubs, Relaxed);
                self.out.clear();
                self.batch_pubs = 0;
            }
            Err(e) => {
                let why = if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) {
                    format!(
                        "a write took over {:?} (the broker is not reading)",
                        self.cfg.write_timeout
                    )
                } else {
                    format!("write: {e}")
                };
                self.lose(why);
            }
        }
    }

    /// The connection is gone: close it, wait for its reader, count what was not sent.
    fn lose(&mut self, why: String) {
        self.state.connected.store(false, Relaxed);
        if let Some(c) = self.conn.take() {
            let _ = c.stream.shutdown(Shutdown::Both);
            let _ = c.reader.join();
        }
        self.state
            .dropped_disconnected
            .fetch_add(self.batch_pubs, Relaxed);
        self.out.clear();
        self.batch_pubs = 0;
        *lock(&self.state.lost) = None;
        let url = lock(&self.state.url).clone();
        tracing::warn!(
            "nats: lost the connection to {url}: {why}; local delivery goes on, publishes for other nodes are dropped until it is back"
        );
        self.down_since = Some(Instant::now());
        self.failed_attempts = 0;
        self.backoff = self.cfg.reconnect_min;
        self.next_attempt = Instant::now() + self.backoff;
    }

    /// Disconnected: drops publishes until the next attempt is due, then tries the
    /// next endpoint.
    fn wait_and_reconnect(&mut self) {
        let now = Instant::now();
        if now < self.next_attempt {
            let wait = (self.next_attempt - now).min(Duration::from_secs(1));
            if let Ok(op) = self.rx.recv_timeout(wait) {
                self.handle(op);
            }
            while let Ok(op) = self.rx.try_recv() {
                self.handle(op);
            }
            self.apply_interest();
            self.report_drops();
            return;
        }
        let ep = self.endpoints[self.next_ep].clone();
        match Handshake::run(&ep, &self.cfg) {
            Ok(h) => {
                self.state.reconnects.fetch_add(1, Relaxed);
                let down = self.down_since.take().map(|t| t.elapsed());
                if let Err(e) = self.attach(h) {
                    self.lose(format!("cannot start its reader: {e}"));
                    return;
                }
                tracing::info!(
                    "nats: connected again to {} after {:.1?}; {} topic subscriptions taken again",
                    ep.shown,
                    down.unwrap_or_default(),
                    self.subs.len()
                );
            }
            Err(e) => {
                self.failed_attempts += 1;
                if self.failed_attempts == 1 || self.failed_attempts.is_power_of_two() {
                    tracing::warn!(
                        "nats: cannot reconnect to {} ({} attempts): {e}",
                        ep.shown,
                        self.failed_attempts
                    );
                }
                self.next_ep = (self.next_ep + 1) % self.endpoints.len();
                self.backoff = (self.backoff * 2).min(self.cfg.reconnect_max);
                self.next_attempt = Instant::now() + self.backoff;
            }
        }
    }

    /// Takes a new connection: subscribes to every topic with local subscribers and
    /// starts its reader.
    fn attach(&mut self, h: Handshake) -> io::Result<()> {
        let Handshake {
            mut stream,
            rest,
            max_payload,
            url,
        } = h;
        // the subscriptions go out before any publish queued from now on
        self.apply_interest();
        self.out.clear();
        self.batch_pubs = 0;
        for (topic, sid) in self.subs.iter_mut() {
            write_subject(&mut self.subject, &self.cfg.subject_prefix, topic);
            *sid = self.next_sid;
            self.next_sid += 1;
            nats::write_sub(&mut self.out, &self.subject, *sid);
        }
        stream.write_all(&self.out)?;
        self.out.clear();
        let reader = Reader {
            stream: stream.try_clone()?,
            buf: rest,
            state: self.state.clone(),
            tx: self.tx.clone(),
            mailboxes: self.mailboxes.clone(),
            prefix: self.cfg.subject_prefix.clone(),
            max_payload,
            last: None,
        };
        let reader = std::thread::Builder::new()
            .name("soliton-nats-rx".into())
            .spawn(move || reader.run())?;
        *lock(&self.state.url) = url;
        self.state.pings_out.store(0, Relaxed);
        self.state.pong_due.store(false, Relaxed);
        *lock(&self.state.lost) = None;
        self.conn = Some(Conn {
            stream,
            reader,
            max_payload,
        });
        self.failed_attempts = 0;
        self.state.connected.store(true, Relaxed);
        Ok(())
    }

    /// Logs drops since the last report, summed, at most every [`REPORT_EVERY`].
    fn report_drops(&mut self) {
        if self.last_report.elapsed() < REPORT_EVERY && !self.state.stop.load(Relaxed) {
            return;
        }
        self.last_report = Instant::now();
        let s = &self.state;
        let now = (
            s.dropped_disconnected.load(Relaxed),
            s.dropped_full.load(Relaxed),
            s.dropped_too_large.load(Relaxed),
        );
        let (d, f, l) = (
            now.0 - self.reported.0,
            now.1 - self.reported.1,
            now.2 - self.reported.2,
        );
        if d + f + l > 0 {
            tracing::warn!(
                "nats: publishes not sent to other nodes: {d} while disconnected, {f} with the queue full, {l} too large"
            );
        }
        self.reported = now;
    }
}

/// One connection's reader thread.
#[derive(Debug)]
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    state: Arc<State>,
    tx: SyncSender<Op>,
    mailboxes: Arc<[Arc<Mailbox>]>,
    prefix: String,
    max_payload: usize,
    /// The last subject seen and its topic (most messages repeat a few subjects).
    last: Option<(Vec<u8>, Arc<str>)>,
}

impl Reader {
    fn run(mut self) {
        let why = match self.read_loop() {
            Ok(()) => "the broker closed the connection".to_owned(),
            Err(e) => e.to_string(),
        };
        if !self.state.stop.load(Relaxed) {
            *lock(&self.state.lost) = Some(why);
            let _ = self.tx.try_send(Op::Wake);
        }
    }

    fn read_loop(&mut self) -> io::Result<()> {
        let mut batch: Vec<(Arc<str>, Arc<[u8]>)> = Vec::new();
        let mut cmds = Vec::new();
        // buf[start..end] is read and not parsed yet; buf[end..] is room
        let mut buf = std::mem::take(&mut self.buf);
        let (mut start, mut end) = (0, buf.len());
        buf.resize(end.max(64 * 1024), 0);
        loop {
            loop {
                let op = match nats::parse(&buf[start..end], self.max_payload) {
                    Ok(Status::Complete(x)) => x,
                    Ok(Status::Partial) => break,
                    Err(e) => return Err(bad_data(e)),
                };
                let (op, n) = op;
                self.handle(op, &mut batch);
                start += n;
            }
            self.deliver(&mut batch, &mut cmds);
            buf.copy_within(start..end, 0);
            end -= start;
            start = 0;
            if end == buf.len() {
                // an operation larger than the buffer (bounded: parse refuses a line
                // over MAX_LINE and a payload over max_payload)
                buf.resize(end * 2, 0);
            }
            match self.stream.read(&mut buf[end..]) {
                Ok(0) => return Ok(()),
                Ok(n) => end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn handle(&mut self, op: ServerOp<'_>, batch: &mut Vec<(Arc<str>, Arc<[u8]>)>) {
        match op {
            ServerOp::Msg {
                subject, payload, ..
            } => {
                let topic = match &self.last {
                    Some((s, t)) if s == subject => Some(t.clone()),
                    _ => topic_of(&self.prefix, subject).map(|t| {
                        let t: Arc<str> = Arc::from(t);
                        self.last = Some((subject.to_vec(), t.clone()));
                        t
                    }),
                };
                match topic {
                    Some(t) if is_message_frame(payload) => batch.push((t, Arc::from(payload))),
                    _ => {
                        self.state.invalid.fetch_add(1, Relaxed);
                    }
                }
            }
            ServerOp::Ping => {
                self.state.pong_due.store(true, Relaxed);
                let _ = self.tx.try_send(Op::Wake);
            }
            ServerOp::Pong => self.state.pings_out.store(0, Relaxed),
            ServerOp::Err(m) => {
                tracing::warn!("nats: the broker says: {}", String::from_utf8_lossy(m));
            }
            ServerOp::Info(_) | ServerOp::Ok => {}
        }
    }

    /// Hands the messages read to every worker, one wake-up per worker.
    fn deliver(&self, batch: &mut Vec<(Arc<str>, Arc<[u8]>)>, cmds: &mut Vec<Command>) {
        if batch.is_empty() {
            return;
        }
        self.state.received.fetch_add(batch.len() as u64, Relaxed);
        for mb in self.mailboxes.iter() {
            if mb.closed.load(Relaxed) {
                continue;
            }
            cmds.extend(batch.iter().map(|(topic, frame)| Command::Publish {
                topic: topic.clone(),
                frame: frame.clone(),
            }));
            mb.post_all(cmds);
        }
        batch.clear();
    }
}

/// A payload that is a whole unmasked text or binary frame with FIN set, exactly
/// (what a node publishes); text must be UTF-8. Anything else would break the
/// receivers' connections.
fn is_message_frame(b: &[u8]) -> bool {
    let rules = DecodeRules {
        expect_masked: false,
        allowed_rsv: 0,
        max_frame: u64::MAX,
    };
    let Ok(Status::Complete((h, n))) = FrameHeader::decode(b, &rules) else {
        return false;
    };
    let payload = &b[n..];
    h.fin
        && payload.len() as u64 == h.payload_len
        && match h.opcode {
            OpCode::Text => crate::proto::utf8::validate(payload).is_ok(),
            OpCode::Binary => true,
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let v = parse_urls("nats://127.0.0.1:4222, localhost ,u:p@h:1,tok@h2/").unwrap();
        let hp: Vec<_> = v.iter().map(|e| e.host_port.as_str()).collect();
        assert_eq!(hp, ["127.0.0.1:4222", "localhost:4222", "h:1", "h2:4222"]);
        assert_eq!(v[2].user, Some(("u".into(), "p".into())));
        assert_eq!(v[2].shown, "nats://h:1");
        assert_eq!(v[3].token.as_deref(), Some("tok"));
        assert_eq!(
            parse_urls("nats://[::1]:5").unwrap()[0].host_port,
            "[::1]:5"
        );
        assert_eq!(
            parse_urls("nats://[::1]").unwrap()[0].host_port,
            "[::1]:4222"
        );
        assert!(parse_urls("tls://h:1").is_err());
        assert!(parse_urls("nats://").is_err());
        assert!(parse_urls("nats://h/x").is_err());
    }

    #[test]
    fn only_whole_message_frames_are_delivered() {
        use crate::proto::Message;
        let text = crate::runtime::ws::serialize(Message::Text("héllo"));
        let bin = crate::runtime::ws::serialize(Message::Binary(&[0xff; 300]));
        assert!(is_message_frame(&text));
        assert!(is_message_frame(&bin));
        assert!(!is_message_frame(&text[..text.len() - 1]));
        assert!(!is_message_frame(&[&text[..], b"x"].concat()));
        assert!(!is_message_frame(b"hello"));
        assert!(!is_message_frame(&[0x81, 0x02, 0xc3, 0x28])); // bad UTF-8
        assert!(!is_message_frame(&[0x01, 0x01, b'a'])); // no FIN
        assert!(!is_message_frame(&[0x89, 0x00])); // ping
        assert!(!is_message_frame(&[0xc1, 0x01, b'a'])); // RSV1
        assert!(!is_message_frame(&[0x81, 0x81, 0, 0, 0, 0, b'a'])); // masked
    }
}
