//! What the workers count: per-thread histograms and counters (merged at the end), the
//! live counters the progress line reads, and the controller's phase clock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// "Not yet" for the phase instants.
pub(crate) const NEVER: u64 = u64::MAX;

/// A latency histogram in nanoseconds, 1 ns to 1 hour, 3 significant digits.
pub(crate) fn new_hist() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
    h.auto(true);
    h
}

/// Everything that can go wrong, as counted in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ErrKind {
    /// TCP connect refused (nothing listening).
    Refused,
    /// TCP connect failed otherwise (unreachable, ...).
    Connect,
    /// No TCP connection within --connect-timeout.
    ConnectTimeout,
    /// Out of file descriptors (RLIMIT_NOFILE).
    FdLimit,
    /// Out of local ports / source addresses (EADDRNOTAVAIL).
    NoPorts,
    /// The server answered the upgrade with this HTTP status, not 101.
    HandshakeStatus(u16),
    /// The upgrade response was not valid (accept key, headers, malformed head).
    HandshakeInvalid,
    /// No upgrade response within --connect-timeout.
    HandshakeTimeout,
    /// The server closed the connection during the handshake.
    HandshakeEof,
    /// The server broke the protocol (garbage, masked frames, bad UTF-8, ...).
    Protocol,
    /// TLS failed (a certificate not trusted, a handshake refused, a bad record).
    Tls,
    /// The server closed with this code before we asked to close.
    Close(u16),
    /// The server closed TCP without a close frame.
    Eof,
    /// The connection was reset.
    Reset,
    /// Messages were outstanding and nothing came back for --timeout.
    Stall,
    /// Messages still unanswered when the connection ended or the run closed.
    NoReply,
    /// An echo that was not what was sent (length, sequence, stamp).
    Payload,
    /// A send skipped: over 4 MiB already queued on the connection (server not reading).
    Backlog,
    /// A scheduled send with no open connection to carry it.
    Unsent,
    /// The server did not finish the close handshake within --close-timeout.
    CloseTimeout,
    /// Another I/O error.
    Io,
}

impl ErrKind {
    /// The name used in tables and JSON.
    pub(crate) fn name(self) -> String {
        match self {
            ErrKind::Refused => "refused".into(),
            ErrKind::Connect => "connect".into(),
            ErrKind::ConnectTimeout => "connect-timeout".into(),
            ErrKind::FdLimit => "fd-limit".into(),
            ErrKind::NoPorts => "no-ports".into(),
            ErrKind::HandshakeStatus(s) => format!("handshake-status-{s}"),
            ErrKind::HandshakeInvalid => "handshake-invalid".into(),
            ErrKind::HandshakeTimeout => "handshake-timeout".into(),
            ErrKind::HandshakeEof => "handshake-eof".into(),
            ErrKind::Protocol => "protocol".into(),
            ErrKind::Tls => "tls".into(),
            ErrKind::Close(c) => format!("close-{c}"),
            ErrKind::Eof => "eof".into(),
            ErrKind::Reset => "reset".into(),
            ErrKind::Stall => "stall".into(),
            ErrKind::NoReply => "no-reply".into(),
            ErrKind::Payload => "payload".into(),
            ErrKind::Backlog => "backlog".into(),
            ErrKind::Unsent => "unsent".into(),
            ErrKind::CloseTimeout => "close-timeout".into(),
            ErrKind::Io => "io".into(),
        }
    }

    /// Classifies a connect error.
    pub(crate) fn of_connect(e: &std::io::Error) -> ErrKind {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => ErrKind::Refused,
            Some(libc::EMFILE | libc::ENFILE) => ErrKind::FdLimit,
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => ErrKind::NoPorts,
            Some(libc::ETIMEDOUT) => ErrKind::ConnectTimeout,
            _ => ErrKind::Connect,
        }
    }
}

