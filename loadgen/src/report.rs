//! The report: every figure of a run, the table printed for people, the `--json` file,
//! and `merge` of several runs' JSON into one.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use soliton::proto::base64;

use crate::stats::{describe, new_hist};

/// The JSON format version.
pub(crate) const FORMAT: u32 = 1;

/// Percentiles of a latency distribution, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) min: f64,
    pub(crate) mean: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p99_9: f64,
    pub(crate) p99_99: f64,
    pub(crate) max: f64,
}

impl Summary {
    /// From a histogram in nanoseconds.
    pub(crate) fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary::default();
        }
        let us = |v: u64| v as f64 / 1000.0;
        Summary {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            p99_99: us(h.value_at_quantile(0.9999)),
            max: us(h.max()),
        }
    }

    /// A percentile by name (`p50`, `p99.9`, `max`, ...), in microseconds.
    pub(crate) fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "min" => self.min,
            "mean" => self.mean,
            "p50" | "median" => self.p50,
            "p90" => self.p90,
            "p99" => self.p99,
            "p99.9" | "p999" => self.p99_9,
            "p99.99" | "p9999" => self.p99_99,
            "max" | "p100" => self.max,
            _ => return None,
        })
    }
}

/// Connection figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Conns {
    /// Connections asked for (connect: handshakes asked for).
    pub(crate) target: u64,
    pub(crate) attempts: u64,
    /// Completed opening handshakes.
    pub(crate) handshakes: u64,
    /// Completed handshakes within the measured window.
    pub(crate) handshakes_in_window: u64,
    /// wss://: handshakes that resumed a TLS session (the rest were full ones).
    #[serde(default)]
    pub(crate) tls_resumed: u64,
    /// The connections were wss://.
    #[serde(default)]
    pub(crate) tls: bool,
    /// Handshakes per second over the connect phase (connect scenario).
    pub(crate) handshakes_per_s: f64,
    /// Connections open when the run began closing.
    pub(crate) open_at_end: u64,
    /// Close handshakes completed cleanly.
    pub(crate) clean_closes: u64,
    /// TCP connect + upgrade latency, microseconds.
    pub(crate) connect_us: Summary,
    /// The same as an HdrHistogram (nanoseconds), V2 + DEFLATE, base64.
    pub(crate) connect_hist: String,
}

/// Message figures (payload bytes).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Messages {
    pub(crate) size: u64,
    pub(crate) text: bool,
    /// Sent with a time stamp in the measured window.
    pub(crate) sent: u64,
    /// Received with a time stamp in the window (fanout: deliveries).
    pub(crate) received: u64,
    /// Sent over the whole run (warm-up included).
    pub(crate) sent_total: u64,
    /// Received over the whole run.
    pub(crate) received_total: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) bytes_received: u64,
    pub(crate) sent_per_s: f64,
    pub(crate) received_per_s: f64,
    pub(crate) mb_per_s_out: f64,
    pub(crate) mb_per_s_in: f64,
    /// Offered rate (rate, fanout, slo).
    pub(crate) offered_per_s: Option<f64>,
    /// permessage-deflate, whole run: payload bytes sent on connections that agreed to
    /// it, and what their frames took on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deflate: Option<Deflate>,
}

/// What compression did to the messages sent.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Deflate {
    pub(crate) payload_bytes: u64,
    pub(crate) wire_bytes: u64,
    /// payload / wire.
    pub(crate) ratio: f64,
}

/// CPU use over the measured window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Cpu {
    /// Load generator CPU seconds (the whole process, user + system).
    pub(crate) load_s: f64,
    /// The user-space part (the rest is the kernel's: TCP, syscalls).
    #[serde(default)]
    pub(crate) load_user_s: f64,
    /// User-space CPU per message, microseconds.
    #[serde(default)]
    pub(crate) load_user_us_per_msg: Option<f64>,
    /// Worker threads.
    pub(crate) load_threads: u64,
    /// Busiest worker thread's share of a core (0-1).
    pub(crate) load_busiest_thread: f64,
    /// Load generator CPU per message (per handshake for connect), microseconds.
    pub(crate) load_us_per_msg: Option<f64>,
    pub(crate) server_pid: Option<u32>,
    pub(crate) server_s: Option<f64>,
    pub(crate) server_busiest_thread: Option<f64>,
    pub(crate) server_us_per_msg: Option<f64>,
    /// The server's RSS (bytes) when the run began, at the end of the measured window,
    /// and the highest seen until the connections were closed (sampled every 20 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) server_rss_start: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) server_rss_end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) server_rss_peak: Option<u64>,
    /// The load generator's threads were the busier side.
    pub(crate) load_bound: bool,
    pub(crate) verdict: String,
}

