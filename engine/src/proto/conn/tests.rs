use super::*;
use crate::proto::frame::RSV1;
use proptest::prelude::*;

/// An owned copy of an event, to compare after the borrow ends.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

impl From<Event<'_>> for Ev {
    fn from(e: Event<'_>) -> Ev {
        match e {
            Event::Message(Message::Text(s)) => Ev::Text(s.to_owned()),
            Event::Message(Message::Binary(b)) => Ev::Binary(b.to_vec()),
            Event::Ping(p) => Ev::Ping(p.to_vec()),
            Event::Pong(p) => Ev::Pong(p.to_vec()),
            Event::Close { code, reason } => Ev::Close(code.map(|c| c.get()), reason.to_owned()),
        }
    }
}

/// A frame as a peer of `role` would send it to us (masked when the sender is a client).
fn frame(sender: Role, opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = (sender == Role::Client).then_some([0x37, 0xfa, 0x21, 0x3d]);
    let h = FrameHeader {
        fin,
        rsv: 0,
        opcode: OpCode::from_u8(opcode).unwrap(),
        mask,
        payload_len: payload.len() as u64,
    };
    let mut hb = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut hb);
    let mut v = hb[..n].to_vec();
    let s = v.len();
    v.extend_from_slice(payload);
    if let Some(k) = mask {
        crate::proto::mask::mask_bytewise(&mut v[s..], k, 0);
    }
    v
}

fn cframe(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    frame(Role::Client, opcode, fin, payload)
}

/// Emulates a runtime: each chunk is appended to the carried bytes, then polled.
struct Harness {
    conn: Connection,
    carry: Vec<u8>,
    assembly: Vec<u8>,
    out: Vec<u8>,
    events: Vec<Ev>,
    error: Option<ProtocolError>,
    /// Set for a connection that negotiated permessage-deflate.
    inflater: Option<Inflater>,
}

impl Harness {
    fn new(role: Role, limits: Limits) -> Self {
        Harness {
            conn: Connection::new(role, limits, 42),
            carry: Vec::new(),
            assembly: Vec::new(),
            out: Vec::new(),
            events: Vec::new(),
            error: None,
            inflater: None,
        }
    }

    /// A connection that negotiated permessage-deflate, inflating with `inflater`.
    fn deflate(role: Role, limits: Limits, inflater: Inflater) -> Self {
        let mut h = Self::new(role, limits);
        h.conn.set_allowed_rsv(RSV1);
        h.inflater = Some(inflater);
        h
    }

    fn server() -> Self {
        Self::new(Role::Server, Limits::default())
    }

    fn feed(&mut self, chunk: &[u8]) -> &mut Self {
        self.carry.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            match self.conn.poll_read_with(
                &mut self.carry[pos..],
                &mut self.assembly,
                &mut self.out,
                self.inflater.as_mut(),
            ) {
                Ok((n, Some(e))) => {
                    pos += n;
                    self.events.push(e.into());
                }
                Ok((n, None)) => {
                    pos += n;
                    break;
                }
                Err(e) => {
                    self.error = Some(e);
                    pos = self.carry.len();
                    break;
                }
            }
        }
        self.carry.drain(..pos);
        self
    }

    /// Frames the connection wrote to `out`, parsed as the peer would.
    fn sent(&self) -> Vec<(u8, Vec<u8>)> {
        let mut peer = Connection::new(
            match self.conn.role() {
                Role::Server => Role::Client,
                Role::Client => Role::Server,
            },
            Limits::default(),
            1,
        );
        let mut buf = self.out.clone();
        let mut asm = Vec::new();
        let mut sink = Vec::new();
        let mut pos = 0;
        let mut v = Vec::new();
        while let Ok((n, Some(e))) = peer.poll_read(&mut buf[pos..], &mut asm, &mut sink) {
            pos += n;
            v.push(match e {
                Event::Ping(p) => (9, p.to_vec()),
                Event::Pong(p) => (10, p.to_vec()),
                Event::Close { code, reason } => {
                    let mut b = code
                        .map(|c| c.get().to_be_bytes().to_vec())
                        .unwrap_or_default();
                    b.extend_from_slice(reason.as_bytes());
                    (8, b)
                }
                Event::Message(m) => (m.opcode() as u8, m.as_bytes().to_vec()),
            });
        }
        assert_eq!(pos, buf.len(), "trailing bytes in out");
        v
    }

    fn close_code_sent(&self) -> Option<u16> {
        self.sent()
            .iter()
            .find(|(op, _)| *op == 8)
            .and_then(|(_, p)| (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])))
    }
}

