//! `slo`: capacity search. Runs the open-loop `rate` scenario at rising rates (step by
//! step, or doubling then bisecting) and reports the highest rate at which every target
//! held, with no more errors than allowed and the offered rate actually achieved.

use std::io::Write as _;

use crate::report::{slo_header, slo_row, Report, Slo, SloStep};
use crate::run::{self, Kind, Spec};

/// One latency target, e.g. `p99<1ms`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LatencyTarget {
    /// Percentile name as [`crate::report::Summary::get`] knows it.
    pub(crate) pct: String,
    /// Limit in microseconds.
    pub(crate) limit_us: f64,
    /// `<=` rather than `<`.
    pub(crate) inclusive: bool,
    pub(crate) text: String,
}

/// Parses `p99<1ms`, `p99.9<=5ms`, `max<20ms`; several may be comma-separated.
pub(crate) fn parse_targets(items: &[String]) -> Result<Vec<LatencyTarget>, String> {
    let mut out = Vec::new();
    for item in items {
        for t in item.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (name, rest, inclusive) = if let Some((a, b)) = t.split_once("<=") {
                (a, b, true)
            } else if let Some((a, b)) = t.split_once('<') {
                (a, b, false)
            } else {
                return Err(format!("target {t:?}: expected e.g. p99<1ms"));
            };
            let name = name.trim().to_ascii_lowercase();
            if crate::report::Summary::default().get(&name).is_none() {
                return Err(format!(
                    "target {t:?}: unknown percentile {name:?} (p50, p90, p99, p99.9, p99.99, max, mean)"
                ));
            }
            let limit_us = parse_latency(rest.trim())
                .ok_or_else(|| format!("target {t:?}: bad latency {rest:?} (e.g. 500us, 1ms)"))?;
            out.push(LatencyTarget {
                pct: name,
                limit_us,
                inclusive,
                text: t.to_string(),
            });
        }
    }
    if out.is_empty() {
        return Err("--target: no target".into());
    }
    Ok(out)
}

/// `250us`, `1ms`, `1.5ms`, `2s`, `800ns` -> microseconds.
fn parse_latency(s: &str) -> Option<f64> {
    let i = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let v: f64 = s[..i].parse().ok()?;
    let mult = match s[i..].trim() {
        "ns" => 0.001,
        "us" | "µs" => 1.0,
        "ms" | "" => 1000.0,
        "s" => 1e6,
        _ => return None,
    };
    Some(v * mult)
}

/// How to search.
#[derive(Clone, Debug)]
pub(crate) struct Search {
    pub(crate) start: f64,
    pub(crate) step: f64,
    pub(crate) max: f64,
    pub(crate) bisect: bool,
    pub(crate) precision: f64,
    pub(crate) max_steps: usize,
    pub(crate) max_errors: u64,
    pub(crate) min_achieved: f64,
}

/// Judges one step.
pub(crate) fn judge(
    r: &Report,
    rate: f64,
    targets: &[LatencyTarget],
    s: &Search,
) -> (bool, String) {
    let mut why = Vec::new();
    if r.errors_total > s.max_errors {
        let kinds: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        why.push(format!("errors: {}", kinds.join(", ")));
    }
    let achieved = r.messages.received_per_s;
    if achieved < rate * s.min_achieved {
        why.push(format!(
            "achieved {:.0}/s < {:.0}% of offered",
            achieved,
            s.min_achieved * 100.0
        ));
    }
    if r.latency_us.count == 0 {
        why.push("no message answered".into());
    }
    for t in targets {
        let v = r.latency_us.get(&t.pct).unwrap_or(f64::INFINITY);
        let ok = if t.inclusive {
            v <= t.limit_us
        } else {
            v < t.limit_us
        };
        if !ok {
            why.push(format!(
                "{} = {} (target {})",
                t.pct,
                crate::report::fmt_us(v),
                t.text
            ));
        }
    }
    (why.is_empty(), why.join("; "))
}

/// Runs the search; the report's figures are those of the highest passing step (or of
/// the last step when none passed), with every step in its `slo` section.
pub(crate) fn run(base: &Spec, targets: &[LatencyTarget], s: &Search) -> Report {
    let mut steps: Vec<SloStep> = Vec::new();
    let mut best: Option<(f64, Report)> = None;
    let mut last: Option<Report> = None;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "slo: searching for the highest rate with {} ({} search)",
        targets
            .iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if s.bisect { "bisect" } else { "step" }
    );
    let _ = write!(out, "{}", slo_header());
    let _ = out.flush();
    drop(out);
    let mut rate = s.start;
    let mut lo = 0.0f64; // highest pass
    let mut hi = f64::INFINITY; // lowest fail
    for _ in 0..s.max_steps {
        if rate <= 0.0 || rate > s.max {
            break;
        }
        let mut spec = base.clone();
        spec.kind = Kind::Rate { rate };
        spec.config
            .insert("rate".into(), serde_json::Value::from(rate));
        let r = run::run(&spec);
        let (pass, why) = judge(&r, rate, targets, s);
        let step = SloStep {
            rate,
            achieved: r.messages.received_per_s,
            latency_us: r.latency_us.clone(),
            errors: r.errors_total,
            load_bound: r.cpu.load_bound,
            pass,
            why,
            latency_hist: r.latency_hist.clone(),
        };
        print!("{}", slo_row(&step));
        let _ = std::io::stdout().flush();
        steps.push(step);
        if pass {
            lo = lo.max(rate);
            if best.as_ref().is_none_or(|(b, _)| rate > *b) {
                best = Some((rate, r.clone()));
            }
        } else {
            hi = hi.min(rate);
        }
        last = Some(r);
        // next rate
        let next = if s.bisect {
            if hi.is_infinite() {
                rate * 2.0
            } else if (hi - lo) <= s.precision * hi {
                break;
            } else {
                (lo + hi) / 2.0
            }
        } else if pass {
            rate + s.step
        } else {
            break;
        };
        rate = next.round();
        // a short pause so that the server finishes closing the last step's connections
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let best_rate = best.as_ref().map(|(r, _)| *r);
    let mut report = match (best, last) {
        (Some((_, r)), _) => r,
        (None, Some(r)) => r,
        (None, None) => Report::default(),
    };
    report.scenario = "slo".into();
    report.slo = Some(Slo {
        targets: targets.iter().map(|t| t.text.clone()).collect(),
        max_errors: s.max_errors,
        min_achieved: s.min_achieved,
        search: if s.bisect { "bisect" } else { "step" }.into(),
        steps,
        best_rate,
    });
    if best_rate.is_some() {
        report
            .notes
            .push("figures above are those of the highest passing step".into());
    } else {
        report
            .notes
            .push("no step passed: figures above are those of the last step".into());
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_targets(&["p99<1ms, p99.9<=5ms".into(), "max<250us".into()]).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].pct, "p99");
        assert_eq!(t[0].limit_us, 1000.0);
        assert!(!t[0].inclusive);
        assert!(t[1].inclusive);
        assert_eq!(t[2].limit_us, 250.0);
        assert!(parse_targets(&["p42<1ms".into()]).is_err());
        assert!(parse_targets(&["p99>1ms".into()]).is_err());
        assert!(parse_targets(&["p99<1 parsec".into()]).is_err());
    }
}
