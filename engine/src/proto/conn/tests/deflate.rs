//! permessage-deflate through `Connection`: RSV1 rules, inflation into the assembly
//! buffer across reads and fragments, limits on the inflated size, and the send side.

use super::*;
use crate::proto::deflate::{write_server_message, Compressed, Deflater, INFLATE_STEP};

/// A frame as a peer of `role` sends it, with RSV bits.
fn rframe(sender: Role, opcode: u8, fin: bool, rsv: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = frame(sender, opcode, fin, payload);
    f[0] |= rsv;
    f
}

fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut z = Vec::new();
    let mut d = Deflater::new(15, 8, true);
    assert_eq!(d.compress(payload, &mut z), Compressed::Yes);
    z
}

fn text_like(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    let mut i = 0u32;
    while v.len() < n {
        v.extend_from_slice(
            format!(
                "{{\"seq\":{i},\"topic\":\"prices\",\"v\":{}}}\n",
                i * 7 % 1000
            )
            .as_bytes(),
        );
        i += 1;
    }
    v.truncate(n);
    v
}

fn server() -> Harness {
    Harness::deflate(Role::Server, Limits::default(), Inflater::new(true))
}

#[test]
fn compressed_text_message_is_inflated_into_assembly() {
    let msg = text_like(3000);
    let mut h = server();
    h.feed(&rframe(Role::Client, 1, true, RSV1, &deflate(&msg)));
    assert_eq!(h.error, None);
    assert_eq!(h.events, [Ev::Text(String::from_utf8(msg).unwrap())]);
}

#[test]
fn uncompressed_messages_still_pass_on_a_deflate_connection() {
    let mut h = server();
    h.feed(&cframe(1, true, b"plain"));
    h.feed(&cframe(2, false, b"a"));
    h.feed(&cframe(0, true, b"b"));
    assert_eq!(
        h.events,
        [Ev::Text("plain".into()), Ev::Binary(b"ab".to_vec())]
    );
}

#[test]
fn rsv1_on_a_continuation_frame_is_1002() {
    let mut h = server();
    let z = deflate(&text_like(500));
    h.feed(&rframe(Role::Client, 1, false, RSV1, &z[..10]));
    h.feed(&rframe(Role::Client, 0, true, RSV1, &z[10..]));
    assert_eq!(h.error, Some(ProtocolError::ReservedBits));
    assert_eq!(h.close_code_sent(), Some(1002));
}

#[test]
fn rsv1_on_a_control_frame_is_1002() {
    for op in [8u8, 9, 10] {
        let mut h = server();
        h.feed(&rframe(Role::Client, op, true, RSV1, b""));
        assert_eq!(h.error, Some(ProtocolError::ReservedBits), "opcode {op}");
        assert_eq!(h.close_code_sent(), Some(1002));
    }
}

#[test]
fn rsv1_without_deflate_negotiated_is_1002() {
    let mut h = Harness::server();
    h.inflater = Some(Inflater::new(true));
    h.feed(&rframe(
        Role::Client,
        2,
        true,
        RSV1,
        &deflate(b"xxxxxxxxxxxxxxxxxxxx"),
    ));
    assert_eq!(h.error, Some(ProtocolError::ReservedBits));
    assert_eq!(h.close_code_sent(), Some(1002));
}

#[test]
fn rsv2_and_rsv3_stay_1002_with_deflate() {
    for rsv in [crate::proto::frame::RSV2, crate::proto::frame::RSV3] {
        let mut h = server();
        h.feed(&rframe(Role::Client, 1, true, rsv, b"x"));
        assert_eq!(h.error, Some(ProtocolError::ReservedBits));
    }
}

#[test]
fn compressed_message_without_an_inflater_is_1011() {
    let mut h = Harness::new(Role::Server, Limits::default());
    h.conn.set_allowed_rsv(RSV1);
    h.feed(&rframe(
        Role::Client,
        1,
        true,
        RSV1,
        &deflate(b"hello hello hello hello"),
    ));
    assert_eq!(h.error, Some(ProtocolError::MissingInflater));
    assert_eq!(h.close_code_sent(), Some(1011));
}

#[test]
fn corrupt_compressed_data_is_1007() {
    let mut h = server();
    h.feed(&rframe(Role::Client, 2, true, RSV1, &[0xff, 0xff, 0xff]));
    assert_eq!(h.error, Some(ProtocolError::InvalidCompressedData));
    assert_eq!(h.close_code_sent(), Some(1007));
}

