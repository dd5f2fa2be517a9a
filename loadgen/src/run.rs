//! The controller: starts the workers, moves them through the phases (connect, warm-up,
//! measured window, drain, close), prints the progress line, samples CPU and RSS, and
//! turns the workers' figures into a [`Report`].

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::procfs::{self as sys, now_ns};
use crate::report::{
    cpu_weight, encode_hist, fmt_n, fmt_rate, fmt_us, Conns, Cpu, Fanout, FanoutNode, Hold,
    HoldStep, Messages, Report, Summary, Tick, FORMAT,
};
use crate::stats::{Shared, Stats, NEVER};
use crate::target::{Nodes, Target};
use crate::worker::{self, Mode, Plan, STAMP};
use soliton::driver as engine;

/// What a run does.
#[derive(Clone, Debug)]
pub(crate) enum Kind {
    Echo { inflight: u32 },
    Rate { rate: f64 },
    Connect { close: bool, concurrency: usize },
    Hold { steps: Vec<usize>, settle: Duration },
    Fanout { rate: f64, publishers: usize },
    Flood { window: usize },
}

/// A run's settings.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) scenario: String,
    pub(crate) target: Arc<Target>,
    /// Fanout: where subscribers connect, if not to `target` (spread over these).
    pub(crate) subscriber_targets: Arc<Vec<Target>>,
    /// Fanout across nodes: the URLs whose deliveries are counted apart (none without
    /// subscriber targets).
    pub(crate) nodes: Arc<Nodes>,
    pub(crate) sources: Arc<Vec<IpAddr>>,
    pub(crate) threads: usize,
    pub(crate) cores: Option<Vec<usize>>,
    /// Connections (connect: handshakes; fanout: publishers + subscribers).
    pub(crate) conns: usize,
    pub(crate) kind: Kind,
    pub(crate) size: usize,
    pub(crate) text: bool,
    pub(crate) payload: worker::Payload,
    /// --deflate dedicated: keep context where the server allows it.
    pub(crate) dedicated: bool,
    pub(crate) ramp: f64,
    pub(crate) max_pending: usize,
    pub(crate) duration: Duration,
    pub(crate) warmup: Duration,
    pub(crate) drain: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) stall_timeout: Duration,
    pub(crate) close_timeout: Duration,
    /// Open-loop sends are batched per tick (zero: each at its own time; `None`: auto,
    /// see [`auto_tick`]).
    pub(crate) tick: Option<Duration>,
    /// rate, fanout, slo with `--rx-time kernel`: answers timed by the kernel's receive
    /// time stamps, and the workers wake once per send (or tick) instead of once per
    /// answer.
    pub(crate) rx_kernel: bool,
    pub(crate) server_pid: Option<u32>,
    pub(crate) progress: bool,
    /// The workers' socket I/O (resolved: never `Auto`).
    pub(crate) io: soliton::server::Backend,
    pub(crate) config: BTreeMap<String, serde_json::Value>,
}

/// Sends per automatic tick.
const TICK_BURST: f64 = 8.0;
/// Longest automatic tick, ns.
const TICK_MAX: u64 = 1_000_000;
/// Shortest automatic tick, ns: below it sends go at their own times, so that the load
/// stays smooth. (Measured at 40,000 msg/s on one thread, epoll, answers timed by the
/// kernel: a 200 µs tick halves the load generator's CPU per message, 18.5 -> 9.3 µs,
/// and cuts the server's by 30 %, but the bursts of 8 double the median latency it
/// measures, 40 -> 91 µs. `--tick` makes that trade where wanted.)
const TICK_MIN: u64 = 250_000;

/// `--tick auto` for a worker sending `rate` messages/s: the time of 8 of its sends, at
/// most 1 ms; none (every send at its own time) when that is under 250 µs.
pub(crate) fn auto_tick(rate: f64) -> u64 {
    if rate <= 0.0 {
        return 0;
    }
    let t = ((TICK_BURST / rate * 1e9) as u64).min(TICK_MAX);
    if t < TICK_MIN {
        0
    } else {
        t
    }
}

fn ns(d: Duration) -> u64 {
    d.as_nanos() as u64
}

