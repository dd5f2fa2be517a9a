//! Messages both ways: echo through the tungstenite client at every length-encoding
//! boundary up to the 16 MiB default limit, fragmented messages (with a ping between
//! fragments), pipelined frames, byte-at-a-time frames, and ping/pong.

use std::time::{Duration, Instant};

use soliton_tests::{
    binary_of_len, builder, connect, for_each_backend, op, text_of_len, Echo, RawWs, RetryStream,
    TestServer,
};
use tungstenite::Message as Tm;

fn tungstenite_client(server: &TestServer) -> tungstenite::WebSocket<RetryStream> {
    let stream = RetryStream(connect(server.addr()));
    let (ws, resp) = tungstenite::client(server.url("/echo"), stream)
        .unwrap_or_else(|e| panic!("tungstenite handshake: {e}"));
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

/// The next data message (tungstenite answers pings itself; none are expected here).
fn read_data(ws: &mut tungstenite::WebSocket<RetryStream>) -> Tm {
    loop {
        match ws.read().expect("read a message") {
            m @ (Tm::Text(_) | Tm::Binary(_)) => return m,
            Tm::Ping(_) | Tm::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Read timeout for the echo of up to 16 MiB.
const BIG_MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

const SIZES: [usize; 8] = [0, 1, 125, 126, 65535, 65536, 1 << 20, 16 << 20];

#[test]
fn tungstenite_text_and_binary_echo_at_every_length_boundary_up_to_16_mib() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut ws = tungstenite_client(&server);
        // in a debug build the 16 MiB text (mostly multi-byte) takes the server and
        // tungstenite seconds to validate: one read may wait that long on a busy machine
        ws.get_ref()
            .0
            .set_read_timeout(Some(BIG_MESSAGE_TIMEOUT))
            .expect("read timeout");
        for n in SIZES {
            let t0 = Instant::now();
            let text = text_of_len(n);
            ws.send(Tm::Text(text.clone())).expect("send text");
            match read_data(&mut ws) {
                Tm::Text(got) => assert!(
                    got == text,
                    "text of {n} bytes came back different ({} bytes)",
                    got.len()
                ),
                other => panic!("text of {n} bytes came back as {other:?}"),
            }
            let bin = binary_of_len(n);
            ws.send(Tm::Binary(bin.clone())).expect("send binary");
            match read_data(&mut ws) {
                Tm::Binary(got) => assert!(
                    got == bin,
                    "binary of {n} bytes came back different ({} bytes)",
                    got.len()
                ),
                other => panic!("binary of {n} bytes came back as {other:?}"),
            }
            eprintln!("  {n} bytes: text and binary echoed in {:?}", t0.elapsed());
        }
        ws.close(None).expect("close");
        // drain until the close reply
        while ws.read().is_ok() {}
    });
}

#[test]
fn fragmented_text_and_binary_messages_are_reassembled() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut ws = RawWs::connect(server.addr());

        // text in three fragments, "€" (E2 82 AC) split across the last two
        let euro = "€".as_bytes();
        ws.send_frame(false, op::TEXT, b"Hello, ");
        ws.send_frame(false, op::CONT, &[b"w", &euro[..1]].concat());
        ws.send_frame(true, op::CONT, &[&euro[1..], b"rld"].concat());
        assert_eq!(ws.read_text(), "Hello, w€rld");

        // binary in 5 fragments of 20,000 bytes, written in one go
        let data = binary_of_len(100_000);
        let mut wire = Vec::new();
        for (i, chunk) in data.chunks(20_000).enumerate() {
            let opcode = if i == 0 { op::BINARY } else { op::CONT };
            wire.extend(ws.masked_frame(i == 4, opcode, chunk));
        }
        ws.send_raw(&wire);
        let (opcode, got) = ws.read_message();
        assert_eq!(opcode, op::BINARY);
        assert!(got == data, "reassembled binary differs");

        // empty fragments are fine too
        ws.send_frame(false, op::TEXT, b"");
        ws.send_frame(false, op::CONT, b"x");
        ws.send_frame(true, op::CONT, b"");
        assert_eq!(ws.read_text(), "x");
    });
}

#[test]
fn ping_between_fragments_is_answered_and_the_message_still_reassembles() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut ws = RawWs::connect(server.addr());
        ws.send_frame(false, op::TEXT, b"first half, ");
        ws.send_frame(true, op::PING, b"mid-message");
        ws.send_frame(true, op::CONT, b"second half");
        let pong = ws.read_frame().expect("pong");
        assert_eq!(
            pong.opcode,
            op::PONG,
            "the ping is answered first: {pong:?}"
        );
        assert_eq!(pong.payload, b"mid-message");
        assert_eq!(ws.read_text(), "first half, second half");
    });
}

#[test]
fn ping_gets_a_pong_with_the_same_payload() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut ws = RawWs::connect(server.addr());
        let max: Vec<u8> = (0..125u8).collect();
        for payload in [&b""[..], b"p", &max] {
            ws.send_frame(true, op::PING, payload);
            let f = ws.read_frame().expect("pong");
            assert_eq!(f.opcode, op::PONG);
            assert!(f.fin);
            assert_eq!(f.payload, payload);
        }
        // and through tungstenite
        let mut t = tungstenite_client(&server);
        t.send(Tm::Ping(b"tung".to_vec())).expect("ping");
        match t.read().expect("pong") {
            Tm::Pong(p) => assert_eq!(p, b"tung"),
            other => panic!("expected a pong, got {other:?}"),
        }
    });
}

#[test]
fn pipelined_frames_in_one_write_are_all_echoed_in_order() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut ws = RawWs::connect(server.addr());
        let mut wire = Vec::new();
        for i in 0..200 {
            wire.extend(ws.masked_frame(true, op::TEXT, format!("message {i}").as_bytes()));
        }
        ws.send_raw(&wire);
        for i in 0..200 {
            assert_eq!(ws.read_text(), format!("message {i}"));
        }
    });
}

#[test]
fn a_frame_written_one_byte_at_a_time_is_reassembled() {
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut ws = RawWs::connect(server.addr());
        // 300 bytes: a 16-bit length, so the header itself arrives in pieces
        let text = text_of_len(300);
        let frame = ws.masked_frame(true, op::TEXT, text.as_bytes());
        for b in &frame {
            ws.send_raw(std::slice::from_ref(b));
        }
        assert_eq!(ws.read_text(), text);
    });
}
