//! Counters per worker, read from any thread, and their Prometheus text form.
//!
//! Each worker owns one block of counters (cache-line aligned, so that no two
//! workers write the same line) and is the only thread that writes it: a counter goes
//! up by a plain load and store (`Relaxed`), with no locked instruction on the
//! per-message path. Readers on other threads load each counter `Relaxed`: a
//! [`Snapshot`] is exact per counter but not a single instant across counters (a
//! message counted in while its echo is not yet counted out, say).
//!
//! ```no_run
//! # fn f(server: soliton::server::ServerHandle) -> std::io::Result<()> {
//! let snapshot = server.metrics();
//! println!("{} messages in", snapshot.total().messages_in);
//! // served for Prometheus at http://127.0.0.1:9090/metrics
//! let reader = server.metrics_reader();
//! let exporter = soliton::metrics::serve("127.0.0.1:9090".parse().unwrap(), move || {
//!     reader.snapshot().to_prometheus()
//! })?;
//! # exporter.stop();
//! # Ok(()) }
//! ```
//!
//! What is counted, and where:
//!
//! | counter | counts |
//! | --- | --- |
//! | `connections_open` (gauge) | connections the worker holds now, in any phase (handshake, open, closing), server and client |
//! | `connections_accepted` | TCP connections accepted from the listener |
//! | `handshakes{status}` | answers to requests on the WebSocket port, by HTTP status: 101 for an upgrade, the status of each refusal (the engine's: 400, 403, 405, 408, 414, 426, 431, 503, 505; the application's: any) and of each plain HTTP answer (`on_http`) |
//! | `messages_in` / `messages_out` | whole data messages received / queued for sending (publishes: once per receiver; control frames not counted) |
//! | `bytes_in` / `bytes_out` | bytes read from / written to the sockets (after TLS: what went over TCP) |
//! | `backpressure_events` | times a connection crossed its backpressure limit: its first send that reported `Backpressure` since it last drained (`on_drain`) |
//! | `slow_consumer_drops` | connections dropped for having more than `max_buffered` bytes queued |
//! | `closes{code}` | connections that ended with `on_close` (a server's: after opening; a client's: every connect), by the code it got (1005 none, 1006 abnormal); 3000-3999 and 4000-4999 each share one series |

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The HTTP statuses that have a `handshakes` series of their own; every other status
/// is counted under `status="other"`.
pub const HANDSHAKE_STATUSES: [u16; 14] = [
    101, 400, 401, 403, 404, 405, 408, 414, 426, 429, 431, 500, 503, 505,
];

const HANDSHAKE_BUCKETS: usize = HANDSHAKE_STATUSES.len() + 1;

/// Close codes 1000..=1015 one series each, then 3000-3999, 4000-4999, other.
const CLOSE_BUCKETS: usize = 16 + 3;

fn handshake_bucket(status: u16) -> usize {
    HANDSHAKE_STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(HANDSHAKE_STATUSES.len())
}

fn handshake_label(bucket: usize) -> String {
    HANDSHAKE_STATUSES
        .get(bucket)
        .map_or_else(|| "other".to_owned(), u16::to_string)
}

fn close_bucket(code: u16) -> usize {
    match code {
        1000..=1015 => usize::from(code - 1000),
        3000..=3999 => 16,
        4000..=4999 => 17,
        _ => 18,
    }
}

fn close_label(bucket: usize) -> String {
    match bucket {
        0..=15 => (1000 + bucket).to_string(),
        16 => "3xxx".to_owned(),
        17 => "4xxx".to_owned(),
        _ => "other".to_owned(),
    }
}