/// CPU readings at one instant.
#[derive(Clone, Debug, Default)]
struct CpuSample {
    at: u64,
    load: f64,
    load_user: f64,
    load_threads: Vec<(u32, f64)>,
    server: Option<f64>,
    server_threads: Vec<(u32, f64)>,
}

fn sample_cpu(shared: &Shared, server_pid: Option<u32>) -> CpuSample {
    let me = std::process::id();
    let tids: Vec<u32> = shared
        .workers
        .iter()
        .map(|w| w.tid.load(Relaxed) as u32)
        .collect();
    let load_threads = sys::thread_cpus(me)
        .into_iter()
        .filter(|(t, _)| tids.contains(t))
        .collect();
    let (user, system) = sys::self_cpu();
    CpuSample {
        at: now_ns(),
        load: user + system,
        load_user: user,
        load_threads,
        server: server_pid.and_then(sys::process_cpu),
        server_threads: server_pid.map(sys::thread_cpus).unwrap_or_default(),
    }
}

/// Busiest thread's share of a core between two samples.
fn busiest(a: &[(u32, f64)], b: &[(u32, f64)], secs: f64) -> f64 {
    b.iter()
        .map(|(t, v1)| {
            let v0 = a.iter().find(|(u, _)| u == t).map_or(0.0, |x| x.1);
            (v1 - v0) / secs
        })
        .fold(0.0, f64::max)
}

/// The progress line and the timeline.
struct Progress {
    enabled: bool,
    tty: bool,
    start: u64,
    next: u64,
    last_at: u64,
    last_sent: u64,
    last_recv: u64,
    scenario: String,
    timeline: Vec<Tick>,
    printed: bool,
    /// The server's highest RSS seen while waiting (--server-pid).
    rss: Option<sys::RssProbe>,
    rss_peak: Option<u64>,
}

impl Progress {
    fn new(enabled: bool, scenario: &str) -> Progress {
        let now = now_ns();
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
            start: now,
            next: now + 1_000_000_000,
            last_at: now,
            last_sent: 0,
            last_recv: 0,
            scenario: scenario.to_string(),
            timeline: Vec::new(),
            printed: false,
            rss: None,
            rss_peak: None,
        }
    }

    /// The server's RSS now (--server-pid), through the probe the peak uses.
    fn rss_now(&self) -> Option<u64> {
        self.rss.as_ref().and_then(sys::RssProbe::read)
    }

    fn sample_rss(&mut self) {
        if let Some(r) = self.rss_now() {
            self.rss_peak = Some(self.rss_peak.map_or(r, |p| p.max(r)));
        }
    }

    fn maybe(&mut self, shared: &Shared, phase: &str) {
        let now = now_ns();
        if now < self.next {
            return;
        }
        self.next += 1_000_000_000;
        if self.next < now {
            self.next = now + 1_000_000_000;
        }
        let secs = (now - self.last_at) as f64 / 1e9;
        let sent = shared.sum(|w| &w.sent);
        let recv = shared.sum(|w| &w.received);
        let open = shared.sum(|w| &w.open);
        let errors = shared.sum(|w| &w.errors);
        let hs = shared.sum(|w| &w.handshakes);
        let h = shared.take_interval();
        let tick = Tick {
            t: (now - self.start) as f64 / 1e9,
            open,
            sent_per_s: (sent - self.last_sent) as f64 / secs,
            received_per_s: (recv - self.last_recv) as f64 / secs,
            p50_us: h.value_at_quantile(0.5) as f64 / 1000.0,
            p99_us: h.value_at_quantile(0.99) as f64 / 1000.0,
            errors,
        };
        self.last_at = now;
        self.last_sent = sent;
        self.last_recv = recv;
        if self.enabled {
            let msg = if self.scenario == "connect" || self.scenario == "hold" {
                format!(
                    "[{:>5.1}s] {:<8} open {}  handshakes {}  errors {}",
                    tick.t,
                    phase,
                    fmt_n(open),
                    fmt_n(hs),
                    fmt_n(errors)
                )
            } else {
                format!(
                    "[{:>5.1}s] {:<8} open {}  {} msg/s  p50 {}  p99 {}  errors {}",
                    tick.t,
                    phase,
                    fmt_n(open),
                    fmt_rate(tick.received_per_s),
                    fmt_us(tick.p50_us),
                    fmt_us(tick.p99_us),
                    fmt_n(errors)
                )
            };
            let mut e = std::io::stderr().lock();
            if self.tty {
                let _ = write!(e, "\r\x1b[K{msg}");
            } else {
                let _ = writeln!(e, "{msg}");
            }
            let _ = e.flush();
            self.printed = true;
        }
        self.timeline.push(tick);
    }

    fn end(&mut self) {
        if self.enabled && self.tty && self.printed {
            eprintln!();
        }
    }
}

