//! What an application does from outside its callbacks, over real sockets on both
//! backends: the server's handle (cloned, from other threads, from the factory) closes,
//! terminates, subscribes and unsubscribes connections by id and counts them; timers
//! fire on the worker that set them (and not once cancelled); tasks posted to a worker
//! run there; a deferred upgrade is accepted, rejected, abandoned by the application,
//! timed out, and abandoned by its client.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use soliton::proto::Message;
use soliton::server::{
    CloseCode, CloseInfo, ConnId, Handler, PendingUpgrade, PostError, Reject, ServerHandle,
    Upgrade, UpgradeRequest, WebSocket, WorkerCtx,
};
use soliton_tests::{
    builder, connect, for_each_backend, http_exchange, read_to_end_or_reset, upgrade_request,
    RawWs, TestServer, IO_TIMEOUT,
};

#[derive(Debug, PartialEq)]
enum Ev {
    Open(ConnId),
    Closed(ConnId, u16, String, bool),
    Fired {
        worker: usize,
        conn_worker: usize,
        after: Duration,
    },
    Ran(usize),
}

/// The event for a close.
fn closed(id: ConnId, info: CloseInfo<'_>) -> Ev {
    Ev::Closed(id, info.code.get(), info.reason.into(), info.was_clean)
}

fn wait_for<T>(rx: &Receiver<T>, what: &str) -> T {
    rx.recv_timeout(IO_TIMEOUT)
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Polls `f` until it holds (at most `IO_TIMEOUT`).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < IO_TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reports opens and closes; "timer MS" sets a timer that answers "fired" on this
/// connection, "cancel MS" sets one and cancels it at once; echoes anything else.
struct App {
    tx: Sender<Ev>,
    /// The handle the factory got (kept to prove it is usable there).
    handle: ServerHandle,
}

impl Handler for App {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
        let _ = self.tx.send(Ev::Open(ws.id()));
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        match msg {
            Message::Text(t) if t.starts_with("timer ") => {
                let ms: u64 = t[6..].parse().unwrap_or(0);
                let id = ws.id();
                let set = Instant::now();
                ws.set_timer::<App>(Duration::from_millis(ms), move |app, ctx| {
                    let _ = app.tx.send(Ev::Fired {
                        worker: ctx.worker(),
                        conn_worker: id.worker_index(),
                        after: set.elapsed(),
                    });
                    ctx.with(id, |ws| ws.send_text("fired"));
                });
            }
            Message::Text(t) if t.starts_with("cancel ") => {
                let ms: u64 = t[7..].parse().unwrap_or(0);
                let id = ws.id();
                let t = ws.set_timer::<App>(Duration::from_millis(ms), move |_, ctx| {
                    ctx.with(id, |ws| ws.send_text("fired after cancel"));
                });
                assert!(ws.cancel_timer(t), "a live timer cancels");
                assert!(
                    !ws.cancel_timer(t),
                    "a cancelled timer does not cancel twice"
                );
            }
            Message::Text("from-callback") => {
                // the handle is reachable from a callback and from the factory
                let h = ws
                    .server()
                    .expect("a server connection has the handle")
                    .clone();
                assert_eq!(h.local_addr(), self.handle.local_addr());
                h.send(ws.id(), Message::Text("via handle"));
            }
            m => {
                ws.send(m);
            }
        }
    }
    fn on_close(&mut self, id: ConnId, _data: (), info: CloseInfo<'_>) {
        let _ = self.tx.send(closed(id, info));
    }
}

fn start(backend: soliton::server::Backend, workers: usize) -> (TestServer, Receiver<Ev>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let server = TestServer::start_with(builder(backend).workers(workers), move |_, h| App {
        tx: tx.lock().unwrap().clone(),
        handle: h.clone(),
    });
    (server, rx)
}

fn assert_send_sync_clone<T: Send + Sync + Clone + 'static>() {}

#[test]
fn the_server_handle_is_clone_send_and_sync() {
    assert_send_sync_clone::<ServerHandle>();
}

