//! `slo --plot`: the capacity curve, what a planner reads first. Four parts, top to
//! bottom:
//!
//! 1. p50 / p99 / p99.9 (and any other percentile a target names) against the offered
//!    rate, over every step of the search sorted by rate (bisection visits rates out of
//!    order), latency on a log axis; the targets as horizontal lines; the highest
//!    passing rate as a vertical line; failing steps as hollow markers; a step with no
//!    latency at all (nothing answered) as a red × on the rate axis.
//! 2. Achieved against offered rate, with the `--min-achieved` line.
//! 3. Every step's latency percentile distribution (x in 1/(1−q) as in the other
//!    plots, y log), coloured from the lowest rate (blue) to the highest (red), failing
//!    steps dashed, the highest passing step thick; the targets as short marks at their
//!    percentile.
//! 4. The step table, sorted by rate, with the order the search visited them in.

use std::fmt::Write as _;

use super::{
    esc, frame, grid_v, nice_axis, no_data, open_svg, percentile_points, percentile_ticks, y_ticks,
    LEFT, RIGHT, W,
};
use crate::report::{decode_hist, fmt_n, fmt_rate, fmt_us, Report, Slo, SloStep};
use crate::slo::{parse_targets, LatencyTarget};

const TOP: f64 = 96.0;
const CURVE_H: f64 = 360.0;
const ACH_H: f64 = 170.0;
const DIST_H: f64 = 300.0;
const GAP: f64 = 84.0;
const ROW_H: f64 = 16.0;
const PASS: &str = "#2ca02c";
const FAIL: &str = "#d62728";
/// A white outline behind a label drawn over data.
const HALO: &str = r#" stroke="white" stroke-width="3" paint-order="stroke""#;
/// Longest "result" text in the step table before it is cut.
const WHY_CHARS: usize = 52;

/// (x, y) points of a line.
type Points = Vec<(f64, f64)>;

/// A percentile drawn on the capacity curve: its name for [`Summary::get`], and colour.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Series {
    name: &'static str,
    color: &'static str,
}

/// Every percentile the curve can draw, in percentile order.
const ALL: [Series; 8] = [
    Series {
        name: "min",
        color: "#bcbd22",
    },
    Series {
        name: "p50",
        color: "#1f77b4",
    },
    Series {
        name: "mean",
        color: "#7f7f7f",
    },
    Series {
        name: "p90",
        color: "#17becf",
    },
    Series {
        name: "p99",
        color: "#ff7f0e",
    },
    Series {
        name: "p99.9",
        color: "#9467bd",
    },
    Series {
        name: "p99.99",
        color: "#e377c2",
    },
    Series {
        name: "max",
        color: "#8c564b",
    },
];

/// The series a percentile name (as a target spells it) belongs to.
fn series_of(name: &str) -> Option<Series> {
    let canon = match name {
        "median" => "p50",
        "p999" => "p99.9",
        "p9999" => "p99.99",
        "p100" => "max",
        n => n,
    };
    ALL.iter().copied().find(|s| s.name == canon)
}

/// p50, p99 and p99.9, and whatever other percentile a target names.
fn series(targets: &[LatencyTarget]) -> Vec<Series> {
    ALL.iter()
        .copied()
        .filter(|s| {
            matches!(s.name, "p50" | "p99" | "p99.9")
                || targets.iter().any(|t| series_of(&t.pct) == Some(*s))
        })
        .collect()
}

/// The targets of the report; one that does not parse (a hand-edited file) is left out.
fn targets(slo: &Slo) -> Vec<LatencyTarget> {
    slo.targets
        .iter()
        .filter_map(|t| parse_targets(std::slice::from_ref(t)).ok())
        .flatten()
        .collect()
}

/// A step's value of a percentile, when it has one that a log axis can show.
fn value(s: &SloStep, name: &str) -> Option<f64> {
    if s.latency_us.count == 0 {
        return None;
    }
    s.latency_us.get(name).filter(|v| v.is_finite() && *v > 0.0)
}

/// `0.12` -> "0.12", `2.50` -> "2.5", `10.00` -> "10".
fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A rate axis label: 0, 500, 10k, 12.5k, 1.5M.
pub(crate) fn fmt_rate_tick(r: f64) -> String {
    if r >= 1e6 {
        format!("{}M", trim(r / 1e6))
    } else if r >= 1e3 {
        format!("{}k", trim(r / 1e3))
    } else {
        trim(r)
    }
}

