//! The engine's client role against the engine's server, over real sockets, on both
//! backends (each side on the same backend): echo, subprotocol and header fields,
//! ready states and buffered amount, close with code and reason both ways, and every
//! way a connect can fail (refused, HTTP status, a server that never answers).

use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

use soliton::client::{ClientHandle, ConnectRequest};
use soliton::proto::{CloseCode, Message, ReadyState};
use soliton::server::{
    Backend, CloseInfo, ConnError, ConnId, Handler, Reject, UpgradeRequest, WebSocket,
};
use soliton_tests::{builder, client_builder, for_each_backend, TestServer, IO_TIMEOUT};

#[derive(Debug, PartialEq)]
enum Ev {
    Open {
        tag: u32,
        protocol: Option<String>,
        state: ReadyState,
    },
    Text(u32, String),
    Binary(u32, usize),
    Error(u32, String),
    Closed {
        tag: u32,
        code: u16,
        reason: String,
        clean: bool,
    },
}

/// The client's handler: reports everything; on open sends what its data says.
struct Reporter {
    tx: Sender<Ev>,
}

/// Per connection: a tag, and what to do once open.
struct Script {
    tag: u32,
    send: Vec<Message<'static>>,
    close_after: usize,
    got: usize,
}

impl Handler for Reporter {
    type Data = Script;
    fn on_open(&mut self, ws: &mut WebSocket<'_, Script>) {
        let state = ws.ready_state();
        let protocol = ws.protocol().map(str::to_owned);
        let tag = ws.data().tag;
        let _ = self.tx.send(Ev::Open {
            tag,
            protocol,
            state,
        });
        let msgs = std::mem::take(&mut ws.data().send);
        for m in msgs {
            ws.send(m);
        }
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, Script>, msg: Message<'_>) {
        let tag = ws.data().tag;
        let _ = self.tx.send(match msg {
            Message::Text(t) => Ev::Text(tag, t.to_owned()),
            Message::Binary(b) => Ev::Binary(tag, b.len()),
        });
        ws.data().got += 1;
        if ws.data().got == ws.data().close_after {
            ws.close(CloseCode::new(4000).unwrap(), "client done");
            assert_eq!(ws.ready_state(), ReadyState::Closing);
        }
    }
    fn on_error(&mut self, _id: ConnId, data: &mut Script, e: &ConnError) {
        let _ = self.tx.send(Ev::Error(data.tag, e.to_string()));
    }
    fn on_close(&mut self, _id: ConnId, data: Script, info: CloseInfo<'_>) {
        let _ = self.tx.send(Ev::Closed {
            tag: data.tag,
            code: info.code.get(),
            reason: info.reason.to_owned(),
            clean: info.was_clean,
        });
    }
}

fn client(backend: Backend) -> (ClientHandle<Script>, Receiver<Ev>) {
    let (tx, rx) = channel();
    let c = client_builder(backend)
        .start(move |_| Reporter { tx: tx.clone() })
        .expect("client starts");
    assert_eq!(c.backend(), backend);
    (c, rx)
}

fn script(tag: u32, send: Vec<Message<'static>>, close_after: usize) -> Script {
    Script {
        tag,
        send,
        close_after,
        got: 0,
    }
}

fn next(rx: &Receiver<Ev>) -> Ev {
    rx.recv_timeout(IO_TIMEOUT)
        .expect("an event from the client")
}

/// The server side: echoes, answers "who" with the Cookie header, chooses subprotocols
/// by its list, and closes with 4001 "bye" on "close me".
struct Server;

impl Handler for Server {
    type Data = String;
    fn on_upgrade(&mut self, req: &UpgradeRequest<'_, '_>) -> Result<String, Reject> {
        match req.request.header_str("cookie") {
            Some(c) if c.contains("deny") => Err(Reject::new(403, "go away")),
            c => Ok(c.unwrap_or("").to_owned()),
        }
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, String>, msg: Message<'_>) {
        match msg {
            Message::Text("who") => {
                let c = ws.data().clone();
                ws.send_text(&c);
            }
            Message::Text("close me") => ws.close(CloseCode::new(4001).unwrap(), "bye"),
            m => {
                ws.send(m);
            }
        }
    }
}

fn server(backend: Backend) -> TestServer {
    TestServer::start(builder(backend).protocols(["superchat", "chat"]), |_| {
        Server
    })
}