/// Sleeps in small steps until `done()` or `until`, keeping the progress line going.
fn wait(
    p: &mut Progress,
    shared: &Shared,
    phase: &str,
    until: u64,
    mut done: impl FnMut(&Shared) -> bool,
) {
    loop {
        p.maybe(shared, phase);
        p.sample_rss();
        let now = now_ns();
        if now >= until || done(shared) || shared.all_done() {
            return;
        }
        let step = (until - now).min(20_000_000);
        std::thread::sleep(Duration::from_nanos(step));
    }
}

/// Raises RLIMIT_NOFILE for `need` descriptors; says clearly when that is not allowed.
pub(crate) fn ensure_fds(need: u64) -> Option<String> {
    let got = engine::raise_nofile_limit(need);
    if got >= need {
        return None;
    }
    let (_, hard) = engine::nofile_limit();
    Some(format!(
        "about {need} file descriptors are needed but the limit is {got} (hard limit {hard}, \
         which only root can raise: ulimit -Hn, LimitNOFILE= in systemd, limits.conf); \
         connections past it fail as 'fd-limit'. Run several soliton-load processes with \
         fewer connections each and combine their --json with `soliton-load merge`."
    ))
}

/// Warns when one source address cannot reach `conns` connections to one server.
fn port_warning(conns: usize, sources: usize) -> Option<String> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().filter_map(|v| v.parse::<usize>().ok());
    let (lo, hi) = (it.next()?, it.next()?);
    let ports = hi.saturating_sub(lo) + 1;
    let per = ports * sources.max(1);
    (conns > per).then(|| {
        format!(
            "{conns} connections to one server address need more local ports than \
             {} source address(es) give ({ports} each, range {lo}-{hi}): add addresses \
             with --source, e.g. --source 127.0.0.2-127.0.0.60 on loopback",
            sources.max(1)
        )
    })
}

/// Which workers get which share: connections with global index `g` go to worker
/// `g % threads`; returns how many indices below `n` worker `w` gets.
fn share(n: usize, threads: usize, w: usize) -> usize {
    if w >= n {
        0
    } else {
        (n - w).div_ceil(threads)
    }
}

