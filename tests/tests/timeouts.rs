//! Timers: the handshake timeout (slowloris guard) and the idle timeout (ping, then
//! close 1001). Kept in their own test binary so that heavy tests do not run beside
//! them and skew the timings.

use std::io::Write;
use std::time::{Duration, Instant};

use soliton::server::Server;
use soliton_tests::{
    config, connect, for_each_backend, op, read_to_end_or_reset, Echo, RawWs, TestServer,
};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(300);
const IDLE: Duration = Duration::from_millis(300);
/// Slack for scheduling on a loaded 2-core machine.
const MARGIN: Duration = Duration::from_millis(1500);

#[test]
fn half_sent_request_is_answered_408_and_closed_after_the_handshake_timeout() {
    for_each_backend(|backend| {
        let b = Server::builder()
            .config(config(backend))
            .handshake_timeout(HANDSHAKE_TIMEOUT);
        let server = TestServer::start(b, |_| Echo);
        for partial in [&b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr"[..], b""] {
            let mut s = connect(server.addr());
            let t0 = Instant::now();
            s.write_all(partial).expect("write");
            let (bytes, ended) = read_to_end_or_reset(&mut s);
            let took = t0.elapsed();
            assert!(ended, "still open after {took:?} (sent {partial:?})");
            assert!(
                took >= HANDSHAKE_TIMEOUT - Duration::from_millis(50),
                "closed too early: {took:?}"
            );
            assert!(
                took <= HANDSHAKE_TIMEOUT + MARGIN,
                "closed too late: {took:?}"
            );
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                text.starts_with("HTTP/1.1 408 "),
                "expected a 408 before the close, got {text:?}"
            );
        }
    });
}

#[test]
fn idle_connection_is_pinged_then_closed_with_1001_before_eof() {
    for_each_backend(|backend| {
        let mut cfg = config(backend);
        cfg.idle_timeout = Some(IDLE);
        // the close handshake's own timeout, so that a peer that never answers is
        // dropped soon after the 1001 too
        cfg.close_timeout = IDLE;
        let server = TestServer::start(Server::builder().config(cfg), |_| Echo);
        let mut ws = RawWs::connect(server.addr());
        let t0 = Instant::now();
        let ping = ws.read_frame().expect("a ping after the idle timeout");
        let ping_at = t0.elapsed();
        assert_eq!(ping.opcode, op::PING, "{ping:?}");
        assert!(
            ping_at >= IDLE - Duration::from_millis(50) && ping_at <= IDLE + MARGIN,
            "ping at {ping_at:?}"
        );
        // never answer: the close follows one more idle period later
        let close = ws.read_frame().expect("a close frame");
        let close_at = t0.elapsed();
        assert_eq!(close.opcode, op::CLOSE, "{close:?}");
        assert_eq!(close.close_code(), Some(1001));
        assert!(
            close_at >= 2 * IDLE - Duration::from_millis(50) && close_at <= 2 * IDLE + MARGIN,
            "close at {close_at:?}"
        );
        ws.expect_eof();
        let eof_at = t0.elapsed();
        assert!(
            eof_at <= 3 * IDLE + MARGIN,
            "TCP closed at {eof_at:?}, close timeout {IDLE:?}"
        );
    });
}

#[test]
fn idle_connection_that_answers_pings_stays_open() {
    for_each_backend(|backend| {
        let mut cfg = config(backend);
        cfg.idle_timeout = Some(IDLE);
        let server = TestServer::start(Server::builder().config(cfg), |_| Echo);
        let mut ws = RawWs::connect(server.addr());
        for round in 0..3 {
            let ping = ws.read_frame().expect("ping");
            assert_eq!(ping.opcode, op::PING, "round {round}: {ping:?}");
            ws.send_frame(true, op::PONG, &ping.payload);
        }
        ws.send_text("still here");
        assert_eq!(ws.read_text(), "still here");
    });
}