/// A one-line explanation of an error name, for the report's legend.
pub(crate) fn describe(name: &str) -> &'static str {
    match name {
        "refused" => "TCP connect refused (nothing listening)",
        "connect" => "TCP connect failed (unreachable, ...)",
        "connect-timeout" => "no TCP connection within --connect-timeout",
        "fd-limit" => "out of file descriptors (raise ulimit -n, or split over processes)",
        "no-ports" => "out of local ports (spread over --source addresses)",
        "handshake-invalid" => "upgrade response invalid (accept key, headers)",
        "handshake-timeout" => "no upgrade response within --connect-timeout",
        "handshake-eof" => "server closed during the handshake",
        "protocol" => "server broke the WebSocket protocol (garbage bytes)",
        "eof" => "server closed TCP without a close frame",
        "reset" => "connection reset",
        "stall" => "messages outstanding, nothing received for --timeout",
        "no-reply" => "messages never answered (connection ended or run closed)",
        "payload" => "echo differs from what was sent",
        "backlog" => "send skipped: 4 MiB already queued (server not reading)",
        "unsent" => "scheduled send with no open connection",
        "close-timeout" => "close handshake not finished within --close-timeout",
        "tls" => "TLS failed (the first failure is printed on standard error)",
        "io" => "other I/O error",
        n if n.starts_with("handshake-status-") => "upgrade answered with this HTTP status",
        n if n.starts_with("close-") => "server closed with this code before the run ended",
        _ => "",
    }
}

/// One node's deliveries (fanout across nodes): what the connections to one URL received
/// with a stamp in the window, and its latency.
#[derive(Debug)]
pub(crate) struct NodeStats {
    pub(crate) received: u64,
    pub(crate) latency: Histogram<u64>,
}

impl NodeStats {
    pub(crate) fn new() -> NodeStats {
        NodeStats {
            received: 0,
            latency: new_hist(),
        }
    }
}

/// A worker's own figures, returned when it ends.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Latency of messages whose send (or intended send) time is in the window.
    pub(crate) latency: Histogram<u64>,
    /// TCP connect + upgrade handshake latency, every connection.
    pub(crate) connect: Histogram<u64>,
    /// Messages sent in the window.
    pub(crate) sent: u64,
    /// Messages received whose stamp is in the window.
    pub(crate) received: u64,
    /// Payload bytes sent in the window.
    pub(crate) bytes_sent: u64,
    /// Payload bytes received (stamp in the window).
    pub(crate) bytes_received: u64,
    /// Messages sent over the whole run.
    pub(crate) sent_total: u64,
    /// Messages received over the whole run.
    pub(crate) received_total: u64,
    /// Completed handshakes, whole run.
    pub(crate) handshakes: u64,
    /// Completed handshakes in the window.
    pub(crate) handshakes_window: u64,
    /// Completed handshakes whose TLS session was resumed (wss://).
    pub(crate) tls_resumed: u64,
    /// Connection attempts.
    pub(crate) attempts: u64,
    /// First connection attempt and last completed handshake (process clock, ns).
    pub(crate) first_attempt: u64,
    /// Last completed handshake.
    pub(crate) last_handshake: u64,
    /// Connections open when the run began closing.
    pub(crate) open_at_close: u64,
    /// Close handshakes completed cleanly.
    pub(crate) clean_closes: u64,
    /// Errors by kind.
    pub(crate) errors: BTreeMap<ErrKind, u64>,
    /// permessage-deflate: payload bytes sent on compressed connections, and the
    /// bytes their frames took.
    pub(crate) deflate_payload: u64,
    pub(crate) deflate_wire: u64,
    /// Fanout across nodes: `received` and `latency` again, split by the node (URL)
    /// of the receiving connection (empty otherwise). Indexed by a number each
    /// connection carries: no lookup per message.
    pub(crate) nodes: Vec<NodeStats>,
}

impl Stats {
    pub(crate) fn new() -> Stats {
        Stats {
            latency: new_hist(),
            connect: new_hist(),
            sent: 0,
            received: 0,
            bytes_sent: 0,
            bytes_received: 0,
            sent_total: 0,
            received_total: 0,
            handshakes: 0,
            handshakes_window: 0,
            tls_resumed: 0,
            attempts: 0,
            first_attempt: NEVER,
            last_handshake: 0,
            open_at_close: 0,
            clean_closes: 0,
            errors: BTreeMap::new(),
            deflate_payload: 0,
            deflate_wire: 0,
            nodes: Vec::new(),
        }
    }

    /// With a figure set for each of `nodes` nodes.
    pub(crate) fn with_nodes(nodes: usize) -> Stats {
        let mut s = Stats::new();
        s.nodes = (0..nodes).map(|_| NodeStats::new()).collect();
        s
    }

    pub(crate) fn error(&mut self, k: ErrKind, n: u64) {
        if n > 0 {
            *self.errors.entry(k).or_insert(0) += n;
        }
    }

