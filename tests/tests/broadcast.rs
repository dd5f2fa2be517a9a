//! Topics: `ServerHandle::publish` and `WebSocket::publish` reach every subscriber on
//! every worker; `unsubscribe` stops delivery; `ServerHandle::send` reaches one
//! connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;

use soliton::proto::Message;
use soliton::server::{ConnId, Handler, Reject, UpgradeRequest, WebSocket};
use soliton_tests::{builder, for_each_backend, open_many, RawWs, TestServer, IO_TIMEOUT};

/// Subscribes every connection to "all" and counts them per worker. "say:X" publishes
/// X to "all"; "leave" unsubscribes and reports the connection's id.
struct Room {
    worker: usize,
    opened: Arc<[AtomicUsize; 2]>,
    left: Sender<ConnId>,
}

impl Handler for Room {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
        ws.subscribe("all");
        self.opened[self.worker].fetch_add(1, Ordering::SeqCst);
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        match msg {
            Message::Text("leave") => {
                ws.unsubscribe("all");
                let _ = self.left.send(ws.id());
            }
            Message::Text(t) if t.starts_with("say:") => {
                ws.publish("all", Message::Text(&t[4..]));
            }
            other => {
                ws.send(other);
            }
        }
    }
}

fn room_server(
    b: soliton::server::Builder,
) -> (
    TestServer,
    Arc<[AtomicUsize; 2]>,
    std::sync::mpsc::Receiver<ConnId>,
) {
    let opened = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let (tx, rx) = channel();
    let o = opened.clone();
    let server = TestServer::start(b, move |worker| Room {
        worker,
        opened: o.clone(),
        left: tx.clone(),
    });
    (server, opened, rx)
}

fn per_worker(opened: &[AtomicUsize; 2]) -> [usize; 2] {
    [
        opened[0].load(Ordering::SeqCst),
        opened[1].load(Ordering::SeqCst),
    ]
}

#[test]
fn server_publish_reaches_all_1000_subscribers_across_2_workers() {
    for_each_backend(|backend| {
        let (server, opened, _rx) = room_server(builder(backend).workers(2));
        let mut clients = open_many(server.addr(), 1000);
        // on_open (the subscribe) runs before the 101 is written, so every client is
        // subscribed by now
        let counts = per_worker(&opened);
        eprintln!("  connections per worker: {counts:?}");
        assert_eq!(counts[0] + counts[1], 1000);
        assert!(
            counts[0] > 0 && counts[1] > 0,
            "both workers hold subscribers: {counts:?}"
        );
        server.publish("all", Message::Text("hi"));
        for (i, c) in clients.iter_mut().enumerate() {
            let f = c.read_frame().unwrap_or_else(|e| panic!("client {i}: {e}"));
            assert_eq!(
                (f.opcode, f.fin, f.payload.as_slice()),
                (soliton_tests::op::TEXT, true, &b"hi"[..]),
                "client {i}"
            );
        }
        // a second publish, binary, arrives as well (the frame is shared, not consumed)
        server.publish("all", Message::Binary(&[1, 2, 3]));
        for (i, c) in clients.iter_mut().enumerate() {
            let (opcode, p) = c.read_message();
            assert_eq!(
                (opcode, p.as_slice()),
                (soliton_tests::op::BINARY, &[1u8, 2, 3][..]),
                "client {i}"
            );
        }
    });
}

#[test]
fn handler_publish_reaches_subscribers_on_every_worker_including_the_sender() {
    for_each_backend(|backend| {
        let (server, opened, _rx) = room_server(builder(backend).workers(2));
        let mut clients = open_many(server.addr(), 64);
        let counts = per_worker(&opened);
        assert!(
            counts[0] > 0 && counts[1] > 0,
            "both workers hold subscribers: {counts:?}"
        );
        clients[5].send_text("say:hello from 5");
        for (i, c) in clients.iter_mut().enumerate() {
            assert_eq!(c.read_text(), "hello from 5", "client {i}");
        }
    });
}

#[test]
fn unsubscribed_connection_no_longer_receives_publishes() {
    for_each_backend(|backend| {
        let (server, _opened, rx) = room_server(builder(backend));
        let mut a = RawWs::connect(server.addr());
        let mut b = RawWs::connect(server.addr());
        a.send_text("leave");
        let a_id = rx.recv_timeout(IO_TIMEOUT).expect("a left");
        // the worker runs commands in order: if `a` were still subscribed, "news"
        // would reach it before "direct"
        server.publish("all", Message::Text("news"));
        server.send(a_id, Message::Text("direct"));
        assert_eq!(a.read_text(), "direct");
        assert_eq!(b.read_text(), "news");
    });
}

/// Publishes of every size around the points where a published frame stops being
/// copied into a lagging receiver's queue and is queued shared instead (1 KiB) and
/// stops being written into the worker's batch (16 KiB), many of them before any
/// receiver reads, so that ranges of batches, copies and shared frames sit in the same
/// queues: every subscriber gets every message whole and in publish order.
#[test]
fn publishes_small_and_large_arrive_whole_and_in_order_when_read_late() {
    for_each_backend(|backend| {
        let (server, _opened, _rx) = room_server(builder(backend).workers(2));
        let mut clients = open_many(server.addr(), 8);
        let sizes = [
            0, 20, 125, 126, 1000, 1019, 1020, 1021, 1024, 4000, 16_379, 16_380, 16_381, 20_000,
        ];
        let body = |i: usize| -> Vec<u8> {
            let len = sizes[i % sizes.len()];
            (0..len).map(|j| (i * 7 + j) as u8).collect()
        };
        let want: Vec<(u8, Vec<u8>)> = (0..10 * sizes.len())
            .map(|i| (soliton_tests::op::BINARY, body(i)))
            .collect();
        for (_, payload) in &want {
            server.publish("all", Message::Binary(payload));
        }
        for (c, client) in clients.iter_mut().enumerate() {
            eprintln!("  client {c}");
            client.expect_messages(&want);
        }
    });
}

/// Publishes reach a receiver that keeps up as ranges of the batch every receiver
/// shares, and one that lags (its socket full, its queue over the backpressure limit)
/// as copies or the shared frame: one
/// subscriber that reads as they come and one that reads only at the end both get
/// every message whole and in order, over about 3.7 MB (dozens of batches).
#[test]
fn a_subscriber_that_keeps_up_and_one_that_lags_both_get_every_publish_in_order() {
    for_each_backend(|backend| {
        let (server, _opened, _rx) = room_server(builder(backend));
        let mut clients = open_many(server.addr(), 2);
        let mut slow = clients.pop().expect("two clients");
        let mut fast = clients.pop().expect("two clients");
        let sizes = [20usize, 125, 1000, 3000, 16_380, 16_381, 5];
        let want: Vec<(u8, Vec<u8>)> = (0..700)
            .map(|i| {
                let len = sizes[i % sizes.len()];
                let body = (0..len).map(|j| (i * 13 + j) as u8).collect();
                (soliton_tests::op::BINARY, body)
            })
            .collect();
        let expected = want.clone();
        let reader = std::thread::spawn(move || {
            fast.expect_messages(&expected);
            fast
        });
        for (_, payload) in &want {
            server.publish("all", Message::Binary(payload));
        }
        let _fast = reader.join().expect("the subscriber that keeps up");
        slow.expect_messages(&want);
    });
}