#[test]
fn whole_message_is_borrowed_from_the_read_buffer() {
    let mut c = Connection::new(Role::Server, Limits::default(), 0);
    let mut buf = cframe(1, true, b"Hello");
    let range = buf.as_ptr_range();
    let (mut asm, mut out) = (Vec::new(), Vec::new());
    let (n, ev) = c.poll_read(&mut buf, &mut asm, &mut out).unwrap();
    let Some(Event::Message(Message::Text(s))) = ev else {
        panic!("{ev:?}")
    };
    assert_eq!(s, "Hello");
    assert!(range.contains(&s.as_ptr()), "payload was copied");
    assert_eq!(n, 11);
    assert!(asm.capacity() == 0 && out.is_empty());
}

#[test]
fn many_frames_in_one_read() {
    let mut h = Harness::server();
    let mut all = Vec::new();
    for i in 0..50u8 {
        all.extend(cframe(2, true, &[i; 20]));
    }
    h.feed(&all);
    assert_eq!(h.events.len(), 50);
    assert_eq!(h.events[49], Ev::Binary(vec![49; 20]));
}

#[test]
fn fragmented_message_with_interleaved_ping() {
    let mut h = Harness::server();
    h.feed(&cframe(1, false, b"frag"));
    h.feed(&cframe(9, true, b"ping!"));
    h.feed(&cframe(0, false, "ment".as_bytes()));
    h.feed(&cframe(0, true, "ed €".as_bytes()));
    assert_eq!(
        h.events,
        [Ev::Ping(b"ping!".to_vec()), Ev::Text("fragmented €".into())]
    );
    assert_eq!(h.sent(), [(10, b"ping!".to_vec())]);
    assert!(h.error.is_none());
}

#[test]
fn ping_is_answered_with_pong() {
    let mut h = Harness::server();
    h.feed(&cframe(9, true, b"abc"));
    h.feed(&cframe(9, true, b""));
    assert_eq!(h.sent(), [(10, b"abc".to_vec()), (10, vec![])]);
    // the server's pong is unmasked
    assert_eq!(&h.out[..2], &[0x8a, 0x03]);
}

#[test]
fn new_data_frame_inside_unfinished_message_is_1002() {
    let mut h = Harness::server();
    h.feed(&cframe(1, false, b"a")).feed(&cframe(1, true, b"b"));
    assert_eq!(h.error, Some(ProtocolError::ExpectedContinuation));
    assert_eq!(h.close_code_sent(), Some(1002));
    assert_eq!(h.conn.ready_state(), ReadyState::Closed);
    assert!(h.conn.should_close_transport());
    assert!(!h.conn.was_clean());
}

#[test]
fn continuation_with_nothing_to_continue_is_1002() {
    let mut h = Harness::server();
    h.feed(&cframe(0, true, b"x"));
    assert_eq!(h.error, Some(ProtocolError::UnexpectedContinuation));
    assert_eq!(h.close_code_sent(), Some(1002));
}

#[test]
fn message_over_limit_is_1009_from_the_header_alone() {
    let limits = Limits {
        max_frame: 1 << 20,
        max_message: 100,
    };
    let mut h = Harness::new(Role::Server, limits);
    let f = cframe(2, true, &[0; 101]);
    h.feed(&f[..8]); // header (6 bytes) and 2 payload bytes
    assert_eq!(h.error, Some(ProtocolError::MessageTooLarge));
    assert_eq!(h.close_code_sent(), Some(1009));
}

