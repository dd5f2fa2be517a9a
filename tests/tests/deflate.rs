//! permessage-deflate (RFC 7692) over real sockets, on both backends: what the server
//! answers in each mode, compressed messages both ways, context takeover, a bomb that
//! ends in 1009, RSV1 where it may not be, a publish to receivers with and without
//! compression, the engine's client, and interop with Python `websockets` and Node `ws`.

use std::sync::mpsc::{channel, Sender};
use std::time::Duration;

use soliton::client::{ClientOffer, ConnectRequest};
use soliton::proto::deflate::{Compressed, Deflater, Inflater};
use soliton::proto::{Limits, Message};
use soliton::server::{
    Backend, CloseInfo, ConnId, DeflateConfig, DeflateMode, Handler, Reject, UpgradeRequest,
    WebSocket,
};
use soliton_tests::{
    builder, client_builder, encode_frame_rsv, for_each_backend, op, upgrade_request, Echo, RawWs,
    TestServer, IO_TIMEOUT,
};

const RSV1: u8 = 4;

fn deflate(mode: DeflateMode) -> DeflateConfig {
    DeflateConfig {
        mode,
        ..DeflateConfig::default()
    }
}

fn server(backend: Backend, mode: DeflateMode) -> TestServer {
    TestServer::start(builder(backend).deflate(deflate(mode), 64 << 20), |_| Echo)
}

fn offer(ws_addr: std::net::SocketAddr, ext: &str) -> RawWs {
    let line = format!("Sec-WebSocket-Extensions: {ext}");
    RawWs::connect_with(ws_addr, &upgrade_request("/", &[], &[&line]))
}

fn text() -> String {
    r#"{"user":"ann","room":"lobby","text":"hello there, how is it going?"} "#.repeat(200)
}

/// Sends `payload` compressed (RSV1) as one masked text frame.
fn send_compressed(ws: &mut RawWs, d: &mut Deflater, payload: &[u8]) {
    let mut z = Vec::new();
    assert_eq!(d.compress(payload, &mut z), Compressed::Yes);
    let f = encode_frame_rsv(true, RSV1, op::TEXT, &z, Some([1, 2, 3, 4]));
    ws.send_raw(&f);
}

/// Reads one frame: (RSV1 set, its payload inflated if so).
fn read_inflated(ws: &mut RawWs, inf: &mut Inflater) -> (bool, Vec<u8>) {
    let f = ws.read_frame().expect("a frame");
    assert!(f.fin && !f.masked, "{f:?}");
    if f.rsv & RSV1 == 0 {
        return (false, f.payload);
    }
    let mut out = Vec::new();
    inf.inflate_message(&[&f.payload], &mut out, 64 << 20)
        .expect("the server's compressed frame inflates");
    (true, out)
}

#[test]
fn shared_mode_resets_both_ways_and_compresses_both_ways() {
    for_each_backend(|backend| {
        let srv = server(backend, DeflateMode::Shared);
        let mut ws = offer(
            srv.addr(),
            "permessage-deflate; client_max_window_bits, permessage-deflate",
        );
        let ext = ws.reply.header("sec-websocket-extensions").unwrap_or("");
        assert!(ext.starts_with("permessage-deflate"), "{ext:?}");
        assert!(ext.contains("server_no_context_takeover"), "{ext:?}");
        assert!(ext.contains("client_no_context_takeover"), "{ext:?}");
        let t = text();
        let mut d = Deflater::new(15, 8, true);
        let mut inf = Inflater::new(true);
        for _ in 0..3 {
            send_compressed(&mut ws, &mut d, t.as_bytes());
            let (compressed, got) = read_inflated(&mut ws, &mut inf);
            assert!(
                compressed,
                "a compressible message over the threshold goes compressed"
            );
            assert_eq!(got, t.as_bytes());
        }
        // under the threshold (1 KiB): uncompressed, both ways allowed
        ws.send_text("small");
        assert_eq!(read_inflated(&mut ws, &mut inf), (false, b"small".to_vec()));
    });
}

