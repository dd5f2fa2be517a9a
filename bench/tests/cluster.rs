//! Topics across nodes through NATS (issue #15): real `soliton-server` processes in
//! broadcast mode (every message published to topic "all") and a real `nats-server`
//! on loopback, whose monitoring endpoint (`/connz?subs=1`) shows the subscriptions
//! each node holds. Plus servers in this process for topic churn.
//!
//! Without `nats-server` on the PATH the tests print why and pass, unless
//! `SOLITON_REQUIRE_NATS=1` (CI installs it: Debian's `nats-server` package).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use soliton::cluster::NatsConfig;
use soliton::proto::Message;
use soliton::server::{Handler, Reject, Server, ServerHandle, UpgradeRequest, WebSocket};
use tungstenite::stream::MaybeTlsStream;

mod common;

use common::ServerProcess;

type Ws = tungstenite::WebSocket<MaybeTlsStream<TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);

/// Whether `nats-server` can run here; if not, says so (and fails under
/// `SOLITON_REQUIRE_NATS=1`).
fn have_nats(test: &str) -> bool {
    let ok = Command::new("nats-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("SOLITON_REQUIRE_NATS").is_none_or(|v| v != "1"),
            "{test}: nats-server is not on the PATH and SOLITON_REQUIRE_NATS=1"
        );
        eprintln!("{test}: skipped: nats-server is not on the PATH (apt-get install nats-server)");
    }
    ok
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `port`.
fn wait_port(port: u16, what: &str) {
    let end = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "{what} never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `nats-server` process (killed when dropped) with its monitoring port.
struct Nats {
    child: Option<Child>,
    port: u16,
    monitor: u16,
}

impl Nats {
    fn start() -> Nats {
        let mut n = Nats {
            child: None,
            port: free_port(),
            monitor: free_port(),
        };
        n.restart();
        n
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on the same ports.
    fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        wait_port(self.port, "nats-server");
        wait_port(self.monitor, "nats-server monitoring");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The subjects each client connection of the broker subscribes to, by name and
    /// connection id.
    fn subscriptions(&self) -> BTreeMap<(String, u64), Vec<String>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.monitor)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET /connz?subs=1&limit=100000 HTTP/1.0\r\nHost: x\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        let json = body.split_once("\r\n\r\n").expect("an HTTP response").1;
        let v: serde_json::Value = serde_json::from_str(json).expect("connz JSON");
        let mut out = BTreeMap::new();
        for c in v["connections"].as_array().into_iter().flatten() {
            let name = c["name"].as_str().unwrap_or("").to_owned();
            let cid = c["cid"].as_u64().unwrap_or(0);
            let subs = c["subscriptions_list"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            out.insert((name, cid), subs);
        }
        out
    }

    /// How many connections subscribe to `subject` (each at most once, checked).
    fn subscribers_of(&self, subject: &str) -> usize {
        self.subscriptions()
            .values()
            .map(|subs| {
                let n = subs.iter().filter(|s| *s == subject).count();
                assert!(n <= 1, "a node subscribes to {subject} {n} times: {subs:?}");
                n
            })
            .sum()
    }

    /// Waits until exactly `n` connections subscribe to `subject`.
    fn wait_subscribers(&self, subject: &str, n: usize) {
        let end = Instant::now() + WAIT;
        loop {
            let got = self.subscribers_of(subject);
            if got == n {
                return;
            }
            assert!(
                Instant::now() < end,
                "{subject}: {got} broker subscriptions, not {n}: {:?}",
                self.subscriptions()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `soliton-server --mode broadcast --nats URL` process, killed when dropped.
struct Node(ServerProcess);

impl std::ops::Deref for Node {
    type Target = ServerProcess;
    fn deref(&self) -> &ServerProcess {
        &self.0
    }
}

impl Node {
    fn start(nats: &str, prefix: &str) -> Node {
        Node::try_start(nats, prefix).unwrap_or_else(|e| panic!("node: {e}"))
    }

    /// Starts a node; `Err` with its standard error if it exits instead.
    fn try_start(nats: &str, prefix: &str) -> Result<Node, String> {
        let args = [
            "--port",
            "0",
            "--threads",
            "2",
            "--no-pin",
            "--mode",
            "broadcast",
            "--log",
            "info",
            "--shutdown-grace",
            "0",
            "--nats",
            nats,
            "--nats-prefix",
            prefix,
        ];
        ServerProcess::start(&args, WAIT).map(Node)
    }

    fn client(&self) -> Ws {
        client(self.addr)
    }
}

fn client(addr: SocketAddr) -> Ws {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).expect("WebSocket upgrade");
    if let MaybeTlsStream::Plain(s) = ws.get_mut() {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    }
    ws
}

fn send(ws: &mut Ws, text: &str) {
    ws.send(tungstenite::Message::text(text)).expect("send");
}

/// The next text message, if one comes within `within`.
fn recv(ws: &mut Ws, within: Duration) -> Option<String> {
    let end = Instant::now() + within;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => return Some(t.to_string()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
        if Instant::now() >= end {
            return None;
        }
    }
}

/// Messages `sender:seq` received, checked as they come: from each sender in order,
/// each once. Returns the sequence numbers received from each sender.
#[derive(Default)]
struct Inbox {
    from: HashMap<String, Vec<u64>>,
}

impl Inbox {
    fn take(&mut self, who: &str, m: &str) {
        let (sender, seq) = m.rsplit_once(':').expect("sender:seq");
        let seq: u64 = seq.parse().unwrap();
        let got = self.from.entry(sender.to_owned()).or_default();
        if let Some(&last) = got.last() {
            assert!(
                seq > last,
                "{who}: from {sender}, {seq} after {last} (a duplicate or out of order)"
            );
        }
        got.push(seq);
    }

    fn count(&self) -> usize {
        self.from.values().map(Vec::len).sum()
    }
}

/// Reads into `inbox` until it holds `n` messages or `within` passes.
fn read_until(ws: &mut Ws, who: &str, inbox: &mut Inbox, n: usize, within: Duration) {
    let end = Instant::now() + within;
    while inbox.count() < n && Instant::now() < end {
        if let Some(m) = recv(ws, Duration::from_millis(50)) {
            inbox.take(who, &m);
        }
    }
}

#[test]
fn a_publish_on_each_node_reaches_every_subscriber_on_all_three_once_and_in_order() {
    if !have_nats("cluster") {
        return;
    }
    let nats = Nats::start();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&nats.url(), "t1")).collect();
    // two subscribers on each node (on either of its two workers)
    let mut clients: Vec<(String, Ws)> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for j in 0..2 {
            clients.push((format!("n{i}c{j}"), node.client()));
        }
    }
    // one broker subscription per node, not one per connection
    nats.wait_subscribers("t1.all", 3);
    const EACH: u64 = 150;
    for seq in 0..EACH {
        for (name, ws) in clients.iter_mut() {
            send(ws, &format!("{name}:{seq}"));
        }
    }
    let total = clients.len() * EACH as usize;
    for (name, ws) in clients.iter_mut() {
        let mut inbox = Inbox::default();
        read_until(ws, name, &mut inbox, total, WAIT);
        assert_eq!(inbox.count(), total, "{name}: {:?}", counts(&inbox));
        for (sender, seqs) in &inbox.from {
            assert_eq!(seqs.len() as u64, EACH, "{name} from {sender}");
        }
        // nothing more comes (a second copy would)
        assert_eq!(recv(ws, Duration::from_millis(100)), None, "{name}");
    }
    assert_eq!(nats.subscribers_of("t1.all"), 3);
}

fn counts(inbox: &Inbox) -> BTreeMap<&str, usize> {
    inbox
        .from
        .iter()
        .map(|(k, v)| (k.as_str(), v.len()))
        .collect()
}

#[test]
fn connection_churn_keeps_one_broker_subscription_per_node_and_leaves_none_behind() {
    if !have_nats("cluster") {
        return;
    }
    let nats = Nats::start();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&nats.url(), "t2")).collect();
    let mut open: Vec<Vec<Ws>> = vec![Vec::new(), Vec::new(), Vec::new()];
    let mut rng = 0x9e37_79b9_u32;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng
    };
    for round in 0..12 {
        for _ in 0..6 {
            let n = next() as usize % 3;
            if next() % 3 == 0 && !open[n].is_empty() {
                let mut ws = open[n].swap_remove(0);
                let _ = ws.close(None);
                let _ = ws.flush();
            } else {
                open[n].push(nodes[n].client());
            }
        }
        // every third round: all of one node's connections go
        if round % 3 == 2 {
            open[(round / 3) % 3].clear();
        }
        let with_subscribers = open.iter().filter(|c| !c.is_empty()).count();
        nats.wait_subscribers("t2.all", with_subscribers);
    }
    for c in &mut open {
        c.clear();
    }
    nats.wait_subscribers("t2.all", 0);
    for subs in nats.subscriptions().values() {
        assert!(subs.is_empty(), "left behind: {subs:?}");
    }
}