/// Runs one scenario to the end.
pub(crate) fn run(spec: &Spec) -> Report {
    sys::init_clock();
    let threads = spec.threads.max(1);
    let shared = Arc::new(Shared::new(threads));
    let mut notes = Vec::new();
    if spec.size < STAMP
        && matches!(
            spec.kind,
            Kind::Echo { .. } | Kind::Rate { .. } | Kind::Fanout { .. } | Kind::Flood { .. }
        )
    {
        notes.push(format!(
            "messages of {} B were sent as {STAMP} B: every payload carries a {STAMP}-byte stamp",
            spec.size
        ));
    }
    let need = match spec.kind {
        Kind::Connect {
            close: true,
            concurrency,
        } => concurrency.min(spec.conns) as u64 + 64,
        Kind::Hold { ref steps, .. } => {
            steps
                .iter()
                .copied()
                .max()
                .unwrap_or(spec.conns)
                .max(spec.conns) as u64
                + 64
        }
        _ => spec.conns as u64 + 64,
    };
    if let Some(w) = ensure_fds(need) {
        eprintln!("soliton-load: warning: {w}");
        notes.push(w);
    }
    if !matches!(spec.kind, Kind::Connect { close: true, .. }) {
        if let Some(w) = port_warning(need as usize - 64, spec.sources.len()) {
            eprintln!("soliton-load: warning: {w}");
            notes.push(w);
        }
    }
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);

    // workers
    let mut plans = Vec::new();
    for w in 0..threads {
        let mode = match spec.kind {
            Kind::Echo { inflight } => Mode::Echo { inflight },
            Kind::Rate { rate } => Mode::Rate {
                rate: rate * share(spec.conns, threads, w) as f64 / spec.conns.max(1) as f64,
            },
            Kind::Connect { close, .. } => Mode::Connect { close },
            Kind::Hold { .. } => Mode::Hold,
            Kind::Fanout { rate, publishers } => Mode::Fanout {
                rate: rate * share(publishers, threads, w) as f64 / publishers.max(1) as f64,
                publishers,
            },
            Kind::Flood { .. } => Mode::Flood,
        };
        let max_pending = match spec.kind {
            Kind::Connect { concurrency, .. } => concurrency.div_ceil(threads).max(1),
            _ => spec.max_pending.div_ceil(threads).max(1),
        };
        let plan = Plan {
            index: w,
            threads,
            core: spec.cores.as_ref().map(|c| c[w % c.len()]),
            target: spec.target.clone(),
            subscriber_targets: spec.subscriber_targets.clone(),
            nodes: spec.nodes.clone(),
            sources: spec.sources.clone(),
            mode,
            size: spec.size,
            text: spec.text,
            payload: spec.payload,
            dedicated: spec.dedicated,
            ramp: spec.ramp / threads as f64,
            max_pending,
            connect_timeout: ns(spec.connect_timeout),
            stall_timeout: ns(spec.stall_timeout),
            close_timeout: ns(spec.close_timeout),
            tick: match (spec.tick, mode) {
                (Some(d), _) => ns(d),
                (None, Mode::Rate { rate } | Mode::Fanout { rate, .. }) => auto_tick(rate),
                (None, _) => 0,
            },
            rx_kernel: spec.rx_kernel,
            conns: share(spec.conns, threads, w),
            window: match spec.kind {
                Kind::Flood { window } => Some(window),
                _ => None,
            },
            shared: shared.clone(),
        };
        plans.push(plan);
    }
    let running = match worker::start(plans, spec.io) {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("soliton-load: cannot start the workers: {e}");
            notes.push(format!("the workers did not start: {e}"));
            for w in &shared.workers {
                w.done.store(true, Relaxed);
            }
            None
        }
    };
    // wait for the workers to publish their thread ids
    let t0 = now_ns();
    while shared
        .workers
        .iter()
        .any(|w| w.tid.load(Relaxed) == 0 && !w.done.load(Relaxed))
        && now_ns() - t0 < 1_000_000_000
    {
        std::thread::sleep(Duration::from_millis(1));
    }

    let mut p = Progress::new(spec.progress, &spec.scenario);
    p.rss = spec.server_pid.and_then(sys::RssProbe::open);
    let rss_start = p.rss_now();
    let ramp_time = if spec.ramp > 0.0 {
        spec.conns as f64 / spec.ramp
    } else {
        0.0
    };
    let connect_budget = ns(spec.connect_timeout) + (ramp_time * 1e9) as u64 + 1_000_000_000;
    let mut hold = None;
    let (c0, c1, window_ns, warmup_ns);
    // the server's RSS at the end of the measured window
    let mut rss_end = None;
    let settled =
        |n: usize| move |s: &Shared| (s.sum(|w| &w.open) + s.sum(|w| &w.failed)) as usize >= n;
    match &spec.kind {
        Kind::Echo { .. } | Kind::Rate { .. } | Kind::Fanout { .. } | Kind::Flood { .. } => {
            shared.target_conns.store(spec.conns, Relaxed);
            wait(
                &mut p,
                &shared,
                "connect",
                now_ns() + connect_budget,
                settled(spec.conns),
            );
            let nothing = shared.sum(|w| &w.open) == 0;
            if nothing {
                notes.push("no connection opened: the run ended without sending".into());
            }
            let go = now_ns() + 1_000_000;
            let (ms, me) = if nothing {
                (go, go)
            } else {
                let ms = go + ns(spec.warmup);
                (ms, ms + ns(spec.duration))
            };
            shared.measure_start.store(ms, Relaxed);
            shared.measure_end.store(me, Relaxed);
            shared.go.store(go, Relaxed);
            wait(&mut p, &shared, "warm-up", ms, |_| false);
            c0 = sample_cpu(&shared, spec.server_pid);
            wait(&mut p, &shared, "run", me, |_| false);
            c1 = sample_cpu(&shared, spec.server_pid);
            rss_end = p.rss_now();
            // drain: the answers to the last messages
            let drain_end = now_ns() + ns(spec.drain);
            if matches!(spec.kind, Kind::Fanout { .. }) {
                let mut last = (shared.sum(|w| &w.received), now_ns());
                wait(&mut p, &shared, "drain", drain_end, move |s| {
                    let r = s.sum(|w| &w.received);
                    let now = now_ns();
                    if r != last.0 {
                        last = (r, now);
                    }
                    now - last.1 > 500_000_000
                });
            } else {
                // counters published before the window's last sends could say 0
                // while those are still out: only figures from after the window count
                wait(&mut p, &shared, "drain", drain_end, |s| {
                    s.all_published_since(me) && s.sum(|w| &w.outstanding) == 0
                });
            }
            window_ns = me - ms;
            warmup_ns = ms - go;
        }
        Kind::Connect { close, .. } => {
            let start = now_ns();
            shared.measure_start.store(start, Relaxed);
            shared.go.store(start, Relaxed);
            c0 = sample_cpu(&shared, spec.server_pid);
            shared.target_conns.store(spec.conns, Relaxed);
            let until = start + ns(spec.duration);
            let n = spec.conns as u64;
            if *close {
                wait(&mut p, &shared, "connect", until, |s| {
                    s.sum(|w| &w.attempted) >= n && s.sum(|w| &w.live) == 0
                });
            } else {
                wait(&mut p, &shared, "connect", until, settled(spec.conns));
            }
            let end = now_ns();
            shared.measure_end.store(end, Relaxed);
            c1 = sample_cpu(&shared, spec.server_pid);
            window_ns = end - start;
            warmup_ns = 0;
        }
        Kind::Hold { steps, settle } => {
            let baseline = p.rss_now();
            shared.go.store(now_ns(), Relaxed);
            let mut rows = Vec::new();
            let steps = if steps.is_empty() {
                vec![spec.conns]
            } else {
                steps.clone()
            };
            for &n in &steps {
                shared.target_conns.store(n, Relaxed);
                let budget = ns(spec.connect_timeout)
                    + if spec.ramp > 0.0 {
                        (n as f64 / spec.ramp * 1e9) as u64
                    } else {
                        0
                    }
                    + 1_000_000_000;
                wait(&mut p, &shared, "connect", now_ns() + budget, settled(n));
                wait(&mut p, &shared, "settle", now_ns() + ns(*settle), |_| false);
                let held = shared.sum(|w| &w.open);
                let rss = p.rss_now();
                let per = match (rss, baseline) {
                    (Some(r), Some(b)) if held > 0 => Some((r as f64 - b as f64) / held as f64),
                    _ => None,
                };
                rows.push(HoldStep {
                    target: n as u64,
                    held,
                    rss,
                    bytes_per_conn: per,
                });
            }
            let marginal = match (rows.first(), rows.last()) {
                (Some(a), Some(b)) if b.held > a.held => match (a.rss, b.rss) {
                    (Some(ra), Some(rb)) => {
                        Some((rb as f64 - ra as f64) / (b.held - a.held) as f64)
                    }
                    _ => None,
                },
                _ => None,
            };
            let start = now_ns();
            shared.measure_start.store(start, Relaxed);
            c0 = sample_cpu(&shared, spec.server_pid);
            wait(&mut p, &shared, "hold", start + ns(spec.duration), |_| {
                false
            });
            let end = now_ns();
            shared.measure_end.store(end, Relaxed);
            c1 = sample_cpu(&shared, spec.server_pid);
            hold = Some(Hold {
                baseline_rss: baseline,
                steps: rows,
                marginal_bytes_per_conn: marginal,
                held_at_end: shared.sum(|w| &w.open),
            });
            window_ns = end - start;
            warmup_ns = 0;
        }
    }
    // close every connection; the workers end when all are closed or at the deadline
    // (closing many connections takes the server a while: 100 µs more per open one)
    let now = now_ns();
    let open = shared.sum(|w| &w.open);
    let deadline = now + ns(spec.close_timeout) + 500_000_000 + open * 100_000;
    shared.deadline.store(deadline, Relaxed);
    shared.close_at.store(now, Relaxed);
    let mut total = Stats::new();
    match running {
        Some(r) => {
            // the progress line goes on while the workers close
            let mut p2 = std::mem::replace(&mut p, Progress::new(false, ""));
            let peak = p2.rss_peak;
            p2.rss = None;
            wait(&mut p2, &shared, "closing", deadline, |_| false);
            p2.rss_peak = peak;
            p = p2;
            for s in r.finish(deadline) {
                total.merge(&s);
            }
        }
        None => total.error(crate::stats::ErrKind::Io, 1),
    }
    p.maybe(&shared, "closed");
    p.end();
    build_report(
        spec,
        total,
        Window {
            window_ns,
            warmup_ns,
            c0,
            c1,
            rss: (rss_start, rss_end, p.rss_peak),
        },
        hold,
        p.timeline,
        notes,
        started_unix,
    )
}