    pub(crate) fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Adds another worker's figures.
    pub(crate) fn merge(&mut self, o: &Stats) {
        let _ = self.latency.add(&o.latency);
        let _ = self.connect.add(&o.connect);
        self.sent += o.sent;
        self.received += o.received;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.sent_total += o.sent_total;
        self.received_total += o.received_total;
        self.handshakes += o.handshakes;
        self.handshakes_window += o.handshakes_window;
        self.tls_resumed += o.tls_resumed;
        self.attempts += o.attempts;
        self.first_attempt = self.first_attempt.min(o.first_attempt);
        self.last_handshake = self.last_handshake.max(o.last_handshake);
        self.open_at_close += o.open_at_close;
        self.clean_closes += o.clean_closes;
        self.deflate_payload += o.deflate_payload;
        self.deflate_wire += o.deflate_wire;
        for (k, v) in &o.errors {
            self.error(*k, *v);
        }
        if self.nodes.len() < o.nodes.len() {
            self.nodes.resize_with(o.nodes.len(), NodeStats::new);
        }
        for (a, b) in self.nodes.iter_mut().zip(&o.nodes) {
            a.received += b.received;
            let _ = a.latency.add(&b.latency);
        }
    }
}

/// A worker's counters as the controller sees them while it runs (updated every tick).
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Live {
    /// Connection attempts started.
    pub(crate) attempted: AtomicU64,
    /// Connections OPEN now.
    pub(crate) open: AtomicU64,
    /// Connections that ended in an error before or after opening.
    pub(crate) failed: AtomicU64,
    /// Completed handshakes.
    pub(crate) handshakes: AtomicU64,
    /// Messages sent, whole run.
    pub(crate) sent: AtomicU64,
    /// Messages received, whole run.
    pub(crate) received: AtomicU64,
    /// Errors, all kinds.
    pub(crate) errors: AtomicU64,
    /// Messages sent and not yet answered (echo, rate).
    pub(crate) outstanding: AtomicU64,
    /// When (process clock, ns) these counters were last published.
    pub(crate) published_at: AtomicU64,
    /// Connections with a socket (any state).
    pub(crate) live: AtomicU64,
    /// The worker's thread id (for its CPU time).
    pub(crate) tid: AtomicU64,
    /// The worker has ended.
    pub(crate) done: AtomicBool,
    /// Latencies since the progress line last took them.
    pub(crate) interval: Mutex<Histogram<u64>>,
}

impl Live {
    pub(crate) fn new() -> Live {
        Live {
            attempted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            handshakes: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            published_at: AtomicU64::new(0),
            live: AtomicU64::new(0),
            tid: AtomicU64::new(0),
            done: AtomicBool::new(false),
            interval: Mutex::new(new_hist()),
        }
    }
}

/// The controller's phase clock and the workers' live counters.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Connections to have opened overall (global index below this are opened).
    pub(crate) target_conns: AtomicUsize,
    /// Sending starts (echo's first messages, the open-loop schedules' time zero).
    pub(crate) go: AtomicU64,
    /// The measured window.
    pub(crate) measure_start: AtomicU64,
    /// End of the measured window: no message is sent after it.
    pub(crate) measure_end: AtomicU64,
    /// Close every connection (1000) from this instant.
    pub(crate) close_at: AtomicU64,
    /// Workers stop here whatever is left.
    pub(crate) deadline: AtomicU64,
    /// One per worker.
    pub(crate) workers: Vec<Live>,
}

impl Shared {
    pub(crate) fn new(threads: usize) -> Shared {
        Shared {
            target_conns: AtomicUsize::new(0),
            go: AtomicU64::new(NEVER),
            measure_start: AtomicU64::new(NEVER),
            measure_end: AtomicU64::new(NEVER),
            close_at: AtomicU64::new(NEVER),
            deadline: AtomicU64::new(NEVER),
            workers: (0..threads).map(|_| Live::new()).collect(),
        }
    }

    /// Sum of one live counter over the workers.
    pub(crate) fn sum(&self, f: impl Fn(&Live) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    /// Every worker has published its counters at or after `t` (ns).
    pub(crate) fn all_published_since(&self, t: u64) -> bool {
        self.workers
            .iter()
            .all(|w| w.done.load(Relaxed) || w.published_at.load(Relaxed) >= t)
    }

    pub(crate) fn all_done(&self) -> bool {
        self.workers.iter().all(|w| w.done.load(Relaxed))
    }

    /// Takes (and clears) the latencies recorded since the last call.
    pub(crate) fn take_interval(&self) -> Histogram<u64> {
        let mut h = new_hist();
        for w in &self.workers {
            if let Ok(mut i) = w.interval.lock() {
                let _ = h.add(&*i);
                i.reset();
            }
        }
        h
    }
}