#[test]
fn the_broker_killed_and_restarted_mid_run() {
    if !have_nats("cluster") {
        return;
    }
    let mut nats = Nats::start();
    let nodes: Vec<Node> = (0..3).map(|_| Node::start(&nats.url(), "t3")).collect();
    let mut publisher = nodes[0].client();
    let mut local = nodes[0].client();
    let mut remote = [nodes[1].client(), nodes[2].client()];
    nats.wait_subscribers("t3.all", 3);

    let mut seq = 0u64;
    let mut burst = |publisher: &mut Ws, n: u64| {
        let from = seq;
        for _ in 0..n {
            send(publisher, &format!("p:{seq}"));
            seq += 1;
        }
        from..seq
    };
    let (mut inbox_local, mut inbox_remote) =
        (Inbox::default(), [Inbox::default(), Inbox::default()]);
    let before = burst(&mut publisher, 50);
    nats.kill();
    for n in &nodes {
        n.wait_line("lost the connection");
    }
    // local delivery goes on while the broker is away
    let during = burst(&mut publisher, 50);
    read_until(&mut local, "local", &mut inbox_local, 100, WAIT);
    assert_eq!(inbox_local.from["p"], (0..100).collect::<Vec<_>>());

    nats.restart();
    for n in &nodes {
        n.wait_line("connected again");
    }
    nats.wait_subscribers("t3.all", 3);
    let after = burst(&mut publisher, 50);
    read_until(&mut local, "local", &mut inbox_local, 150, WAIT);
    assert_eq!(inbox_local.from["p"], (0..150).collect::<Vec<_>>());
    for (i, ws) in remote.iter_mut().enumerate() {
        let inbox = &mut inbox_remote[i];
        // everything after the restart arrives; before the kill, what the broker had
        // passed on; nothing twice, in order (checked by the inbox)
        let end = Instant::now() + WAIT;
        while inbox.from.get("p").and_then(|s| s.last()) != Some(&(after.end - 1)) {
            assert!(
                Instant::now() < end,
                "remote {i}: {:?}",
                inbox.from.get("p")
            );
            if let Some(m) = recv(ws, Duration::from_millis(50)) {
                inbox.take("remote", &m);
            }
        }
        let got: BTreeSet<u64> = inbox.from["p"].iter().copied().collect();
        assert!(
            after.clone().all(|s| got.contains(&s)),
            "remote {i}: {got:?}"
        );
        assert!(got
            .iter()
            .all(|s| before.contains(s) || during.contains(s) || after.contains(s)),);
    }
    // what the node could not send was counted, and said
    nodes[0].wait_line("while disconnected");
}

