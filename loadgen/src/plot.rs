//! `--plot FILE.svg`: the latency percentile distribution (x log-scaled in 1/(1-q), as
//! HdrHistogram's plots are) and the throughput over time, as a standalone SVG; for an
//! `slo` report, the capacity curve instead ([`capacity`]).

mod capacity;

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::report::{decode_hist, fmt_rate, fmt_us, Report};

const W: f64 = 900.0;
const PANEL_H: f64 = 330.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const GAP: f64 = 90.0;

/// A "nice" upper bound for an axis and its tick step.
fn nice_axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.2);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Points (x = log10(1/(1-q)), latency µs) of the percentile distribution.
fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut pts = Vec::new();
    if h.is_empty() {
        return pts;
    }
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        if q >= 1.0 {
            break;
        }
        pts.push((
            (1.0 / (1.0 - q)).log10(),
            v.value_iterated_to() as f64 / 1000.0,
        ));
    }
    // the maximum, one decade past the last point
    let last_x = pts.last().map_or(0.0, |p| p.0);
    let n = (h.len() as f64).log10();
    pts.push((last_x.max(n).max(1.0), h.max() as f64 / 1000.0));
    pts
}

/// Renders the report as an SVG document.
pub(crate) fn svg(r: &Report) -> String {
    if let Some(slo) = &r.slo {
        return capacity::svg(r, slo);
    }
    let h = decode_hist(&r.latency_hist).unwrap_or_else(|_| crate::stats::new_hist());
    let total_h = TOP + PANEL_H + GAP + PANEL_H + 60.0;
    let mut s = String::new();
    open_svg(
        &mut s,
        total_h,
        &format!("soliton-load {} — {}", esc(&r.scenario), esc(&r.url)),
    );
    // panel 1: latency by percentile
    let (x0, y0) = (LEFT, TOP);
    let pw = W - LEFT - RIGHT;
    let ph = PANEL_H;
    let pts = percentile_points(&h);
    let xmax = pts.iter().map(|p| p.0).fold(2.0f64, f64::max).ceil();
    let (ymax, ystep) = nice_axis(pts.iter().map(|p| p.1).fold(0.0, f64::max));
    frame(&mut s, x0, y0, pw, ph);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">Latency by percentile{}</text>"#,
        x0 + pw / 2.0,
        y0 - 10.0,
        if r.scenario == "rate" || r.scenario == "slo" {
            " (from intended send time)"
        } else {
            ""
        }
    );
    percentile_ticks(&mut s, x0, y0, pw, ph, xmax);
    y_ticks(&mut s, x0, y0, pw, ph, ymax, ystep, fmt_us);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 34.0
    );
    let mut path = String::new();
    for (i, (x, y)) in pts.iter().enumerate() {
        let px = x0 + x / xmax * pw;
        let py = y0 + ph - y / ymax * ph;
        let _ = write!(path, "{}{px:.1},{py:.1} ", if i == 0 { "M" } else { "L" });
    }
    if !path.is_empty() {
        let _ = writeln!(
            s,
            r##"<path d="{path}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##
        );
    } else {
        no_data(&mut s, x0, y0, pw, ph);
    }
    let summary = &r.latency_us;
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}">p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  (n={})</text>"#,
        x0 + 10.0,
        y0 + 18.0,
        fmt_us(summary.p50),
        fmt_us(summary.p90),
        fmt_us(summary.p99),
        fmt_us(summary.p99_9),
        fmt_us(summary.p99_99),
        fmt_us(summary.max),
        summary.count
    );
    // panel 2: throughput over time
    let y0 = TOP + PANEL_H + GAP;
    frame(&mut s, x0, y0, pw, ph);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">Throughput over time (messages/s; connect and hold: open connections)</text>"#,
        x0 + pw / 2.0,
        y0 - 10.0
    );
    let conns_mode = r.scenario == "connect" || r.scenario == "hold";
    let series: Vec<(f64, f64, f64)> = r
        .timeline
        .iter()
        .map(|t| {
            if conns_mode {
                (t.t, t.open as f64, f64::NAN)
            } else {
                (t.t, t.received_per_s, t.sent_per_s)
            }
        })
        .collect();
    let tmax = series.iter().map(|p| p.0).fold(1.0, f64::max);
    let (txmax, txstep) = nice_axis(tmax);
    let vmax = series
        .iter()
        .map(|p| p.1.max(if p.2.is_nan() { 0.0 } else { p.2 }))
        .fold(0.0, f64::max);
    let (vymax, vystep) = nice_axis(vmax);
    let mut t = 0.0;
    while t <= txmax + 1e-9 {
        let x = x0 + t / txmax * pw;
        grid_v(&mut s, x, y0, ph);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{t}</text>"#,
            y0 + ph + 16.0
        );
        t += txstep;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since start</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 34.0
    );
    y_ticks(&mut s, x0, y0, pw, ph, vymax, vystep, fmt_rate);
    for (k, color, label) in [(1, "#2ca02c", "received"), (2, "#ff7f0e", "sent")] {
        let mut path = String::new();
        for (i, p) in series.iter().enumerate() {
            let v = if k == 1 { p.1 } else { p.2 };
            if v.is_nan() {
                continue;
            }
            let px = x0 + p.0 / txmax * pw;
            let py = y0 + ph - v / vymax * ph;
            let _ = write!(path, "{}{px:.1},{py:.1} ", if i == 0 { "M" } else { "L" });
        }
        if !path.is_empty() {
            let dash = if k == 2 {
                r#" stroke-dasharray="6,4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<path d="{path}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#
            );
            let ly = y0 + 18.0 + 16.0 * (k as f64 - 1.0);
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
                x0 + pw - 150.0,
                ly - 4.0,
                x0 + pw - 120.0,
                ly - 4.0,
                x0 + pw - 112.0,
                ly,
                if conns_mode {
                    "open connections"
                } else {
                    label
                }
            );
        }
    }
    if series.is_empty() {
        no_data(&mut s, x0, y0, pw, ph);
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
        W / 2.0,
        total_h - 14.0,
        esc(&format!(
            "{} msg/s received, {} errors, load {} CPU-µs/msg, {}",
            fmt_rate(r.messages.received_per_s),
            r.errors_total,
            r.cpu
                .load_us_per_msg
                .map_or("-".to_string(), |v| format!("{v:.2}")),
            r.cpu.verdict.split(':').next().unwrap_or("")
        ))
    );
    s.push_str("</svg>\n");
    s
}