#[test]
fn fragments_over_message_limit_are_1009() {
    let limits = Limits {
        max_frame: 1 << 20,
        max_message: 100,
    };
    let mut h = Harness::new(Role::Server, limits);
    h.feed(&cframe(2, false, &[0; 60]));
    assert!(h.error.is_none());
    h.feed(&cframe(0, true, &[0; 41])[..6]);
    assert_eq!(h.error, Some(ProtocolError::MessageTooLarge));
    assert_eq!(h.close_code_sent(), Some(1009));
    assert!(h.assembly.len() <= 100);
}

#[test]
fn frame_over_limit_is_1009() {
    let limits = Limits {
        max_frame: 10,
        max_message: 1000,
    };
    let mut h = Harness::new(Role::Server, limits);
    h.feed(&cframe(2, false, &[0; 11])[..2]);
    assert_eq!(h.error, Some(ProtocolError::FrameTooLarge));
    assert_eq!(h.close_code_sent(), Some(1009));
}

#[test]
fn invalid_utf8_fails_fast_inside_a_partial_frame() {
    let mut h = Harness::server();
    let mut payload = "κόσμε".as_bytes().to_vec();
    payload.extend_from_slice(&[0xed, 0xa0, 0x80]); // surrogate: invalid
    payload.extend_from_slice(&[b'a'; 100]);
    let f = cframe(1, true, &payload);
    h.feed(&f[..6 + 10]);
    assert!(h.error.is_none());
    h.feed(&f[16..20]); // the invalid bytes arrive; 97 payload bytes still missing
    assert_eq!(h.error, Some(ProtocolError::InvalidUtf8));
    assert_eq!(h.close_code_sent(), Some(1007));
}

#[test]
fn invalid_utf8_fails_fast_at_the_bad_fragment() {
    let mut h = Harness::server();
    h.feed(&cframe(1, false, "κόσμε".as_bytes()));
    assert!(h.error.is_none());
    h.feed(&cframe(0, false, &[0xce, 0xba, 0xff]));
    assert_eq!(h.error, Some(ProtocolError::InvalidUtf8));
    assert_eq!(h.close_code_sent(), Some(1007));
}

#[test]
fn code_point_split_across_fragments_is_valid() {
    let mut h = Harness::server();
    let s = "€uro".as_bytes();
    h.feed(&cframe(1, false, &s[..1]));
    h.feed(&cframe(0, false, &s[1..2]));
    h.feed(&cframe(0, true, &s[2..]));
    assert_eq!(h.events, [Ev::Text("€uro".into())]);
}

#[test]
fn truncated_code_point_at_message_end_is_1007() {
    let mut h = Harness::server();
    h.feed(&cframe(1, false, b"ab"))
        .feed(&cframe(0, true, &[0xe2, 0x82]));
    assert_eq!(h.error, Some(ProtocolError::InvalidUtf8));
}

#[test]
fn close_from_peer_is_echoed_and_clean() {
    let mut h = Harness::server();
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.extend_from_slice(b"bye");
    h.feed(&cframe(8, true, &p));
    assert_eq!(h.events, [Ev::Close(Some(1000), "bye".into())]);
    // the echo carries the peer's code and its reason
    assert_eq!(h.sent(), [(8, p.clone())]);
    assert_eq!(h.conn.ready_state(), ReadyState::Closed);
    assert!(h.conn.was_clean());
    assert!(h.conn.should_close_transport());
    // nothing after the close is processed
    h.feed(&cframe(1, true, b"late"));
    assert_eq!(h.events.len(), 1);
}

#[test]
fn empty_close_is_echoed_empty() {
    let mut h = Harness::server();
    h.feed(&cframe(8, true, b""));
    assert_eq!(h.events, [Ev::Close(None, String::new())]);
    assert_eq!(h.sent(), [(8, vec![])]);
}