#[test]
fn a_node_killed_while_the_others_keep_serving() {
    if !have_nats("cluster") {
        return;
    }
    let nats = Nats::start();
    let mut nodes: Vec<Node> = (0..3).map(|_| Node::start(&nats.url(), "t4")).collect();
    let mut a = nodes[0].client();
    let mut b = nodes[1].client();
    let c = nodes[2].client();
    nats.wait_subscribers("t4.all", 3);
    nodes.pop(); // SIGKILL: no goodbye to the broker
    drop(c);
    nats.wait_subscribers("t4.all", 2);
    for i in 0..20 {
        send(&mut a, &format!("a:{i}"));
        send(&mut b, &format!("b:{i}"));
    }
    for (name, ws) in [("a", &mut a), ("b", &mut b)] {
        let mut inbox = Inbox::default();
        read_until(ws, name, &mut inbox, 40, WAIT);
        assert_eq!(inbox.count(), 40, "{name}: {:?}", counts(&inbox));
    }
}

#[test]
fn bad_configuration_is_a_clear_error_at_start() {
    // nothing listens on this port
    let port = free_port();
    let e = Node::try_start(&format!("nats://127.0.0.1:{port}"), "x")
        .err()
        .expect("no broker: the node does not start");
    assert!(
        e.contains(&format!(
            "cannot connect to NATS at nats://127.0.0.1:{port}"
        )),
        "{e}"
    );
    for (prefix, why) in [
        ("a..b", "empty token"),
        ("a.*", "wildcards"),
        ("a b", "' '"),
    ] {
        let e = Node::try_start(&format!("nats://127.0.0.1:{port}"), prefix)
            .err()
            .expect("a bad prefix: the node does not start");
        assert!(
            e.contains("subject prefix") && e.contains(why),
            "{prefix}: {e}"
        );
    }
    let e = Node::try_start("tls://127.0.0.1:1", "x").err().unwrap();
    assert!(e.contains("tls:// is not supported"), "{e}");
}

