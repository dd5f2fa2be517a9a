//! The engine's examples (`engine/examples/*.rs`) run end to end over real sockets, on
//! both backends: each example's file is compiled in here as a module, and its
//! `start` (the client's `run`) is driven as its docs tell a user to, through HTTP
//! and WebSocket. What these tests check is what the examples' docs promise.

#[allow(dead_code)] // main() and the command line are the example binaries' own
#[path = "../../engine/examples/chat.rs"]
mod chat;
#[allow(dead_code)]
#[path = "../../engine/examples/client.rs"]
mod client;
#[allow(dead_code)]
#[path = "../../engine/examples/deferred_upgrade.rs"]
mod deferred_upgrade;
#[allow(dead_code)]
#[path = "../../engine/examples/echo.rs"]
mod echo;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use soliton::client::ConnectRequest;
use soliton_tests::{
    builder, client_builder, connect, for_each_backend, head, http_exchange, op, upgrade_request,
    HttpReply, RawWs, TestServer, IO_TIMEOUT,
};

#[test]
fn the_client_example_gets_every_echo_from_the_echo_example_and_closes_cleanly() {
    for_each_backend(|backend| {
        let server = TestServer::adopt(echo::start(builder(backend)), backend);
        let req = ConnectRequest::new(&server.url("/")).expect("a ws:// URL");
        let report =
            client::run(client_builder(backend), &req, 3, 4, IO_TIMEOUT).expect("the client runs");
        assert_eq!(
            report.clean, 3,
            "every connection: 4 echoes, then 1000 both ways"
        );
        assert_eq!(report.rtts.len(), 12);
    });
}

fn get(addr: SocketAddr, target: &str, cookie: Option<&str>) -> HttpReply {
    let line = format!("GET {target} HTTP/1.1");
    let cookie = cookie.map(|c| format!("Cookie: {c}"));
    let mut lines = vec![line.as_str(), "Host: 127.0.0.1"];
    lines.extend(cookie.as_deref());
    http_exchange(addr, head(&lines).as_bytes())
}