/// A latency axis label, microseconds in: 500 ns, 100 µs, 1 ms, 2 s.
pub(crate) fn fmt_latency_tick(us: f64) -> String {
    let (v, unit) = if us < 1.0 {
        (us * 1000.0, "ns")
    } else if us < 1000.0 {
        (us, "µs")
    } else if us < 1e6 {
        (us / 1000.0, "ms")
    } else {
        (us / 1e6, "s")
    };
    format!("{} {unit}", trim(v))
}

/// A log10 latency axis over whole decades.
struct LogAxis {
    /// log10 of the lowest and highest value (µs) shown.
    lo: f64,
    hi: f64,
    y0: f64,
    h: f64,
}

impl LogAxis {
    /// Whole decades around the positive finite values, none of them on the frame;
    /// 10 µs to 10 ms when there are none.
    fn over(values: impl IntoIterator<Item = f64>, y0: f64, h: f64) -> LogAxis {
        let (mut mn, mut mx) = (f64::INFINITY, 0.0f64);
        for v in values {
            if v.is_finite() && v > 0.0 {
                mn = mn.min(v);
                mx = mx.max(v);
            }
        }
        let (lo, hi) = if mx > 0.0 {
            // a value on (or within a twentieth of a decade of) the frame gets a decade
            // more room: targets are round numbers, and a 1 ms line on the frame is lost
            let (a, b) = (mn.log10(), mx.log10());
            let mut lo = a.floor();
            if a - lo < 0.05 {
                lo -= 1.0;
            }
            let mut hi = b.ceil();
            if hi - b < 0.05 {
                hi += 1.0;
            }
            (lo, hi)
        } else {
            (1.0, 4.0)
        };
        LogAxis { lo, hi, y0, h }
    }

    fn y(&self, v: f64) -> f64 {
        self.y0 + self.h - (v.log10() - self.lo) / (self.hi - self.lo) * self.h
    }

    /// Grid lines and labels: every decade, and 2 and 5 times it (labelled too when
    /// the axis spans at most three decades).
    fn ticks(&self, s: &mut String, x0: f64, pw: f64) {
        let label_minor = self.hi - self.lo <= 3.0;
        let mut d = self.lo as i32;
        while d as f64 <= self.hi {
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powi(d);
                if v.log10() > self.hi + 1e-9 {
                    break;
                }
                let y = self.y(v);
                let major = m == 1.0;
                let _ = writeln!(
                    s,
                    r#"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}"/>"#,
                    x0 + pw,
                    if major { "#ccc" } else { "#eee" }
                );
                if major || label_minor {
                    let _ = writeln!(
                        s,
                        r#"<text x="{:.1}" y="{:.1}" text-anchor="end"{}>{}</text>"#,
                        x0 - 6.0,
                        y + 4.0,
                        if major { "" } else { r##" fill="#777""## },
                        fmt_latency_tick(v)
                    );
                }
            }
            d += 1;
        }
    }
}

/// A marker: filled when the step passed, hollow when it failed, with a tooltip.
fn marker(s: &mut String, x: f64, y: f64, color: &str, pass: bool, title: &str) {
    let fill = if pass { color } else { "white" };
    let _ = writeln!(
        s,
        r#"<circle class="pt {}" cx="{x:.1}" cy="{y:.1}" r="4" fill="{fill}" stroke="{color}" stroke-width="1.5"><title>{}</title></circle>"#,
        if pass { "pass" } else { "fail" },
        esc(title)
    );
}

fn path(s: &mut String, pts: &[(f64, f64)], color: &str, width: f64, dash: &str) {
    if pts.len() < 2 {
        return;
    }
    let mut d = String::new();
    for (i, (x, y)) in pts.iter().enumerate() {
        let _ = write!(d, "{}{x:.1},{y:.1} ", if i == 0 { "M" } else { "L" });
    }
    let dash = if dash.is_empty() {
        String::new()
    } else {
        format!(r#" stroke-dasharray="{dash}""#)
    };
    let _ = writeln!(
        s,
        r#"<path d="{}" fill="none" stroke="{color}" stroke-width="{width}"{dash}/>"#,
        d.trim_end()
    );
}

fn title(s: &mut String, x0: f64, y0: f64, pw: f64, text: &str) {
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">{}</text>"#,
        x0 + pw / 2.0,
        y0 - 10.0,
        esc(text)
    );
}

/// The rate axis along the bottom of a panel: ticks and the axis label.
fn rate_ticks(s: &mut String, x0: f64, y0: f64, pw: f64, ph: f64, xmax: f64, xstep: f64) {
    let mut v = 0.0;
    while v <= xmax + xstep * 1e-6 {
        let x = x0 + v / xmax * pw;
        grid_v(s, x, y0, ph);
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            y0 + ph + 16.0,
            fmt_rate_tick(v)
        );
        v += xstep;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">offered rate (messages/s)</text>"#,
        x0 + pw / 2.0,
        y0 + ph + 34.0
    );
}