/// A counter with one writer: its worker's thread.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker calls this: a load and a store, not a
    /// read-modify-write, since no other thread writes.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Subtracts `n` (gauges; never below 0).
    #[inline]
    pub(crate) fn sub(&self, n: u64) {
        self.0
            .store(self.0.load(Relaxed).saturating_sub(n), Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One worker's counters (see the module docs for what each counts). Aligned to 128
/// bytes (two cache lines: the adjacent-line prefetcher pairs them) so that workers do
/// not share lines; the per-message counters come first, in one line.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct WorkerMetrics {
    pub(crate) messages_in: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) connections_open: Counter,
    pub(crate) connections_accepted: Counter,
    pub(crate) backpressure_events: Counter,
    pub(crate) slow_consumer_drops: Counter,
    handshakes: [Counter; HANDSHAKE_BUCKETS],
    closes: [Counter; CLOSE_BUCKETS],
}

impl WorkerMetrics {
    /// A request answered with `status` (101: upgraded).
    pub(crate) fn handshake(&self, status: u16) {
        self.handshakes[handshake_bucket(status)].add(1);
    }

    /// A connection that had opened ended with `code`.
    pub(crate) fn closed(&self, code: u16) {
        self.closes[close_bucket(code)].add(1);
    }

    fn read(&self) -> Counts {
        Counts {
            connections_open: self.connections_open.get(),
            connections_accepted: self.connections_accepted.get(),
            messages_in: self.messages_in.get(),
            messages_out: self.messages_out.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            backpressure_events: self.backpressure_events.get(),
            slow_consumer_drops: self.slow_consumer_drops.get(),
            handshakes: self.handshakes.each_ref().map(Counter::get),
            closes: self.closes.each_ref().map(Counter::get),
        }
    }
}

/// Reads the counters of one server's (or client's) workers, from any thread; cheap to
/// clone. From [`ServerHandle::metrics_reader`](crate::server::ServerHandle::metrics_reader).
#[derive(Debug, Clone)]
pub struct Reader {
    workers: Vec<Arc<WorkerMetrics>>,
}

impl Reader {
    pub(crate) fn new(workers: Vec<Arc<WorkerMetrics>>) -> Reader {
        Reader { workers }
    }

    /// Every worker's counters now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            workers: self.workers.iter().map(|w| w.read()).collect(),
        }
    }
}

/// The counters of one worker (or, from [`Snapshot::total`], of all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// Connections held now, in any phase (a gauge).
    pub connections_open: u64,
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// Data messages received.
    pub messages_in: u64,
    /// Data messages queued for sending.
    pub messages_out: u64,
    /// Bytes read from the sockets.
    pub bytes_in: u64,
    /// Bytes written to the sockets.
    pub bytes_out: u64,
    /// Times a connection crossed its backpressure limit.
    pub backpressure_events: u64,
    /// Connections dropped for exceeding `max_buffered`.
    pub slow_consumer_drops: u64,
    handshakes: [u64; HANDSHAKE_BUCKETS],
    closes: [u64; CLOSE_BUCKETS],
}

impl Counts {
    /// Requests answered with `status`. A status not in [`HANDSHAKE_STATUSES`] reads
    /// the count that every such status shares.
    pub fn handshakes(&self, status: u16) -> u64 {
        self.handshakes[handshake_bucket(status)]
    }

    /// Every handshake series: its `status` label (`"101"` ... `"other"`) and count.
    pub fn handshake_series(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.handshakes
            .iter()
            .enumerate()
            .map(|(i, &n)| (handshake_label(i), n))
    }

    /// Connections that ended with close code `code`. Codes 1000-1015 have a count
    /// each; 3000-3999 share one, 4000-4999 another, every other code a third.
    pub fn closes(&self, code: u16) -> u64 {
        self.closes[close_bucket(code)]
    }

    /// Every close series: its `code` label (`"1000"` ... `"1015"`, `"3xxx"`,
    /// `"4xxx"`, `"other"`) and count.
    pub fn close_series(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.closes
            .iter()
            .enumerate()
            .map(|(i, &n)| (close_label(i), n))
    }