#[test]
fn close_from_us_then_peer_reply() {
    let mut h = Harness::server();
    h.conn.close(CloseCode::new(4000), "done", &mut h.out);
    assert_eq!(h.conn.ready_state(), ReadyState::Closing);
    assert!(!h.conn.should_close_transport());
    assert_eq!(
        h.conn
            .write_frame(OpCode::Text, true, b"x", &mut Vec::new()),
        Err(SendAfterClose)
    );
    // data from the peer still arrives while closing
    h.feed(&cframe(1, true, b"in flight"));
    h.feed(&cframe(8, true, &4000u16.to_be_bytes()));
    assert_eq!(
        h.events,
        [
            Ev::Text("in flight".into()),
            Ev::Close(Some(4000), String::new())
        ]
    );
    assert_eq!(h.sent().len(), 1, "no second close frame");
    assert_eq!(h.conn.ready_state(), ReadyState::Closed);
    assert!(h.conn.was_clean());
}

#[test]
fn bad_close_payloads() {
    for (payload, code) in [
        (vec![0x03], 1002),
        (999u16.to_be_bytes().to_vec(), 1002),
        (1005u16.to_be_bytes().to_vec(), 1002),
        (vec![0x03, 0xe8, 0xff], 1007),
    ] {
        let mut h = Harness::server();
        h.feed(&cframe(8, true, &payload));
        assert_eq!(h.close_code_sent(), Some(code), "{payload:?}");
        assert!(h.conn.failed());
    }
}

#[test]
fn client_role_rejects_masked_frames_and_masks_its_own() {
    let mut h = Harness::new(Role::Client, Limits::default());
    h.feed(&frame(Role::Server, 9, true, b"p"));
    assert_eq!(h.events, [Ev::Ping(b"p".to_vec())]);
    assert_eq!(h.out[1] & 0x80, 0x80, "client pong must be masked");
    assert_eq!(h.sent(), [(10, b"p".to_vec())]);
    h.feed(&cframe(1, true, b"masked"));
    assert_eq!(h.error, Some(ProtocolError::MaskedFrame));
    assert_eq!(h.close_code_sent(), Some(1002));
}

#[test]
fn client_does_not_close_transport_first() {
    let mut h = Harness::new(Role::Client, Limits::default());
    h.feed(&frame(Role::Server, 8, true, &1000u16.to_be_bytes()));
    assert_eq!(h.conn.ready_state(), ReadyState::Closed);
    assert!(!h.conn.should_close_transport());
}

#[test]
fn rsv1_only_with_an_extension() {
    let mut f = cframe(1, true, b"x");
    f[0] |= RSV1;
    let mut h = Harness::server();
    h.feed(&f);
    assert_eq!(h.error, Some(ProtocolError::ReservedBits));
    // allowed, RSV1 means compressed: 0x78 is a non-final stored block header, which
    // the tail `00 00 ff ff` completes as an empty block
    let mut h = Harness::deflate(Role::Server, Limits::default(), Inflater::new(true));
    h.feed(&f);
    assert_eq!(h.events, [Ev::Text("".into())]);
    assert_eq!(h.error, None);
}

#[test]
fn server_frame_header_for_zero_copy_send() {
    let mut c = Connection::new(Role::Server, Limits::default(), 0);
    let h = c.frame_header(OpCode::Binary, true, 70000).unwrap();
    assert_eq!(h.as_slice(), &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
}

/// A data message of the property tests.
#[derive(Clone, Debug)]
struct Msg {
    text: bool,
    body: Vec<u8>,
    fragments: usize,
    ping_inside: bool,
}

fn msg_strategy() -> impl Strategy<Value = Msg> {
    (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..300),
        "\\PC{0,60}",
        1usize..5,
        any::<bool>(),
    )
        .prop_map(|(text, bin, s, fragments, ping_inside)| Msg {
            text,
            body: if text { s.into_bytes() } else { bin },
            fragments,
            ping_inside,
        })
}