#[test]
fn close_terminate_and_subscribe_by_id_from_another_thread() {
    for_each_backend(|backend| {
        let (server, rx) = start(backend, 1);
        let mut a = RawWs::connect(server.addr());
        let Ev::Open(ida) = wait_for(&rx, "open a") else {
            panic!()
        };
        let mut b = RawWs::connect(server.addr());
        let Ev::Open(idb) = wait_for(&rx, "open b") else {
            panic!()
        };
        let mut c = RawWs::connect(server.addr());
        let Ev::Open(idc) = wait_for(&rx, "open c") else {
            panic!()
        };
        eventually("3 connections counted", || server.connections() == vec![3]);

        // a clone, used from another thread
        let h = (*server).clone();
        let t = std::thread::spawn(move || {
            assert!(h.close(ida, CloseCode::new(4001).unwrap(), "bye"));
            assert!(h.terminate(idb));
            assert!(h.subscribe(idc, "news"));
        });
        t.join().unwrap();

        // a: the close handshake, started by the server
        let (code, reason, _) = a.read_close();
        assert_eq!((code, reason.as_str()), (Some(4001), "bye"));
        a.send_close(4001, "");
        // b: dropped without a close frame
        let (bytes, _) = read_to_end_or_reset(&mut b.stream);
        assert!(
            bytes.is_empty(),
            "a terminated connection gets no close frame"
        );
        let mut closed = Vec::new();
        for _ in 0..2 {
            match wait_for(&rx, "closes") {
                Ev::Closed(id, code, _, clean) => closed.push((id, code, clean)),
                e => panic!("unexpected {e:?}"),
            }
        }
        closed.sort();
        let mut want = vec![(ida, 4001, true), (idb, 1006, false)];
        want.sort();
        assert_eq!(closed, want);

        // c: subscribed by the handle; a publish reaches it, and stops after unsubscribe
        eventually("the subscription applied", || {
            server.num_subscribers("news") == 1
        });
        server.publish("news", Message::Text("n1"));
        assert_eq!(c.read_text(), "n1");
        assert!(server.unsubscribe(idc, "news"));
        eventually("the unsubscription applied", || {
            server.num_subscribers("news") == 0
        });
        server.publish("news", Message::Text("n2"));
        c.send_text("marker");
        assert_eq!(
            c.read_text(),
            "marker",
            "nothing published after unsubscribe"
        );

        // an id whose connection is gone is ignored; the handle from a callback works
        assert!(server.close(ida, CloseCode::NORMAL, "again"));
        c.send_text("from-callback");
        assert_eq!(c.read_text(), "via handle");
        eventually("one connection counted", || server.connections() == vec![1]);
        drop(c);
        eventually("none counted", || server.connections() == vec![0]);
    });
}

