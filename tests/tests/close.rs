//! The closing handshake, both ways, and the close code each protocol violation fails
//! the connection with.

use std::borrow::Cow;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use soliton::proto::{CloseCode, Limits, Message};
use soliton::server::{CloseInfo, ConnId, Handler, Reject, Server, UpgradeRequest, WebSocket};
use soliton_tests::{
    builder, config, connect, encode_frame, encode_frame_rsv, for_each_backend, op, RawWs,
    RetryStream, TestServer, IO_TIMEOUT,
};
use tungstenite::protocol::frame::coding::CloseCode as TCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message as Tm;

/// What `on_close` reported.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Closed {
    code: u16,
    reason: String,
    clean: bool,
}

/// Echoes, closes with 4002 "bye" on "close-me", reports `on_close`.
struct Closer {
    tx: Sender<Closed>,
}

impl Handler for Closer {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        if msg == Message::Text("close-me") {
            ws.close(CloseCode::new(4002).expect("nonzero"), "bye");
        } else {
            ws.send(msg);
        }
    }
    fn on_close(&mut self, _id: ConnId, _data: (), info: CloseInfo<'_>) {
        let _ = self.tx.send(Closed {
            code: info.code.get(),
            reason: info.reason.to_owned(),
            clean: info.was_clean,
        });
    }
}

fn closer_server(b: soliton::server::Builder) -> (TestServer, Receiver<Closed>) {
    let (tx, rx) = channel();
    (TestServer::start(b, move |_| Closer { tx: tx.clone() }), rx)
}

#[test]
fn client_close_4001_is_echoed_and_on_close_sees_4001_reason_and_clean() {
    for_each_backend(|backend| {
        let (server, rx) = closer_server(builder(backend));
        let stream = RetryStream(connect(server.addr()));
        let (mut ws, _) = tungstenite::client(server.url("/"), stream)
            .unwrap_or_else(|e| panic!("handshake: {e}"));
        ws.send(Tm::Text("hello".into())).expect("send");
        assert_eq!(ws.read().expect("echo"), Tm::Text("hello".into()));
        ws.close(Some(CloseFrame {
            code: TCode::from(4001),
            reason: Cow::Borrowed("client done"),
        }))
        .expect("close");
        let echoed = match ws.read() {
            Ok(Tm::Close(f)) => f.expect("the reply has a code"),
            Ok(other) => panic!("unexpected {other:?} before the close reply"),
            Err(e) => panic!("no close reply: {e}"),
        };
        assert_eq!(u16::from(echoed.code), 4001, "the server echoes the code");
        assert_eq!(echoed.reason, "client done", "and the reason");
        // then the server closes TCP
        match ws.read() {
            Err(tungstenite::Error::ConnectionClosed) => {}
            other => panic!("expected the TCP close, got {other:?}"),
        }
        drop(ws);
        let c = rx.recv_timeout(IO_TIMEOUT).expect("on_close ran");
        assert_eq!(
            c,
            Closed {
                code: 4001,
                reason: "client done".into(),
                clean: true
            }
        );
    });
}

#[test]
fn server_close_4002_bye_reaches_the_client_whose_reply_completes_the_handshake() {
    for_each_backend(|backend| {
        // a short close timeout bounds the wait for the TCP close (see the next test
        // for how soon it must come)
        let mut cfg = config(backend);
        cfg.close_timeout = Duration::from_millis(1000);
        let (server, rx) = closer_server(Server::builder().config(cfg));
        let mut ws = RawWs::connect(server.addr());
        ws.send_text("close-me");
        let (code, reason, skipped) = ws.read_close();
        assert_eq!((code, reason.as_str(), skipped), (Some(4002), "bye", 0));
        ws.send_close(4002, "bye");
        ws.expect_eof();
        drop(ws);
        let c = rx.recv_timeout(IO_TIMEOUT).expect("on_close ran");
        assert_eq!(c.code, 4002);
        assert!(c.clean, "both close frames crossed: {c:?}");

        // the same through tungstenite: it sees the close and its reply is accepted
        let stream = RetryStream(connect(server.addr()));
        let (mut t, _) = tungstenite::client(server.url("/"), stream)
            .unwrap_or_else(|e| panic!("handshake: {e}"));
        t.send(Tm::Text("close-me".into())).expect("send");
        match t.read().expect("close frame") {
            Tm::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 4002);
                assert_eq!(f.reason, "bye");
            }
            other => panic!("expected close 4002, got {other:?}"),
        }
        // tungstenite sends its queued reply on the next read, then sees the TCP close
        loop {
            match t.read() {
                Err(tungstenite::Error::ConnectionClosed) => break,
                Ok(_) => continue,
                Err(e) => panic!("expected a clean close, got {e}"),
            }
        }
        drop(t);
        let c = rx.recv_timeout(IO_TIMEOUT).expect("on_close ran");
        assert!(c.clean && c.code == 4002, "{c:?}");
    });
}

#[test]
fn server_closes_tcp_at_once_when_the_peer_answers_its_close() {
    for_each_backend(|backend| {
        // default close_timeout: 5 s
        let (server, _rx) = closer_server(builder(backend));
        let mut ws = RawWs::connect(server.addr());
        ws.send_text("close-me");
        let (code, _, _) = ws.read_close();
        assert_eq!(code, Some(4002));
        let t0 = Instant::now();
        ws.send_close(4002, "bye");
        ws.expect_eof();
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "TCP closed {took:?} after the close reply (close_timeout is 5 s)"
        );
    });
}