    fn add(&mut self, o: &Counts) {
        self.connections_open += o.connections_open;
        self.connections_accepted += o.connections_accepted;
        self.messages_in += o.messages_in;
        self.messages_out += o.messages_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.backpressure_events += o.backpressure_events;
        self.slow_consumer_drops += o.slow_consumer_drops;
        for (a, b) in self.handshakes.iter_mut().zip(&o.handshakes) {
            *a += b;
        }
        for (a, b) in self.closes.iter_mut().zip(&o.closes) {
            *a += b;
        }
    }
}

/// Every worker's counters at one reading.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// By worker index.
    pub workers: Vec<Counts>,
}

/// One series without labels besides the worker: its name, type, help, and value.
struct Plain {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    get: fn(&Counts) -> u64,
}

const PLAIN: [Plain; 8] = [
    Plain {
        name: "soliton_connections_open",
        kind: "gauge",
        help: "Connections the worker holds now (handshake, open or closing).",
        get: |c| c.connections_open,
    },
    Plain {
        name: "soliton_connections_accepted_total",
        kind: "counter",
        help: "TCP connections accepted.",
        get: |c| c.connections_accepted,
    },
    Plain {
        name: "soliton_messages_in_total",
        kind: "counter",
        help: "Data messages received.",
        get: |c| c.messages_in,
    },
    Plain {
        name: "soliton_messages_out_total",
        kind: "counter",
        help: "Data messages queued for sending (a publish counts once per receiver).",
        get: |c| c.messages_out,
    },
    Plain {
        name: "soliton_bytes_in_total",
        kind: "counter",
        help: "Bytes read from the sockets.",
        get: |c| c.bytes_in,
    },
    Plain {
        name: "soliton_bytes_out_total",
        kind: "counter",
        help: "Bytes written to the sockets.",
        get: |c| c.bytes_out,
    },
    Plain {
        name: "soliton_backpressure_events_total",
        kind: "counter",
        help: "Times a connection crossed its backpressure limit.",
        get: |c| c.backpressure_events,
    },
    Plain {
        name: "soliton_slow_consumer_drops_total",
        kind: "counter",
        help: "Connections dropped for having more than max_buffered bytes queued.",
        get: |c| c.slow_consumer_drops,
    },
];

impl Snapshot {
    /// The sum over the workers.
    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for w in &self.workers {
            t.add(w);
        }
        t
    }

    /// The Prometheus text exposition format (0.0.4): every series with a
    /// `worker="i"` label; handshakes with `status`, closes with `code`.
    pub fn to_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::with_capacity(4096);
        for Plain {
            name,
            kind,
            help,
            get,
        } in PLAIN
        {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, w) in self.workers.iter().enumerate() {
                let _ = writeln!(s, "{name}{{worker=\"{i}\"}} {}", get(w));
            }
        }
        let name = "soliton_handshakes_total";
        let _ = writeln!(
            s,
            "# HELP {name} Requests answered, by HTTP status (101: upgraded).\n# TYPE {name} counter"
        );
        for (i, w) in self.workers.iter().enumerate() {
            for (status, n) in w.handshake_series() {
                let _ = writeln!(s, "{name}{{worker=\"{i}\",status=\"{status}\"}} {n}");
            }
        }
        let name = "soliton_closes_total";
        let _ = writeln!(
            s,
            "# HELP {name} Connections ended after opening, by close code.\n# TYPE {name} counter"
        );
        for (i, w) in self.workers.iter().enumerate() {
            for (code, n) in w.close_series() {
                let _ = writeln!(s, "{name}{{worker=\"{i}\",code=\"{code}\"}} {n}");
            }
        }
        s
    }
}

/// An HTTP endpoint serving `GET /metrics`, from [`serve`].
#[derive(Debug)]
#[must_use = "dropping it leaves it serving; call stop() to end it"]
pub struct Exporter {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Exporter {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving; returns once the thread ended (at once, leaving it to end at its
    /// next connection, if it cannot be woken).
    pub fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            let _ = self.thread.join();
        }
    }
}