fn encode_msgs(sender: Role, msgs: &[Msg]) -> (Vec<u8>, Vec<Ev>) {
    let mut wire = Vec::new();
    let mut expect = Vec::new();
    for m in msgs {
        let n = m.fragments.min(m.body.len().max(1));
        let step = m.body.len().div_ceil(n).max(1);
        let chunks: Vec<&[u8]> = if m.body.is_empty() {
            vec![&[][..]]
        } else {
            m.body.chunks(step).collect()
        };
        for (i, c) in chunks.iter().enumerate() {
            let op = if i == 0 {
                if m.text {
                    1
                } else {
                    2
                }
            } else {
                0
            };
            wire.extend(frame(sender, op, i + 1 == chunks.len(), c));
            if i == 0 && m.ping_inside && chunks.len() > 1 {
                wire.extend(frame(sender, 9, true, b"hb"));
                expect.push(Ev::Ping(b"hb".to_vec()));
            }
        }
        expect.push(if m.text {
            Ev::Text(String::from_utf8(m.body.clone()).unwrap())
        } else {
            Ev::Binary(m.body.clone())
        });
    }
    (wire, expect)
}

proptest! {
    #[test]
    fn messages_survive_any_split_server(msgs in proptest::collection::vec(msg_strategy(), 1..8),
                                         cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        check_roundtrip(Role::Server, &msgs, &cuts)?;
    }

    #[test]
    fn messages_survive_any_split_client(msgs in proptest::collection::vec(msg_strategy(), 1..8),
                                         cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12)) {
        check_roundtrip(Role::Client, &msgs, &cuts)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), cut in any::<prop::sample::Index>()) {
        for role in [Role::Server, Role::Client] {
            let mut h = Harness::new(role, Limits { max_frame: 1000, max_message: 2000 });
            let c = cut.index(bytes.len() + 1);
            h.feed(&bytes[..c]).feed(&bytes[c..]);
        }
    }
}