/// `hold`: held connections and server memory at each step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Hold {
    pub(crate) baseline_rss: Option<u64>,
    pub(crate) steps: Vec<HoldStep>,
    /// (RSS at the last step - RSS at the first) / (held difference).
    pub(crate) marginal_bytes_per_conn: Option<f64>,
    /// Connections still open after holding for the duration.
    pub(crate) held_at_end: u64,
}

/// One `hold` step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct HoldStep {
    pub(crate) target: u64,
    pub(crate) held: u64,
    pub(crate) rss: Option<u64>,
    /// (RSS - baseline) / held.
    pub(crate) bytes_per_conn: Option<f64>,
}

/// `fanout` figures.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Fanout {
    pub(crate) publishers: u64,
    pub(crate) subscribers: u64,
    /// Messages published (in the window).
    pub(crate) published: u64,
    /// Messages delivered to any connection (stamp in the window).
    pub(crate) delivered: u64,
    pub(crate) deliveries_per_message: f64,
    pub(crate) delivered_per_s: f64,
    /// Across nodes (`--subscriber-url`): the deliveries and their latency split by the
    /// URL the receiving connection went to; they add up to `delivered` and the overall
    /// latency histogram. Empty for a run on one URL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) nodes: Vec<FanoutNode>,
}

/// One node of a fanout across nodes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct FanoutNode {
    /// The URL as given (publishers' URL or a `--subscriber-url`).
    pub(crate) url: String,
    /// Publishers asked for on this URL (they receive too).
    pub(crate) publishers: u64,
    /// Subscribers asked for on this URL.
    pub(crate) subscribers: u64,
    /// Messages received by its connections (stamp in the window).
    pub(crate) deliveries: u64,
    pub(crate) deliveries_per_s: f64,
    /// Delivery latency on this node, microseconds, from the intended send time.
    pub(crate) latency_us: Summary,
    /// The same as an HdrHistogram (nanoseconds), V2 + DEFLATE, base64.
    pub(crate) latency_hist: String,
}

/// `slo`: every step of the search.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Slo {
    pub(crate) targets: Vec<String>,
    pub(crate) max_errors: u64,
    pub(crate) min_achieved: f64,
    pub(crate) search: String,
    pub(crate) steps: Vec<SloStep>,
    /// The highest rate that passed.
    pub(crate) best_rate: Option<f64>,
}

/// One `slo` step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SloStep {
    pub(crate) rate: f64,
    pub(crate) achieved: f64,
    pub(crate) latency_us: Summary,
    pub(crate) errors: u64,
    pub(crate) load_bound: bool,
    pub(crate) pass: bool,
    pub(crate) why: String,
    pub(crate) latency_hist: String,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Tick {
    /// Seconds since the run started.
    pub(crate) t: f64,
    pub(crate) open: u64,
    pub(crate) sent_per_s: f64,
    pub(crate) received_per_s: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) errors: u64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) tool: String,
    pub(crate) version: String,
    pub(crate) format: u32,
    pub(crate) scenario: String,
    pub(crate) url: String,
    /// Start time, seconds since the Unix epoch.
    pub(crate) started_unix: f64,
    /// Runs combined into this report (1 unless merged).
    pub(crate) runs: u64,
    /// The settings of the run.
    pub(crate) config: BTreeMap<String, serde_json::Value>,
    /// Measured window, seconds.
    pub(crate) window_s: f64,
    pub(crate) warmup_s: f64,
    pub(crate) connections: Conns,
    pub(crate) messages: Messages,
    /// Message latency, microseconds (rate: from the intended send time).
    pub(crate) latency_us: Summary,
    /// The same as an HdrHistogram (nanoseconds), V2 + DEFLATE, base64: the encoding of
    /// HdrHistogram's interval logs, so it merges exactly.
    pub(crate) latency_hist: String,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) errors_total: u64,
    pub(crate) cpu: Cpu,
    pub(crate) hold: Option<Hold>,
    pub(crate) fanout: Option<Fanout>,
    pub(crate) slo: Option<Slo>,
    pub(crate) timeline: Vec<Tick>,
    pub(crate) notes: Vec<String>,
}