#[test]
fn timers_fire_on_their_worker_in_time_and_not_once_cancelled() {
    for_each_backend(|backend| {
        let (server, rx) = start(backend, 2);
        // connections until both workers have one (the kernel spreads them)
        let mut conns = Vec::new();
        let mut workers = std::collections::HashSet::new();
        for _ in 0..64 {
            let ws = RawWs::connect(server.addr());
            let Ev::Open(id) = wait_for(&rx, "open") else {
                panic!()
            };
            workers.insert(id.worker_index());
            conns.push(ws);
            if workers.len() == 2 {
                break;
            }
        }
        for ws in conns.iter_mut() {
            ws.send_text("cancel 20");
            ws.send_text("timer 80");
        }
        let mut fired = 0;
        for ws in conns.iter_mut() {
            assert_eq!(ws.read_text(), "fired", "the cancelled timer never fires");
            fired += 1;
        }
        for _ in 0..fired {
            match wait_for(&rx, "fired") {
                Ev::Fired {
                    worker,
                    conn_worker,
                    after,
                } => {
                    assert_eq!(
                        worker, conn_worker,
                        "the timer ran on the worker that set it"
                    );
                    assert!(after >= Duration::from_millis(80), "fired early: {after:?}");
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        // nothing more (the cancelled timers' deadlines passed long ago)
        for ws in conns.iter_mut() {
            ws.send_text("echo");
            assert_eq!(ws.read_text(), "echo");
        }
    });
}

#[test]
fn tasks_posted_to_a_worker_run_on_it() {
    for_each_backend(|backend| {
        let (server, rx) = start(backend, 2);
        for w in 0..2 {
            server
                .post::<App>(w, move |app, ctx: &mut WorkerCtx<'_, ()>| {
                    let _ = app.tx.send(Ev::Ran(ctx.worker()));
                })
                .unwrap();
            assert_eq!(wait_for(&rx, "the task"), Ev::Ran(w));
        }
        assert_eq!(
            server.post::<App>(7, |_, _| {}),
            Err(PostError::Stopped),
            "no worker 7"
        );
        assert_eq!(
            server.post::<soliton_tests::Echo>(0, |_, _| {}),
            Err(PostError::WrongHandler)
        );
        // a panicking task does not take the worker down
        server
            .post::<App>(0, |_, _| panic!("a task panics (expected in this test)"))
            .unwrap();
        server
            .post::<App>(0, |app, ctx| {
                let _ = app.tx.send(Ev::Ran(ctx.worker()));
            })
            .unwrap();
        assert_eq!(wait_for(&rx, "the task after a panic"), Ev::Ran(0));
    });
}

/// Defers every upgrade and hands the pending upgrade (with the request's path and
/// cookie) to the test, which plays the slow database.
struct Deferring {
    pending: Sender<(String, Option<String>, PendingUpgrade)>,
    tx: Sender<Ev>,
}

#[derive(Debug)]
struct User(String);

impl Handler for Deferring {
    type Data = User;
    fn on_upgrade_request(&mut self, req: &UpgradeRequest<'_, '_>) -> Upgrade<User> {
        let path = req.request.path().to_owned();
        if path == "/now" {
            return Upgrade::Accept(User("now".into()));
        }
        let cookie = req.request.header_str("cookie").map(str::to_owned);
        req.add_response_header("X-Deferred", "yes");
        let _ = self.pending.send((path, cookie, req.defer()));
        Upgrade::Defer
    }
    fn on_open(&mut self, ws: &mut WebSocket<'_, User>) {
        let _ = self.tx.send(Ev::Open(ws.id()));
        let protocol = ws.protocol().map(str::to_owned);
        let hello = format!("hello {} ({:?})", ws.data().0, protocol);
        ws.send_text(&hello);
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, User>, msg: Message<'_>) {
        ws.send(msg);
    }
    fn on_close(&mut self, id: ConnId, _data: User, info: CloseInfo<'_>) {
        let _ = self.tx.send(closed(id, info));
    }
}

type PendingRx = Receiver<(String, Option<String>, PendingUpgrade)>;

fn start_deferring(backend: soliton::server::Backend) -> (TestServer, PendingRx, Receiver<Ev>) {
    let (ptx, prx) = channel();
    let (tx, rx) = channel();
    let senders = Arc::new(Mutex::new((ptx, tx)));
    let server = TestServer::start(
        builder(backend)
            .protocols(["chat", "superchat"])
            .handshake_timeout(Duration::from_millis(400)),
        move |_| {
            let s = senders.lock().unwrap();
            Deferring {
                pending: s.0.clone(),
                tx: s.1.clone(),
            }
        },
    );
    (server, prx, rx)
}

#[test]
fn a_deferred_upgrade_is_accepted_from_another_thread_with_what_came_meanwhile() {
    for_each_backend(|backend| {
        let (server, prx, rx) = start_deferring(backend);
        let mut s = connect(server.addr());
        let req = upgrade_request(
            "/login",
            &[],
            &[
                "Cookie: session=alice",
                "Sec-WebSocket-Protocol: chat, superchat",
            ],
        );
        // the request and a frame right behind it, before any answer
        let mut first = req.into_bytes();
        first.extend_from_slice(&soliton_tests::encode_frame(
            true,
            1,
            b"early",
            Some([1, 2, 3, 4]),
        ));
        std::io::Write::write_all(&mut s, &first).unwrap();
        let (path, cookie, pending) = wait_for(&prx, "the deferred request");
        assert_eq!(path, "/login");
        assert_eq!(cookie.as_deref(), Some("session=alice"));
        // the slow database answers from its own thread
        let id = pending.id();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            assert!(pending.accept_with(
                User("alice".into()),
                Some("superchat"),
                vec![("X-User".into(), "alice".into())],
            ));
        });
        let mut ws = RawWs::finish_handshake(s);
        assert_eq!(ws.reply.header("sec-websocket-protocol"), Some("superchat"));
        assert_eq!(ws.reply.header("x-deferred"), Some("yes"));
        assert_eq!(ws.reply.header("x-user"), Some("alice"));
        assert_eq!(wait_for(&rx, "open"), Ev::Open(id), "the id is kept");
        assert_eq!(ws.read_text(), "hello alice (Some(\"superchat\"))");
        assert_eq!(
            ws.read_text(),
            "early",
            "the frame sent before the 101 is kept"
        );
        ws.send_text("later");
        assert_eq!(ws.read_text(), "later");
        // an immediate accept still works beside deferral
        let mut now = RawWs::connect_with(server.addr(), &upgrade_request("/now", &[], &[]));
        assert_eq!(now.read_text(), "hello now (None)");
    });
}