#[test]
fn dedicated_mode_keeps_context_and_says_so() {
    for_each_backend(|backend| {
        let srv = server(backend, DeflateMode::Dedicated);
        let mut ws = offer(srv.addr(), "permessage-deflate");
        let ext = ws.reply.header("sec-websocket-extensions").unwrap_or("");
        assert_eq!(ext, "permessage-deflate", "context takeover both ways");
        let t = text();
        let mut d = Deflater::new(15, 8, false);
        let mut inf = Inflater::new(false);
        let mut sizes = Vec::new();
        for _ in 0..2 {
            send_compressed(&mut ws, &mut d, t.as_bytes());
            let f = ws.read_frame().expect("a frame");
            assert_eq!(f.rsv, RSV1);
            sizes.push(f.payload.len());
            let mut out = Vec::new();
            inf.inflate_message(&[&f.payload], &mut out, 1 << 20)
                .expect("inflates with the history of the first");
            assert_eq!(out, t.as_bytes());
        }
        assert!(
            sizes[1] < sizes[0],
            "the second copy refers to the first: {sizes:?}"
        );
    });
}

#[test]
fn no_offer_no_extension_and_rsv1_is_1002() {
    for_each_backend(|backend| {
        let srv = server(backend, DeflateMode::Shared);
        let mut ws = RawWs::connect(srv.addr());
        assert_eq!(ws.reply.header("sec-websocket-extensions"), None);
        let mut z = Vec::new();
        Deflater::new(15, 8, true).compress(text().as_bytes(), &mut z);
        ws.send_raw(&encode_frame_rsv(
            true,
            RSV1,
            op::TEXT,
            &z,
            Some([9, 9, 9, 9]),
        ));
        let (code, _, _) = ws.read_close();
        assert_eq!(code, Some(1002));
    });
}

#[test]
fn rsv1_on_a_continuation_is_1002() {
    for_each_backend(|backend| {
        let srv = server(backend, DeflateMode::Shared);
        let mut ws = offer(srv.addr(), "permessage-deflate");
        let mut z = Vec::new();
        Deflater::new(15, 8, true).compress(text().as_bytes(), &mut z);
        let (a, b) = z.split_at(z.len() / 2);
        ws.send_raw(&encode_frame_rsv(
            false,
            RSV1,
            op::TEXT,
            a,
            Some([1, 1, 1, 1]),
        ));
        ws.send_raw(&encode_frame_rsv(
            true,
            RSV1,
            op::CONT,
            b,
            Some([1, 1, 1, 1]),
        ));
        let (code, _, _) = ws.read_close();
        assert_eq!(code, Some(1002));
    });
}

#[test]
fn a_compression_bomb_ends_in_1009_with_memory_flat() {
    for_each_backend(|backend| {
        let limits = Limits {
            max_frame: 1 << 20,
            max_message: 64 * 1024,
        };
        let srv = TestServer::start(
            builder(backend)
                .deflate(deflate(DeflateMode::Shared), 64 << 20)
                .limits(limits),
            |_| Echo,
        );
        let mut ws = offer(srv.addr(), "permessage-deflate");
        // 16 MiB of zeros: about 16 KiB compressed, 256 times the message limit
        let mut z = Vec::new();
        Deflater::new(15, 8, true).compress(&vec![0u8; 16 << 20], &mut z);
        assert!(z.len() < 64 * 1024);
        ws.send_raw(&encode_frame_rsv(
            true,
            RSV1,
            op::BINARY,
            &z,
            Some([5, 6, 7, 8]),
        ));
        let (code, _, _) = ws.read_close();
        assert_eq!(code, Some(1009), "the limit applies to the inflated size");
    });
}

#[test]
fn corrupt_compressed_data_is_1007() {
    for_each_backend(|backend| {
        let srv = server(backend, DeflateMode::Shared);
        let mut ws = offer(srv.addr(), "permessage-deflate");
        ws.send_raw(&encode_frame_rsv(
            true,
            RSV1,
            op::BINARY,
            &[0xff, 0xff, 0xff, 0xff, 0x00],
            Some([5, 6, 7, 8]),
        ));
        let (code, _, _) = ws.read_close();
        assert_eq!(code, Some(1007));
    });
}

/// Subscribes everyone to "room"; publishes every message to it.
struct Room;

impl Handler for Room {
    type Data = ();
    fn on_upgrade(&mut self, _req: &UpgradeRequest<'_, '_>) -> Result<(), Reject> {
        Ok(())
    }
    fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
        ws.subscribe("room");
    }
    fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
        ws.publish("room", msg);
    }
}