struct Window {
    window_ns: u64,
    warmup_ns: u64,
    c0: CpuSample,
    c1: CpuSample,
    /// The server's RSS before the run, at the end of the window, and the highest seen
    /// until then.
    rss: (Option<u64>, Option<u64>, Option<u64>),
}

fn build_report(
    spec: &Spec,
    s: Stats,
    w: Window,
    hold: Option<Hold>,
    timeline: Vec<Tick>,
    notes: Vec<String>,
    started_unix: f64,
) -> Report {
    let secs = (w.window_ns as f64 / 1e9).max(1e-9);
    let size = spec.size.max(STAMP) as u64;
    let offered = match spec.kind {
        Kind::Rate { rate } | Kind::Fanout { rate, .. } => Some(rate),
        _ => None,
    };
    let handshakes_per_s = if spec.scenario == "connect" {
        let span = s
            .last_handshake
            .saturating_sub(s.first_attempt.min(s.last_handshake));
        if s.handshakes > 0 && span > 0 && s.first_attempt != NEVER {
            s.handshakes as f64 / (span as f64 / 1e9)
        } else {
            0.0
        }
    } else {
        0.0
    };
    let mut r = Report {
        tool: "soliton-load".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        format: FORMAT,
        scenario: spec.scenario.clone(),
        url: spec.target.url.clone(),
        started_unix,
        runs: 1,
        config: spec.config.clone(),
        window_s: secs,
        warmup_s: w.warmup_ns as f64 / 1e9,
        connections: Conns {
            target: spec.conns as u64,
            attempts: s.attempts,
            handshakes: s.handshakes,
            handshakes_in_window: s.handshakes_window,
            tls_resumed: s.tls_resumed,
            tls: spec.target.req.is_secure(),
            handshakes_per_s,
            open_at_end: s.open_at_close,
            clean_closes: s.clean_closes,
            connect_us: Summary::of(&s.connect),
            connect_hist: encode_hist(&s.connect),
        },
        messages: Messages {
            size,
            text: spec.text,
            sent: s.sent,
            received: s.received,
            sent_total: s.sent_total,
            received_total: s.received_total,
            bytes_sent: s.bytes_sent,
            bytes_received: s.bytes_received,
            sent_per_s: s.sent as f64 / secs,
            received_per_s: s.received as f64 / secs,
            mb_per_s_out: s.bytes_sent as f64 / secs / 1e6,
            mb_per_s_in: s.bytes_received as f64 / secs / 1e6,
            offered_per_s: offered,
            deflate: (s.deflate_wire > 0).then(|| crate::report::Deflate {
                payload_bytes: s.deflate_payload,
                wire_bytes: s.deflate_wire,
                ratio: s.deflate_payload as f64 / s.deflate_wire as f64,
            }),
        },
        latency_us: Summary::of(&s.latency),
        latency_hist: encode_hist(&s.latency),
        errors: s.errors.iter().map(|(k, v)| (k.name(), *v)).collect(),
        errors_total: s.errors_total(),
        cpu: Cpu::default(),
        hold,
        fanout: None,
        slo: None,
        timeline,
        notes,
    };
    if let Kind::Fanout { publishers, .. } = spec.kind {
        let subs = spec.nodes.subscribers(spec.conns - publishers);
        let nodes = spec
            .nodes
            .urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let (received, latency) = s
                    .nodes
                    .get(i)
                    .map_or((0, None), |n| (n.received, Some(&n.latency)));
                let empty = crate::stats::new_hist();
                let h = latency.unwrap_or(&empty);
                FanoutNode {
                    url: url.clone(),
                    publishers: if i == 0 { publishers as u64 } else { 0 },
                    subscribers: subs[i],
                    deliveries: received,
                    deliveries_per_s: received as f64 / secs,
                    latency_us: Summary::of(h),
                    latency_hist: encode_hist(h),
                }
            })
            .collect();
        r.fanout = Some(Fanout {
            publishers: publishers as u64,
            subscribers: (spec.conns - publishers) as u64,
            published: s.sent,
            delivered: s.received,
            deliveries_per_message: s.received as f64 / s.sent.max(1) as f64,
            delivered_per_s: s.received as f64 / secs,
            nodes,
        });
    }
    // CPU over the window
    let csecs = ((w.c1.at - w.c0.at) as f64 / 1e9).max(1e-9);
    let load_s = (w.c1.load - w.c0.load).max(0.0);
    let weight = cpu_weight(&r);
    let per = |cpu: f64| (weight > 0).then(|| cpu * 1e6 / weight as f64);
    let load_busy = busiest(&w.c0.load_threads, &w.c1.load_threads, csecs);
    let load_user_s = (w.c1.load_user - w.c0.load_user).max(0.0);
    let mut cpu = Cpu {
        load_s,
        load_user_s,
        load_user_us_per_msg: per(load_user_s),
        load_threads: spec.threads as u64,
        load_busiest_thread: load_busy,
        load_us_per_msg: per(load_s),
        server_pid: spec.server_pid,
        server_rss_start: w.rss.0,
        server_rss_end: w.rss.1,
        server_rss_peak: w.rss.2,
        ..Cpu::default()
    };
    if let (Some(a), Some(b)) = (w.c0.server, w.c1.server) {
        let srv = (b - a).max(0.0);
        let sb = busiest(&w.c0.server_threads, &w.c1.server_threads, csecs);
        cpu.server_s = Some(srv);
        cpu.server_busiest_thread = Some(sb);
        cpu.server_us_per_msg = per(srv);
        cpu.load_bound = load_busy >= 0.5 && load_busy >= sb;
        cpu.verdict = if cpu.load_bound {
            format!(
                "LOAD-BOUND: the load generator's busiest thread ({:.0}%) was busier than the server's ({:.0}%); add load threads or machines before trusting the rate as the server's",
                load_busy * 100.0,
                sb * 100.0
            )
        } else if sb >= 0.9 {
            format!(
                "server-bound (server's busiest thread {:.0}%, load's {:.0}%)",
                sb * 100.0,
                load_busy * 100.0
            )
        } else {
            format!(
                "neither side saturated (server {:.0}%, load {:.0}%): latency- or rate-limited",
                sb * 100.0,
                load_busy * 100.0
            )
        };
    } else {
        cpu.load_bound = load_busy >= 0.9;
        cpu.verdict = if cpu.load_bound {
            format!(
                "LOAD-BOUND (probably): a load thread was {:.0}% busy; give --server-pid to compare with the server",
                load_busy * 100.0
            )
        } else {
            format!(
                "load generator not saturated (busiest thread {:.0}%); give --server-pid for the server's side",
                load_busy * 100.0
            )
        };
        if let Some(pid) = spec.server_pid {
            r.notes
                .push(format!("--server-pid {pid}: cannot read /proc/{pid}/stat"));
        }
    }
    r.cpu = cpu;
    r
}

#[cfg(test)]
mod tests {
    use super::auto_tick;

    #[test]
    fn auto_tick_is_eight_sends_between_250_us_and_a_millisecond() {
        assert_eq!(auto_tick(0.0), 0);
        assert_eq!(auto_tick(1_000.0), 1_000_000);
        assert_eq!(auto_tick(8_000.0), 1_000_000);
        assert_eq!(auto_tick(16_000.0), 500_000);
        assert_eq!(auto_tick(32_000.0), 250_000);
        assert_eq!(auto_tick(50_000.0), 0);
        assert_eq!(auto_tick(8e9), 0);
    }
}
