//! Close codes and the rules for a close frame's payload (RFC 6455 §5.5.1, §7.4).

use core::fmt;
use core::num::NonZeroU16;

use super::error::ProtocolError;
use super::utf8;

/// A close status code (RFC 6455 §7.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(NonZeroU16);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $v:expr;)*) => {
        impl CloseCode {
            $($(#[$doc])* pub const $name: CloseCode = CloseCode(match NonZeroU16::new($v) {
                Some(v) => v,
                None => panic!("zero close code"),
            });)*
        }
    };
}

codes! {
    /// 1000: normal closure.
    NORMAL = 1000;
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    GOING_AWAY = 1001;
    /// 1002: protocol error.
    PROTOCOL_ERROR = 1002;
    /// 1003: a data type the endpoint cannot accept.
    UNSUPPORTED_DATA = 1003;
    /// 1005: no status code was present (never sent on the wire).
    NO_STATUS = 1005;
    /// 1006: the connection closed without a close frame (never sent on the wire).
    ABNORMAL = 1006;
    /// 1007: payload inconsistent with the message type (invalid UTF-8 in text).
    INVALID_PAYLOAD = 1007;
    /// 1008: policy violation.
    POLICY = 1008;
    /// 1009: message too big.
    TOO_BIG = 1009;
    /// 1010: the client expected an extension the server did not negotiate.
    MANDATORY_EXTENSION = 1010;
    /// 1011: internal server error.
    INTERNAL_ERROR = 1011;
    /// 1012: service restart.
    SERVICE_RESTART = 1012;
    /// 1013: try again later.
    TRY_AGAIN_LATER = 1013;
    /// 1014: bad gateway.
    BAD_GATEWAY = 1014;
}

impl CloseCode {
    /// A close code from its number; `None` for 0.
    pub const fn new(code: u16) -> Option<CloseCode> {
        match NonZeroU16::new(code) {
            Some(v) => Some(CloseCode(v)),
            None => None,
        }
    }

    /// The numeric value.
    pub const fn get(self) -> u16 {
        self.0.get()
    }

    /// Whether this code may appear in a close frame on the wire:
    /// 1000-1003, 1007-1014 and 3000-4999.
    pub const fn is_sendable(self) -> bool {
        matches!(self.0.get(), 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({})", self.0)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl ProtocolError {
    /// The close code that the connection is failed with for this error.
    pub const fn close_code(self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::MissingInflater => CloseCode::INTERNAL_ERROR,
            ProtocolError::FrameTooLarge | ProtocolError::MessageTooLarge => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Parses a received close frame's (unmasked) payload.
///
/// Returns `None` for an empty payload (no status code), or the code and the reason.
/// A 1-byte payload, a code that may not appear on the wire, or a reason that is not
/// UTF-8 are errors.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<(CloseCode, &str)>, ProtocolError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(ProtocolError::InvalidClosePayload),
        _ => {
            let raw = u16::from_be_bytes([payload[0], payload[1]]);
            let code = match CloseCode::new(raw) {
                Some(c) if c.is_sendable() => c,
                _ => return Err(ProtocolError::InvalidCloseCode),
            };
            let reason = utf8::validate(&payload[2..]).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Writes a close payload (code and reason, reason cut to fit 123 bytes on a char
/// boundary) into `out`; returns its length.
pub fn write_close_payload(code: Option<CloseCode>, reason: &str, out: &mut [u8; 125]) -> usize {
    let Some(code) = code else { return 0 };
    out[..2].copy_from_slice(&code.get().to_be_bytes());
    let mut n = reason.len().min(123);
    while !reason.is_char_boundary(n) {
        n -= 1;
    }
    out[2..2 + n].copy_from_slice(&reason.as_bytes()[..n]);
    2 + n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut v = code.to_be_bytes().to_vec();
        v.extend_from_slice(reason);
        v
    }

    #[test]
    fn wire_valid_codes_are_accepted() {
        for code in (1000..=1003).chain(1007..=1014).chain(3000..=4999) {
            let p = payload(code, b"ok");
            let (c, r) = parse_close_payload(&p).unwrap().unwrap();
            assert_eq!((c.get(), r), (code, "ok"));
        }
    }

    #[test]
    fn wire_invalid_codes_are_protocol_errors() {
        let bad = (0..=999)
            .chain(1004..=1006)
            .chain(1015..=2999)
            .chain(5000..=u16::MAX);
        for code in bad {
            assert_eq!(
                parse_close_payload(&payload(code, b"")),
                Err(ProtocolError::InvalidCloseCode),
                "code {code}"
            );
        }
        assert_eq!(
            ProtocolError::InvalidCloseCode.close_code(),
            CloseCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn one_byte_close_payload_is_1002() {
        assert_eq!(
            parse_close_payload(&[0x03]),
            Err(ProtocolError::InvalidClosePayload)
        );
        assert_eq!(ProtocolError::InvalidClosePayload.close_code().get(), 1002);
    }

    #[test]
    fn empty_close_payload_has_no_code() {
        assert_eq!(parse_close_payload(&[]), Ok(None));
    }

    #[test]
    fn invalid_utf8_reason_is_1007() {
        let e = parse_close_payload(&payload(1000, &[0xce, 0xba, 0xe1, 0xbd])).unwrap_err();
        assert_eq!(e, ProtocolError::InvalidUtf8);
        assert_eq!(e.close_code().get(), 1007);
    }

    #[test]
    fn write_close_payload_cuts_reason_on_char_boundary() {
        let mut out = [0u8; 125];
        let reason = "é".repeat(70); // 140 bytes
        let n = write_close_payload(Some(CloseCode::NORMAL), &reason, &mut out);
        assert!(n <= 125);
        let (c, r) = parse_close_payload(&out[..n]).unwrap().unwrap();
        assert_eq!(c, CloseCode::NORMAL);
        assert_eq!(r.len(), 122);
        assert_eq!(write_close_payload(None, "x", &mut out), 0);
    }
}