#[test]
fn compressed_text_with_invalid_utf8_is_1007() {
    let mut bad = text_like(2000);
    bad[1500] = 0xff;
    let mut h = server();
    h.feed(&rframe(Role::Client, 1, true, RSV1, &deflate(&bad)));
    assert_eq!(h.error, Some(ProtocolError::InvalidUtf8));
    assert_eq!(h.close_code_sent(), Some(1007));
    // the same bytes as binary are fine
    let mut h = server();
    h.feed(&rframe(Role::Client, 2, true, RSV1, &deflate(&bad)));
    assert_eq!(h.events, [Ev::Binary(bad)]);
}

#[test]
fn compressed_text_cut_inside_a_code_point_across_fragments() {
    let msg = "κόσμε 𝄞 ".repeat(200);
    let z = deflate(msg.as_bytes());
    let mut h = server();
    for (i, piece) in z.chunks(5).enumerate() {
        let last = (i + 1) * 5 >= z.len();
        let (op, rsv) = if i == 0 { (1, RSV1) } else { (0, 0) };
        h.feed(&rframe(Role::Client, op, last, rsv, piece));
    }
    assert_eq!(h.error, None);
    assert_eq!(h.events, [Ev::Text(msg)]);
}

#[test]
fn bomb_of_zeros_is_1009_with_bounded_assembly() {
    let max = 1 << 20;
    let z = deflate(&vec![0u8; 10_000_000]);
    assert!(z.len() < 20_000);
    let limits = Limits {
        max_frame: 1 << 20,
        max_message: max as u64,
    };
    let mut h = Harness::deflate(Role::Server, limits, Inflater::new(true));
    h.feed(&rframe(Role::Client, 2, true, RSV1, &z));
    assert_eq!(h.error, Some(ProtocolError::MessageTooLarge));
    assert_eq!(h.close_code_sent(), Some(1009));
    assert!(
        h.assembly.capacity() <= max + 1 + INFLATE_STEP,
        "{}",
        h.assembly.capacity()
    );
    // fragmented, the compressed bytes wait in front of the output: still bounded
    let mut h = Harness::deflate(Role::Server, limits, Inflater::new(true));
    h.feed(&rframe(Role::Client, 2, false, RSV1, &z[..z.len() / 2]));
    h.feed(&rframe(Role::Client, 0, true, 0, &z[z.len() / 2..]));
    assert_eq!(h.error, Some(ProtocolError::MessageTooLarge));
    assert!(
        h.assembly.capacity() <= z.len() + max + 1 + INFLATE_STEP,
        "{}",
        h.assembly.capacity()
    );
}

#[test]
fn tiny_frame_inflating_to_max_message_plus_one_is_1009() {
    let max = 50_000;
    let limits = Limits {
        max_frame: 1 << 20,
        max_message: max as u64,
    };
    let at_max = deflate(&vec![b'a'; max]);
    let over = deflate(&vec![b'a'; max + 1]);
    assert!(over.len() < 100);
    let mut h = Harness::deflate(Role::Server, limits, Inflater::new(true));
    h.feed(&rframe(Role::Client, 1, true, RSV1, &at_max));
    assert_eq!(h.events, [Ev::Text("a".repeat(max))]);
    h.feed(&rframe(Role::Client, 1, true, RSV1, &over));
    assert_eq!(h.error, Some(ProtocolError::MessageTooLarge));
    assert_eq!(h.close_code_sent(), Some(1009));
}

#[test]
fn ping_between_compressed_fragments_is_answered() {
    let msg = text_like(4000);
    let z = deflate(&msg);
    let mut h = server();
    h.feed(&rframe(Role::Client, 1, false, RSV1, &z[..z.len() / 2]));
    h.feed(&cframe(9, true, b"p"));
    h.feed(&rframe(Role::Client, 0, true, 0, &z[z.len() / 2..]));
    assert_eq!(
        h.events,
        [
            Ev::Ping(b"p".to_vec()),
            Ev::Text(String::from_utf8(msg).unwrap())
        ]
    );
    assert_eq!(h.sent(), [(10, b"p".to_vec())]);
}

#[test]
fn context_takeover_is_used_across_messages_by_connection() {
    // a client that keeps its context: the second copy is much smaller and only an
    // inflater that kept the first one reads it
    let msg = text_like(800);
    let mut client = Connection::new(Role::Client, Limits::default(), 7);
    let mut d = Deflater::new(15, 8, false);
    let mut wire = Vec::new();
    client
        .write_compressed(&mut d, OpCode::Text, &msg, &mut wire)
        .unwrap();
    let first = wire.len();
    client
        .write_compressed(&mut d, OpCode::Text, &msg, &mut wire)
        .unwrap();
    assert!(
        (wire.len() - first) * 4 < first,
        "{} then {}",
        first,
        wire.len() - first
    );
    let mut h = Harness::deflate(Role::Server, Limits::default(), Inflater::new(false));
    h.feed(&wire);
    let text = Ev::Text(String::from_utf8(msg).unwrap());
    assert_eq!(h.events, [text.clone(), text]);
    let mut fresh = server();
    fresh.feed(&wire);
    assert_ne!(fresh.error, None);
}

