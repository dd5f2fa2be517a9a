//! The opening handshake over real sockets: acceptance, subprotocols, every refusal
//! status, plain HTTP, `on_upgrade` refusals and the headers it sees.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use soliton::proto::handshake::{OriginPolicy, Request};
use soliton::proto::Message;
use soliton::server::{Handler, HttpResponse, Reject, UpgradeRequest, WebSocket};
use soliton_tests::{
    builder, connect, encode_frame, for_each_backend, head, http_exchange, op, read_head,
    upgrade_request, upgrade_request_with, Echo, HttpReply, RawWs, TestServer, IO_TIMEOUT,
    SAMPLE_ACCEPT,
};

/// What `on_upgrade` saw.
#[derive(Debug)]
struct Seen {
    headers: Vec<(String, String)>,
    protocol: Option<String>,
    peer: Option<SocketAddr>,
}

/// Reports every upgrade request, refuses `/private` with 401, answers `GET /health`
/// with 200 "ok" and any other plain request with the default 426.
struct Gate {
    tx: Sender<Seen>,
}

impl Handler for Gate {
    type Data = ();

    fn on_upgrade(&mut self, req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        if req.request.path() == "/private" {
            return Err(Reject::new(401, "who are you?\n"));
        }
        let headers = req
            .request
            .headers()
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let _ = self.tx.send(Seen {
            headers,
            protocol: req.protocol().map(str::to_owned),
            peer: req.peer,
        });
        Ok(())
    }

    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        ws.send(msg);
    }

    fn on_http(&mut self, req: &Request<'_>) -> HttpResponse {
        if req.method() == "GET" && req.path() == "/health" {
            HttpResponse::new(200, "ok")
        } else {
            HttpResponse::upgrade_required()
        }
    }
}

fn gate_server(b: soliton::server::Builder) -> (TestServer, std::sync::mpsc::Receiver<Seen>) {
    let (tx, rx) = channel();
    let server = TestServer::start(b, move |_| Gate { tx: tx.clone() });
    (server, rx)
}

fn assert_refused(r: &HttpReply, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert!(
        r.status_line.starts_with(&format!("HTTP/1.1 {status} ")),
        "{what}: status line {:?}",
        r.status_line
    );
    assert!(
        r.closed,
        "{what}: the connection must close after a refusal"
    );
    assert!(
        r.header("sec-websocket-accept").is_none(),
        "{what}: a refusal carries no accept value"
    );
}

#[test]
fn rfc_sample_key_is_accepted_with_101_and_the_rfc_accept_value() {
    for_each_backend(|backend| {
        let (server, rx) = gate_server(builder(backend));
        let mut ws = RawWs::connect(server.addr());
        let r = &ws.reply;
        assert!(r.status_line.starts_with("HTTP/1.1 101 "), "{r:?}");
        assert_eq!(r.header("sec-websocket-accept"), Some(SAMPLE_ACCEPT));
        assert!(r
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
        assert!(r
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
        assert_eq!(r.header("sec-websocket-protocol"), None, "none offered");
        assert_eq!(r.header("sec-websocket-extensions"), None, "none offered");
        let seen = rx.recv_timeout(IO_TIMEOUT).expect("on_upgrade ran");
        assert_eq!(seen.protocol, None);
        // and the connection works
        ws.send_text("after the handshake");
        assert_eq!(ws.read_text(), "after the handshake");
    });
}

#[test]
fn subprotocol_is_the_servers_most_preferred_one_the_client_offered() {
    for_each_backend(|backend| {
        let (server, rx) = gate_server(builder(backend).protocols(["chat", "superchat"]));
        let cases: [(&[&str], Option<&str>); 5] = [
            (&["Sec-WebSocket-Protocol: chat, superchat"], Some("chat")),
            // server preference wins over the client's order
            (&["Sec-WebSocket-Protocol: superchat, chat"], Some("chat")),
            // offers split over two fields count together
            (
                &[
                    "Sec-WebSocket-Protocol: other",
                    "Sec-WebSocket-Protocol: superchat",
                ],
                Some("superchat"),
            ),
            (&["Sec-WebSocket-Protocol: other"], None),
            (&[], None),
        ];
        for (extra, want) in cases {
            let ws = RawWs::connect_with(server.addr(), &upgrade_request("/", &[], extra));
            assert_eq!(
                ws.reply.header("sec-websocket-protocol"),
                want,
                "offer {extra:?}"
            );
            let seen = rx.recv_timeout(IO_TIMEOUT).expect("on_upgrade ran");
            assert_eq!(
                seen.protocol.as_deref(),
                want,
                "on_upgrade, offer {extra:?}"
            );
        }
    });
}

#[test]
fn bad_key_missing_connection_upgrade_and_missing_host_get_400() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let cases = [
            (
                "key of 5 bytes",
                upgrade_request(
                    "/",
                    &["Sec-WebSocket-Key"],
                    &["Sec-WebSocket-Key: c2hvcnQ="],
                ),
            ),
            (
                "key not base64",
                upgrade_request(
                    "/",
                    &["Sec-WebSocket-Key"],
                    &["Sec-WebSocket-Key: !!not-base64-at-all!!"],
                ),
            ),
            ("no key", upgrade_request("/", &["Sec-WebSocket-Key"], &[])),
            ("no Connection", upgrade_request("/", &["Connection"], &[])),
            (
                "Connection without Upgrade",
                upgrade_request("/", &["Connection"], &["Connection: keep-alive"]),
            ),
            ("no Host", upgrade_request("/", &["Host"], &[])),
        ];
        for (what, req) in cases {
            let r = http_exchange(server.addr(), req.as_bytes());
            assert_refused(&r, 400, what);
        }
    });
}

