//! Every scenario, briefly, against our server (in this process) and against a peer
//! server written by someone else (Python `websockets`), with the figures checked for
//! sense; plus the bad conditions: unreachable, garbage, stalls, closes, refusals.

mod common;

use std::time::Duration;

use common::*;

const SHORT: &[&str] = &["--duration", "1s", "--warmup", "300ms"];

fn args<'a>(base: &[&'a str], url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = base.to_vec();
    v.push(url);
    v.extend_from_slice(SHORT);
    v.extend_from_slice(extra);
    v
}

/// Echo sense checks: everything sent came back, nothing else went wrong.
fn check_echo(r: &Run) {
    assert_eq!(r.status, 0, "stderr: {}", r.stderr);
    let j = r.json.as_ref().expect("json");
    assert_eq!(j["scenario"], "echo");
    let sent = u(j, "messages.sent");
    assert!(sent > 0, "no message sent: {}", r.stdout);
    assert_eq!(sent, u(j, "messages.received"), "{}", r.stdout);
    assert_eq!(
        u(j, "messages.sent_total"),
        u(j, "messages.received_total"),
        "{}",
        r.stdout
    );
    assert_eq!(u(j, "errors_total"), 0, "{}", r.stdout);
    assert_eq!(u(j, "latency_us.count"), sent);
    assert_ordered(j, "latency_us");
    assert!(f(j, "messages.received_per_s") > 0.0);
    assert!(f(j, "cpu.load_s") >= 0.0);
    assert!(j["cpu"]["verdict"].is_string());
    assert!(r.stdout.contains("p99.99"), "{}", r.stdout);
}

#[test]
fn echo_ours() {
    let s = Ours::start(false);
    let url = s.url();
    let pid = std::process::id().to_string();
    let r = load(
        &args(
            &["echo", "--connections", "20"],
            &url,
            &["--server-pid", &pid],
        ),
        Duration::from_secs(30),
    );
    check_echo(&r);
    let j = r.json.unwrap();
    assert_eq!(u(&j, "connections.handshakes"), 20);
    assert_eq!(u(&j, "connections.open_at_end"), 20);
    assert!(j["cpu"]["server_s"].is_number(), "server CPU measured");
    assert!(r.stdout.contains("server"), "{}", r.stdout);
}

#[test]
fn echo_text_inflight_threads() {
    let s = Ours::start(false);
    let url = s.url();
    let r = load(
        &args(
            &[
                "echo",
                "--connections",
                "16",
                "--inflight",
                "4",
                "--text",
                "--size",
                "300",
                "--threads",
                "2",
            ],
            &url,
            &[],
        ),
        Duration::from_secs(30),
    );
    check_echo(&r);
    let j = r.json.unwrap();
    assert_eq!(u(&j, "messages.size"), 300);
    assert!(j["messages"]["text"].as_bool().unwrap());
}

#[test]
fn echo_small_size_is_clamped_and_said() {
    let s = Ours::start(false);
    let url = s.url();
    let r = load(
        &args(&["echo", "--connections", "2", "--size", "4"], &url, &[]),
        Duration::from_secs(30),
    );
    check_echo(&r);
    let j = r.json.unwrap();
    assert_eq!(u(&j, "messages.size"), 16);
    assert!(r.stdout.contains("sent as 16 B"), "{}", r.stdout);
}

#[test]
fn rate_ours() {
    let s = Ours::start(false);
    let url = s.url();
    // every message at its own time, and batched per tick (the default, auto: 8 sends'
    // time, at most 1 ms; and a coarse 20 ms): the schedule sends exactly rate x window
    // either way
    for tick in [None, Some("0"), Some("20ms")] {
        let mut extra = vec![];
        if let Some(t) = tick {
            extra.extend_from_slice(&["--tick", t]);
        }
        let r = load(
            &args(
                &["rate", "--connections", "10", "--rate", "2000"],
                &url,
                &extra,
            ),
            Duration::from_secs(30),
        );
        assert_eq!(r.status, 0, "{}", r.stderr);
        let j = r.json.unwrap();
        let sent = u(&j, "messages.sent");
        assert!((1900..=2100).contains(&sent), "tick {tick:?}: sent {sent}");
        assert_eq!(sent, u(&j, "messages.received"), "{}", r.stdout);
        assert_eq!(u(&j, "errors_total"), 0, "{}", r.stdout);
        assert_eq!(f(&j, "messages.offered_per_s"), 2000.0);
        assert_ordered(&j, "latency_us");
        assert!(r.stdout.contains("intended send time"), "{}", r.stdout);
        match tick {
            None => assert_eq!(j["config"]["tick"], "auto"),
            Some("0") => assert_eq!(f(&j, "config.tick"), 0.0),
            _ => assert_eq!(f(&j, "config.tick"), 20_000.0),
        }
    }
}