/// A server whose clients choose topics: `sub T`, `unsub T` (answered `ok`), and
/// `pub T|text`.
struct Topics;

impl Handler for Topics {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        if let Some(topic) = t.strip_prefix("sub ") {
            ws.subscribe(topic);
            ws.send(Message::Text("ok"));
        } else if let Some(topic) = t.strip_prefix("unsub ") {
            ws.unsubscribe(topic);
            ws.send(Message::Text("ok"));
        } else if let Some((topic, text)) = t.strip_prefix("pub ").and_then(|r| r.rsplit_once('|'))
        {
            ws.publish(topic, Message::Text(text));
        }
    }
}

fn topics_server(nats: &Nats, prefix: &str, name: &str) -> ServerHandle {
    Server::builder()
        .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .workers(2)
        .pin(None)
        .cluster(NatsConfig {
            name: name.into(),
            ..NatsConfig::new(nats.url()).subject_prefix(prefix)
        })
        .start(|_| Topics)
        .expect("server starts")
}

fn ask(ws: &mut Ws, what: &str) {
    send(ws, what);
    assert_eq!(recv(ws, WAIT).as_deref(), Some("ok"), "{what}");
}

/// The broker subscriptions of the connection named `name`.
fn broker_subs(nats: &Nats, name: &str) -> BTreeSet<String> {
    let all = nats.subscriptions();
    let mut it = all.iter().filter(|((n, _), _)| n == name);
    let (_, subs) = it
        .next()
        .unwrap_or_else(|| panic!("no connection {name}: {all:?}"));
    assert!(it.next().is_none(), "two connections named {name}");
    let set: BTreeSet<String> = subs.iter().cloned().collect();
    assert_eq!(set.len(), subs.len(), "{name}: a subject twice: {subs:?}");
    set
}