/// Linear colour from blue (0) to red (1).
fn ramp(t: f64) -> String {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(31.0, 214.0),
        mix(119.0, 39.0),
        mix(180.0, 40.0)
    )
}

/// x of a percentile on the 1/(1−q) axis, for the target marks; None for mean and max.
fn percentile_x(name: &str) -> Option<f64> {
    let q: f64 = match series_of(name)?.name {
        "min" => 0.0,
        "p50" => 0.5,
        "p90" => 0.9,
        "p99" => 0.99,
        "p99.9" => 0.999,
        "p99.99" => 0.9999,
        _ => return None,
    };
    Some((1.0 / (1.0 - q)).log10())
}

/// Renders an `slo` report: the capacity curve first.
pub(crate) fn svg(r: &Report, slo: &Slo) -> String {
    let targets = targets(slo);
    let series = series(&targets);
    // the steps in rate order, each with its place in the search (1-based)
    let mut steps: Vec<(usize, &SloStep)> = slo
        .steps
        .iter()
        .enumerate()
        .filter(|(_, st)| st.rate.is_finite())
        .map(|(i, st)| (i + 1, st))
        .collect();
    steps.sort_by(|a, b| a.1.rate.total_cmp(&b.1.rate).then(a.0.cmp(&b.0)));
    let best = slo
        .best_rate
        .filter(|b| b.is_finite())
        .and_then(|b| steps.iter().find(|(_, st)| st.pass && st.rate == b))
        .map(|(i, _)| *i);

    let x0 = LEFT;
    let pw = W - LEFT - RIGHT;
    let curve_y = TOP;
    let ach_y = curve_y + CURVE_H + GAP;
    let dist_y = ach_y + ACH_H + GAP;
    let table_y = dist_y + DIST_H + GAP;
    let total_h = table_y + ROW_H * (steps.len() as f64 + 1.0) + 80.0;

    let mut s = String::new();
    open_svg(
        &mut s,
        total_h,
        &format!("soliton-load slo — {}", esc(&r.url)),
    );
    let conns = r
        .config
        .get("connections")
        .and_then(|v| v.as_u64())
        .map_or(String::new(), |c| format!(", {} connections", fmt_n(c)));
    let size = if r.messages.size > 0 {
        format!(
            ", {} B {}",
            r.messages.size,
            if r.messages.text { "text" } else { "binary" }
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        r##"<text x="{}" y="44" text-anchor="middle" fill="#555">{}</text>"##,
        W / 2.0,
        esc(&format!(
            "target {} with at most {} errors and {:.0}% of the offered rate achieved ({} search{conns}{size})",
            if slo.targets.is_empty() {
                "-".to_string()
            } else {
                slo.targets.join(", ")
            },
            slo.max_errors,
            slo.min_achieved * 100.0,
            slo.search
        ))
    );

    // ---- 1: latency against offered rate ----
    let rmax = slo
        .steps
        .iter()
        .flat_map(|st| [st.rate, st.achieved])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let (xmax, xstep) = nice_axis(rmax * 1.05);
    let xof = |rate: f64| x0 + rate / xmax * pw;
    let ly = LogAxis::over(
        steps
            .iter()
            .flat_map(|(_, st)| series.iter().filter_map(move |se| value(st, se.name)))
            .chain(targets.iter().map(|t| t.limit_us)),
        curve_y,
        CURVE_H,
    );
    // legend row above the panel
    let mut lx = x0;
    let ly_legend = curve_y - 32.0;
    for se in &series {
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"/><circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"/><text x="{:.1}" y="{ly_legend:.1}">{}</text>"#,
            ly_legend - 4.0,
            lx + 24.0,
            ly_legend - 4.0,
            se.color,
            lx + 12.0,
            ly_legend - 4.0,
            se.color,
            lx + 30.0,
            se.name
        );
        lx += 40.0 + 8.0 * se.name.len() as f64;
    }
    let _ = writeln!(
        s,
        r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#333"/><text x="{:.1}" y="{ly_legend:.1}">pass</text><circle cx="{:.1}" cy="{:.1}" r="4" fill="white" stroke="#333" stroke-width="1.5"/><text x="{:.1}" y="{ly_legend:.1}">fail</text><text x="{:.1}" y="{ly_legend:.1}" fill="{FAIL}">×</text><text x="{:.1}" y="{ly_legend:.1}">no latency</text>"##,
        lx + 10.0,
        ly_legend - 4.0,
        lx + 18.0,
        lx + 60.0,
        ly_legend - 4.0,
        lx + 68.0,
        lx + 106.0,
        lx + 118.0
    );
    title(
        &mut s,
        x0,
        curve_y,
        pw,
        "Capacity: latency against offered rate (from the intended send time)",
    );
    frame(&mut s, x0, curve_y, pw, CURVE_H);
    rate_ticks(&mut s, x0, curve_y, pw, CURVE_H, xmax, xstep);
    ly.ticks(&mut s, x0, pw);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">latency (log)</text>"#,
        18.0,
        curve_y + CURVE_H / 2.0,
        18.0,
        curve_y + CURVE_H / 2.0
    );
    // targets
    for t in &targets {
        let color = series_of(&t.pct).map_or("#555", |se| se.color);
        let y = ly.y(t.limit_us);
        let _ = writeln!(
            s,
            r#"<line class="target" x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="1.5" stroke-dasharray="8,4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="{color}"{HALO}>target {}</text>"#,
            x0 + pw,
            x0 + pw - 6.0,
            y - 5.0,
            esc(&t.text)
        );
    }
    // the highest passing rate
    match slo.best_rate.filter(|b| b.is_finite()) {
        Some(b) => {
            let x = xof(b);
            let (tx, anchor) = if x > x0 + pw * 0.7 {
                (x - 6.0, "end")
            } else {
                (x + 6.0, "start")
            };
            let _ = writeln!(
                s,
                r#"<line class="best" x1="{x:.1}" y1="{curve_y:.1}" x2="{x:.1}" y2="{:.1}" stroke="{PASS}" stroke-width="2" stroke-dasharray="6,4"/><text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" fill="{PASS}" font-weight="bold"{HALO}>highest passing rate {} msg/s</text>"#,
                curve_y + CURVE_H,
                curve_y + 16.0,
                fmt_rate(b)
            );
        }
        None if !steps.is_empty() => {
            let _ = writeln!(
                s,
                r#"<text class="nopass" x="{:.1}" y="{:.1}" fill="{FAIL}" font-weight="bold"{HALO}>no step passed</text>"#,
                x0 + 10.0,
                curve_y + 16.0
            );
        }
        None => {}
    }
    // one line per percentile through every step with data, then the markers on top
    for se in &series {
        let pts: Vec<(f64, f64)> = steps
            .iter()
            .filter_map(|(_, st)| value(st, se.name).map(|v| (xof(st.rate), ly.y(v))))
            .collect();
        path(&mut s, &pts, se.color, 1.5, "");
    }
    for se in &series {
        for (i, st) in &steps {
            if let Some(v) = value(st, se.name) {
                marker(
                    &mut s,
                    xof(st.rate),
                    ly.y(v),
                    se.color,
                    st.pass,
                    &format!(
                        "step {i}: {} at {} msg/s offered = {} ({})",
                        se.name,
                        fmt_rate(st.rate),
                        fmt_us(v),
                        if st.pass { "pass" } else { "FAIL" }
                    ),
                );
            }
        }
    }
    for (i, st) in &steps {
        if st.latency_us.count == 0 {
            let _ = writeln!(
                s,
                r#"<text class="nodata" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="16" font-weight="bold" fill="{FAIL}">×<title>{}</title></text>"#,
                xof(st.rate),
                curve_y + CURVE_H - 5.0,
                esc(&format!(
                    "step {i}: {} msg/s offered, no latency: {}",
                    fmt_rate(st.rate),
                    st.why
                ))
            );
        }
    }
    if steps.is_empty() {
        no_data(&mut s, x0, curve_y, pw, CURVE_H);
    }

    // ---- 2: achieved against offered ----
    title(
        &mut s,
        x0,
        ach_y,
        pw,
        "Achieved (answered) against offered rate",
    );
    frame(&mut s, x0, ach_y, pw, ACH_H);
    rate_ticks(&mut s, x0, ach_y, pw, ACH_H, xmax, xstep);
    y_ticks(&mut s, x0, ach_y, pw, ACH_H, xmax, xstep, fmt_rate_tick);
    let yof = |v: f64| ach_y + ACH_H - v / xmax * ACH_H;
    let _ = writeln!(
        s,
        r##"<line x1="{x0:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#999" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" fill="#777">achieved = offered</text>"##,
        yof(0.0),
        xof(xmax),
        yof(xmax),
        x0 + 8.0,
        ach_y + 16.0
    );
    if slo.min_achieved > 0.0 && slo.min_achieved < 1.0 {
        let _ = writeln!(
            s,
            r#"<line x1="{x0:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{FAIL}" stroke-opacity="0.5" stroke-dasharray="6,4"/><text x="{:.1}" y="{:.1}" fill="{FAIL}" fill-opacity="0.8">pass needs {:.0}% of offered</text>"#,
            yof(0.0),
            xof(xmax),
            yof(xmax * slo.min_achieved),
            x0 + 8.0,
            ach_y + 32.0,
            slo.min_achieved * 100.0
        );
    }
    let pts: Vec<(f64, f64)> = steps
        .iter()
        .filter(|(_, st)| st.achieved.is_finite())
        .map(|(_, st)| (xof(st.rate), yof(st.achieved)))
        .collect();
    path(&mut s, &pts, "#555", 1.5, "");
    for (i, st) in &steps {
        if !st.achieved.is_finite() {
            continue;
        }
        let color = if st.pass { PASS } else { FAIL };
        let fill = if st.pass { PASS } else { "white" };
        let _ = writeln!(
            s,
            r#"<circle class="ach" cx="{:.1}" cy="{:.1}" r="4" fill="{fill}" stroke="{color}" stroke-width="1.5"><title>{}</title></circle>"#,
            xof(st.rate),
            yof(st.achieved),
            esc(&format!(
                "step {i}: {} msg/s offered, {} achieved ({})",
                fmt_rate(st.rate),
                fmt_rate(st.achieved),
                if st.pass { "pass" } else { "FAIL" }
            ))
        );
    }
    if steps.is_empty() {
        no_data(&mut s, x0, ach_y, pw, ACH_H);
    }

    // ---- 3: each step's percentile distribution ----
    let dists: Vec<(usize, &SloStep, Points)> = steps
        .iter()
        .filter_map(|(i, st)| {
            let h = decode_hist(&st.latency_hist).ok()?;
            let pts: Vec<(f64, f64)> = percentile_points(&h)
                .into_iter()
                .filter(|p| p.1.is_finite() && p.1 > 0.0)
                .collect();
            (!pts.is_empty()).then_some((*i, *st, pts))
        })
        .collect();
    title(
        &mut s,
        x0,
        dist_y,
        pw,
        "Latency by percentile at each step (blue: lowest rate, red: highest; dashed: failed)",
    );
    frame(&mut s, x0, dist_y, pw, DIST_H);
    let dxmax = dists
        .iter()
        .flat_map(|d| d.2.iter().map(|p| p.0))
        .fold(2.0f64, f64::max)
        .ceil();
    let dly = LogAxis::over(
        dists
            .iter()
            .flat_map(|d| d.2.iter().map(|p| p.1))
            .chain(targets.iter().map(|t| t.limit_us)),
        dist_y,
        DIST_H,
    );
    percentile_ticks(&mut s, x0, dist_y, pw, DIST_H, dxmax);
    dly.ticks(&mut s, x0, pw);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        x0 + pw / 2.0,
        dist_y + DIST_H + 34.0
    );
    for t in &targets {
        if let Some(px) = percentile_x(&t.pct) {
            let color = series_of(&t.pct).map_or("#555", |se| se.color);
            let x = x0 + px / dxmax * pw;
            let y = dly.y(t.limit_us);
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="4,3"/><text x="{:.1}" y="{:.1}" fill="{color}"{HALO}>{}</text>"#,
                x - 24.0,
                x + 24.0,
                x + 26.0,
                y + 4.0,
                esc(&t.text)
            );
        }
    }
    let n = dists.len();
    let mut legend = Vec::new();
    for (k, (i, st, pts)) in dists.iter().enumerate() {
        let color = ramp(if n > 1 {
            k as f64 / (n - 1) as f64
        } else {
            0.0
        });
        let xy: Vec<(f64, f64)> = pts
            .iter()
            .map(|p| (x0 + p.0 / dxmax * pw, dly.y(p.1)))
            .collect();
        let width = if Some(*i) == best { 3.0 } else { 1.5 };
        path(&mut s, &xy, &color, width, if st.pass { "" } else { "6,4" });
        legend.push((color, width, st.pass, st.rate));
    }
    // the legend in the bottom right corner, below the curves' right ends (latency
    // rises with the percentile), ten rows a column, on white
    if !legend.is_empty() {
        let cols = legend.len().div_ceil(10);
        let rows = legend.len().min(10);
        let (bw, bh) = (cols as f64 * 130.0 + 8.0, rows as f64 * 15.0 + 8.0);
        let (bx, by) = (x0 + pw - bw - 8.0, dist_y + DIST_H - bh - 8.0);
        let _ = writeln!(
            s,
            r##"<rect x="{bx:.1}" y="{by:.1}" width="{bw:.1}" height="{bh:.1}" fill="white" fill-opacity="0.9" stroke="#ccc"/>"##
        );
        for (k, (color, width, pass, rate)) in legend.iter().enumerate() {
            let lx = bx + 8.0 + (k / 10) as f64 * 130.0;
            let lyy = by + 16.0 + (k % 10) as f64 * 15.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="{width}"{}/><text x="{:.1}" y="{lyy:.1}">{} msg/s {}</text>"#,
                lyy - 4.0,
                lx + 22.0,
                lyy - 4.0,
                if *pass {
                    ""
                } else {
                    r#" stroke-dasharray="6,4""#
                },
                lx + 28.0,
                fmt_rate_tick(*rate),
                if *pass { "pass" } else { "FAIL" }
            );
        }
    }
    if dists.is_empty() {
        no_data(&mut s, x0, dist_y, pw, DIST_H);
    }

    // ---- 4: the step table ----
    let _ = writeln!(
        s,
        r#"<text x="{x0:.1}" y="{:.1}" font-size="14">Steps by rate (#: the order the search ran them in)</text>"#,
        table_y - 22.0
    );
    // (right edge of the column, text-anchor end) then the result, left-aligned
    let cols: [(&str, f64); 8] = [
        ("#", 24.0),
        ("rate", 100.0),
        ("achieved", 170.0),
        ("p50", 230.0),
        ("p99", 290.0),
        ("p99.9", 350.0),
        ("max", 410.0),
        ("errors", 465.0),
    ];
    let result_x = x0 - 60.0 + 480.0;
    let tx = |c: f64| x0 - 60.0 + c;
    for (name, c) in cols {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{table_y:.1}" text-anchor="end" font-weight="bold">{}</text>"#,
            tx(c),
            esc(name)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{result_x:.1}" y="{table_y:.1}" font-weight="bold">result</text>"#
    );
    for (row, (i, st)) in steps.iter().enumerate() {
        let y = table_y + ROW_H * (row as f64 + 1.0);
        let l = &st.latency_us;
        let has = l.count > 0;
        let lat = |v: f64| if has { fmt_us(v) } else { "-".into() };
        let cells = [
            i.to_string(),
            fmt_rate(st.rate),
            fmt_rate(st.achieved),
            lat(l.p50),
            lat(l.p99),
            lat(l.p99_9),
            lat(l.max),
            fmt_n(st.errors),
        ];
        let color = if st.pass { "#222" } else { "#b00" };
        let weight = if Some(*i) == best {
            r#" font-weight="bold""#
        } else {
            ""
        };
        for (cell, (_, c)) in cells.iter().zip(cols) {
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{y:.1}" text-anchor="end" fill="{color}"{weight}>{}</text>"#,
                tx(c),
                esc(cell)
            );
        }
        let result = if st.pass {
            if st.load_bound {
                "pass (load-bound!)".to_string()
            } else {
                "pass".to_string()
            }
        } else {
            let why: String = st.why.chars().take(WHY_CHARS).collect();
            let more = if st.why.chars().count() > WHY_CHARS {
                "…"
            } else {
                ""
            };
            if why.is_empty() {
                "FAIL".to_string()
            } else {
                format!("FAIL: {why}{more}")
            }
        };
        let _ = writeln!(
            s,
            r#"<text x="{result_x:.1}" y="{y:.1}" fill="{color}"{weight}><title>{}</title>{}</text>"#,
            esc(&st.why),
            esc(&result)
        );
    }
    let end_y = table_y + ROW_H * (steps.len() as f64 + 1.0) + 14.0;
    let verdict = match slo.best_rate.filter(|b| b.is_finite()) {
        Some(b) => format!("highest passing rate: {} msg/s", fmt_rate(b)),
        None => "no rate passed".to_string(),
    };
    let _ = writeln!(
        s,
        r#"<text x="{x0:.1}" y="{end_y:.1}" font-size="14" font-weight="bold" fill="{}">{}</text>"#,
        if slo.best_rate.is_some() { PASS } else { FAIL },
        esc(&verdict)
    );
    let mut notes = vec!["latency from the intended send time (coordinated omission corrected)"];
    if steps.iter().any(|(_, st)| st.load_bound) {
        notes.push("a load-bound step says more about the load machine than about the server");
    }
    for (k, note) in notes.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="{x0:.1}" y="{:.1}" fill="#555">{}</text>"##,
            end_y + 20.0 + 16.0 * k as f64,
            esc(note)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{encode_hist, Summary};
    use crate::stats::new_hist;

    /// A step whose latencies are spread around `p50_us` with a tail of `tail_us`.
    fn step(rate: f64, achieved: f64, p50_us: u64, tail_us: u64, pass: bool) -> SloStep {
        let mut h = new_hist();
        for i in 0..1000u64 {
            let v = if i < 990 {
                p50_us * 1000 / 2 + i * p50_us
            } else {
                tail_us * 1000
            };
            h.record(v).unwrap();
        }
        SloStep {
            rate,
            achieved,
            latency_us: Summary::of(&h),
            errors: 0,
            load_bound: false,
            pass,
            why: if pass {
                String::new()
            } else {
                "p99 = 2.00ms (target p99<1ms)".into()
            },
            latency_hist: encode_hist(&h),
        }
    }

    /// A step that failed with errors and answered nothing.
    fn dead(rate: f64) -> SloStep {
        SloStep {
            rate,
            achieved: 0.0,
            errors: 17,
            why: "errors: stall 17; no message answered".into(),
            ..SloStep::default()
        }
    }

    fn report(targets: &[&str], steps: Vec<SloStep>, best: Option<f64>) -> Report {
        Report {
            scenario: "slo".into(),
            url: "ws://127.0.0.1:9311/?a=1&b=2".into(),
            slo: Some(Slo {
                targets: targets.iter().map(|t| t.to_string()).collect(),
                max_errors: 0,
                min_achieved: 0.95,
                search: "bisect".into(),
                steps,
                best_rate: best,
            }),
            ..Report::default()
        }
    }

    /// A tiny XML check: tags nest and close, one root `<svg>`, entities are known,
    /// attribute quotes pair up.
    fn well_formed(s: &str) -> Result<(), String> {
        let s = s.trim_end();
        if !s.starts_with("<svg") || !s.ends_with("</svg>") {
            return Err("not <svg>...</svg>".into());
        }
        for (i, _) in s.match_indices('&') {
            let rest = &s[i..];
            if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"]
                .iter()
                .any(|e| rest.starts_with(e))
            {
                return Err(format!("bare & at {i}"));
            }
        }
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = s;
        while let Some(i) = rest.find('<') {
            let j = rest[i..].find('>').ok_or("unclosed <")?;
            let tag = &rest[i + 1..i + j];
            if tag.contains('<') {
                return Err(format!("< inside tag {tag:?}"));
            }
            if !tag.matches('"').count().is_multiple_of(2) {
                return Err(format!("odd quotes in {tag:?}"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("</{name}> without opening"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else {
                let name = tag.split_whitespace().next().unwrap_or("");
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[i + j + 1..];
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        if s.contains("NaN") || s.contains("inf") {
            return Err("NaN or inf in the SVG".into());
        }
        Ok(())
    }

    /// The cx of every marker of a class, in document order.
    fn cxs(s: &str, class: &str) -> Vec<f64> {
        s.match_indices(&format!(r#"class="{class}"#))
            .map(|(i, _)| {
                let c = &s[i..];
                let a = c.find("cx=\"").unwrap() + 4;
                let b = a + c[a..].find('"').unwrap();
                c[a..b].parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn capacity_curve_of_a_bisection() {
        // the order a bisection visits rates in: up, up, fail (dead), fail, pass
        let steps = vec![
            step(20_000.0, 20_000.0, 100, 400, true),
            step(40_000.0, 39_900.0, 150, 800, true),
            dead(80_000.0),
            step(60_000.0, 52_000.0, 400, 2_000, false),
            step(50_000.0, 49_800.0, 200, 900, true),
        ];
        let r = report(&["p99<1ms", "p99.9<=5ms"], steps, Some(50_000.0));
        let s = super::super::svg(&r);
        well_formed(&s).unwrap();
        assert!(s.contains("Capacity: latency against offered rate"));
        assert!(s.starts_with("<svg ") && s.contains("soliton-load slo — "));
        assert_eq!(s.matches("offered rate (messages/s)</text>").count(), 2);
        assert_eq!(s.matches(r#"class="target""#).count(), 2);
        assert!(s.contains("target p99&lt;1ms") && s.contains("target p99.9&lt;=5ms"));
        assert_eq!(s.matches(r#"class="best""#).count(), 1);
        assert!(s.contains("highest passing rate 50,000 msg/s"));
        assert!(!s.contains("no step passed"));
        // one marker per step with latency per percentile (p50, p99, p99.9)
        assert_eq!(s.matches(r#"class="pt "#).count(), 4 * 3);
        assert_eq!(s.matches(r#"class="pt fail""#).count(), 3);
        assert_eq!(s.matches(r#"class="nodata""#).count(), 1);
        // achieved against offered: every step, the dead one too
        assert_eq!(s.matches(r#"class="ach""#).count(), 5);
        // markers in rate order: each percentile's run of four rises in x
        let x = cxs(&s, "pt ");
        for run in x.chunks(4) {
            assert!(run.windows(2).all(|w| w[0] < w[1]), "{run:?}");
        }
        // the best line sits at 50,000 on the rate axis, where p50's third marker is
        let best_x: f64 = {
            let i = s.find(r#"class="best" x1=""#).unwrap() + r#"class="best" x1=""#.len();
            let j = i + s[i..].find('"').unwrap();
            s[i..j].parse().unwrap()
        };
        assert_eq!(best_x, x[2]);
        // readable ticks
        for t in ["20k", "40k", "80k", "100 µs", "1 ms"] {
            assert!(s.contains(&format!(">{t}</text>")), "tick {t}");
        }
        // the step table: sorted by rate, search order in the first column
        let rows: Vec<usize> = ["20,000", "40,000", "50,000", "60,000", "80,000"]
            .iter()
            .map(|r| s.find(&format!(">{r}</text>")).unwrap())
            .collect();
        assert!(rows.windows(2).all(|w| w[0] < w[1]));
        assert!(s.contains("FAIL: errors: stall 17; no message answered"));
        assert!(s.contains("highest passing rate: 50,000 msg/s"));
        assert!(s.contains("ws://127.0.0.1:9311/?a=1&amp;b=2"));
    }

    #[test]
    fn no_step_passed() {
        let steps = vec![
            step(10_000.0, 10_000.0, 900, 3_000, false),
            dead(20_000.0),
            step(5_000.0, 5_000.0, 800, 2_500, false),
        ];
        let s = super::super::svg(&report(&["p99<1ms"], steps, None));
        well_formed(&s).unwrap();
        assert!(!s.contains(r#"class="best""#));
        assert!(s.contains("no step passed") && s.contains("no rate passed"));
        assert_eq!(s.matches(r#"class="pt fail""#).count(), 2 * 3);
        assert_eq!(s.matches(r#"class="pt pass""#).count(), 0);
        assert_eq!(s.matches(r#"class="nodata""#).count(), 1);
    }

    #[test]
    fn single_step_and_a_target_on_max() {
        let steps = vec![step(1_000.0, 1_000.0, 50, 120, true)];
        let s = super::super::svg(&report(&["max<20ms"], steps, Some(1_000.0)));
        well_formed(&s).unwrap();
        // p50, p99, p99.9 and max, which the target names
        assert_eq!(s.matches(r#"class="pt pass""#).count(), 4);
        assert_eq!(s.matches(r#"class="target""#).count(), 1);
        assert!(s.contains("highest passing rate 1,000 msg/s"));
        assert!(s.contains(">1k</text>"));
    }

    #[test]
    fn nothing_to_draw() {
        // no step at all, an unparseable target, a step with no latency and a bad histogram
        let s = super::super::svg(&report(&["p99<1ms", "p99 soon"], vec![], None));
        well_formed(&s).unwrap();
        assert_eq!(s.matches(r#"class="target""#).count(), 1);
        assert!(s.contains("no data"));
        let mut d = dead(3_000.0);
        d.latency_hist = "not base64!".into();
        let s = super::super::svg(&report(&["p99<1ms"], vec![d], None));
        well_formed(&s).unwrap();
        assert_eq!(s.matches(r#"class="pt "#).count(), 0);
        assert_eq!(s.matches(r#"class="nodata""#).count(), 1);
    }

    #[test]
    fn ticks() {
        assert_eq!(fmt_rate_tick(0.0), "0");
        assert_eq!(fmt_rate_tick(500.0), "500");
        assert_eq!(fmt_rate_tick(10_000.0), "10k");
        assert_eq!(fmt_rate_tick(12_500.0), "12.5k");
        assert_eq!(fmt_rate_tick(1_500_000.0), "1.5M");
        assert_eq!(fmt_latency_tick(0.5), "500 ns");
        assert_eq!(fmt_latency_tick(100.0), "100 µs");
        assert_eq!(fmt_latency_tick(1000.0), "1 ms");
        assert_eq!(fmt_latency_tick(2e6), "2 s");
        let a = LogAxis::over([150.0, 2500.0], 0.0, 300.0);
        assert_eq!((a.lo, a.hi), (2.0, 4.0));
        assert!(a.y(150.0) < 300.0 && a.y(2500.0) > 0.0);
        // a round target is not drawn on the frame
        let a = LogAxis::over([1000.0, 5000.0], 0.0, 300.0);
        assert_eq!((a.lo, a.hi), (2.0, 4.0));
        assert_eq!(a.y(1000.0), 150.0);
        let a = LogAxis::over([99.0, 1010.0], 0.0, 300.0);
        assert_eq!((a.lo, a.hi), (1.0, 4.0));
        let a = LogAxis::over([], 0.0, 300.0);
        assert_eq!((a.lo, a.hi), (1.0, 4.0));
    }
}