/// How long the exporter waits for a request, or for a response to be taken.
const EXPORT_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest request head the exporter reads.
const EXPORT_MAX_HEAD: usize = 8 * 1024;

/// Serves `GET /metrics` on `addr` from a thread of its own: `200` with what `render`
/// returns (`text/plain; version=0.0.4`), `404` for another path, `405` for another
/// method. One connection at a time, each closed after its answer; a request must
/// arrive within 2 s and fit in 8 KiB. A panic in `render` answers `500`.
pub fn serve<F>(addr: SocketAddr, render: F) -> io::Result<Exporter>
where
    F: Fn() -> String + Send + 'static,
{
    let listener = TcpListener::bind(addr)?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("soliton-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                match conn {
                    Ok(s) => {
                        if let Err(e) = answer(s, &render) {
                            tracing::debug!(error = %e, "metrics: request failed");
                        }
                    }
                    Err(e) => {
                        // out of descriptors, say: do not spin
                        tracing::warn!(error = %e, "metrics: accept failed");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(Exporter { addr, stop, thread })
}

/// Reads one request head from `s` and answers it.
fn answer<F: Fn() -> String>(mut s: TcpStream, render: &F) -> io::Result<()> {
    s.set_read_timeout(Some(EXPORT_IO_TIMEOUT))?;
    s.set_write_timeout(Some(EXPORT_IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > EXPORT_MAX_HEAD {
            return respond(&mut s, "431 Request Header Fields Too Large", "", false);
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let head_only = method == b"HEAD";
    if method != b"GET" && !head_only {
        return respond(&mut s, "405 Method Not Allowed", "GET only\n", false);
    }
    if path != b"/metrics" {
        return respond(&mut s, "404 Not Found", "try /metrics\n", head_only);
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(render)) {
        Ok(body) => respond(&mut s, "200 OK", &body, head_only),
        Err(_) => respond(&mut s, "500 Internal Server Error", "", false),
    }
}

fn respond(s: &mut TcpStream, status: &str, body: &str, head_only: bool) -> io::Result<()> {
    let ctype = if status.starts_with("200") {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    s.write_all(&out)?;
    s.flush()?;
    let _ = s.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_their_labels() {
        for &s in &HANDSHAKE_STATUSES {
            assert_eq!(handshake_label(handshake_bucket(s)), s.to_string());
        }
        assert_eq!(handshake_label(handshake_bucket(302)), "other");
        for code in 1000..=1015 {
            assert_eq!(close_label(close_bucket(code)), code.to_string());
        }
        assert_eq!(close_label(close_bucket(3001)), "3xxx");
        assert_eq!(close_label(close_bucket(4999)), "4xxx");
        assert_eq!(close_label(close_bucket(1016)), "other");
        assert_eq!(close_label(close_bucket(2999)), "other");
        assert_eq!(close_label(close_bucket(5000)), "other");
    }

    #[test]
    fn one_writer_counters_add_and_a_gauge_stays_at_or_above_zero() {
        let m = WorkerMetrics::default();
        m.messages_in.add(3);
        m.messages_in.add(4);
        m.connections_open.add(1);
        m.connections_open.sub(1);
        m.connections_open.sub(1);
        m.handshake(101);
        m.handshake(302);
        m.handshake(303);
        m.closed(1000);
        m.closed(4001);
        let c = m.read();
        assert_eq!(c.messages_in, 7);
        assert_eq!(c.connections_open, 0);
        assert_eq!(c.handshakes(101), 1);
        assert_eq!(c.handshakes(302), 2, "302 and 303 share the other bucket");
        assert_eq!(c.closes(1000), 1);
        assert_eq!(c.closes(4001), 1);
        assert_eq!(c.closes(1001), 0);
    }

    #[test]
    fn the_block_is_cache_line_aligned() {
        assert_eq!(align_of::<WorkerMetrics>(), 128);
        assert_eq!(size_of::<WorkerMetrics>() % 128, 0);
    }

    fn two_workers() -> Snapshot {
        let a = WorkerMetrics::default();
        let b = WorkerMetrics::default();
        a.messages_in.add(5);
        b.messages_in.add(7);
        a.connections_open.add(2);
        a.handshake(101);
        b.handshake(403);
        b.closed(1000);
        b.closed(4001);
        Reader::new(vec![Arc::new(a), Arc::new(b)]).snapshot()
    }

    #[test]
    fn total_sums_the_workers() {
        let t = two_workers().total();
        assert_eq!(t.messages_in, 12);
        assert_eq!(t.connections_open, 2);
        assert_eq!(t.handshakes(101), 1);
        assert_eq!(t.handshakes(403), 1);
        assert_eq!(t.closes(1000), 1);
        assert_eq!(t.closes(4000), 1);
    }

    #[test]
    fn prometheus_text_has_help_type_and_labelled_samples() {
        let text = two_workers().to_prometheus();
        assert!(text.ends_with('\n'));
        assert!(text.contains(
            "# HELP soliton_messages_in_total Data messages received.\n\
             # TYPE soliton_messages_in_total counter\n\
             soliton_messages_in_total{worker=\"0\"} 5\n\
             soliton_messages_in_total{worker=\"1\"} 7\n"
        ));
        assert!(text.contains("# TYPE soliton_connections_open gauge\n"));
        assert!(text.contains("soliton_connections_open{worker=\"0\"} 2\n"));
        assert!(text.contains("soliton_handshakes_total{worker=\"0\",status=\"101\"} 1\n"));
        assert!(text.contains("soliton_handshakes_total{worker=\"1\",status=\"403\"} 1\n"));
        assert!(text.contains("soliton_handshakes_total{worker=\"1\",status=\"other\"} 0\n"));
        assert!(text.contains("soliton_closes_total{worker=\"1\",code=\"1000\"} 1\n"));
        assert!(text.contains("soliton_closes_total{worker=\"1\",code=\"4xxx\"} 1\n"));
        // every line is a comment or `name{labels} value`, every name declared once
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("name{labels} value");
            value.parse::<u64>().expect("an integer value");
            let (name, labels) = series.split_once('{').expect("labels");
            assert!(declared.contains(name), "{name} sampled before its TYPE");
            assert!(labels.ends_with('}'));
            for pair in labels.trim_end_matches('}').split(',') {
                let (k, v) = pair.split_once('=').expect("k=v");
                assert!(k.chars().all(|c| c.is_ascii_lowercase()));
                assert!(v.starts_with('"') && v.ends_with('"') && v.len() >= 3);
            }
        }
        assert_eq!(declared.len(), 10);
    }

    #[test]
    fn the_exporter_answers_metrics_404_and_405_then_stops() {
        let exp = serve(SocketAddr::from(([127, 0, 0, 1], 0)), || "x 1\n".into()).expect("bind");
        let get = |req: &str| {
            let mut s = TcpStream::connect(exp.local_addr()).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            s.write_all(req.as_bytes()).expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            out
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.ends_with("\r\n\r\nx 1\n"), "{ok}");
        let head = get("HEAD /metrics?x=1 HTTP/1.1\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"));
        assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
        // a client that says nothing and goes: the next one is still served
        drop(TcpStream::connect(exp.local_addr()).expect("connect"));
        assert!(get("GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
        exp.stop();
    }

    #[test]
    fn a_panicking_renderer_answers_500_and_the_exporter_goes_on() {
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let exp = serve(SocketAddr::from(([127, 0, 0, 1], 0)), move || {
            if c.fetch_add(1, Relaxed) == 0 {
                panic!("render failed");
            }
            "ok 1\n".into()
        })
        .expect("bind");
        for want in ["HTTP/1.1 500 ", "HTTP/1.1 200 "] {
            let mut s = TcpStream::connect(exp.local_addr()).expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            assert!(out.starts_with(want), "{out}");
        }
        exp.stop();
    }
}