#[test]
fn topic_churn_on_several_workers_leaves_exactly_the_topics_with_subscribers() {
    if !have_nats("cluster") {
        return;
    }
    let nats = Nats::start();
    let a = topics_server(&nats, "t5", "node-a");
    let b = topics_server(&nats, "t5", "node-b");
    // clients spread over both workers of node a (connections go to either)
    let mut clients: Vec<Ws> = (0..6).map(|_| client(a.local_addr())).collect();
    let topics = ["x", "y.z", "a b", "*", ">", "%", "", "é"];
    let mut member = vec![BTreeSet::<usize>::new(); clients.len()];
    let mut rng = 0x1234_5678_u32;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        rng as usize
    };
    let subject = |t: &str| {
        let mut v = Vec::new();
        soliton::cluster::subject::write_subject(&mut v, "t5", t);
        String::from_utf8(v).unwrap()
    };
    for round in 0..10 {
        for _ in 0..12 {
            let c = next() % clients.len();
            let t = next() % topics.len();
            if member[c].contains(&t) {
                ask(&mut clients[c], &format!("unsub {}", topics[t]));
                member[c].remove(&t);
            } else {
                ask(&mut clients[c], &format!("sub {}", topics[t]));
                member[c].insert(t);
            }
        }
        if round == 5 {
            // a connection closing leaves its topics too
            clients.swap_remove(0);
            member.swap_remove(0);
        }
        let want: BTreeSet<String> = member
            .iter()
            .flatten()
            .map(|&t| subject(topics[t]))
            .collect();
        let end = Instant::now() + WAIT;
        while broker_subs(&nats, "node-a") != want {
            assert!(
                Instant::now() < end,
                "round {round}: broker {:?}, want {want:?}",
                broker_subs(&nats, "node-a")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(a.cluster_stats().unwrap().subscriptions, want.len());
    }
    // a publish from the other node (its handle, and a connection) reaches every
    // subscriber of the topic on node a, whatever the topic's characters
    let mut pubber = client(b.local_addr());
    for (t, topic) in topics.iter().enumerate() {
        let subscribed: Vec<usize> = (0..clients.len())
            .filter(|&c| member[c].contains(&t))
            .collect();
        if subscribed.is_empty() {
            continue;
        }
        b.publish(topic, Message::Text(&format!("h{t}")));
        send(&mut pubber, &format!("pub {topic}|c{t}"));
        for &c in &subscribed {
            assert_eq!(
                recv(&mut clients[c], WAIT),
                Some(format!("h{t}")),
                "{topic:?}"
            );
            assert_eq!(
                recv(&mut clients[c], WAIT),
                Some(format!("c{t}")),
                "{topic:?}"
            );
        }
    }
    for ws in clients.iter_mut() {
        assert_eq!(recv(ws, Duration::from_millis(100)), None);
    }
    let (sa, sb) = (a.cluster_stats().unwrap(), b.cluster_stats().unwrap());
    assert!(sa.connected && sb.connected);
    assert!(sb.published >= 2 && sa.received >= 2, "{sa:?} {sb:?}");
    assert_eq!(
        sa.invalid + sa.dropped_full + sa.dropped_disconnected,
        0,
        "{sa:?}"
    );
    // all gone: no subscription left
    drop(clients);
    let end = Instant::now() + WAIT;
    while !broker_subs(&nats, "node-a").is_empty() {
        assert!(Instant::now() < end, "{:?}", broker_subs(&nats, "node-a"));
        std::thread::sleep(Duration::from_millis(20));
    }
    a.shutdown(Duration::ZERO).unwrap();
    b.shutdown(Duration::ZERO).unwrap();
    // shut down: its connection to the broker is closed
    let left = nats.subscriptions();
    assert!(
        !left.keys().any(|(n, _)| n == "node-a" || n == "node-b"),
        "{left:?}"
    );
}

#[test]
fn messages_from_others_under_the_prefix_that_are_not_frames_are_dropped_and_counted() {
    if !have_nats("cluster") {
        return;
    }
    let nats = Nats::start();
    let a = topics_server(&nats, "t6", "node-a");
    let mut ws = client(a.local_addr());
    ask(&mut ws, "sub news");
    nats.wait_subscribers("t6.news", 1);
    // a plain NATS client publishes: not a frame, then a frame
    let mut raw = TcpStream::connect(("127.0.0.1", nats.port)).unwrap();
    raw.write_all(b"CONNECT {\"verbose\":false}\r\nPUB t6.news 5\r\nhello\r\n")
        .unwrap();
    raw.write_all(b"PUB t6.news 4\r\n\x81\x02hi\r\nPING\r\n")
        .unwrap();
    assert_eq!(recv(&mut ws, WAIT).as_deref(), Some("hi"));
    let s = a.cluster_stats().unwrap();
    assert_eq!((s.invalid, s.received), (1, 1), "{s:?}");
}

#[test]
fn a_stalled_broker_never_stalls_a_worker() {
    if !have_nats("cluster") {
        return;
    }
    let nats = Nats::start();
    let a = Server::builder()
        .addr(SocketAddr::from(([127, 0, 0, 1], 0)))
        .workers(1)
        .pin(None)
        .cluster(NatsConfig {
            name: "node-s".into(),
            queue: 64,
            ping_interval: Duration::from_millis(200),
            write_timeout: Duration::from_millis(500),
            connect_timeout: Duration::from_millis(500),
            ..NatsConfig::new(nats.url()).subject_prefix("t7")
        })
        .start(|_| Topics)
        .expect("server starts");
    let mut sub = client(a.local_addr());
    ask(&mut sub, "sub big");
    nats.wait_subscribers("t7.big", 1);
    let pid = nats.child.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} nats-server");
    };
    signal("-STOP");
    // 300 messages of 64 KiB: more than the socket buffers hold, so the bridge's
    // writes block (then time out) and its queue fills
    const N: usize = 300;
    let addr = a.local_addr();
    let publisher = std::thread::spawn(move || {
        let mut p = client(addr);
        let pad = "x".repeat(64 * 1024);
        for i in 0..N {
            send(&mut p, &format!("pub big|{pad}{i}"));
        }
        p
    });
    let started = Instant::now();
    for i in 0..N {
        let m = recv(&mut sub, WAIT).unwrap_or_else(|| panic!("local message {i} never came"));
        assert!(
            m.ends_with(&format!("x{i}")),
            "local message {i} out of order"
        );
    }
    let local = started.elapsed();
    let _p = publisher.join().unwrap();
    // the bridge saw the broker stall: the connection was given up, publishes dropped
    let end = Instant::now() + WAIT;
    while a.cluster_stats().unwrap().connected {
        assert!(Instant::now() < end, "{:?}", a.cluster_stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = a.cluster_stats().unwrap();
    assert!(
        s.dropped_full + s.dropped_disconnected > 0,
        "nothing dropped: {s:?}"
    );
    eprintln!("local delivery of {N} x 64 KiB with the broker stopped: {local:?}; {s:?}");
    signal("-CONT");
    let end = Instant::now() + WAIT;
    while !a.cluster_stats().unwrap().connected {
        assert!(Instant::now() < end, "{:?}", a.cluster_stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(a.cluster_stats().unwrap().reconnects >= 1);
    nats.wait_subscribers("t7.big", 1);
    a.shutdown(Duration::ZERO).unwrap();
}