fn check_roundtrip(
    receiver: Role,
    msgs: &[Msg],
    cuts: &[prop::sample::Index],
) -> Result<(), TestCaseError> {
    let sender = match receiver {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let (wire, expect) = encode_msgs(sender, msgs);
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
    points.sort_unstable();
    let mut h = Harness::new(receiver, Limits::default());
    let mut prev = 0;
    for p in points.into_iter().chain([wire.len()]) {
        h.feed(&wire[prev..p]);
        prev = p;
    }
    prop_assert_eq!(h.error, None);
    prop_assert_eq!(&h.events, &expect);
    prop_assert!(h.carry.is_empty());
    Ok(())
}

mod deflate;

// The small-frame path (`Connection::small_frame`): whole final text/binary frames with
// a 7-bit or 16-bit length skip the general decoder; everything it must not take falls
// through.

#[test]
fn small_frames_and_others_interleaved_arrive_in_order() {
    let mut h = Harness::server();
    let mut bytes = cframe(1, true, "héllo".as_bytes());
    bytes.extend(cframe(2, true, &[1, 2, 3]));
    bytes.extend(cframe(9, true, b"p"));
    bytes.extend(cframe(2, true, &[7; 125]));
    bytes.extend(cframe(2, true, &[8; 126])); // 16-bit lengths
    bytes.extend(cframe(1, true, "é".repeat(512).as_bytes()));
    bytes.extend(cframe(2, true, &[9; 0xffff]));
    bytes.extend(cframe(2, true, &[10; 0x1_0000])); // 64-bit length: the general path
    bytes.extend(cframe(1, false, b"frag"));
    bytes.extend(cframe(0, true, b"ment"));
    bytes.extend(cframe(1, true, b""));
    h.feed(&bytes);
    assert!(h.error.is_none(), "{:?}", h.error);
    assert_eq!(
        h.events,
        vec![
            Ev::Text("héllo".into()),
            Ev::Binary(vec![1, 2, 3]),
            Ev::Ping(b"p".to_vec()),
            Ev::Binary(vec![7; 125]),
            Ev::Binary(vec![8; 126]),
            Ev::Text("é".repeat(512)),
            Ev::Binary(vec![9; 0xffff]),
            Ev::Binary(vec![10; 0x1_0000]),
            Ev::Text("fragment".into()),
            Ev::Text(String::new()),
        ]
    );
}

#[test]
fn small_frame_with_a_non_minimal_16_bit_length_is_1002() {
    // 125 bytes announced with the 16-bit form
    let mut f = vec![0x82, 0x80 | 126, 0, 125, 1, 2, 3, 4];
    f.extend([0u8; 125]);
    let mut h = Harness::server();
    h.feed(&f);
    assert_eq!(h.error, Some(ProtocolError::NonMinimalLength));
    assert_eq!(h.close_code_sent(), Some(1002));
    assert!(h.events.is_empty());
}

#[test]
fn small_16_bit_text_frame_with_invalid_utf8_is_1007() {
    let mut payload = vec![b'a'; 300];
    payload[200] = 0xff;
    let mut h = Harness::server();
    h.feed(&cframe(1, true, &payload));
    assert_eq!(h.error, Some(ProtocolError::InvalidUtf8));
    assert_eq!(h.close_code_sent(), Some(1007));
    assert!(h.events.is_empty());
}

#[test]
fn small_text_frame_with_invalid_utf8_is_1007() {
    let mut h = Harness::server();
    h.feed(&cframe(1, true, &[b'a', 0xff, b'b']));
    assert_eq!(h.error, Some(ProtocolError::InvalidUtf8));
    assert_eq!(h.close_code_sent(), Some(1007));
    assert!(h.events.is_empty());
}

#[test]
fn small_frame_over_the_limits_is_still_1009() {
    for (max_frame, max_message) in [(10, 1000), (1000, 10)] {
        let limits = Limits {
            max_frame,
            max_message,
        };
        for len in [20, 2000] {
            let mut h = Harness::new(Role::Server, limits);
            h.feed(&cframe(2, true, &vec![0; len]));
            assert!(
                matches!(
                    h.error,
                    Some(ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge)
                ),
                "{len}: {:?}",
                h.error
            );
            assert_eq!(h.close_code_sent(), Some(1009));
            assert!(h.events.is_empty());
        }
    }
}

#[test]
fn small_frame_with_the_wrong_masking_or_an_rsv_bit_is_refused() {
    // a server gets an unmasked frame
    let mut h = Harness::server();
    h.feed(&frame(Role::Server, 2, true, b"abc"));
    assert_eq!(h.error, Some(ProtocolError::UnmaskedFrame));
    // a client gets a masked one
    let mut h = Harness::new(Role::Client, Limits::default());
    h.feed(&cframe(2, true, b"abc"));
    assert_eq!(h.error, Some(ProtocolError::MaskedFrame));
    // RSV1 without an extension that allows it
    let mut h = Harness::server();
    let mut f = cframe(2, true, b"abc");
    f[0] |= 0x40;
    h.feed(&f);
    assert_eq!(h.error, Some(ProtocolError::ReservedBits));
    assert_eq!(h.close_code_sent(), Some(1002));
}

#[test]
fn small_frame_split_across_reads_waits_for_its_end() {
    let mut h = Harness::server();
    let f = cframe(1, true, b"hello world");
    for b in &f {
        h.feed(std::slice::from_ref(b));
    }
    assert!(h.error.is_none());
    assert_eq!(h.events, vec![Ev::Text("hello world".into())]);
    // a 16-bit length, cut inside its length, its mask and its payload
    let text = "ü".repeat(150);
    let f = cframe(1, true, text.as_bytes());
    for cut in [1, 3, 5, 100, f.len() - 1] {
        let mut h = Harness::server();
        h.feed(&f[..cut]);
        assert!(h.events.is_empty(), "cut at {cut}");
        h.feed(&f[cut..]);
        assert!(h.error.is_none(), "cut at {cut}: {:?}", h.error);
        assert_eq!(h.events, vec![Ev::Text(text.clone())], "cut at {cut}");
    }
}