#[test]
fn shared_inflater_serves_two_connections_with_interleaved_partial_reads() {
    // A's message comes in two fragments and partial reads, B's whole in between:
    // one inflater lent to whichever connection reads
    let (a, b) = (text_like(5000), text_like(7000));
    let za = deflate(&a);
    let mut fa = rframe(Role::Client, 1, false, RSV1, &za[..za.len() / 2]);
    fa.extend(rframe(Role::Client, 0, true, 0, &za[za.len() / 2..]));
    let fb = rframe(Role::Client, 2, true, RSV1, &deflate(&b));
    let mut shared = Some(Inflater::new(true));
    let mut hs = [
        Harness::deflate(Role::Server, Limits::default(), Inflater::new(true)),
        Harness::deflate(Role::Server, Limits::default(), Inflater::new(true)),
    ];
    let third = fa.len() / 3;
    let reads: [(usize, &[u8]); 5] = [
        (0, &fa[..third]),
        (1, &fb[..100]),
        (0, &fa[third..2 * third]),
        (1, &fb[100..]),
        (0, &fa[2 * third..]),
    ];
    for (i, bytes) in reads {
        hs[i].inflater = shared.take();
        hs[i].feed(bytes);
        shared = hs[i].inflater.take();
    }
    assert_eq!(hs[0].error, None);
    assert_eq!(hs[0].events, [Ev::Text(String::from_utf8(a).unwrap())]);
    assert_eq!(hs[1].events, [Ev::Binary(b)]);
}

#[test]
fn client_role_inflates_unmasked_compressed_frames() {
    let msg = text_like(2500);
    let mut h = Harness::deflate(Role::Client, Limits::default(), Inflater::new(false));
    let mut d = Deflater::new(15, 8, false);
    let mut wire = Vec::new();
    for _ in 0..3 {
        assert_eq!(
            write_server_message(&mut d, OpCode::Text, &msg, &mut wire),
            Compressed::Yes
        );
    }
    h.feed(&wire);
    let text = Ev::Text(String::from_utf8(msg).unwrap());
    assert_eq!(h.events, [text.clone(), text.clone(), text]);
}

#[test]
fn write_compressed_frames_parse_back_both_roles() {
    for len in [
        0usize, 1, 100, 125, 126, 200, 1000, 65_535, 65_536, 70_000, 300_000,
    ] {
        let msg = text_like(len);
        for role in [Role::Server, Role::Client] {
            let mut c = Connection::new(role, Limits::default(), 3);
            let mut d = Deflater::new(12, 5, false);
            let mut wire = b"before".to_vec();
            let how = c
                .write_compressed(&mut d, OpCode::Binary, &msg, &mut wire)
                .unwrap();
            assert_eq!(&wire[..6], b"before");
            // frames from `role`, read by the other side
            let peer = match role {
                Role::Server => Role::Client,
                Role::Client => Role::Server,
            };
            let mut h = Harness::deflate(peer, Limits::default(), Inflater::new(false));
            h.feed(&wire[6..]);
            assert_eq!(h.error, None, "len {len}");
            assert_eq!(h.events, [Ev::Binary(msg.clone())], "len {len} {role:?}");
            assert_eq!(how == Compressed::Yes, wire[6] & RSV1 != 0);
            assert_eq!(
                how,
                if len >= 100 {
                    Compressed::Yes
                } else {
                    Compressed::No
                },
                "len {len}"
            );
        }
    }
}

#[test]
fn write_compressed_sends_incompressible_data_plain() {
    let mut rng = crate::proto::test_rng::Rng(99);
    let noise: Vec<u8> = (0..3000).map(|_| rng.next() as u8).collect();
    let mut c = Connection::new(Role::Server, Limits::default(), 0);
    let mut d = Deflater::new(15, 8, false);
    let mut wire = Vec::new();
    assert_eq!(
        c.write_compressed(&mut d, OpCode::Binary, &noise, &mut wire)
            .unwrap(),
        Compressed::No
    );
    assert_eq!(wire[0] & RSV1, 0);
    let mut h = Harness::deflate(Role::Client, Limits::default(), Inflater::new(false));
    h.feed(&wire);
    assert_eq!(h.events, [Ev::Binary(noise)]);
}

