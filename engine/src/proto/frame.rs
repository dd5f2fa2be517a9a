//! Frame headers (RFC 6455 §5.2): parse and serialize.

use super::error::ProtocolError;

/// The result of a parser that may need more input: never an error for that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// Parsed.
    Complete(T),
    /// More bytes are needed; nothing was consumed.
    Partial,
}

/// A frame opcode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: a text message (UTF-8).
    Text = 0x1,
    /// 0x2: a binary message.
    Binary = 0x2,
    /// 0x8: close.
    Close = 0x8,
    /// 0x9: ping.
    Ping = 0x9,
    /// 0xA: pong.
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for a 4-bit value; `None` for the reserved ones.
    pub const fn from_u8(v: u8) -> Option<OpCode> {
        Some(match v {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong.
    pub const fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// RSV1 as it sits in the first header byte (permessage-deflate's bit).
pub const RSV1: u8 = 0x40;
/// RSV2 as it sits in the first header byte.
pub const RSV2: u8 = 0x20;
/// RSV3 as it sits in the first header byte.
pub const RSV3: u8 = 0x10;

/// The largest header: 2 + 8 (length) + 4 (mask key).
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload of a control frame.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1-3 as they sit in the first byte (`RSV1 | RSV2 | RSV3` mask).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

/// What a decoder accepts: depends on the role and the negotiated extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeRules {
    /// Server role: frames must be masked. Client role: frames must not be.
    pub expect_masked: bool,
    /// RSV bits owned by a negotiated extension (e.g. [`RSV1`] for permessage-deflate).
    pub allowed_rsv: u8,
    /// Largest accepted frame payload; a larger one fails with 1009.
    pub max_frame: u64,
}

impl FrameHeader {
    /// Length of this header on the wire.
    pub const fn encoded_len(&self) -> usize {
        let len = if self.payload_len < 126 {
            2
        } else if self.payload_len <= 0xffff {
            4
        } else {
            10
        };
        if self.mask.is_some() {
            len + 4
        } else {
            len
        }
    }

    /// Writes the header into `out`; returns its length.
    #[inline]
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (self.fin as u8) << 7 | (self.rsv & (RSV1 | RSV2 | RSV3)) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut n = if self.payload_len < 126 {
            out[1] = mask_bit | self.payload_len as u8;
            2
        } else if self.payload_len <= 0xffff {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
            4
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
            10
        };
        if let Some(key) = self.mask {
            out[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        n
    }

    /// Parses a header from the start of `buf`, checking every rule that the header
    /// alone decides. An error is reported as soon as the bytes that prove it are in,
    /// even if the header is incomplete. Returns the header and its length.
    #[inline]
    pub fn decode(
        buf: &[u8],
        rules: &DecodeRules,
    ) -> Result<Status<(FrameHeader, usize)>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(Status::Partial);
        };
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode)?;
        let rsv = b0 & (RSV1 | RSV2 | RSV3);
        if rsv & !rules.allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let fin = b0 & 0x80 != 0;
        if opcode.is_control() && !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }
        let Some(&b1) = buf.get(1) else {
            return Ok(Status::Partial);
        };
        let masked = b1 & 0x80 != 0;
        if masked != rules.expect_masked {
            return Err(if rules.expect_masked {
                ProtocolError::UnmaskedFrame
            } else {
                ProtocolError::MaskedFrame
            });
        }
        let len7 = b1 & 0x7f;
        if opcode.is_control() && len7 > 125 {
            return Err(ProtocolError::ControlFrameTooLong);
        }
        let (payload_len, mut n) = match len7 {
            126 => match buf.get(2..4) {
                Some(b) => match u16::from_be_bytes([b[0], b[1]]) {
                    0..126 => return Err(ProtocolError::NonMinimalLength),
                    l => (l as u64, 4),
                },
                None => return Ok(Status::Partial),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    let v = u64::from_be_bytes(a);
                    if v >> 63 != 0 {
                        return Err(ProtocolError::InvalidLength);
                    }
                    if v <= 0xffff {
                        return Err(ProtocolError::NonMinimalLength);
                    }
                    (v, 10)
                }
                None => {
                    if buf.len() > 2 && buf[2] & 0x80 != 0 {
                        return Err(ProtocolError::InvalidLength);
                    }
                    // six zero bytes already make the length fit in 16 bits
                    if buf.get(2..8) == Some(&[0; 6]) {
                        return Err(ProtocolError::NonMinimalLength);
                    }
                    return Ok(Status::Partial);
                }
            },
            l => (l as u64, 2),
        };
        if payload_len > rules.max_frame {
            return Err(ProtocolError::FrameTooLarge);
        }
        let mask = if masked {
            match buf.get(n..n + 4) {
                Some(k) => {
                    n += 4;
                    Some([k[0], k[1], k[2], k[3]])
                }
                None => return Ok(Status::Partial),
            }
        } else {
            None
        };
        Ok(Status::Complete((
            FrameHeader {
                fin,
                rsv,
                opcode,
                mask,
                payload_len,
            },
            n,
        )))
    }
}

