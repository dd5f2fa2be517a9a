//! Arbitrary bytes as the compressed payload of one message, with a small
//! `max_message`: through `Inflater::inflate_message` (whole, and cut in three pieces:
//! the same verdict and output), and as a compressed frame (or two fragments) through
//! a server `Connection` fed in cut reads. Never a panic; never a message over the
//! limit; never a buffer grown past the limit plus one inflate step. Last, the same
//! bytes compressed by a `Deflater` inflate back to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use soliton::proto::deflate::{Compressed, Deflater, InflateError, Inflater, INFLATE_STEP};
use soliton::proto::frame::{FrameHeader, OpCode, MAX_HEADER_LEN, RSV1};
use soliton::proto::{Connection, Event, Limits, Message, ProtocolError, Role};

fn masked_frame(opcode: OpCode, fin: bool, rsv: u8, payload: &[u8], out: &mut Vec<u8>) {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let h = FrameHeader {
        fin,
        rsv,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut hb = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut hb);
    out.extend_from_slice(&hb[..n]);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

fn inflate(pieces: &[&[u8]], max: usize) -> (Result<(), InflateError>, Vec<u8>) {
    let mut inf = Inflater::new(true);
    let mut out = Vec::new();
    let r = inf.inflate_message(pieces, &mut out, max);
    // one byte over the limit is how it is found over
    assert!(
        out.len() <= max + r.is_err() as usize,
        "{} > {max}",
        out.len()
    );
    assert!(
        out.capacity() <= max + 1 + INFLATE_STEP,
        "capacity {}",
        out.capacity()
    );
    (r, out)
}

fuzz_target!(|data: &[u8]| {
    let [flags, limit, a, b, wire @ ..] = data else {
        return;
    };
    let max = *limit as usize * 64;
    let (a, b) = {
        let (a, b) = (
            (*a as usize * 7) % (wire.len() + 1),
            (*b as usize * 13) % (wire.len() + 1),
        );
        (a.min(b), a.max(b))
    };
    let whole = inflate(&[wire], max);
    let split = inflate(&[&wire[..a], &wire[a..b], &wire[b..]], max);
    // the same verdict, whatever the cuts (a message both over the limit and corrupt
    // may be found either way first: zlib checks a match's distance before copying it
    // in its fast loop, which needs enough input and output at hand)
    assert_eq!(
        whole.0.is_ok(),
        split.0.is_ok(),
        "{:?} {:?}",
        whole.0,
        split.0
    );
    if whole.0.is_ok() {
        assert_eq!(whole.1, split.1);
    }

    // as a message through a Connection, one frame or two, read in two cuts
    let text = flags & 1 != 0;
    let opcode = if text { OpCode::Text } else { OpCode::Binary };
    let mut stream = Vec::new();
    if flags & 2 != 0 {
        masked_frame(opcode, false, RSV1, &wire[..a], &mut stream);
        masked_frame(OpCode::Continuation, true, 0, &wire[a..], &mut stream);
    } else {
        masked_frame(opcode, true, RSV1, wire, &mut stream);
    }
    let limits = Limits {
        max_frame: 1 << 20,
        max_message: max as u64,
    };
    let mut conn = Connection::new(Role::Server, limits, 1);
    conn.set_allowed_rsv(RSV1);
    let mut inf = Inflater::new(flags & 4 != 0);
    let (mut carry, mut asm, mut out) = (Vec::new(), Vec::new(), Vec::new());
    let cut = (b * 3) % (stream.len() + 1);
    let mut got = None;
    for chunk in [&stream[..cut], &stream[cut..]] {
        carry.extend_from_slice(chunk);
        let mut pos = 0;
        loop {
            match conn.poll_read_with(&mut carry[pos..], &mut asm, &mut out, Some(&mut inf)) {
                Ok((n, Some(Event::Message(m)))) => {
                    pos += n;
                    assert!(m.as_bytes().len() <= max);
                    if let Message::Text(s) = m {
                        assert!(std::str::from_utf8(s.as_bytes()).is_ok());
                    }
                    got = Some(Ok(m.as_bytes().to_vec()));
                }
                Ok((n, Some(_))) => pos += n,
                Ok((n, None)) => {
                    pos += n;
                    break;
                }
                Err(e) => {
                    got = Some(Err(e));
                    pos = carry.len();
                    break;
                }
            }
            assert!(asm.capacity() <= 2 * max + 1 + INFLATE_STEP + 64);
        }
        carry.drain(..pos);
    }
    // the connection agrees with the inflater on its own; the compressed size counts
    // against the limit too (checked from the frame headers)
    let got = got.expect("a complete message or an error");
    if wire.len() > max {
        assert_eq!(got, Err(ProtocolError::MessageTooLarge));
    } else {
        match (&whole.0, got) {
            (_, Err(ProtocolError::InvalidUtf8)) if text => {}
            (Ok(()), Ok(bytes)) => assert_eq!(bytes, whole.1),
            (
                Err(InflateError::TooLarge | InflateError::Corrupt),
                Err(ProtocolError::MessageTooLarge | ProtocolError::InvalidCompressedData),
            ) => {}
            (r, got) => panic!("inflater {r:?}, connection {got:?}"),
        }
    }

    // round trip: any bytes compress and inflate back
    if wire.len() <= max {
        let mut d = Deflater::new(9 + flags % 7, 1 + (flags >> 3) % 9, flags & 0x80 != 0);
        let mut z = Vec::new();
        if d.compress(wire, &mut z) == Compressed::Yes {
            let (r, back) = inflate(&[&z], max);
            assert_eq!(r, Ok(()));
            assert_eq!(back, wire);
        }
    }
});