#[test]
fn a_deferred_upgrade_is_rejected_dropped_or_timed_out_with_a_status() {
    for_each_backend(|backend| {
        let (server, prx, rx) = start_deferring(backend);
        let addr = server.addr();
        // rejected from another thread
        let t = std::thread::spawn(move || {
            http_exchange(addr, upgrade_request("/r", &[], &[]).as_bytes())
        });
        let (_, _, p) = wait_for(&prx, "the request to reject");
        assert!(p.reject(Reject::new(401, "who are you?\n")));
        let reply = t.join().unwrap();
        assert_eq!(
            (reply.status, reply.body_text().as_str()),
            (401, "who are you?\n")
        );
        assert!(reply.closed);
        // dropped by the application without a verdict: 500
        let t = std::thread::spawn(move || {
            http_exchange(addr, upgrade_request("/d", &[], &[]).as_bytes())
        });
        let (_, _, p) = wait_for(&prx, "the request to drop");
        drop(p);
        assert_eq!(t.join().unwrap().status, 500);
        // never answered: the handshake timeout (400 ms here) still applies
        let started = Instant::now();
        let t = std::thread::spawn(move || {
            http_exchange(addr, upgrade_request("/t", &[], &[]).as_bytes())
        });
        let (_, _, kept) = wait_for(&prx, "the request left waiting");
        let reply = t.join().unwrap();
        assert_eq!(reply.status, 408);
        assert!(started.elapsed() >= Duration::from_millis(350));
        // a verdict after the timeout is ignored
        assert!(kept.accept(User("late".into())));
        // the wrong data type is refused with 500, not a panic
        let t = std::thread::spawn(move || {
            http_exchange(addr, upgrade_request("/w", &[], &[]).as_bytes())
        });
        let (_, _, p) = wait_for(&prx, "the request accepted with bad data");
        assert!(p.accept(42u32));
        assert_eq!(t.join().unwrap().status, 500);
        assert!(
            rx.try_recv().is_err(),
            "nothing opened: {:?}",
            rx.try_recv()
        );
        eventually("no connection left", || server.connections() == vec![0]);
    });
}

#[test]
fn a_client_that_leaves_during_a_deferred_upgrade_is_cleaned_up() {
    for_each_backend(|backend| {
        let (server, prx, rx) = start_deferring(backend);
        let mut s = connect(server.addr());
        std::io::Write::write_all(&mut s, upgrade_request("/gone", &[], &[]).as_bytes()).unwrap();
        let (_, _, p) = wait_for(&prx, "the deferred request");
        eventually("the connection counted", || server.connections() == vec![1]);
        drop(s);
        eventually("the connection cleaned up", || {
            server.connections() == vec![0]
        });
        assert!(p.accept(User("nobody".into())));
        // the late accept opens nothing; the server goes on serving
        let mut ws = RawWs::connect_with(server.addr(), &upgrade_request("/now", &[], &[]));
        assert_eq!(ws.read_text(), "hello now (None)");
        match wait_for(&rx, "the open of the second connection") {
            Ev::Open(_) => {}
            e => panic!("unexpected {e:?}"),
        }
        assert!(rx.try_recv().is_err());
    });
}