/// How many bytes the frame that starts at `buf[0]` takes, header and payload — or,
/// while its header is not all there, how many are needed to read it (a lower bound:
/// call again with more). For a runtime that completes a frame split across reads by
/// copying only what it lacks. Does not validate the header (the decoder does); a length
/// past `usize` saturates.
pub fn frame_len_hint(buf: &[u8]) -> usize {
    let Some(&b1) = buf.get(1) else {
        return 2;
    };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header = 2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 };
    if buf.len() < header {
        return header;
    }
    let len = match ext {
        0 => u64::from(b1 & 0x7f),
        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        _ => u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
    };
    header.saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_len_hint_asks_for_the_header_then_gives_the_frame() {
        assert_eq!(frame_len_hint(&[]), 2);
        assert_eq!(frame_len_hint(&[0x81]), 2);
        // masked, 7-bit length 5: 2 + 4 + 5
        assert_eq!(frame_len_hint(&[0x81, 0x85]), 6);
        assert_eq!(frame_len_hint(&[0x81, 0x85, 1, 2, 3, 4]), 11);
        // unmasked 16-bit length
        assert_eq!(frame_len_hint(&[0x82, 126]), 4);
        assert_eq!(frame_len_hint(&[0x82, 126, 0x01, 0x00]), 4 + 256);
        // masked 64-bit length
        assert_eq!(frame_len_hint(&[0x82, 0xff]), 14);
        let mut h = vec![0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 9, 9, 9, 9];
        assert_eq!(frame_len_hint(&h), 14 + 65536);
        h[2..10].fill(0xff);
        assert_eq!(
            frame_len_hint(&h),
            usize::MAX,
            "a length past usize saturates"
        );
        // a hint never asks for fewer bytes than the frame then turns out to need
        let frame = [0x81, 0x83, 9, 9, 9, 9, b'a', b'b', b'c', 0x81];
        for n in 0..frame.len() {
            let hint = frame_len_hint(&frame[..n]);
            assert!(hint <= 9 && (hint > n || n >= 9), "prefix {n}: hint {hint}");
        }
    }

    use super::*;

    const SERVER: DecodeRules = DecodeRules {
        expect_masked: true,
        allowed_rsv: 0,
        max_frame: 1 << 20,
    };
    const CLIENT: DecodeRules = DecodeRules {
        expect_masked: false,
        allowed_rsv: 0,
        max_frame: u64::MAX >> 1,
    };

    fn hdr(opcode: OpCode, len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask,
            payload_len: len,
        }
    }

    #[test]
    fn roundtrip_all_length_forms() {
        for len in [0u64, 1, 125, 126, 127, 0xffff, 0x10000, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let h = hdr(OpCode::Binary, len, mask);
                let mut out = [0u8; MAX_HEADER_LEN];
                let n = h.encode(&mut out);
                assert_eq!(n, h.encoded_len());
                let rules = DecodeRules {
                    expect_masked: mask.is_some(),
                    allowed_rsv: 0,
                    max_frame: u64::MAX >> 1,
                };
                assert_eq!(
                    FrameHeader::decode(&out[..n], &rules),
                    Ok(Status::Complete((h, n)))
                );
                for cut in 0..n {
                    assert_eq!(
                        FrameHeader::decode(&out[..cut], &rules),
                        Ok(Status::Partial),
                        "len {len} cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn reserved_opcode_is_1002() {
        for op in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
            let e = FrameHeader::decode(&[0x80 | op], &SERVER).unwrap_err();
            assert_eq!(e, ProtocolError::ReservedOpcode);
            assert_eq!(e.close_code().get(), 1002);
        }
    }

    #[test]
    fn unowned_rsv_bits_are_1002() {
        for rsv in [RSV1, RSV2, RSV3, RSV1 | RSV3] {
            let e = FrameHeader::decode(&[0x81 | rsv, 0x80], &SERVER).unwrap_err();
            assert_eq!(e, ProtocolError::ReservedBits);
            assert_eq!(e.close_code().get(), 1002);
        }
        let deflate = DecodeRules {
            allowed_rsv: RSV1,
            ..SERVER
        };
        assert!(FrameHeader::decode(&[0x81 | RSV1, 0x80, 0, 0, 0, 0], &deflate).is_ok());
        assert!(FrameHeader::decode(&[0x81 | RSV2, 0x80], &deflate).is_err());
    }

    #[test]
    fn control_frame_over_125_is_1002() {
        let e = FrameHeader::decode(&[0x89, 0x80 | 126, 0, 126], &SERVER).unwrap_err();
        assert_eq!(e, ProtocolError::ControlFrameTooLong);
        assert_eq!(e.close_code().get(), 1002);
    }

    #[test]
    fn fragmented_control_frame_is_1002() {
        for op in [0x8u8, 0x9, 0xA] {
            let e = FrameHeader::decode(&[op, 0x80], &SERVER).unwrap_err();
            assert_eq!(e, ProtocolError::FragmentedControlFrame);
            assert_eq!(e.close_code().get(), 1002);
        }
    }

    #[test]
    fn length_with_top_bit_set_is_1002() {
        let mut b = vec![0x82, 0x80 | 127];
        b.extend_from_slice(&(1u64 << 63).to_be_bytes());
        let e = FrameHeader::decode(&b, &SERVER).unwrap_err();
        assert_eq!(e, ProtocolError::InvalidLength);
        assert_eq!(e.close_code().get(), 1002);
        // known from the first length byte already
        assert_eq!(
            FrameHeader::decode(&b[..3], &SERVER),
            Err(ProtocolError::InvalidLength)
        );
    }

    #[test]
    fn non_minimal_length_is_1002() {
        // found by fuzz/fuzz_targets/frame_header.rs: 0 sent in the 16-bit form decoded
        // to a header that re-encodes to 2 bytes fewer
        let e = FrameHeader::decode(&[0x02, 0x80 | 126, 0, 0, 0, 0, 0, 0], &SERVER).unwrap_err();
        assert_eq!(e, ProtocolError::NonMinimalLength);
        assert_eq!(e.close_code().get(), 1002);
        assert_eq!(
            FrameHeader::decode(&[0x82, 0x80 | 126, 0, 125], &SERVER),
            Err(ProtocolError::NonMinimalLength)
        );
        let mut b = vec![0x82, 0x80 | 127];
        b.extend_from_slice(&0xffffu64.to_be_bytes());
        assert_eq!(
            FrameHeader::decode(&b, &SERVER),
            Err(ProtocolError::NonMinimalLength)
        );
        // known from six length bytes already
        assert_eq!(
            FrameHeader::decode(&b[..8], &SERVER),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(FrameHeader::decode(&b[..7], &SERVER), Ok(Status::Partial));
        // the shortest forms still decode
        for len in [126u64, 0xffff, 0x1_0000] {
            let h = hdr(OpCode::Binary, len, Some([1, 2, 3, 4]));
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = h.encode(&mut out);
            assert_eq!(
                FrameHeader::decode(&out[..n], &SERVER),
                Ok(Status::Complete((h, n)))
            );
        }
    }

    #[test]
    fn unmasked_frame_from_client_is_1002() {
        let e = FrameHeader::decode(&[0x81, 0x05], &SERVER).unwrap_err();
        assert_eq!(e, ProtocolError::UnmaskedFrame);
        assert_eq!(e.close_code().get(), 1002);
    }

    #[test]
    fn masked_frame_from_server_is_1002() {
        let e = FrameHeader::decode(&[0x81, 0x85], &CLIENT).unwrap_err();
        assert_eq!(e, ProtocolError::MaskedFrame);
        assert_eq!(e.close_code().get(), 1002);
    }

    #[test]
    fn frame_over_limit_is_1009_before_payload() {
        let small = DecodeRules {
            max_frame: 1000,
            ..SERVER
        };
        // header only: 1001-byte payload announced, none sent
        let e = FrameHeader::decode(&[0x82, 0x80 | 126, 0x03, 0xe9], &small).unwrap_err();
        assert_eq!(e, ProtocolError::FrameTooLarge);
        assert_eq!(e.close_code().get(), 1009);
        assert!(FrameHeader::decode(&[0x82, 0x80 | 126, 0x03, 0xe8, 0, 0, 0, 0], &small).is_ok());
    }
}