#[test]
fn flood_ours() {
    let s = Ours::start(false);
    let url = s.url();
    let pid = std::process::id().to_string();
    let r = load(
        &args(
            &["flood", "--connections", "8", "--size", "20"],
            &url,
            &["--server-pid", &pid, "--window", "16384"],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    assert_eq!(j["scenario"], "flood");
    let sent = u(&j, "messages.sent");
    // no cap on messages in flight: far more than one per connection went out
    assert!(sent > 1000, "sent {sent}: {}", r.stdout);
    // every echo came back, in order, and nothing else went wrong
    assert_eq!(sent, u(&j, "messages.received"), "{}", r.stdout);
    assert_eq!(
        u(&j, "messages.sent_total"),
        u(&j, "messages.received_total"),
        "{}",
        r.stdout
    );
    assert_eq!(u(&j, "errors_total"), 0, "{}", r.stdout);
    assert_eq!(u(&j, "latency_us.count"), sent);
    assert_ordered(&j, "latency_us");
    assert_eq!(u(&j, "config.window"), 16384);
    // the server's memory is followed through the run
    assert!(u(&j, "cpu.server_rss_start") > 0);
    assert!(u(&j, "cpu.server_rss_peak") >= u(&j, "cpu.server_rss_start"));
    assert!(r.stdout.contains("server RSS"), "{}", r.stdout);
}

#[test]
fn connect_ours() {
    let s = Ours::start(false);
    let url = s.url();
    for close in [false, true] {
        let mut a = vec![
            "connect",
            url.as_str(),
            "--connections",
            "300",
            "--duration",
            "10s",
        ];
        if close {
            a.push("--close");
        }
        let r = load(&a, Duration::from_secs(30));
        assert_eq!(r.status, 0, "{}", r.stderr);
        let j = r.json.unwrap();
        assert_eq!(u(&j, "connections.handshakes"), 300, "{}", r.stdout);
        assert_eq!(u(&j, "errors_total"), 0, "{}", r.stdout);
        assert!(f(&j, "connections.handshakes_per_s") > 0.0);
        assert_eq!(u(&j, "connections.connect_us.count"), 300);
        assert_ordered(&j["connections"], "connect_us");
        if close {
            assert_eq!(u(&j, "connections.clean_closes"), 300, "{}", r.stdout);
            assert_eq!(u(&j, "connections.open_at_end"), 0);
        } else {
            assert_eq!(u(&j, "connections.open_at_end"), 300);
        }
    }
}

#[test]
fn hold_ours_with_rss_steps() {
    let s = Ours::start(false);
    let url = s.url();
    let pid = std::process::id().to_string();
    let r = load(
        &[
            "hold",
            &url,
            "--steps",
            "100,300",
            "--settle",
            "200ms",
            "--duration",
            "500ms",
            "--server-pid",
            &pid,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    let h = &j["hold"];
    assert_eq!(h["steps"][0]["held"].as_u64(), Some(100), "{}", r.stdout);
    assert_eq!(h["steps"][1]["held"].as_u64(), Some(300), "{}", r.stdout);
    assert_eq!(h["held_at_end"].as_u64(), Some(300));
    assert!(h["steps"][1]["rss"].as_u64().unwrap() > 0);
    assert!(h["baseline_rss"].as_u64().unwrap() > 0);
    assert!(h["marginal_bytes_per_conn"].is_number());
    assert_eq!(u(&j, "errors_total"), 0, "{}", r.stdout);
}

#[test]
fn fanout_ours() {
    let s = Ours::start(true);
    let url = s.url();
    let r = load(
        &args(
            &[
                "fanout",
                "--subscribers",
                "5",
                "--publishers",
                "2",
                "--rate",
                "200",
            ],
            &url,
            &[],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    let published = u(&j, "fanout.published");
    assert!((190..=210).contains(&published), "published {published}");
    // every connection (publishers too) gets every message from our broadcast server
    assert_eq!(u(&j, "fanout.delivered"), published * 7, "{}", r.stdout);
    assert_eq!(u(&j, "errors_total"), 0, "{}", r.stdout);
    assert_ordered(&j, "latency_us");
}

/// The `fanout.nodes` entry for `url`.
fn node<'a>(j: &'a serde_json::Value, url: &str) -> &'a serde_json::Value {
    j["fanout"]["nodes"]
        .as_array()
        .expect("fanout.nodes")
        .iter()
        .find(|n| n["url"] == url)
        .unwrap_or_else(|| panic!("no node {url} in {}", j["fanout"]))
}

/// Adds the base64 histograms of every node of a report.
fn nodes_hist(j: &serde_json::Value) -> hdrhistogram::Histogram<u64> {
    let mut sum = hdrhistogram::Histogram::new(3).unwrap();
    for n in j["fanout"]["nodes"].as_array().unwrap() {
        sum.add(hist(n["latency_hist"].as_str().unwrap())).unwrap();
    }
    sum
}

/// Every bucket of `a` holds what `b` does, and nothing else.
fn same_hist(a: &hdrhistogram::Histogram<u64>, b: &hdrhistogram::Histogram<u64>, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: counts");
    for v in b.iter_recorded() {
        let x = v.value_iterated_to();
        assert_eq!(a.count_at(x), v.count_at_value(), "{what}: bucket {x}");
    }
}

/// One fanout run: publishers on `url`, subscribers over `subs`; the JSON report.
fn fanout_run(url: &str, subs: &[String], extra: &[&str]) -> (serde_json::Value, String) {
    let mut a = vec!["fanout", url, "--duration", "1s", "--warmup", "300ms"];
    for s in subs {
        a.extend(["--subscriber-url", s.as_str()]);
    }
    a.extend_from_slice(extra);
    let r = load(&a, Duration::from_secs(30));
    assert_eq!(r.status, 0, "{}", r.stderr);
    (r.json.unwrap(), r.stdout)
}

#[test]
fn fanout_across_nodes_counts_and_times_each_node_apart() {
    // node A under two URLs (bound to 0.0.0.0: 127.0.0.1 and 127.0.0.2 both reach it,
    // so both get every publish), and node B, a second broadcast server with no broker
    // to A: its subscribers get nothing, and the node table shows it
    let a = Ours::start_all_loopback(true);
    let b = Ours::start(true);
    let (a1, a2, b1) = (a.url_at("127.0.0.1"), a.url_at("127.0.0.2"), b.url());
    let subs = [a1.clone(), a2.clone(), b1.clone()];
    let (j, out) = fanout_run(
        &a1,
        &subs,
        &[
            "--subscribers",
            "7",
            "--publishers",
            "2",
            "--rate",
            "200",
            // two workers: the node figures of each are merged at the end
            "--threads",
            "2",
        ],
    );
    let published = u(&j, "fanout.published");
    assert!((190..=210).contains(&published), "published {published}");
    assert_eq!(u(&j, "errors_total"), 0, "{out}");
    // subscribers 0, 3, 6 on a1 (with the 2 publishers), 1 and 4 on a2, 2 and 5 on b1
    let nodes = j["fanout"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{}", j["fanout"]);
    assert_eq!(nodes[0]["url"], a1.as_str(), "the publishers' node first");
    for (url, pubs, subs, receivers) in [(&a1, 2, 3, 5), (&a2, 0, 2, 2), (&b1, 0, 2, 0)] {
        let n = node(&j, url);
        assert_eq!(u(n, "publishers"), pubs, "{url}");
        assert_eq!(u(n, "subscribers"), subs, "{url}");
        assert_eq!(u(n, "deliveries"), receivers * published, "{url}: {out}");
        assert_eq!(u(n, "latency_us.count"), u(n, "deliveries"), "{url}");
        assert_ordered(n, "latency_us");
        let rate = f(n, "deliveries_per_s");
        assert!((rate - u(n, "deliveries") as f64 / f(&j, "window_s")).abs() < 1e-6);
    }
    // the nodes add up to the totals: deliveries, and the latency histogram exactly
    let sum: u64 = nodes
        .iter()
        .map(|n| n["deliveries"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, u(&j, "fanout.delivered"));
    assert_eq!(sum, 7 * published);
    same_hist(
        &nodes_hist(&j),
        &hist(j["latency_hist"].as_str().unwrap()),
        "nodes vs overall",
    );
    // the text report has the node table, a row per node
    assert!(out.contains("deliveries/s"), "{out}");
    for url in &subs {
        assert!(out.lines().any(|l| l.starts_with(url.as_str())), "{out}");
    }
    // on one URL there is no node split
    let (j, _) = fanout_run(&a1, &[], &["--subscribers", "2", "--rate", "50"]);
    assert!(j["fanout"].get("nodes").is_none(), "{}", j["fanout"]);
}

#[test]
fn merge_combines_fanout_nodes_by_url() {
    let a = Ours::start_all_loopback(true);
    let (a1, a2) = (a.url_at("127.0.0.1"), a.url_at("127.0.0.2"));
    // run 1 across both URLs, run 2 with subscribers on a2 only, run 3 on a2 alone
    // (no --subscriber-url: one node, from before or without the split)
    let (r1, _) = fanout_run(
        &a1,
        &[a1.clone(), a2.clone()],
        &["--subscribers", "4", "--rate", "100"],
    );
    let (r2, _) = fanout_run(
        &a1,
        std::slice::from_ref(&a2),
        &["--subscribers", "3", "--rate", "100"],
    );
    let (r3, _) = fanout_run(&a2, &[], &["--subscribers", "2", "--rate", "100"]);
    let files: Vec<_> = [&r1, &r2, &r3]
        .iter()
        .map(|r| {
            let p = temp("node.json");
            std::fs::write(&p, r.to_string()).unwrap();
            p
        })
        .collect();
    let names: Vec<&str> = files.iter().map(|p| p.to_str().unwrap()).collect();
    let m = load(&[&["merge"], &names[..]].concat(), Duration::from_secs(30));
    assert_eq!(m.status, 0, "{}", m.stderr);
    let j = m.json.unwrap();
    let nodes = j["fanout"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{}", j["fanout"]);
    // a1: run 1's first node and run 2's publisher node; a2: the rest
    let parts: [(&str, Vec<&serde_json::Value>); 2] = [
        (&a1, vec![node(&r1, &a1), node(&r2, &a1)]),
        (&a2, vec![node(&r1, &a2), node(&r2, &a2)]),
    ];
    for (url, from) in &parts {
        let n = node(&j, url);
        for k in ["publishers", "subscribers", "deliveries"] {
            let mut want: u64 = from.iter().map(|x| u(x, k)).sum();
            if *url == a2 {
                want += match k {
                    "publishers" => u(&r3, "fanout.publishers"),
                    "subscribers" => u(&r3, "fanout.subscribers"),
                    _ => u(&r3, "fanout.delivered"),
                };
            }
            assert_eq!(u(n, k), want, "{url} {k}");
        }
        let mut want = hdrhistogram::Histogram::new(3).unwrap();
        for x in from {
            want.add(hist(x["latency_hist"].as_str().unwrap())).unwrap();
        }
        if *url == a2 {
            want.add(hist(r3["latency_hist"].as_str().unwrap()))
                .unwrap();
        }
        same_hist(&hist(n["latency_hist"].as_str().unwrap()), &want, url);
        assert_eq!(u(n, "latency_us.count"), u(n, "deliveries"));
    }
    let rate_sum = f(&r1, "fanout.delivered_per_s")
        + f(&r2, "fanout.delivered_per_s")
        + f(&r3, "fanout.delivered_per_s");
    let node_rates: f64 = nodes
        .iter()
        .map(|n| n["deliveries_per_s"].as_f64().unwrap())
        .sum();
    assert!((node_rates - rate_sum).abs() < 1e-6 * rate_sum);
    let sum: u64 = nodes
        .iter()
        .map(|n| n["deliveries"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, u(&j, "fanout.delivered"));
    same_hist(
        &nodes_hist(&j),
        &hist(j["latency_hist"].as_str().unwrap()),
        "merged nodes vs overall",
    );
    assert!(m.stdout.contains("deliveries/s"), "{}", m.stdout);
    // an older report across nodes has no split: it still merges, into the totals, and
    // the report says its deliveries are missing from the node table
    let mut old = r1.clone();
    old["fanout"].as_object_mut().unwrap().remove("nodes");
    std::fs::write(&files[0], old.to_string()).unwrap();
    let m = load(&["merge", names[0], names[1]], Duration::from_secs(30));
    assert_eq!(m.status, 0, "{}", m.stderr);
    let j = m.json.unwrap();
    assert_eq!(
        u(&j, "fanout.delivered"),
        u(&r1, "fanout.delivered") + u(&r2, "fanout.delivered")
    );
    assert_eq!(
        u(node(&j, &a2), "deliveries"),
        u(node(&r2, &a2), "deliveries")
    );
    assert!(
        m.stdout.contains("without per-node figures"),
        "{}",
        m.stdout
    );
    for p in files {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn slo_ours() {
    let s = Ours::start(false);
    let url = s.url();
    let plot = temp("slo.svg");
    let r = load(
        &[
            "slo",
            &url,
            "--plot",
            plot.to_str().unwrap(),
            "--connections",
            "5",
            "--target",
            "p99<2s",
            "--start",
            "200",
            "--step",
            "200",
            "--max-rate",
            "400",
            "--duration",
            "500ms",
            "--warmup",
            "100ms",
        ],
        Duration::from_secs(40),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    let slo = &j["slo"];
    assert_eq!(slo["steps"].as_array().unwrap().len(), 2, "{}", r.stdout);
    assert_eq!(slo["best_rate"].as_f64(), Some(400.0), "{}", r.stdout);
    assert!(
        r.stdout.contains("highest passing rate: 400"),
        "{}",
        r.stdout
    );
    // --plot draws the capacity curve: a point per step and percentile, the target, the
    // highest passing rate
    let svg = std::fs::read_to_string(&plot).unwrap();
    let _ = std::fs::remove_file(&plot);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("Capacity: latency against offered rate"));
    assert_eq!(svg.matches(r#"class="pt pass""#).count(), 2 * 3);
    assert_eq!(svg.matches(r#"class="target""#).count(), 1);
    assert!(svg.contains("highest passing rate 400 msg/s"));
    // an impossible target: nothing passes, and it says so
    let r = load(
        &[
            "slo",
            &url,
            "--connections",
            "2",
            "--target",
            "p50<1ns",
            "--start",
            "100",
            "--bisect",
            "--max-steps",
            "2",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    assert!(j["slo"]["best_rate"].is_null());
    assert!(r.stdout.contains("no rate passed"), "{}", r.stdout);
}

#[test]
fn merge_adds_counts_and_histograms_exactly() {
    let s = Ours::start(false);
    let url = s.url();
    let a = temp("a.json");
    let b = temp("b.json");
    for p in [&a, &b] {
        let r = load_raw(
            &[
                "echo",
                &url,
                "--connections",
                "4",
                "--duration",
                "500ms",
                "--warmup",
                "100ms",
                "-q",
                "--json",
                p.to_str().unwrap(),
            ],
            Duration::from_secs(30),
        );
        assert_eq!(r.status, 0, "{}", r.stderr);
    }
    let plot = temp("m.svg");
    let r = load(
        &[
            "merge",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let m = r.json.unwrap();
    let ra: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&a).unwrap()).unwrap();
    let rb: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&b).unwrap()).unwrap();
    for k in [
        "messages.sent",
        "messages.received",
        "messages.bytes_sent",
        "connections.handshakes",
        "latency_us.count",
    ] {
        assert_eq!(u(&m, k), u(&ra, k) + u(&rb, k), "{k}");
    }
    assert_eq!(u(&m, "runs"), 2);
    let ha = hist(ra["latency_hist"].as_str().unwrap());
    let hb = hist(rb["latency_hist"].as_str().unwrap());
    let hm = hist(m["latency_hist"].as_str().unwrap());
    assert_eq!(hm.len(), ha.len() + hb.len());
    for v in hm.iter_recorded() {
        let x = v.value_iterated_to();
        assert_eq!(
            v.count_at_value(),
            ha.count_at(x) + hb.count_at(x),
            "bucket {x}"
        );
    }
    assert_ordered(&m, "latency_us");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("percentile"));
    for p in [a, b, plot] {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn plot_is_written() {
    let s = Ours::start(false);
    let url = s.url();
    let plot = temp("p.svg");
    let r = load(
        &args(
            &[
                "echo",
                "--connections",
                "2",
                "--plot",
                plot.to_str().unwrap(),
            ],
            &url,
            &[],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("Throughput over time"));
    let _ = std::fs::remove_file(plot);
}

// ---- a server that no one here wrote ----

#[test]
fn echo_and_rate_against_peer() {
    let Some(p) = Peer::start("echo") else { return };
    let url = p.url();
    let r = load(
        &args(
            &["echo", "--connections", "10", "--inflight", "2"],
            &url,
            &[],
        ),
        Duration::from_secs(30),
    );
    check_echo(&r);
    let r = load(
        &args(
            &["rate", "--connections", "5", "--rate", "500", "--text"],
            &url,
            &[],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    assert_eq!(
        u(&j, "messages.sent"),
        u(&j, "messages.received"),
        "{}",
        r.stdout
    );
    assert_eq!(u(&j, "errors_total"), 0, "{}", r.stdout);
    let r = load(
        &[
            "connect",
            &url,
            "--connections",
            "50",
            "--close",
            "--duration",
            "10s",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    assert_eq!(u(&j, "connections.handshakes"), 50, "{}", r.stdout);
    let r = load(
        &["hold", &url, "--connections", "50", "--duration", "500ms"],
        Duration::from_secs(30),
    );
    let j = r.json.unwrap();
    assert_eq!(j["hold"]["held_at_end"].as_u64(), Some(50), "{}", r.stdout);
}

#[test]
fn fanout_and_slo_against_peer() {
    let Some(p) = Peer::start("broadcast") else {
        return;
    };
    let url = p.url();
    let r = load(
        &args(
            &[
                "fanout",
                "--subscribers",
                "4",
                "--publishers",
                "1",
                "--rate",
                "100",
            ],
            &url,
            &[],
        ),
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    let published = u(&j, "fanout.published");
    assert!(published >= 90, "{}", r.stdout);
    assert_eq!(u(&j, "fanout.delivered"), published * 5, "{}", r.stdout);
    drop(p);
    let Some(p) = Peer::start("echo") else { return };
    let url = p.url();
    let r = load(
        &[
            "slo",
            &url,
            "--connections",
            "2",
            "--target",
            "p99<5s",
            "--start",
            "100",
            "--max-rate",
            "200",
            "--duration",
            "400ms",
            "--warmup",
            "100ms",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    assert_eq!(j["slo"]["best_rate"].as_f64(), Some(200.0), "{}", r.stdout);
}

// ---- bad conditions: counted and named, no panic, no hang ----

#[test]
fn unreachable_is_refused() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}/");
    let r = load(
        &args(&["echo", "--connections", "5"], &url, &[]),
        Duration::from_secs(20),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    assert_eq!(err(&j, "refused"), 5, "{}", r.stdout);
    assert!(r.stdout.contains("refused"));
    assert_eq!(u(&j, "messages.sent"), 0);
}

#[test]
fn garbage_is_a_protocol_error() {
    let s = BadServer::start(Bad::Garbage);
    let r = load(
        &args(&["echo", "--connections", "3"], &s.url(), &[]),
        Duration::from_secs(20),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    assert_eq!(err(&j, "protocol"), 3, "{}", r.stdout);
}

#[test]
fn stalling_server_is_counted_and_the_run_ends_on_time() {
    let s = BadServer::start(Bad::Stall);
    let r = load(
        &args(
            &["echo", "--connections", "3", "--timeout", "300ms"],
            &s.url(),
            &[],
        ),
        Duration::from_secs(20),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    assert_eq!(err(&j, "stall"), 3, "{}", r.stdout);
    assert_eq!(err(&j, "no-reply"), 3, "{}", r.stdout);
    // 0.3 s warm-up + 1 s + 2 s drain + 1.5 s close, and a margin for a busy machine
    assert!(r.elapsed < Duration::from_secs(10), "took {:?}", r.elapsed);
}

/// A server that answers every message 40 ms late is measured 40 ms late or more, and
/// not much later, whether answers are timed by the kernel (the worker not waking for
/// them: the receive time stamps, converted to the process clock, must land between
/// the send and the read) or by the loop; the kernel's way both with ticks and with
/// every send at its own time (the worker then sleeps from send to send).
#[test]
fn late_answers_are_timed_when_they_arrive_by_kernel_or_loop() {
    const DELAY_US: f64 = 40_000.0;
    let s = BadServer::start(Bad::Delayed(Duration::from_millis(40)));
    for (rx, tick) in [("kernel", "100ms"), ("kernel", "0"), ("loop", "100ms")] {
        // 4 connections at 10 messages/s each, sent 4 at a time every 100 ms (or one
        // every 25 ms without ticks): one in flight at a time on each
        let extra = ["--rx-time", rx, "--tick", tick];
        let r = load(
            &args(
                &["rate", "--connections", "4", "--rate", "40"],
                &s.url(),
                &extra,
            ),
            Duration::from_secs(30),
        );
        assert_eq!(r.status, 0, "{}", r.stderr);
        let j = r.json.unwrap();
        assert_eq!(j["config"]["rx_time"], rx, "{}", r.stdout);
        assert!(
            r.stdout.contains(&format!("answers timed by the {rx}")),
            "{}",
            r.stdout
        );
        assert_eq!(u(&j, "errors_total"), 0, "{rx}: {}", r.stdout);
        assert!(u(&j, "messages.received") >= 30, "{rx}: {}", r.stdout);
        let (min, p50) = (f(&j, "latency_us.min"), f(&j, "latency_us.p50"));
        assert!(
            min >= DELAY_US,
            "{rx}: an answer timed before it was sent: {min} µs"
        );
        assert!(
            p50 < DELAY_US + 30_000.0,
            "{rx}: median {p50} µs for answers sent back after 40 ms"
        );
    }
}

#[test]
fn server_closing_mid_run_is_counted_with_its_code() {
    let s = BadServer::start(Bad::CloseMidRun(Duration::from_millis(600)));
    let r = load(
        &args(&["echo", "--connections", "3"], &s.url(), &[]),
        Duration::from_secs(20),
    );
    assert_eq!(r.status, 0, "{}", r.stderr);
    let j = r.json.unwrap();
    assert_eq!(err(&j, "close-1011"), 3, "{}", r.stdout);
    assert!(u(&j, "messages.received_total") > 0, "{}", r.stdout);
}

#[test]
fn handshake_status_and_timeout_are_named() {
    let s = BadServer::start(Bad::Status(503));
    let r = load(
        &args(&["echo", "--connections", "2"], &s.url(), &[]),
        Duration::from_secs(20),
    );
    let j = r.json.unwrap();
    assert_eq!(err(&j, "handshake-status-503"), 2, "{}", r.stdout);
    let s = BadServer::start(Bad::Silent);
    let r = load(
        &args(
            &["echo", "--connections", "2", "--connect-timeout", "500ms"],
            &s.url(),
            &[],
        ),
        Duration::from_secs(20),
    );
    let j = r.json.unwrap();
    assert_eq!(err(&j, "handshake-timeout"), 2, "{}", r.stdout);
}

#[test]
fn bad_urls_and_tls_options_are_refused_clearly() {
    let r = load_raw(&["echo", "http://127.0.0.1:1/"], Duration::from_secs(10));
    assert_eq!(r.status, 2);
    let r = load_raw(
        &["echo", "ws://127.0.0.1:1/", "--insecure"],
        Duration::from_secs(10),
    );
    assert_eq!(r.status, 2);
    assert!(r.stderr.contains("wss://"), "{}", r.stderr);
    let r = load_raw(
        &["echo", "wss://127.0.0.1:1/", "--ca", "/nonexistent/ca.pem"],
        Duration::from_secs(10),
    );
    assert_eq!(r.status, 2);
    assert!(r.stderr.contains("/nonexistent/ca.pem"), "{}", r.stderr);
    let r = load_raw(&["--help"], Duration::from_secs(10));
    assert!(r.stdout.contains("wss://"), "{}", r.stdout);
    let r = load_raw(&["echo", "--help"], Duration::from_secs(10));
    assert!(r.stdout.contains("[default: 100]"), "{}", r.stdout);
}

#[test]
fn echo_and_connect_over_wss_count_full_and_resumed_handshakes() {
    let s = Ours::start_tls();
    let ca = s.ca.clone().unwrap();
    let ca = ca.to_str().unwrap();
    let r = load(
        &args(&["echo", "--connections", "4", "--ca", ca], &s.url(), &[]),
        Duration::from_secs(30),
    );
    let j = r.json.unwrap();
    assert_eq!(j["errors_total"], 0, "{}", r.stdout);
    assert!(j["messages"]["received"].as_u64().unwrap() > 0);
    assert_eq!(
        j["messages"]["sent_total"], j["messages"]["received_total"],
        "every message answered over wss"
    );
    // resumption on (the default): the first connections are full handshakes, the
    // rest resume the sessions their tickets name
    let r = load(
        &args(
            &["connect", "--connections", "200", "--close", "--ca", ca],
            &s.url(),
            &[],
        ),
        Duration::from_secs(30),
    );
    let j = r.json.unwrap();
    let c = &j["connections"];
    assert_eq!(c["handshakes"], 200, "{}", r.stdout);
    assert_eq!(c["tls"], true);
    let resumed = c["tls_resumed"].as_u64().unwrap();
    assert!(
        (100..200).contains(&resumed),
        "{resumed} of 200 resumed: {}",
        r.stdout
    );
    assert!(r.stdout.contains("resumed"), "{}", r.stdout);
    // --no-tls-resume: every one full
    let r = load(
        &args(
            &[
                "connect",
                "--connections",
                "50",
                "--close",
                "--no-tls-resume",
                "--insecure",
            ],
            &s.url(),
            &[],
        ),
        Duration::from_secs(30),
    );
    let j = r.json.unwrap();
    assert_eq!(j["connections"]["handshakes"], 50, "{}", r.stdout);
    assert_eq!(j["connections"]["tls_resumed"], 0, "{}", r.stdout);
    // a certificate it does not trust (the system's roots): every connection fails
    // as "tls", and the first failure says why
    let r = load(
        &args(&["echo", "--connections", "2"], &s.url(), &[]),
        Duration::from_secs(30),
    );
    let j = r.json.unwrap();
    assert_eq!(err(&j, "tls"), 2, "{}", r.stdout);
    assert!(r.stderr.contains("certificate"), "{}", r.stderr);
}

#[test]
fn extra_headers_and_subprotocol_reach_the_server() {
    // our server accepts any upgrade; a subprotocol it does not choose is fine, and a
    // malformed --header is refused before any connection
    let s = Ours::start(false);
    let url = s.url();
    let r = load(
        &args(
            &[
                "echo",
                "--connections",
                "2",
                "--protocol",
                "chat",
                "-H",
                "Authorization: Bearer x",
                "--origin",
                "http://example.test",
            ],
            &url,
            &[],
        ),
        Duration::from_secs(20),
    );
    check_echo(&r);
    let r = load_raw(
        &["echo", &url, "-H", "no colon here"],
        Duration::from_secs(10),
    );
    assert_eq!(r.status, 2, "{}", r.stderr);
}

// ---- both I/O drivers ----

/// Runs `soliton-load` with `--io IO` added; `None` (said) when io_uring is refused
/// here, which only an explicit `--io uring` turns into an error.
fn load_io(io: &str, a: &[&str]) -> Option<Run> {
    let mut v = a.to_vec();
    v.extend_from_slice(&["--io", io]);
    let r = load(&v, Duration::from_secs(30));
    if io == "uring" && r.status == 2 && r.stderr.contains("io_uring is not usable") {
        eprintln!("SKIPPED: --io uring: {}", r.stderr.trim());
        return None;
    }
    Some(r)
}

#[test]
fn echo_on_both_io_drivers() {
    let s = Ours::start(false);
    let url = s.url();
    for (io, name) in [("uring", "io_uring"), ("epoll", "epoll")] {
        // small messages, then large ones that span several receive buffers and
        // sends, several in flight
        for extra in [
            &["--connections", "20"][..],
            &["--connections", "3", "--size", "100000", "--inflight", "3"][..],
        ] {
            let mut a = vec!["echo", url.as_str()];
            a.extend_from_slice(SHORT);
            a.extend_from_slice(extra);
            let Some(r) = load_io(io, &a) else { break };
            check_echo(&r);
            let j = r.json.unwrap();
            assert_eq!(j["config"]["io"], name, "{}", r.stdout);
            assert!(r.stdout.contains(&format!("{name} I/O")), "{}", r.stdout);
        }
    }
}

#[test]
fn connect_hold_rate_fanout_on_both_io_drivers() {
    let s = Ours::start(false);
    let url = s.url();
    let b = Ours::start(true);
    let burl = b.url();
    for io in ["uring", "epoll"] {
        let a = [
            "connect",
            &url,
            "--connections",
            "200",
            "--close",
            "--duration",
            "10s",
        ];
        let Some(r) = load_io(io, &a) else { break };
        assert_eq!(r.status, 0, "{}", r.stderr);
        let j = r.json.unwrap();
        assert_eq!(u(&j, "connections.handshakes"), 200, "{io}: {}", r.stdout);
        assert_eq!(u(&j, "connections.clean_closes"), 200, "{io}: {}", r.stdout);
        assert_eq!(u(&j, "errors_total"), 0, "{io}: {}", r.stdout);

        let a = ["hold", &url, "--connections", "100", "--duration", "300ms"];
        let r = load_io(io, &a).unwrap();
        let j = r.json.unwrap();
        assert_eq!(
            j["hold"]["held_at_end"].as_u64(),
            Some(100),
            "{io}: {}",
            r.stdout
        );
        assert_eq!(u(&j, "errors_total"), 0, "{io}: {}", r.stdout);

        let a = args(&["rate", "--connections", "5", "--rate", "1000"], &url, &[]);
        let r = load_io(io, &a).unwrap();
        assert_eq!(r.status, 0, "{}", r.stderr);
        let j = r.json.unwrap();
        let sent = u(&j, "messages.sent");
        assert!((950..=1050).contains(&sent), "{io}: sent {sent}");
        assert_eq!(sent, u(&j, "messages.received"), "{io}: {}", r.stdout);
        assert_eq!(u(&j, "errors_total"), 0, "{io}: {}", r.stdout);

        let a = args(&["flood", "--connections", "4", "--size", "100"], &url, &[]);
        let r = load_io(io, &a).unwrap();
        assert_eq!(r.status, 0, "{}", r.stderr);
        let j = r.json.unwrap();
        let sent = u(&j, "messages.sent");
        assert!(sent > 1000, "{io}: flood sent {sent}");
        assert_eq!(sent, u(&j, "messages.received"), "{io}: {}", r.stdout);
        assert_eq!(u(&j, "errors_total"), 0, "{io}: {}", r.stdout);

        let a = args(
            &[
                "fanout",
                "--subscribers",
                "5",
                "--publishers",
                "1",
                "--rate",
                "100",
            ],
            &burl,
            &[],
        );
        let r = load_io(io, &a).unwrap();
        assert_eq!(r.status, 0, "{}", r.stderr);
        let j = r.json.unwrap();
        let published = u(&j, "fanout.published");
        assert!(published >= 90, "{io}: {}", r.stdout);
        assert_eq!(
            u(&j, "fanout.delivered"),
            published * 6,
            "{io}: {}",
            r.stdout
        );
        assert_eq!(u(&j, "errors_total"), 0, "{io}: {}", r.stdout);
    }
}

#[test]
fn bad_servers_on_both_io_drivers() {
    for io in ["uring", "epoll"] {
        let s = BadServer::start(Bad::Stall);
        let url = s.url();
        let a = args(
            &["echo", "--connections", "3", "--timeout", "300ms"],
            &url,
            &[],
        );
        let Some(r) = load_io(io, &a) else { break };
        assert_eq!(r.status, 0, "{}", r.stderr);
        let j = r.json.unwrap();
        assert_eq!(err(&j, "stall"), 3, "{io}: {}", r.stdout);
        assert_eq!(err(&j, "no-reply"), 3, "{io}: {}", r.stdout);
        assert!(
            r.elapsed < Duration::from_secs(10),
            "{io}: took {:?}",
            r.elapsed
        );

        let s = BadServer::start(Bad::CloseMidRun(Duration::from_millis(600)));
        let url = s.url();
        let a = args(&["echo", "--connections", "3"], &url, &[]);
        let r = load_io(io, &a).unwrap();
        let j = r.json.unwrap();
        assert_eq!(err(&j, "close-1011"), 3, "{io}: {}", r.stdout);

        let s = BadServer::start(Bad::Garbage);
        let url = s.url();
        let a = args(&["echo", "--connections", "3"], &url, &[]);
        let r = load_io(io, &a).unwrap();
        let j = r.json.unwrap();
        assert_eq!(err(&j, "protocol"), 3, "{io}: {}", r.stdout);

        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("ws://127.0.0.1:{port}/");
        let a = args(&["echo", "--connections", "4"], &url, &[]);
        let r = load_io(io, &a).unwrap();
        let j = r.json.unwrap();
        assert_eq!(err(&j, "refused"), 4, "{io}: {}", r.stdout);
    }
}