/// A histogram as base64 of its V2 + DEFLATE encoding.
pub(crate) fn encode_hist(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut buf) {
        Ok(_) => base64::encode(&buf),
        Err(_) => String::new(),
    }
}

/// The inverse of [`encode_hist`]; an empty string is an empty histogram.
pub(crate) fn decode_hist(s: &str) -> Result<Histogram<u64>, String> {
    if s.is_empty() {
        return Ok(new_hist());
    }
    let bytes = base64::decode(s).ok_or("histogram: bad base64")?;
    let mut h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram: {e:?}"))?;
    h.auto(true);
    Ok(h)
}

/// A duration in microseconds, in the unit that suits it.
pub(crate) fn fmt_us(us: f64) -> String {
    if us <= 0.0 {
        "0".into()
    } else if us < 1.0 {
        format!("{:.0}ns", us * 1000.0)
    } else if us < 100.0 {
        format!("{us:.1}µs")
    } else if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 100_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// An integer with thousands separators.
pub(crate) fn fmt_n(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate with thousands separators.
pub(crate) fn fmt_rate(r: f64) -> String {
    fmt_n(r.round().max(0.0) as u64)
}

fn pct(f: f64) -> String {
    format!("{:.0}%", f * 100.0)
}

fn percentile_row(out: &mut String, label: &str, s: &Summary) {
    let _ = writeln!(
        out,
        "{label:<13}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}   n={}",
        fmt_us(s.p50),
        fmt_us(s.p90),
        fmt_us(s.p99),
        fmt_us(s.p99_9),
        fmt_us(s.p99_99),
        fmt_us(s.max),
        fmt_n(s.count)
    );
}

impl Report {
    fn has_messages(&self) -> bool {
        matches!(
            self.scenario.as_str(),
            "echo" | "rate" | "fanout" | "slo" | "merge"
        ) && (self.messages.sent_total > 0 || self.messages.received_total > 0)
    }

    /// The table for people.
    pub(crate) fn table(&self) -> String {
        let mut o = String::new();
        let cfg = |k: &str| {
            self.config
                .get(k)
                .map(|v| v.to_string().trim_matches('"').to_string())
        };
        let _ = write!(o, "soliton-load {}  {}", self.scenario, self.url);
        if self.runs > 1 {
            let _ = write!(o, "  ({} runs merged)", self.runs);
        }
        o.push('\n');
        let mut line = Vec::new();
        if let Some(c) = cfg("connections") {
            line.push(format!("{c} connections"));
        }
        if self.messages.size > 0 && self.has_messages() {
            line.push(format!(
                "{} B {}",
                self.messages.size,
                if self.messages.text { "text" } else { "binary" }
            ));
        }
        if let Some(v) = cfg("inflight") {
            line.push(format!("{v} in flight"));
        }
        if let Some(r) = self.messages.offered_per_s {
            line.push(format!("offered {} msg/s", fmt_rate(r)));
        }
        if let Some(t) = cfg("threads") {
            let cores = cfg("cores").filter(|c| c != "null");
            line.push(match cores {
                Some(c) => format!("{t} thread(s) on cores {c}"),
                None => format!("{t} thread(s)"),
            });
        }
        if let Some(io) = cfg("io") {
            line.push(format!("{io} I/O"));
        }
        if let Some(rx) = cfg("rx_time") {
            line.push(format!("answers timed by the {rx}"));
        }
        if let Some(d) = cfg("deflate").filter(|d| d != "off") {
            line.push(format!("permessage-deflate {d}"));
        }
        if !line.is_empty() {
            let _ = writeln!(o, "{}", line.join(", "));
        }
        let _ = writeln!(
            o,
            "window {:.2} s{}",
            self.window_s,
            if self.warmup_s > 0.0 {
                format!(" after {:.1} s warm-up", self.warmup_s)
            } else {
                String::new()
            }
        );
        o.push('\n');
        let c = &self.connections;
        let _ = writeln!(
            o,
            "{:<13}{} handshakes of {} attempts ({} asked), {} open at the end",
            "connections",
            fmt_n(c.handshakes),
            fmt_n(c.attempts),
            fmt_n(c.target),
            fmt_n(c.open_at_end)
        );
        if c.tls {
            let _ = writeln!(
                o,
                "{:<13}wss://: {} full TLS handshakes, {} resumed",
                "tls",
                fmt_n(c.handshakes.saturating_sub(c.tls_resumed)),
                fmt_n(c.tls_resumed)
            );
        }
        if self.scenario == "connect" {
            let _ = writeln!(
                o,
                "{:<13}{} handshakes/s ({} clean closes)",
                "rate",
                fmt_rate(c.handshakes_per_s),
                fmt_n(c.clean_closes)
            );
        }
        let m = &self.messages;
        if self.has_messages() {
            let answered = if self.scenario == "echo" || self.scenario == "rate" {
                if m.received_total == m.sent_total {
                    "  (every message answered)".to_string()
                } else {
                    format!(
                        "  (run total: {} sent, {} received)",
                        fmt_n(m.sent_total),
                        fmt_n(m.received_total)
                    )
                }
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "{:<13}sent {}   received {}{}",
                "messages",
                fmt_n(m.sent),
                fmt_n(m.received),
                answered
            );
            let _ = writeln!(
                o,
                "{:<13}{} msg/s received, {} msg/s sent, {:.2} MB/s in, {:.2} MB/s out",
                "throughput",
                fmt_rate(m.received_per_s),
                fmt_rate(m.sent_per_s),
                m.mb_per_s_in,
                m.mb_per_s_out
            );
        }
        if let Some(d) = &self.messages.deflate {
            let _ = writeln!(
                o,
                "{:<13}sent {} payload bytes as {} on the wire: {:.2} to 1",
                "compression",
                fmt_n(d.payload_bytes),
                fmt_n(d.wire_bytes),
                d.ratio
            );
        }
        if let Some(f) = &self.fanout {
            let _ = writeln!(
                o,
                "{:<13}{} publishers, {} subscribers: {} published, {} delivered ({:.2} per message, {} deliveries/s)",
                "fanout",
                f.publishers,
                f.subscribers,
                fmt_n(f.published),
                fmt_n(f.delivered),
                f.deliveries_per_message,
                fmt_rate(f.delivered_per_s)
            );
            if f.nodes.len() > 1 {
                o.push_str(&nodes_table(&f.nodes));
            }
        }
        let _ = writeln!(
            o,
            "\n{:<13}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        if self.has_messages() || self.latency_us.count > 0 {
            let label = if self.scenario == "rate" || self.scenario == "slo" {
                "latency*"
            } else {
                "latency"
            };
            percentile_row(&mut o, label, &self.latency_us);
        }
        percentile_row(&mut o, "connect", &c.connect_us);
        if self.scenario == "rate" || self.scenario == "slo" {
            let _ = writeln!(
                o,
                "             * from the intended send time (coordinated omission corrected)"
            );
        }
        if let Some(h) = &self.hold {
            o.push('\n');
            if let Some(b) = h.baseline_rss {
                let _ = writeln!(o, "{:<13}server RSS before connecting {}", "hold", bytes(b));
            }
            for s in &h.steps {
                let _ = write!(
                    o,
                    "{:<13}{} held of {}",
                    "  step",
                    fmt_n(s.held),
                    fmt_n(s.target)
                );
                if let Some(r) = s.rss {
                    let _ = write!(o, "   server RSS {}", bytes(r));
                }
                if let Some(b) = s.bytes_per_conn {
                    let _ = write!(o, "   {b:.0} B/connection (average)");
                }
                o.push('\n');
            }
            if let Some(m) = h.marginal_bytes_per_conn {
                let _ = writeln!(
                    o,
                    "{:<13}{m:.0} B/connection (marginal, between the first and last step)",
                    ""
                );
            }
            let _ = writeln!(
                o,
                "{:<13}{} still open after holding",
                "",
                fmt_n(h.held_at_end)
            );
        }
        o.push('\n');
        if self.errors.is_empty() {
            let _ = writeln!(o, "{:<13}none", "errors");
        } else {
            let _ = writeln!(o, "{:<13}{} in all", "errors", fmt_n(self.errors_total));
            for (k, v) in &self.errors {
                let _ = writeln!(o, "  {k:<22}{:>10}   {}", fmt_n(*v), describe(k));
            }
        }
        let cpu = &self.cpu;
        let unit = if self.scenario == "connect" {
            "µs/handshake"
        } else if self.fanout.is_some() {
            "µs/delivery"
        } else {
            "µs/msg"
        };
        let per = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2} {unit}"));
        let _ = writeln!(
            o,
            "{:<13}load {} ({:.2} CPU-s, {:.0}% of it in user space, {} thread(s), busiest {})",
            "cpu",
            per(cpu.load_us_per_msg),
            cpu.load_s,
            if cpu.load_s > 0.0 {
                cpu.load_user_s / cpu.load_s * 100.0
            } else {
                0.0
            },
            cpu.load_threads,
            pct(cpu.load_busiest_thread)
        );
        if let Some(s) = cpu.server_s {
            let _ = writeln!(
                o,
                "{:<13}server {} ({s:.2} CPU-s, busiest thread {}, pid {})",
                "",
                per(cpu.server_us_per_msg),
                pct(cpu.server_busiest_thread.unwrap_or(0.0)),
                cpu.server_pid.unwrap_or(0)
            );
        }
        if let (Some(a), Some(p)) = (cpu.server_rss_start, cpu.server_rss_peak) {
            let _ = writeln!(
                o,
                "{:<13}server RSS {} at start, {} at the end of the window, {} at most",
                "memory",
                bytes(a),
                cpu.server_rss_end.map_or("-".into(), bytes),
                bytes(p)
            );
        }
        let _ = writeln!(o, "{:<13}{}", "verdict", cpu.verdict);
        if let Some(slo) = &self.slo {
            o.push('\n');
            o.push_str(&slo_table(slo));
        }
        for n in &self.notes {
            let _ = writeln!(o, "note: {n}");
        }
        o
    }
}

/// The per-node table of a fanout across nodes.
fn nodes_table(nodes: &[FanoutNode]) -> String {
    let w = nodes.iter().map(|n| n.url.len()).max().unwrap_or(0).max(4);
    let mut o = format!(
        "\n{:<w$}{:>5}{:>7}{:>13}{:>14}{:>10}{:>10}{:>10}{:>10}\n",
        "node", "pub", "sub", "deliveries", "deliveries/s", "p50", "p99", "p99.9", "max"
    );
    for n in nodes {
        let l = &n.latency_us;
        // a node that received nothing has no latency (not a latency of 0)
        let t = |v: f64| {
            if l.count == 0 {
                "-".to_string()
            } else {
                fmt_us(v)
            }
        };
        let _ = writeln!(
            o,
            "{:<w$}{:>5}{:>7}{:>13}{:>14}{:>10}{:>10}{:>10}{:>10}",
            n.url,
            fmt_n(n.publishers),
            fmt_n(n.subscribers),
            fmt_n(n.deliveries),
            fmt_rate(n.deliveries_per_s),
            t(l.p50),
            t(l.p99),
            t(l.p99_9),
            t(l.max)
        );
    }
    o
}

fn bytes(b: u64) -> String {
    if b >= 10 << 20 {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", b as f64 / 1024.0)
    }
}

/// The header of the step table of `slo`.
pub(crate) fn slo_header() -> String {
    format!(
        "{:>12}{:>12}{:>10}{:>10}{:>10}{:>10}{:>8}  {}\n",
        "rate", "achieved", "p50", "p99", "p99.9", "max", "errors", "result"
    )
}

/// One row of the step table.
pub(crate) fn slo_row(s: &SloStep) -> String {
    format!(
        "{:>12}{:>12}{:>10}{:>10}{:>10}{:>10}{:>8}  {}{}\n",
        fmt_rate(s.rate),
        fmt_rate(s.achieved),
        fmt_us(s.latency_us.p50),
        fmt_us(s.latency_us.p99),
        fmt_us(s.latency_us.p99_9),
        fmt_us(s.latency_us.max),
        fmt_n(s.errors),
        if s.pass { "pass" } else { "FAIL: " },
        if s.pass {
            if s.load_bound {
                " (load-bound!)".to_string()
            } else {
                String::new()
            }
        } else {
            s.why.clone()
        }
    )
}

fn slo_table(slo: &Slo) -> String {
    let mut o = format!(
        "slo          target {} with at most {} errors and {:.0}% of the offered rate achieved ({} search)\n",
        slo.targets.join(", "),
        slo.max_errors,
        slo.min_achieved * 100.0,
        slo.search
    );
    o.push_str(&slo_header());
    for s in &slo.steps {
        o.push_str(&slo_row(s));
    }
    match slo.best_rate {
        Some(r) => {
            let _ = writeln!(o, "highest passing rate: {} msg/s", fmt_rate(r));
        }
        None => {
            let _ = writeln!(o, "no rate passed");
        }
    }
    o
}

/// Combines reports of runs made at the same time (several load machines against one
/// server): counts, bytes, rates and histograms add; the window is the longest.
pub(crate) fn merge(reports: Vec<Report>) -> Result<Report, String> {
    let node_sets: Vec<_> = reports
        .iter()
        .filter(|r| r.fanout.is_some())
        .map(nodes_of)
        .collect();
    let mut it = reports.into_iter();
    let mut m = it.next().ok_or("merge: no report")?;
    let mut lat = decode_hist(&m.latency_hist)?;
    let mut con = decode_hist(&m.connections.connect_hist)?;
    let mut scenarios = vec![m.scenario.clone()];
    let mut load_msgs_s = cpu_weight(&m);
    let mut server_best: Option<(f64, f64)> = m
        .cpu
        .server_s
        .map(|s| (s, m.cpu.server_busiest_thread.unwrap_or(0.0)));
    for r in it {
        if r.format != FORMAT {
            return Err(format!(
                "merge: report format {} (expected {FORMAT})",
                r.format
            ));
        }
        lat.add(decode_hist(&r.latency_hist)?)
            .map_err(|e| format!("merge: {e:?}"))?;
        con.add(decode_hist(&r.connections.connect_hist)?)
            .map_err(|e| format!("merge: {e:?}"))?;
        if !scenarios.contains(&r.scenario) {
            scenarios.push(r.scenario.clone());
        }
        if r.url != m.url {
            m.notes.push(format!("merged runs against {} too", r.url));
        }
        m.runs += r.runs;
        m.window_s = m.window_s.max(r.window_s);
        m.warmup_s = m.warmup_s.max(r.warmup_s);
        m.started_unix = m.started_unix.min(r.started_unix);
        let c = &mut m.connections;
        let rc = &r.connections;
        c.target += rc.target;
        if let (Some(a), Some(b)) = (
            m.config.get("connections").and_then(|v| v.as_u64()),
            r.config.get("connections").and_then(|v| v.as_u64()),
        ) {
            m.config.insert("connections".into(), (a + b).into());
        }
        if let (Some(a), Some(b)) = (
            m.config.get("threads").and_then(|v| v.as_u64()),
            r.config.get("threads").and_then(|v| v.as_u64()),
        ) {
            m.config.insert("threads".into(), (a + b).into());
        }
        c.attempts += rc.attempts;
        c.handshakes += rc.handshakes;
        c.handshakes_in_window += rc.handshakes_in_window;
        c.tls_resumed += rc.tls_resumed;
        c.tls |= rc.tls;
        c.handshakes_per_s += rc.handshakes_per_s;
        c.open_at_end += rc.open_at_end;
        c.clean_closes += rc.clean_closes;
        let mm = &mut m.messages;
        let rm = &r.messages;
        mm.sent += rm.sent;
        mm.received += rm.received;
        mm.sent_total += rm.sent_total;
        mm.received_total += rm.received_total;
        mm.bytes_sent += rm.bytes_sent;
        mm.bytes_received += rm.bytes_received;
        mm.sent_per_s += rm.sent_per_s;
        mm.received_per_s += rm.received_per_s;
        mm.mb_per_s_in += rm.mb_per_s_in;
        mm.mb_per_s_out += rm.mb_per_s_out;
        mm.offered_per_s = match (mm.offered_per_s, rm.offered_per_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        if let Some(rd) = &rm.deflate {
            let d = mm.deflate.get_or_insert_with(Deflate::default);
            d.payload_bytes += rd.payload_bytes;
            d.wire_bytes += rd.wire_bytes;
            d.ratio = d.payload_bytes as f64 / d.wire_bytes.max(1) as f64;
        }
        if mm.size != rm.size {
            m.notes.push(format!(
                "message sizes differ ({} and {})",
                mm.size, rm.size
            ));
        }
        for (k, v) in &r.errors {
            *m.errors.entry(k.clone()).or_insert(0) += v;
        }
        m.errors_total += r.errors_total;
        m.cpu.load_s += r.cpu.load_s;
        m.cpu.load_user_s += r.cpu.load_user_s;
        m.cpu.load_threads += r.cpu.load_threads;
        m.cpu.load_busiest_thread = m.cpu.load_busiest_thread.max(r.cpu.load_busiest_thread);
        m.cpu.load_bound |= r.cpu.load_bound;
        load_msgs_s += cpu_weight(&r);
        if let Some(s) = r.cpu.server_s {
            let b = r.cpu.server_busiest_thread.unwrap_or(0.0);
            server_best = Some(match server_best {
                Some((s0, b0)) => (s0.max(s), b0.max(b)),
                None => (s, b),
            });
            m.cpu.server_pid = m.cpu.server_pid.or(r.cpu.server_pid);
        }
        m.hold = match (m.hold.take(), &r.hold) {
            (Some(mut a), Some(b)) => {
                a.held_at_end += b.held_at_end;
                for (sa, sb) in a.steps.iter_mut().zip(&b.steps) {
                    sa.target += sb.target;
                    sa.held += sb.held;
                    sa.rss = None;
                    sa.bytes_per_conn = None;
                }
                a.baseline_rss = None;
                a.marginal_bytes_per_conn = None;
                Some(a)
            }
            (a, b) => a.or_else(|| b.clone()),
        };
        m.fanout = match (m.fanout.take(), &r.fanout) {
            (Some(mut a), Some(b)) => {
                a.publishers += b.publishers;
                a.subscribers += b.subscribers;
                a.published += b.published;
                a.delivered += b.delivered;
                a.delivered_per_s += b.delivered_per_s;
                a.deliveries_per_message = a.delivered as f64 / a.published.max(1) as f64;
                Some(a)
            }
            (a, b) => a.or_else(|| b.clone()),
        };
        // timelines: add the rates second by second
        for (i, t) in r.timeline.iter().enumerate() {
            if i < m.timeline.len() {
                let mt = &mut m.timeline[i];
                mt.open += t.open;
                mt.sent_per_s += t.sent_per_s;
                mt.received_per_s += t.received_per_s;
                mt.p50_us = mt.p50_us.max(t.p50_us);
                mt.p99_us = mt.p99_us.max(t.p99_us);
                mt.errors += t.errors;
            } else {
                m.timeline.push(t.clone());
            }
        }
        if r.slo.is_some() {
            m.notes
                .push("slo step tables are not merged (each run searched alone)".into());
        }
    }
    m.slo = None;
    if scenarios.len() > 1 {
        m.notes.push(format!(
            "merged different scenarios: {}",
            scenarios.join(", ")
        ));
    }
    m.latency_us = Summary::of(&lat);
    m.latency_hist = encode_hist(&lat);
    m.connections.connect_us = Summary::of(&con);
    m.connections.connect_hist = encode_hist(&con);
    if let Some(f) = &mut m.fanout {
        f.deliveries_per_message = f.delivered as f64 / f.published.max(1) as f64;
        f.nodes = merge_nodes(&node_sets, &mut m.notes)?;
    }
    let per = load_msgs_s.max(1) as f64;
    if load_msgs_s > 0 {
        m.cpu.load_us_per_msg = Some(m.cpu.load_s * 1e6 / per);
        m.cpu.load_user_us_per_msg = Some(m.cpu.load_user_s * 1e6 / per);
    }
    if let Some((s, b)) = server_best {
        m.cpu.server_s = Some(s);
        m.cpu.server_busiest_thread = Some(b);
        if load_msgs_s > 0 {
            m.cpu.server_us_per_msg = Some(s * 1e6 / per);
        }
    }
    m.cpu.verdict = if m.cpu.load_bound {
        "LOAD-BOUND in at least one run: that generator was the bottleneck".into()
    } else {
        format!("merged: {}", m.cpu.verdict)
    };
    if m.runs > 1 {
        m.notes.push(
            "merge assumes the runs were concurrent against one server: rates are summed, \
             histograms added exactly; server CPU is the largest one measured"
                .into(),
        );
    }
    Ok(m)
}

/// A fanout report's nodes for `merge`, and whether the report gave them itself: a run on
/// one URL (no `--subscriber-url`) is one node with the run's figures; `None` when the
/// split is not known (a run across nodes from before per-node figures, or a merged
/// report that did not keep them).
fn nodes_of(r: &Report) -> Option<(Vec<FanoutNode>, bool)> {
    let f = r.fanout.as_ref()?;
    if !f.nodes.is_empty() {
        return Some((f.nodes.clone(), true));
    }
    if r.runs > 1 || r.config.contains_key("subscriber_urls") {
        return None;
    }
    let one = FanoutNode {
        url: r.url.clone(),
        publishers: f.publishers,
        subscribers: f.subscribers,
        deliveries: f.delivered,
        deliveries_per_s: f.delivered_per_s,
        latency_us: r.latency_us.clone(),
        latency_hist: r.latency_hist.clone(),
    };
    Some((vec![one], false))
}

/// Combines the nodes of several fanout reports by URL: counts and rates add,
/// histograms add exactly. None when no report was across nodes and every run was on
/// the same URL (the totals say it all).
fn merge_nodes(
    sets: &[Option<(Vec<FanoutNode>, bool)>],
    notes: &mut Vec<String>,
) -> Result<Vec<FanoutNode>, String> {
    let mut out: Vec<FanoutNode> = Vec::new();
    let mut hists: Vec<Histogram<u64>> = Vec::new();
    let mut real = false;
    for (nodes, given) in sets.iter().flatten() {
        real |= *given;
        for n in nodes {
            let h = decode_hist(&n.latency_hist)?;
            match out.iter().position(|o| o.url == n.url) {
                Some(i) => {
                    let o = &mut out[i];
                    o.publishers += n.publishers;
                    o.subscribers += n.subscribers;
                    o.deliveries += n.deliveries;
                    o.deliveries_per_s += n.deliveries_per_s;
                    hists[i].add(h).map_err(|e| format!("merge: {e:?}"))?;
                }
                None => {
                    out.push(n.clone());
                    hists.push(h);
                }
            }
        }
    }
    if !real && out.len() < 2 {
        return Ok(Vec::new());
    }
    for (n, h) in out.iter_mut().zip(&hists) {
        n.latency_us = Summary::of(h);
        n.latency_hist = encode_hist(h);
    }
    let unknown = sets.iter().filter(|s| s.is_none()).count();
    if unknown > 0 {
        notes.push(format!(
            "{unknown} fanout run(s) across nodes without per-node figures: their deliveries \
             are in the totals but not in the node table"
        ));
    }
    Ok(out)
}

/// What CPU per message divides by: messages received (echo, rate), deliveries
/// (fanout), handshakes (connect).
pub(crate) fn cpu_weight(r: &Report) -> u64 {
    match r.scenario.as_str() {
        "connect" => r.connections.handshakes_in_window,
        "hold" => 0,
        _ => r.messages.received,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_round_trip_and_merge() {
        let mut a = new_hist();
        let mut b = new_hist();
        for v in 1..1000u64 {
            a.record(v * 1000).unwrap();
            b.record(v * 7).unwrap();
        }
        let da = decode_hist(&encode_hist(&a)).unwrap();
        assert_eq!(da, a);
        let mut sum = da.clone();
        sum.add(&b).unwrap();
        assert_eq!(sum.len(), a.len() + b.len());
        let s = Summary::of(&sum);
        assert!(s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p99_9 && s.p99_9 <= s.max);
    }

    #[test]
    fn node_table_has_a_row_per_node_and_no_latency_where_nothing_came() {
        let mut h = new_hist();
        h.record(1_500_000).unwrap();
        let node = |url: &str, deliveries: u64, h: &Histogram<u64>| FanoutNode {
            url: url.into(),
            publishers: 0,
            subscribers: 2,
            deliveries,
            deliveries_per_s: deliveries as f64,
            latency_us: Summary::of(h),
            latency_hist: encode_hist(h),
        };
        let t = nodes_table(&[node("ws://a:1/", 1, &h), node("ws://bb:2/", 0, &new_hist())]);
        let lines: Vec<&str> = t.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("node") && lines[0].contains("deliveries/s"));
        assert!(lines[1].starts_with("ws://a:1/ ") && lines[1].contains("1.50ms"));
        assert!(lines[2].starts_with("ws://bb:2/") && lines[2].trim_end().ends_with('-'));
        // the columns line up whatever the URL's length (these rows are ASCII)
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_n(1_234_567), "1,234,567");
        assert_eq!(fmt_n(12), "12");
        assert_eq!(fmt_us(12.34), "12.3µs");
        assert_eq!(fmt_us(1500.0), "1.50ms");
        assert_eq!(fmt_us(0.5), "500ns");
    }
}