#[test]
fn the_client_echoes_negotiates_and_closes_cleanly() {
    for_each_backend(|backend| {
        let srv = server(backend);
        let (c, rx) = client(backend);
        let big = vec![9u8; 300_000];
        let req = ConnectRequest::new(&srv.url("/chat"))
            .expect("url")
            .protocols(["chat", "superchat"])
            .header("Cookie", "user=ann");
        let big: &'static [u8] = Box::leak(big.into_boxed_slice());
        assert!(c.connect(
            req,
            script(
                1,
                vec![
                    Message::Text("hello"),
                    Message::Binary(big),
                    Message::Text("who")
                ],
                3
            )
        ));
        assert_eq!(
            next(&rx),
            Ev::Open {
                tag: 1,
                protocol: Some("superchat".into()),
                state: ReadyState::Open
            },
            "the server's preference among the offered subprotocols"
        );
        assert_eq!(next(&rx), Ev::Text(1, "hello".into()));
        assert_eq!(next(&rx), Ev::Binary(1, 300_000));
        assert_eq!(
            next(&rx),
            Ev::Text(1, "user=ann".into()),
            "headers reach the server"
        );
        assert_eq!(
            next(&rx),
            Ev::Closed {
                tag: 1,
                code: 4000,
                reason: "client done".into(),
                clean: true
            },
            "the server echoes our close code and reason"
        );
        c.shutdown(Duration::from_millis(200))
            .expect("client stops");
    });
}

#[test]
fn a_close_from_the_server_reaches_the_client_with_its_code_and_reason() {
    for_each_backend(|backend| {
        let srv = server(backend);
        let (c, rx) = client(backend);
        let req = ConnectRequest::new(&srv.url("/")).expect("url");
        c.connect(req, script(2, vec![Message::Text("close me")], 0));
        assert!(matches!(next(&rx), Ev::Open { tag: 2, .. }));
        assert_eq!(
            next(&rx),
            Ev::Closed {
                tag: 2,
                code: 4001,
                reason: "bye".into(),
                clean: true
            }
        );
        c.shutdown(Duration::from_millis(200))
            .expect("client stops");
    });
}

#[test]
fn failed_connects_come_as_on_error_then_1006() {
    for_each_backend(|backend| {
        let srv = server(backend);
        // nothing listens on this port
        let free: SocketAddr = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        // this one accepts and never answers
        let mute = TcpListener::bind("127.0.0.1:0").expect("bind");
        let (c, rx) = client(backend);
        c.connect(
            ConnectRequest::new(&format!("ws://{free}/")).expect("url"),
            script(3, vec![], 0),
        );
        c.connect(
            ConnectRequest::new(&srv.url("/"))
                .expect("url")
                .header("Cookie", "deny=1"),
            script(4, vec![], 0),
        );
        c.connect(
            ConnectRequest::new(&format!("ws://{}/", mute.local_addr().unwrap()))
                .expect("url")
                .timeout(Duration::from_millis(300)),
            script(5, vec![], 0),
        );
        let mut errors = Vec::new();
        let mut closed = Vec::new();
        let until = Instant::now() + IO_TIMEOUT;
        while closed.len() < 3 && Instant::now() < until {
            match next(&rx) {
                Ev::Error(tag, e) => errors.push((tag, e)),
                Ev::Closed {
                    tag, code, clean, ..
                } => closed.push((tag, code, clean)),
                other => panic!("unexpected {other:?}"),
            }
        }
        errors.sort();
        closed.sort();
        assert_eq!(
            closed,
            [(3, 1006, false), (4, 1006, false), (5, 1006, false)]
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors[0].1.contains("connect"), "{errors:?}");
        assert!(errors[1].1.contains("403"), "{errors:?}");
        assert!(errors[2].1.contains("timed out"), "{errors:?}");
        c.shutdown(Duration::from_millis(200))
            .expect("client stops");
        drop(mute);
    });
}

#[test]
fn urls_are_checked_before_anything_is_sent() {
    assert!(ConnectRequest::new("http://127.0.0.1/").is_err());
    assert!(ConnectRequest::new("ws://127.0.0.1:70000/").is_err());
    let r = ConnectRequest::new("wss://127.0.0.1/").expect("wss:// is a URL the client takes");
    assert_eq!(r.remote().port(), 443, "wss:// defaults to port 443");
    assert!(ConnectRequest::new("wss:///x").is_err());
}

#[test]
fn buffered_amount_counts_what_is_not_written_yet() {
    /// Sends 8 MiB at once and reports the buffered amount right after.
    struct Pusher {
        tx: Sender<usize>,
    }
    impl Handler for Pusher {
        type Data = ();
        fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..8 {
                ws.send_binary(&chunk);
            }
            let _ = self.tx.send(ws.buffered_amount());
        }
        fn on_message(&mut self, _ws: &mut WebSocket<'_, ()>, _msg: Message<'_>) {}
    }
    for_each_backend(|backend| {
        let srv = server(backend);
        let (tx, rx) = channel();
        let c = client_builder(backend)
            .start(move |_| Pusher { tx: tx.clone() })
            .expect("client starts");
        c.connect(ConnectRequest::new(&srv.url("/")).expect("url"), ());
        let b = rx.recv_timeout(IO_TIMEOUT).expect("opened");
        assert_eq!(
            b,
            8 * ((1 << 20) + 14),
            "everything sent in on_open is queued"
        );
        c.shutdown(Duration::from_millis(200))
            .expect("client stops");
    });
}