#[test]
fn reconfigure_changes_origins_and_limits_for_new_connections_and_refuses_fixed_settings() {
    use soliton::proto::handshake::OriginPolicy;
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| soliton_tests::Echo);
        let addr = server.addr();
        let foreign = upgrade_request("/", &[], &["Origin: https://evil.example"]);
        // before: any Origin
        let mut old = RawWs::connect_with(addr, &foreign);
        // an Origin allow-list and a 100-byte message limit, while running
        server
            .reconfigure(|c| {
                c.handshake.origins = OriginPolicy::AllowList(vec!["https://good.example".into()]);
                c.limits.max_message = 100;
            })
            .unwrap();
        eventually("the new policy applied", || {
            http_exchange(addr, foreign.as_bytes()).status == 403
        });
        let good = upgrade_request("/", &[], &["Origin: https://good.example"]);
        let mut new = RawWs::connect_with(addr, &good);
        new.send_binary(&[7; 101]);
        let (code, _, _) = new.read_close();
        assert_eq!(code, Some(1009), "the new limit holds for a new connection");
        // the connection opened before keeps the limit it started with
        old.send_binary(&[7; 101]);
        assert_eq!(old.read_message().1.len(), 101);
        assert_eq!(server.config().limits.max_message, 100);
        // settings fixed at start are refused, and nothing is applied
        let e = server
            .reconfigure(|c| {
                c.workers = 4;
                c.limits.max_message = 5;
            })
            .unwrap_err();
        assert_eq!(e.0, vec!["workers"]);
        assert_eq!(server.config().limits.max_message, 100);
    });
}

/// The client's side: reports opens and closes.
struct ClientSide {
    tx: Sender<Ev>,
}

impl Handler for ClientSide {
    type Data = ();
    fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
        let _ = self.tx.send(Ev::Open(ws.id()));
    }
    fn on_message(&mut self, _ws: &mut WebSocket<'_, ()>, _msg: Message<'_>) {}
    fn on_close(&mut self, id: ConnId, _data: (), info: CloseInfo<'_>) {
        let _ = self.tx.send(closed(id, info));
    }
}

#[test]
fn the_client_handle_closes_and_terminates_by_id_and_runs_tasks() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| soliton_tests::Echo);
        let (tx, rx) = channel();
        let tx = Mutex::new(tx);
        let client = soliton_tests::client_builder(backend)
            .start(move |_| ClientSide {
                tx: tx.lock().unwrap().clone(),
            })
            .unwrap();
        let url = server.url("/");
        for _ in 0..2 {
            let req = soliton::client::ConnectRequest::new(&url).unwrap();
            assert!(client.connect(req, ()));
        }
        let Ev::Open(a) = wait_for(&rx, "open a") else {
            panic!()
        };
        let Ev::Open(b) = wait_for(&rx, "open b") else {
            panic!()
        };
        eventually("2 client connections", || client.connections() == vec![2]);
        assert!(client.close(a, CloseCode::new(4002).unwrap(), "client says bye"));
        assert!(client.terminate(b));
        let mut got = vec![wait_for(&rx, "close"), wait_for(&rx, "close")];
        got.sort_by_key(|e| match e {
            Ev::Closed(id, ..) => *id,
            _ => panic!("unexpected {e:?}"),
        });
        let mut want = vec![
            Ev::Closed(a, 4002, "client says bye".into(), true),
            Ev::Closed(b, 1006, String::new(), false),
        ];
        want.sort_by_key(|e| match e {
            Ev::Closed(id, ..) => *id,
            _ => unreachable!(),
        });
        assert_eq!(got, want);
        client
            .post::<ClientSide>(0, |h, ctx| {
                let _ = h.tx.send(Ev::Ran(ctx.worker()));
            })
            .unwrap();
        assert_eq!(wait_for(&rx, "the task"), Ev::Ran(0));
        client.shutdown(Duration::from_millis(200)).unwrap();
    });
}