/// `POST /login?user=USER`: the `session=TOKEN` pair its cookie sets.
fn login(addr: SocketAddr, user: &str) -> String {
    let line = format!("POST /login?user={user} HTTP/1.1");
    let r = http_exchange(addr, head(&[&line, "Host: 127.0.0.1"]).as_bytes());
    assert_eq!(r.status_line, "HTTP/1.1 303 See Other");
    assert_eq!(
        r.header("location"),
        Some(format!("/?name={user}").as_str())
    );
    let cookie = r.header("set-cookie").expect("Set-Cookie");
    assert!(
        cookie.ends_with("; Path=/; HttpOnly; SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap_or("").to_owned();
    assert!(pair.starts_with("session=") && pair.len() == "session=".len() + 32);
    pair
}

/// Joins `room` with this `Cookie` header value, offering both subprotocols.
fn join(addr: SocketAddr, cookie: &str, room: &str) -> RawWs {
    let path = format!("/chat?room={room}&name=ignored");
    let cookie = format!("Cookie: {cookie}");
    let extra = [cookie.as_str(), "Sec-WebSocket-Protocol: superchat, chat"];
    let ws = RawWs::connect_with(addr, &upgrade_request(&path, &[], &extra));
    assert_eq!(ws.reply.header("sec-websocket-protocol"), Some("chat"));
    ws
}

#[test]
fn the_chat_example_logs_in_with_a_cookie_and_keeps_rooms_apart() {
    for_each_backend(|backend| {
        let server = TestServer::adopt(chat::start(builder(backend)), backend);
        let addr = server.addr();

        // no session: the login form; the login; with the session: the page
        let r = get(addr, "/", None);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert!(r.body_text().contains(r#"<form action="/login""#));
        let ada = login(addr, "ada");
        let bob = login(addr, "bob");
        let cy = login(addr, "cy");
        assert_ne!(ada, bob);
        let r = get(addr, "/", Some(&ada));
        assert!(r.body_text().contains("new WebSocket("), "the chat page");
        assert_eq!(get(addr, "/login?user=", None).status, 400);

        // refused upgrades: no session, an unknown one, no subprotocol in common
        let chat = |extra: &[&str]| {
            http_exchange(addr, upgrade_request("/chat", &[], extra).as_bytes()).status
        };
        assert_eq!(chat(&["Sec-WebSocket-Protocol: chat"]), 401);
        let unknown = format!("Cookie: session={}", "0".repeat(32));
        assert_eq!(chat(&[&unknown, "Sec-WebSocket-Protocol: chat"]), 401);
        let cookie = format!("Cookie: {ada}");
        assert_eq!(chat(&[&cookie]), 400);
        assert_eq!(chat(&[&cookie, "Sec-WebSocket-Protocol: other"]), 400);

        // two in room r1, one in "r 2": the name is the session's, not the query's
        let mut a = join(addr, &ada, "r1");
        assert_eq!(
            a.read_text(),
            "* welcome ada to r1 (0 already here), subprotocol chat"
        );
        assert_eq!(a.read_text(), "* ada joined r1");
        let mut b = join(addr, &format!("theme=dark; {bob}"), "r1");
        assert_eq!(
            b.read_text(),
            "* welcome bob to r1 (1 already here), subprotocol chat"
        );
        assert_eq!(b.read_text(), "* bob joined r1");
        assert_eq!(a.read_text(), "* bob joined r1");
        let mut c = join(addr, &cy, "r%202");
        assert_eq!(
            c.read_text(),
            "* welcome cy to r 2 (0 already here), subprotocol chat"
        );
        assert_eq!(c.read_text(), "* cy joined r 2");

        // text goes to the room, the sender included; binary back to its sender alone
        a.send_text("hello");
        assert_eq!(a.read_text(), "ada: hello");
        assert_eq!(b.read_text(), "ada: hello");
        c.send_binary(&[1, 2, 3]);
        assert_eq!(
            c.read_message(),
            (op::BINARY, vec![1, 2, 3]),
            "and nothing of r1"
        );

        // a departure is announced to the room
        b.send_close(1000, "bye");
        assert_eq!(b.read_close().0, Some(1000));
        assert_eq!(a.read_text(), "* bob left r1");
        a.send_text("still here");
        assert_eq!(a.read_text(), "ada: still here");
    });
}

#[test]
fn the_deferred_upgrade_example_checks_tokens_off_the_worker_which_serves_meanwhile() {
    for_each_backend(|backend| {
        // one worker, lookups of 300 ms: long enough to see one under way
        let started = deferred_upgrade::start(builder(backend), 2, 300..=300);
        let server = TestServer::adopt(started, backend);
        let addr = server.addr();
        let health = || {
            let r = get(addr, "/health", None);
            assert_eq!(r.status, 200);
            r.body_text()
        };
        assert_eq!(health(), "ok: 0 lookups in flight\n");

        // no token: refused at once; an unknown one: once the database answers
        let r = http_exchange(addr, upgrade_request("/ws", &[], &[]).as_bytes());
        assert_eq!(
            (r.status, r.body_text().as_str()),
            (401, "a token, please\n")
        );
        let bad = ["Authorization: Bearer nope"];
        let r = http_exchange(addr, upgrade_request("/ws", &[], &bad).as_bytes());
        assert_eq!((r.status, r.body_text().as_str()), (401, "unknown token\n"));

        // a good token: while its lookup is under way the one worker answers /health
        let mut s = connect(addr);
        let good = ["Authorization: Bearer token-alice"];
        s.write_all(upgrade_request("/ws", &[], &good).as_bytes())
            .expect("write the request");
        let deadline = Instant::now() + IO_TIMEOUT;
        while health() != "ok: 1 lookups in flight\n" {
            assert!(
                Instant::now() < deadline,
                "the lookup never showed in /health"
            );
        }
        let mut ws = RawWs::finish_handshake(s);
        let hello = ws.read_text();
        assert!(
            hello.starts_with("hello alice: your token took "),
            "{hello}"
        );
        ws.send_text("ping");
        assert_eq!(ws.read_text(), "ping");

        // the token in the query, for browsers
        let mut ws = RawWs::connect_with(addr, &upgrade_request("/ws?token=token-bob", &[], &[]));
        assert!(ws.read_text().starts_with("hello bob: "));
        assert_eq!(health(), "ok: 0 lookups in flight\n");
    });
}
