//! Server and connection lifecycle: graceful shutdown (1001), the connection cap (503)
//! and a panicking handler (1011 for that connection only).

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use soliton::proto::Message;
use soliton::server::{CloseInfo, ConnId, Handler, Reject, UpgradeRequest, WebSocket};
use soliton_tests::{
    builder, connect, for_each_backend, read_reply, test_layer, Echo, RawWs, TestLayer, TestServer,
    IO_TIMEOUT,
};

#[test]
fn graceful_shutdown_sends_1001_to_every_client_then_closes() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend).workers(2), |_| Echo);
        let addr = server.addr();
        let mut clients: Vec<RawWs> = (0..4).map(|_| RawWs::connect(addr)).collect();
        // every connection is open and working
        for c in &mut clients {
            c.send_text("before");
            assert_eq!(c.read_text(), "before");
        }
        let grace = Duration::from_millis(500);
        let t0 = Instant::now();
        let stopper = std::thread::spawn(move || server.shutdown(grace));
        // three clients answer the close; the last one never does
        let mut silent = clients.pop().expect("four clients");
        for c in &mut clients {
            let (code, _, skipped) = c.read_close();
            assert_eq!((code, skipped), (Some(1001), 0));
            c.send_close(1001, "");
            c.expect_eof();
        }
        drop(clients);
        let (code, _, _) = silent.read_close();
        assert_eq!(code, Some(1001));
        stopper.join().expect("shutdown returns");
        let took = t0.elapsed();
        assert!(
            took < grace + Duration::from_millis(1500),
            "shutdown took {took:?} with a {grace:?} grace"
        );
        // the silent client was dropped at the deadline
        silent.expect_eof();
        // and nothing listens any more
        assert!(
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err(),
            "the listener is closed"
        );
    });
}

#[test]
fn graceful_shutdown_returns_as_soon_as_every_client_answered() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend).workers(2), |_| Echo);
        let mut clients: Vec<RawWs> = (0..3).map(|_| RawWs::connect(server.addr())).collect();
        let grace = Duration::from_secs(3);
        let t0 = Instant::now();
        let stopper = std::thread::spawn(move || server.shutdown(grace));
        for c in &mut clients {
            let (code, _, _) = c.read_close();
            assert_eq!(code, Some(1001));
            c.send_close(1001, "");
        }
        for c in &mut clients {
            c.expect_eof();
        }
        let eof_at = t0.elapsed();
        drop(clients);
        stopper.join().expect("shutdown returns");
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(1000),
            "shutdown took {took:?} (clients saw EOF at {eof_at:?}) though every client \
             answered at once; grace {grace:?}"
        );
    });
}

#[test]
fn sixth_connection_over_max_connections_5_gets_503() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend).max_connections(5), |_| Echo);
        let mut open: Vec<RawWs> = (0..5).map(|_| RawWs::connect(server.addr())).collect();
        let mut sixth = connect(server.addr());
        if test_layer() == Some(TestLayer::Tls) {
            // over TLS the server closes it before any handshake (a 503 would cost one)
            let mut b = [0u8; 64];
            let r = sixth.read(&mut b);
            assert!(
                matches!(r, Ok(0))
                    || r.as_ref()
                        .is_err_and(|e| e.kind() != ErrorKind::WouldBlock
                            && e.kind() != ErrorKind::TimedOut),
                "the refused TLS connection is closed: {r:?}"
            );
        } else {
            // the server answers at accept, before any request
            let r = read_reply(&mut sixth);
            assert_eq!(r.status, 503, "{r:?}");
            assert!(r.closed, "the refused connection is closed");
        }
        // the five are untouched
        for (i, c) in open.iter_mut().enumerate() {
            c.send_text(&format!("still open {i}"));
            assert_eq!(c.read_text(), format!("still open {i}"));
        }
    });
}

/// Echoes, panics on "panic"; reports closes.
struct Fragile {
    closed: Sender<(ConnId, u16, bool)>,
}

impl Handler for Fragile {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        if msg == Message::Text("panic") {
            panic!("deliberate panic in on_message (the test expects this)");
        }
        ws.send(msg);
    }
    fn on_close(&mut self, id: ConnId, _data: (), info: CloseInfo<'_>) {
        let _ = self.closed.send((id, info.code.get(), info.was_clean));
    }
}

#[test]
fn handler_panic_closes_that_connection_with_1011_and_others_on_the_worker_go_on() {
    for_each_backend(|backend| {
        let (tx, rx) = channel();
        let server = TestServer::start(builder(backend), move |_| Fragile { closed: tx.clone() });
        let mut victim = RawWs::connect(server.addr());
        let mut bystander = RawWs::connect(server.addr());
        bystander.send_text("before");
        assert_eq!(bystander.read_text(), "before");

        victim.send_text("panic");
        let (code, reason, skipped) = victim.read_close();
        assert_eq!((code, skipped), (Some(1011), 0), "reason {reason:?}");
        victim.expect_eof();
        drop(victim);
        // on_close runs for it, not clean (the code it reports is 1006 today: the
        // client sent no close frame; the 1011 went from the server only)
        let (_, code, clean) = rx
            .recv_timeout(IO_TIMEOUT)
            .expect("on_close for the victim");
        assert!(!clean, "a connection failed by a panic is not clean");
        assert!(
            code == 1011 || code == 1006,
            "on_close code {code}: expected 1011 (sent) or 1006 (none received)"
        );

        // the same worker keeps serving the other connection, and new ones
        bystander.send_text("after");
        assert_eq!(bystander.read_text(), "after");
        let mut newcomer = RawWs::connect(server.addr());
        newcomer.send_text("new");
        assert_eq!(newcomer.read_text(), "new");
        assert!(rx.try_recv().is_err(), "no other connection closed");
    });
}
