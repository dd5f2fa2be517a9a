//! Receive time stamps and batched wake-ups in the client role (what `soliton-load
//! --rx-time kernel` is built on), over real sockets: a client whose loop sleeps
//! through an echo's arrival still learns when the kernel received it; without time
//! stamps it learns nothing. Both backends, client and server.

use std::sync::mpsc::{channel, Sender};
use std::time::{Duration, Instant};

use soliton::client::{CloseInfo, ConnId, ConnectRequest, WorkerCtx};
use soliton::proto::{CloseCode, Message};
use soliton::server::{Backend, Handler, WebSocket};
use soliton_tests::{builder, client_builder, for_each_backend, Echo, TestServer, IO_TIMEOUT};

/// How long the client's loop sleeps between turns once its message is sent.
const NAP: Duration = Duration::from_millis(300);

/// What the client saw of its echo: when it was sent, when the kernel received the
/// answer, and when the loop handled it.
#[derive(Debug)]
struct Seen {
    sent: Instant,
    received_at: Option<Instant>,
    handled: Instant,
}

/// Sends one message once open and, with `batch`, asks its loop to sleep `NAP` at a
/// time without waking for the sockets.
struct Timed {
    batch: bool,
    tx: Sender<Seen>,
}

impl Handler for Timed {
    /// Whether to report the echo, and when the message was sent.
    type Data = (bool, Option<Instant>);
    fn on_open(&mut self, ws: &mut WebSocket<'_, (bool, Option<Instant>)>) {
        ws.data().1 = Some(Instant::now());
        ws.send_text("stamp me");
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, (bool, Option<Instant>)>, _: Message<'_>) {
        let (report, sent) = *ws.data();
        if !report {
            return;
        }
        let sent = sent.expect("sent on open");
        let _ = self.tx.send(Seen {
            sent,
            received_at: ws.received_at(),
            handled: ws.now(),
        });
    }
    fn on_tick(&mut self, w: &mut WorkerCtx<'_, (bool, Option<Instant>)>) -> Option<Instant> {
        w.batch_wakeups(self.batch);
        self.batch.then(|| w.now() + NAP)
    }
}

/// The echo of a message the client sent, as its handler saw it.
fn echo_seen(server: Backend, client: Backend, stamps: bool, batch: bool) -> Seen {
    let srv = TestServer::start(builder(server), |_| Echo);
    let (tx, rx) = channel();
    let c = client_builder(client)
        .receive_timestamps(stamps)
        .start(move |_| Timed {
            batch,
            tx: tx.clone(),
        })
        .expect("client starts");
    if client != Backend::Auto {
        assert_eq!(c.backend(), client);
    }
    let url = srv.url("/");
    // The kernel turns receive time stamps on for the whole machine when the first
    // socket asks, from a work queue: the first segments after that may come without
    // one. A first connection (not reported, open until the end) asks first.
    assert!(c.connect(ConnectRequest::new(&url).expect("url"), (false, None)));
    std::thread::sleep(Duration::from_millis(50));
    assert!(c.connect(ConnectRequest::new(&url).expect("url"), (true, None)));
    let seen = rx.recv_timeout(IO_TIMEOUT + NAP).expect("the echo");
    c.shutdown(Duration::from_millis(200))
        .expect("client stops");
    seen
}

#[test]
fn a_sleeping_loop_learns_when_the_kernel_received_the_answer() {
    for_each_backend(|backend| {
        let s = echo_seen(backend, backend, true, true);
        let at = s.received_at.expect("a receive time stamp");
        assert!(at >= s.sent, "received before it was sent: {s:?}");
        // the loop slept through the arrival: it handled the echo a nap later, and the
        // time stamp says when the echo came, not when it was read
        let waited = s.handled.saturating_duration_since(at);
        assert!(
            waited >= NAP / 3,
            "the answer waited only {waited:?} to be read: {s:?}"
        );
        assert!(
            at.duration_since(s.sent) < s.handled.duration_since(s.sent),
            "{s:?}"
        );
    });
}

#[test]
fn without_time_stamps_there_is_no_time_of_arrival() {
    for_each_backend(|backend| {
        let s = echo_seen(backend, backend, false, false);
        assert_eq!(s.received_at, None);
        assert!(s.handled >= s.sent);
        // awake, with time stamps: the arrival is before the loop's turn ends
        let s = echo_seen(backend, backend, true, false);
        assert!(s.received_at.is_some_and(|at| at >= s.sent), "{s:?}");
    });
}

/// Closes (4001 "bye") once open and reports how the connection closed.
struct Leaver {
    tx: Sender<(u16, bool)>,
}

impl Handler for Leaver {
    type Data = ();
    fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
        ws.close(CloseCode::new(4001).unwrap(), "bye");
    }
    fn on_message(&mut self, _ws: &mut WebSocket<'_, ()>, _msg: Message<'_>) {}
    fn on_close(&mut self, _id: ConnId, _data: (), info: CloseInfo<'_>) {
        let _ = self.tx.send((info.code.get(), info.was_clean));
    }
}

/// With time stamps on (io_uring: multishot recvmsg), the end of the stream is still
/// seen: the server's answer to our close, then its FIN, make a clean close, in time
/// (a client waits for the server's FIN, here up to 30 s).
#[test]
fn the_end_of_the_stream_is_seen_with_time_stamps_on() {
    for_each_backend(|backend| {
        let srv = TestServer::start(builder(backend), |_| Echo);
        let (tx, rx) = channel();
        let c = client_builder(backend)
            .receive_timestamps(true)
            .close_timeout(Duration::from_secs(30))
            .start(move |_| Leaver { tx: tx.clone() })
            .expect("client starts");
        assert!(c.connect(ConnectRequest::new(&srv.url("/")).expect("url"), ()));
        let (code, clean) = rx.recv_timeout(IO_TIMEOUT).expect("closed");
        assert_eq!((code, clean), (4001, true));
        c.shutdown(Duration::from_millis(200))
            .expect("client stops");
    });
}