#[test]
fn a_publish_reaches_receivers_with_and_without_compression() {
    for_each_backend(|backend| {
        let srv = TestServer::start(
            builder(backend)
                .deflate(deflate(DeflateMode::Shared), 64 << 20)
                .workers(2),
            |_| Room,
        );
        let mut plain = RawWs::connect(srv.addr());
        let mut z9 = offer(srv.addr(), "permessage-deflate; server_max_window_bits=9");
        let mut z15 = offer(srv.addr(), "permessage-deflate");
        std::thread::sleep(Duration::from_millis(100)); // every on_open has run
        let t = text();
        plain.send_text(&t);
        let f = plain.read_frame().expect("plain receiver");
        assert_eq!((f.rsv, f.payload.as_slice()), (0, t.as_bytes()));
        for ws in [&mut z9, &mut z15] {
            let (compressed, got) = read_inflated(ws, &mut Inflater::new(true));
            assert!(compressed);
            assert_eq!(got, t.as_bytes());
        }
    });
}

#[test]
fn the_engine_client_compresses_with_the_engine_server() {
    struct Talk {
        tx: Sender<Result<usize, String>>,
        n: usize,
    }
    impl Handler for Talk {
        type Data = ();
        fn on_open(&mut self, ws: &mut WebSocket<'_, ()>) {
            ws.send_text(&text());
        }
        fn on_message(&mut self, ws: &mut WebSocket<'_, ()>, msg: Message<'_>) {
            self.n += 1;
            if msg != Message::Text(&text()) {
                let _ = self.tx.send(Err("the echo differs".into()));
            } else if self.n < 5 {
                ws.send_text(&text());
            } else {
                let _ = self.tx.send(Ok(self.n));
            }
        }
        fn on_close(&mut self, _id: ConnId, _data: (), info: CloseInfo<'_>) {
            let _ = self.tx.send(Err(format!("closed {}", info.code)));
        }
    }
    for_each_backend(|backend| {
        for mode in [DeflateMode::Shared, DeflateMode::Dedicated] {
            let srv = server(backend, mode);
            let (tx, rx) = channel();
            let c = client_builder(backend)
                .deflate(deflate(mode))
                .start(move |_| Talk {
                    tx: tx.clone(),
                    n: 0,
                })
                .expect("client");
            c.connect(
                ConnectRequest::new(&srv.url("/"))
                    .expect("url")
                    .deflate(ClientOffer::default()),
                (),
            );
            assert_eq!(rx.recv_timeout(IO_TIMEOUT).expect("echoes"), Ok(5));
            c.shutdown(Duration::from_millis(100))
                .expect("client stops");
        }
    });
}

/// A peer cannot go through the XOR test layer (over TLS it trusts the suite's
/// certificate through `peer_env`).
fn peer(cmd: &str, script: &str, args: &[&str]) -> Option<String> {
    if soliton_tests::test_layer_key().is_some() {
        eprintln!("SKIPPED interop: a peer cannot go through the XOR test layer");
        return None;
    }
    soliton_tests::peer(cmd, script, args)
}

#[test]
fn python_websockets_interop_with_and_without_context_takeover() {
    for_each_backend(|backend| {
        for (mode, arg) in [
            (DeflateMode::Shared, "takeover"),
            (DeflateMode::Dedicated, "takeover"),
            (DeflateMode::Dedicated, "no-takeover"),
        ] {
            let srv = server(backend, mode);
            let Some(out) = peer("python3", "deflate_client.py", &[&srv.url("/"), arg]) else {
                return;
            };
            assert!(
                out.starts_with("OK permessage-deflate"),
                "{mode:?} {arg}: {out}"
            );
        }
    });
}

#[test]
fn node_ws_interop_with_and_without_context_takeover() {
    for_each_backend(|backend| {
        for (mode, arg) in [
            (DeflateMode::Shared, "takeover"),
            (DeflateMode::Dedicated, "takeover"),
            (DeflateMode::Dedicated, "no-takeover"),
        ] {
            let srv = server(backend, mode);
            let Some(out) = peer("node", "deflate_client.js", &[&srv.url("/"), arg]) else {
                return;
            };
            assert!(
                out.starts_with("OK permessage-deflate"),
                "{mode:?} {arg}: {out}"
            );
        }
    });
}