#[test]
fn write_compressed_after_close_fails_and_control_frames_go_plain() {
    let mut c = Connection::new(Role::Server, Limits::default(), 0);
    let mut d = Deflater::new(15, 8, false);
    let mut wire = Vec::new();
    assert_eq!(
        c.write_compressed(&mut d, OpCode::Ping, b"pppppppppppppppppppppppp", &mut wire),
        Ok(Compressed::No)
    );
    assert_eq!(wire[0], 0x89);
    c.close(Some(CloseCode::NORMAL), "", &mut wire);
    assert_eq!(
        c.write_compressed(&mut d, OpCode::Text, b"x", &mut wire),
        Err(SendAfterClose)
    );
}

#[test]
fn broadcast_frame_is_compressed_once_for_every_receiver() {
    let msg = text_like(4000);
    let mut d = Deflater::new(15, 8, true);
    let mut frame_bytes = Vec::new();
    assert_eq!(
        write_server_message(&mut d, OpCode::Text, &msg, &mut frame_bytes),
        Compressed::Yes
    );
    assert!(frame_bytes.len() < msg.len() / 2);
    for _ in 0..3 {
        let mut h = Harness::deflate(Role::Client, Limits::default(), Inflater::new(true));
        h.feed(&frame_bytes);
        assert_eq!(
            h.events,
            [Ev::Text(String::from_utf8(msg.clone()).unwrap())]
        );
    }
    // even a deflater with takeover is reset after a broadcast: the next publish
    // decodes alone too
    let mut d = Deflater::new(15, 8, false);
    let mut first = Vec::new();
    write_server_message(&mut d, OpCode::Text, &msg, &mut first);
    let mut second = Vec::new();
    write_server_message(&mut d, OpCode::Text, &msg, &mut second);
    assert_eq!(first, second);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Compressed messages, fragmented at random points and read in random pieces,
    /// in both roles and with or without context takeover, come out as sent.
    #[test]
    fn fragmented_compressed_messages_survive_random_read_splits(
        lens in prop::collection::vec(0usize..6000, 1..4),
        frag in prop::collection::vec(1usize..2000, 0..3),
        reads in prop::collection::vec(1usize..700, 1..12),
        client_sends in any::<bool>(), takeover in any::<bool>(), wb in 9u8..=15,
    ) {
        let sender = if client_sends { Role::Client } else { Role::Server };
        let receiver = if client_sends { Role::Server } else { Role::Client };
        let mut d = Deflater::new(wb, 8, !takeover);
        let mut wire = Vec::new();
        let mut expect = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let msg = text_like(len + i);
            let mut z = Vec::new();
            let compressed = d.compress(&msg, &mut z) == Compressed::Yes;
            let body = if compressed { &z } else { &msg };
            // cut the payload into fragments at the given sizes
            let mut rest: &[u8] = body;
            let mut first = true;
            for &f in &frag {
                if rest.len() <= f { break; }
                let (op, rsv) = if first { (1, if compressed { RSV1 } else { 0 }) } else { (0, 0) };
                wire.extend(rframe(sender, op, false, rsv, &rest[..f]));
                rest = &rest[f..];
                first = false;
            }
            let (op, rsv) = if first { (1, if compressed { RSV1 } else { 0 }) } else { (0, 0) };
            wire.extend(rframe(sender, op, true, rsv, rest));
            expect.push(Ev::Text(String::from_utf8(msg).unwrap()));
        }
        let mut h = Harness::deflate(receiver, Limits::default(), Inflater::new(!takeover));
        let mut pos = 0;
        for r in reads.iter().cycle() {
            if pos >= wire.len() { break; }
            let end = (pos + r).min(wire.len());
            h.feed(&wire[pos..end]);
            pos = end;
        }
        prop_assert_eq!(h.error, None);
        prop_assert_eq!(h.events, expect);
        prop_assert!(h.carry.is_empty());
    }
}

#[test]
fn may_inflate_says_when_a_decompressor_is_needed() {
    let mut h = Harness::new(Role::Server, Limits::default());
    h.conn.set_allowed_rsv(RSV1);
    assert!(!h.conn.may_inflate(&[]));
    assert!(!h.conn.may_inflate(&cframe(1, true, b"plain")));
    let mut f = cframe(1, true, b"x");
    f[0] |= RSV1;
    assert!(h.conn.may_inflate(&f));
}