/// Sends `wire` on a fresh connection and expects a close frame with `code`, then EOF;
/// `on_close` reports the same code, not clean.
fn expect_failure(server: &TestServer, rx: &Receiver<Closed>, wire: &[u8], code: u16, what: &str) {
    let mut ws = RawWs::connect(server.addr());
    ws.send_raw(wire);
    let (got, _, skipped) = ws.read_close();
    assert_eq!(got, Some(code), "{what}");
    assert_eq!(skipped, 0, "{what}: nothing before the close frame");
    ws.expect_eof();
    drop(ws);
    let c = rx.recv_timeout(IO_TIMEOUT).expect("on_close ran");
    assert_eq!(c.code, code, "{what}: on_close");
    assert!(!c.clean, "{what}: a failed connection is not clean");
}

const KEY: Option<[u8; 4]> = Some([0x12, 0x34, 0x56, 0x78]);

#[test]
fn unmasked_client_frame_fails_with_1002() {
    for_each_backend(|backend| {
        let (server, rx) = closer_server(builder(backend));
        let wire = encode_frame(true, op::TEXT, b"no mask", None);
        expect_failure(&server, &rx, &wire, 1002, "unmasked");
    });
}

#[test]
fn invalid_utf8_text_fails_with_1007() {
    for_each_backend(|backend| {
        let (server, rx) = closer_server(builder(backend));
        let wire = encode_frame(true, op::TEXT, b"ok so far \xff\xfe", KEY);
        expect_failure(&server, &rx, &wire, 1007, "invalid UTF-8");
        // a truncated sequence at the end of a fragmented message
        let mut wire = encode_frame(false, op::TEXT, b"abc", KEY);
        wire.extend(encode_frame(true, op::CONT, &"€".as_bytes()[..2], KEY));
        expect_failure(&server, &rx, &wire, 1007, "truncated UTF-8 at FIN");
        // a close reason must be UTF-8 too
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bad \xc3\x28");
        let wire = encode_frame(true, op::CLOSE, &payload, KEY);
        expect_failure(&server, &rx, &wire, 1007, "invalid UTF-8 close reason");
    });
}

#[test]
fn message_over_the_configured_limit_fails_with_1009() {
    for_each_backend(|backend| {
        let limits = Limits {
            max_frame: 1024,
            max_message: 4096,
        };
        let (server, rx) = closer_server(builder(backend).limits(limits));
        // at the limits it passes
        let mut ws = RawWs::connect(server.addr());
        let exact = vec![7u8; 1024];
        ws.send_binary(&exact);
        assert_eq!(ws.read_message(), (op::BINARY, exact.clone()));
        for i in 0..4 {
            let opcode = if i == 0 { op::BINARY } else { op::CONT };
            ws.send_frame(i == 3, opcode, &exact);
        }
        assert_eq!(ws.read_message(), (op::BINARY, vec![7u8; 4096]));
        drop(ws);
        let c = rx.recv_timeout(IO_TIMEOUT).expect("on_close ran");
        assert_eq!(
            (c.code, c.clean),
            (1006, false),
            "dropped without a close frame"
        );
        // one frame over max_frame
        let wire = encode_frame(true, op::BINARY, &[0u8; 1025], KEY);
        expect_failure(&server, &rx, &wire, 1009, "frame of 1025");
        // fragments of legal size adding up to more than max_message
        let mut wire = Vec::new();
        for i in 0..5 {
            let opcode = if i == 0 { op::TEXT } else { op::CONT };
            wire.extend(encode_frame(i == 4, opcode, &[b'a'; 1000], KEY));
        }
        expect_failure(&server, &rx, &wire, 1009, "message of 5000");
    });
}

#[test]
fn reserved_opcode_fails_with_1002() {
    for_each_backend(|backend| {
        let (server, rx) = closer_server(builder(backend));
        for opcode in [0x3, 0x7, 0xB, 0xF] {
            let wire = encode_frame(true, opcode, b"?", KEY);
            expect_failure(&server, &rx, &wire, 1002, &format!("opcode {opcode:#x}"));
        }
    });
}

#[test]
fn other_protocol_violations_fail_with_1002() {
    for_each_backend(|backend| {
        let (server, rx) = closer_server(builder(backend));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "RSV1 without an extension",
                encode_frame_rsv(true, 4, op::TEXT, b"x", KEY),
            ),
            ("fragmented ping", encode_frame(false, op::PING, b"x", KEY)),
            (
                "ping of 126 bytes",
                encode_frame(true, op::PING, &[0; 126], KEY),
            ),
            (
                "continuation first",
                encode_frame(true, op::CONT, b"x", KEY),
            ),
            ("new message inside a fragmented one", {
                let mut w = encode_frame(false, op::TEXT, b"a", KEY);
                w.extend(encode_frame(true, op::TEXT, b"b", KEY));
                w
            }),
            (
                "close code 1005 on the wire",
                encode_frame(true, op::CLOSE, &1005u16.to_be_bytes(), KEY),
            ),
            (
                "close payload of 1 byte",
                encode_frame(true, op::CLOSE, &[3], KEY),
            ),
            ("length 5 in the 16-bit form", {
                // 0x81, mask bit + 126, then 0x0005, the key and 5 masked bytes
                let mut w = vec![0x81, 0x80 | 126, 0, 5];
                let k = KEY.expect("a key");
                w.extend_from_slice(&k);
                w.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
                w
            }),
        ];
        for (what, wire) in cases {
            expect_failure(&server, &rx, &wire, 1002, what);
        }
    });
}