#[test]
fn origin_allow_list_refuses_foreign_and_missing_origin_with_403() {
    for_each_backend(|backend| {
        let b =
            builder(backend).origins(OriginPolicy::AllowList(vec!["https://good.example".into()]));
        let server = TestServer::start(b, |_| Echo);
        let foreign = upgrade_request("/", &[], &["Origin: https://evil.example"]);
        assert_refused(
            &http_exchange(server.addr(), foreign.as_bytes()),
            403,
            "foreign",
        );
        let missing = upgrade_request("/", &[], &[]);
        assert_refused(
            &http_exchange(server.addr(), missing.as_bytes()),
            403,
            "missing",
        );
        // the allowed origin (compared case-insensitively) is upgraded
        let good = upgrade_request("/", &[], &["Origin: https://GOOD.example"]);
        let mut ws = RawWs::connect_with(server.addr(), &good);
        ws.send_text("ok");
        assert_eq!(ws.read_text(), "ok");
    });
}

#[test]
fn post_with_upgrade_gets_405_allowing_get() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let req = upgrade_request_with("POST", "/", &[], &["Content-Length: 0"]);
        let r = http_exchange(server.addr(), req.as_bytes());
        assert_refused(&r, 405, "POST");
        assert_eq!(r.header("allow"), Some("GET"));
    });
}

#[test]
fn version_8_gets_426_naming_version_13() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let req = upgrade_request(
            "/",
            &["Sec-WebSocket-Version"],
            &["Sec-WebSocket-Version: 8"],
        );
        let r = http_exchange(server.addr(), req.as_bytes());
        assert_refused(&r, 426, "version 8");
        assert_eq!(r.header("sec-websocket-version"), Some("13"));
    });
}

#[test]
fn too_many_headers_or_too_large_head_gets_431() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        // 70 small fields: over the default 64
        let many: Vec<String> = (0..70).map(|i| format!("X-Field-{i}: {i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let req = upgrade_request("/", &[], &many);
        assert!(req.len() < 4096, "small in bytes, many in count");
        assert_refused(
            &http_exchange(server.addr(), req.as_bytes()),
            431,
            "70 fields",
        );
        // 20 fields of 1,000 bytes: over the default 16 KiB head
        let value = "v".repeat(1000);
        let big: Vec<String> = (0..20).map(|i| format!("X-Big-{i}: {value}")).collect();
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        let req = upgrade_request("/", &[], &big);
        assert!(req.len() > 16 * 1024);
        assert_refused(
            &http_exchange(server.addr(), req.as_bytes()),
            431,
            "20 KB head",
        );
    });
}

#[test]
fn huge_request_line_gets_414() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let path = format!("/{}", "a".repeat(9000));
        let req = upgrade_request(&path, &[], &[]);
        assert_refused(
            &http_exchange(server.addr(), req.as_bytes()),
            414,
            "9 KB line",
        );
    });
}

#[test]
fn plain_get_health_gets_the_handlers_on_http_answer() {
    for_each_backend(|backend| {
        let (server, _rx) = gate_server(builder(backend));
        let req = head(&["GET /health HTTP/1.1", "Host: 127.0.0.1"]);
        let r = http_exchange(server.addr(), req.as_bytes());
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body_text(), "ok");
        assert!(r.closed, "the response closes the connection");
        // another path gets what the handler chose for it: the default 426
        let req = head(&["GET /other HTTP/1.1", "Host: 127.0.0.1"]);
        assert_eq!(http_exchange(server.addr(), req.as_bytes()).status, 426);
    });
}

#[test]
fn plain_get_without_on_http_gets_the_default_426() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let req = head(&["GET /health HTTP/1.1", "Host: 127.0.0.1"]);
        let r = http_exchange(server.addr(), req.as_bytes());
        assert_eq!(r.status, 426, "{r:?}");
        assert!(r
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
        assert_eq!(r.header("sec-websocket-version"), Some("13"));
        assert!(r.closed);
    });
}

