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

#[test]
fn a_pipelined_stream_cut_at_every_kind_of_boundary_is_echoed_whole_and_in_order() {
    // Frames of every length class (7-bit, 16-bit, 64-bit), a message in fragments with a
    // ping between them, all written in pieces of varied sizes with pauses, so that the
    // server's reads end inside headers, inside payloads and between frames: a frame
    // split across reads is completed from the next read (its missing bytes only) and
    // the rest of that read processed in place.
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut ws = RawWs::connect(server.addr());
        let mut wire = Vec::new();
        let mut want: Vec<(u8, Vec<u8>)> = Vec::new();
        for i in 0..40usize {
            let len = [3, 20, 125, 126, 300, 70_000][i % 6];
            let payload: Vec<u8> = (0..len).map(|k| b'a' + ((k + i) % 26) as u8).collect();
            let opcode = if i % 2 == 0 { op::TEXT } else { op::BINARY };
            if i % 7 == 3 {
                let (a, b) = payload.split_at(len / 2);
                wire.extend(ws.masked_frame(false, opcode, a));
                wire.extend(ws.masked_frame(true, op::PING, b"p"));
                wire.extend(ws.masked_frame(true, op::CONT, b));
                want.push((op::PONG, b"p".to_vec()));
            } else {
                wire.extend(ws.masked_frame(true, opcode, &payload));
            }
            want.push((opcode, payload));
        }
        let pieces = [1, 3, 7, 13, 250, 4000, 61, 2, 9000];
        let mut at = 0;
        for n in pieces.iter().cycle() {
            if at == wire.len() {
                break;
            }
            let end = (at + n).min(wire.len());
            ws.send_raw(&wire[at..end]);
            at = end;
            std::thread::sleep(Duration::from_micros(300));
        }
        ws.expect_messages(&want);
    });
}

#[test]
fn echoes_around_the_direct_write_sizes_stay_whole_and_in_order_when_read_late() {
    // A large echo (from 8 KiB) goes out at once from the receive buffer when nothing
    // is queued before it, a smaller one is copied into the queue, on either backend.
    // Here the client writes everything before it reads, so the server's
    // socket fills: direct writes are cut short and their rest queued, and later echoes
    // must line up behind them on either path.
    for_each_backend(|backend| {
        let server = TestServer::start(builder(backend), |_| Echo);
        let mut ws = RawWs::connect(server.addr());
        let mut wire = Vec::new();
        let mut want: Vec<(u8, Vec<u8>)> = Vec::new();
        let sizes = [20, 1023, 1024, 8191, 8192, 16_384, 65_536, 125];
        for i in 0..6 * sizes.len() {
            let len = sizes[(i * 5) % sizes.len()];
            let payload: Vec<u8> = (0..len).map(|k| b'a' + ((k * 7 + i) % 26) as u8).collect();
            let opcode = if i % 3 == 0 { op::TEXT } else { op::BINARY };
            wire.extend(ws.masked_frame(true, opcode, &payload));
            want.push((opcode, payload));
        }
        for piece in wire.chunks(100_000) {
            ws.send_raw(piece);
        }
        ws.expect_messages(&want);
    });
}