/// Starts an SVG document `total_h` high, `W` wide, on white, with `heading` (already
/// escaped) centred at the top.
fn open_svg(s: &mut String, total_h: f64, heading: &str) {
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" viewBox="0 0 {W} {total_h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="16" text-anchor="middle">{heading}</text>"#,
        W / 2.0
    );
}

fn frame(s: &mut String, x: f64, y: f64, w: f64, h: f64) {
    let _ = writeln!(
        s,
        r##"<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="none" stroke="#333"/>"##
    );
}

/// The percentile axis (x in nines: 0%, 90%, 99%, 99.9% ...) of a panel at `(x0, y0)`,
/// `pw` × `ph`, up to `xmax` nines: a grid line and a label per nine.
fn percentile_ticks(s: &mut String, x0: f64, y0: f64, pw: f64, ph: f64, xmax: f64) {
    let mut d = 0.0;
    while d <= xmax + 1e-9 {
        let x = x0 + d / xmax * pw;
        let label = match d as u32 {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            2 => "99%".to_string(),
            k => format!("99.{}%", "9".repeat(k as usize - 2)),
        };
        grid_v(s, x, y0, ph);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            y0 + ph + 16.0
        );
        d += 1.0;
    }
}

fn grid_v(s: &mut String, x: f64, y: f64, h: f64) {
    let _ = writeln!(
        s,
        r##"<line x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##,
        y + h
    );
}

#[allow(clippy::too_many_arguments)]
fn y_ticks(
    s: &mut String,
    x0: f64,
    y0: f64,
    pw: f64,
    ph: f64,
    ymax: f64,
    ystep: f64,
    label: impl Fn(f64) -> String,
) {
    let mut v = 0.0;
    while v <= ymax + ystep * 1e-6 {
        let y = y0 + ph - v / ymax * ph;
        let _ = writeln!(
            s,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 + pw,
            x0 - 6.0,
            y + 4.0,
            label(v)
        );
        v += ystep;
    }
}

fn no_data(s: &mut String, x0: f64, y0: f64, pw: f64, ph: f64) {
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#999">no data</text>"##,
        x0 + pw / 2.0,
        y0 + ph / 2.0
    );
}