#[test]
fn on_upgrade_reject_401_is_sent_as_401() {
    for_each_backend(|backend| {
        let (server, rx) = gate_server(builder(backend));
        let req = upgrade_request("/private", &[], &[]);
        let r = http_exchange(server.addr(), req.as_bytes());
        assert_refused(&r, 401, "on_upgrade refusal");
        assert_eq!(r.body_text(), "who are you?\n");
        assert!(
            rx.try_recv().is_err(),
            "the refusal is not reported as seen"
        );
    });
}

#[test]
fn request_headers_and_peer_reach_on_upgrade() {
    for_each_backend(|backend| {
        let (server, rx) = gate_server(builder(backend));
        let mut s = connect(server.addr());
        let me = s.local_addr().expect("local addr");
        let req = upgrade_request(
            "/chat?room=1",
            &[],
            &[
                "Cookie: session=abc123; theme=dark",
                "X-Forwarded-For: 203.0.113.7, 198.51.100.2",
                "Authorization: Bearer t0ken",
            ],
        );
        s.write_all(req.as_bytes()).expect("write");
        let mut buf = Vec::new();
        let r = read_head(&mut s, &mut buf).expect("response");
        assert_eq!(r.status, 101);
        let seen = rx.recv_timeout(IO_TIMEOUT).expect("on_upgrade ran");
        let get = |n: &str| {
            seen.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("cookie"), Some("session=abc123; theme=dark"));
        assert_eq!(get("x-forwarded-for"), Some("203.0.113.7, 198.51.100.2"));
        assert_eq!(get("authorization"), Some("Bearer t0ken"));
        assert_eq!(get("host"), Some("127.0.0.1"));
        assert_eq!(seen.peer, Some(me), "the peer address is the client's");
    });
}

#[test]
fn frames_sent_in_the_same_write_as_the_request_are_processed() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut s = connect(server.addr());
        let mut wire = upgrade_request("/", &[], &[]).into_bytes();
        for text in ["first", "second"] {
            wire.extend(encode_frame(
                true,
                op::TEXT,
                text.as_bytes(),
                Some([1, 2, 3, 4]),
            ));
        }
        s.write_all(&wire).expect("write");
        let mut ws = RawWs::finish_handshake(s);
        assert_eq!(ws.read_text(), "first");
        assert_eq!(ws.read_text(), "second");
    });
}

/// A request head that arrives in more than one read is kept until it is whole (a
/// regression test: such heads were once dropped, and a short second read panicked the
/// worker).
#[test]
fn request_head_split_over_two_reads_is_accepted() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let req = upgrade_request("/", &[], &[]);
        // split early (the rest is longer) and late (the rest is shorter)
        for split in [40, req.len() - 20] {
            let mut s = connect(server.addr());
            s.write_all(&req.as_bytes()[..split]).expect("write");
            // client-side pacing, so that the halves arrive in separate reads
            std::thread::sleep(Duration::from_millis(100));
            s.write_all(&req.as_bytes()[split..]).expect("write");
            let mut ws = RawWs::finish_handshake(s);
            ws.send_text("split");
            assert_eq!(ws.read_text(), "split", "split at {split}");
        }
    });
}

/// As [`request_head_split_over_two_reads_is_accepted`], one byte per read.
#[test]
fn request_written_one_byte_at_a_time_is_accepted() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut s = connect(server.addr());
        for b in upgrade_request("/", &[], &[]).as_bytes() {
            s.write_all(std::slice::from_ref(b)).expect("write");
        }
        let mut ws = RawWs::finish_handshake(s);
        ws.send_text("slowly");
        assert_eq!(ws.read_text(), "slowly");
    });
}

/// Picks the subprotocol itself (the client's last offer, against the server's
/// preference list) and sets a cookie on the 101.
struct Chooser;

impl Handler for Chooser {
    type Data = ();

    fn on_upgrade(&mut self, req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        assert!(!req.select_protocol("not-offered"));
        let last = req.request.protocols().last().map(str::to_owned);
        if let Some(p) = last {
            assert!(req.select_protocol(&p));
        }
        req.add_response_header("Set-Cookie", "session=abc; HttpOnly");
        Ok(())
    }

    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        ws.send(msg);
    }
}

#[test]
fn on_upgrade_can_choose_the_subprotocol_and_add_response_headers() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend).protocols(["chat", "superchat"]), |_| {
            Chooser
        });
        let req = upgrade_request("/", &[], &["Sec-WebSocket-Protocol: chat, superchat"]);
        let reply = http_exchange(server.addr(), req.as_bytes());
        assert_eq!(reply.status, 101);
        assert_eq!(reply.header("sec-websocket-protocol"), Some("superchat"));
        assert_eq!(reply.header("set-cookie"), Some("session=abc; HttpOnly"));
    });
}
