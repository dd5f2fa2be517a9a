//! The NATS client protocol, sans-I/O: the server's operations parsed from a byte
//! slice, the client's written into a caller's `Vec`.
//!
//! What a bridge needs and nothing more: `INFO`, `MSG`, `PING`, `PONG`, `+OK` and
//! `-ERR` in; `CONNECT`, `PUB`, `SUB`, `UNSUB`, `PING` and `PONG` out
//! (<https://docs.nats.io/reference/reference-protocols/nats-protocol>). Headers
//! (`HMSG`) are not asked for in `CONNECT`, so a server never sends them; one that
//! does is a protocol error.
//!
//! [`parse`] reads one operation from the start of a buffer and says how many bytes it
//! took; [`Status::Partial`] means "call again with more" and is never an error. It
//! allocates nothing and never reads past the bytes it reports.

use crate::proto::Status;

/// The longest control line accepted from a server (an `INFO` with many cluster URLs
/// is the long one; `MSG` lines are short).
pub const MAX_LINE: usize = 64 * 1024;

/// One operation from a NATS server, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerOp<'a> {
    /// `INFO {json}`: the JSON object.
    Info(&'a [u8]),
    /// `MSG <subject> <sid> [reply-to] <#bytes>` and its payload.
    Msg {
        /// The subject it was published to.
        subject: &'a [u8],
        /// The subscription it arrived on.
        sid: u64,
        /// The reply subject, if any.
        reply: Option<&'a [u8]>,
        /// The payload.
        payload: &'a [u8],
    },
    /// `PING`: answer with `PONG`.
    Ping,
    /// `PONG`: the answer to our `PING`.
    Pong,
    /// `+OK` (verbose mode only).
    Ok,
    /// `-ERR '<message>'`: the message, quotes removed.
    Err(&'a [u8]),
}

/// Input that is not the NATS server protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// An operation name this client does not know.
    UnknownOp,
    /// A control line longer than [`MAX_LINE`].
    LineTooLong,
    /// A `MSG` line with the wrong number of arguments or a bad number.
    BadMsg,
    /// A `MSG` payload longer than the limit given to [`parse`].
    PayloadTooLarge,
    /// A payload not followed by CRLF.
    MissingCrlf,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ParseError::UnknownOp => "unknown operation",
            ParseError::LineTooLong => "control line too long",
            ParseError::BadMsg => "malformed MSG line",
            ParseError::PayloadTooLarge => "MSG payload over the limit",
            ParseError::MissingCrlf => "payload not followed by CRLF",
        })
    }
}

impl std::error::Error for ParseError {}

/// Parses one server operation from the start of `buf`: the operation and the bytes
/// it took (its line, and for `MSG` the payload and its CRLF). A `MSG` payload longer
/// than `max_payload` is an error as soon as its line is in.
pub fn parse(buf: &[u8], max_payload: usize) -> Result<Status<(ServerOp<'_>, usize)>, ParseError> {
    let Some(end) = find_crlf(buf) else {
        return if buf.len() > MAX_LINE {
            Err(ParseError::LineTooLong)
        } else {
            Ok(Status::Partial)
        };
    };
    if end > MAX_LINE {
        return Err(ParseError::LineTooLong);
    }
    let line = &buf[..end];
    let after = end + 2;
    let (name, rest) = match line.iter().position(|&b| b == b' ' || b == b'\t') {
        Some(i) => (&line[..i], trim(&line[i + 1..])),
        None => (line, &line[line.len()..]),
    };
    let op = if name.eq_ignore_ascii_case(b"MSG") {
        let mut args = rest
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|a| !a.is_empty());
        let (subject, sid, a3, a4) = (args.next(), args.next(), args.next(), args.next());
        if args.next().is_some() {
            return Err(ParseError::BadMsg);
        }
        let (Some(subject), Some(sid), Some(a3)) = (subject, sid, a3) else {
            return Err(ParseError::BadMsg);
        };
        let sid = number(sid).ok_or(ParseError::BadMsg)?;
        let (reply, len) = match a4 {
            Some(len) => (Some(a3), len),
            None => (None, a3),
        };
        let len = number(len).ok_or(ParseError::BadMsg)?;
        if len > max_payload as u64 {
            return Err(ParseError::PayloadTooLarge);
        }
        let len = len as usize;
        let Some(tail) = buf.get(after..after + len + 2) else {
            return Ok(Status::Partial);
        };
        if &tail[len..] != b"\r\n" {
            return Err(ParseError::MissingCrlf);
        }
        return Ok(Status::Complete((
            ServerOp::Msg {
                subject,
                sid,
                reply,
                payload: &tail[..len],
            },
            after + len + 2,
        )));
    } else if name.eq_ignore_ascii_case(b"PING") {
        ServerOp::Ping
    } else if name.eq_ignore_ascii_case(b"PONG") {
        ServerOp::Pong
    } else if name.eq_ignore_ascii_case(b"INFO") {
        ServerOp::Info(rest)
    } else if name.eq_ignore_ascii_case(b"+OK") {
        ServerOp::Ok
    } else if name.eq_ignore_ascii_case(b"-ERR") {
        let m = rest.strip_prefix(b"'").unwrap_or(rest);
        ServerOp::Err(m.strip_suffix(b"'").unwrap_or(m))
    } else {
        return Err(ParseError::UnknownOp);
    };
    Ok(Status::Complete((op, after)))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf[from..].iter().position(|&b| b == b'\n') {
        let at = from + i;
        if at > 0 && buf[at - 1] == b'\r' {
            return Some(at - 1);
        }
        from = at + 1;
    }
    None
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(s, |i| i + 1);
    &b[s..e]
}

/// A decimal number of at most 19 digits.
fn number(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    b.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
    })
}

/// What the client says in `CONNECT`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectOptions<'a> {
    /// The connection's name (shown in the server's monitoring).
    pub name: &'a str,
    /// User and password, if the URL had them.
    pub user: Option<(&'a str, &'a str)>,
    /// A token, if the URL had one.
    pub token: Option<&'a str>,
}

/// `CONNECT`: not verbose (no `+OK`), not pedantic, and `"echo":false` (what the Go
/// client's `NoEcho` option sends; servers whose `INFO` says `"proto":1` or more honour
/// it), so the server never sends this connection its own publishes back.
pub fn write_connect(out: &mut Vec<u8>, o: &ConnectOptions<'_>) {
    out.extend_from_slice(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false,");
    out.extend_from_slice(b"\"headers\":false,\"protocol\":1,\"lang\":\"rust\",\"version\":\"");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\",\"name\":");
    json_string(out, o.name);
    if let Some((user, pass)) = o.user {
        out.extend_from_slice(b",\"user\":");
        json_string(out, user);
        out.extend_from_slice(b",\"pass\":");
        json_string(out, pass);
    }
    if let Some(t) = o.token {
        out.extend_from_slice(b",\"auth_token\":");
        json_string(out, t);
    }
    out.extend_from_slice(b"}\r\n");
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

fn decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut d = [0u8; 20];
    let mut i = d.len();
    loop {
        i -= 1;
        d[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&d[i..]);
}

/// `PUB <subject> <#bytes>` and the payload.
pub fn write_pub(out: &mut Vec<u8>, subject: &[u8], payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    decimal(out, payload.len() as u64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `SUB <subject> <sid>`.
pub fn write_sub(out: &mut Vec<u8>, subject: &[u8], sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    decimal(out, sid);
    out.extend_from_slice(b"\r\n");
}

/// `UNSUB <sid>`.
pub fn write_unsub(out: &mut Vec<u8>, sid: u64) {
    out.extend_from_slice(b"UNSUB ");
    decimal(out, sid);
    out.extend_from_slice(b"\r\n");
}

/// `PING`.
pub fn write_ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

/// `PONG`.
pub fn write_pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// A top-level number field of an `INFO` object (`"max_payload":1048576`). A plain
/// scan, not a JSON parser: enough for the flat object servers send.
pub fn info_number(info: &[u8], key: &str) -> Option<u64> {
    let v = info_value(info, key)?;
    let end = v
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    number(&v[..end])
}

/// A top-level boolean field of an `INFO` object; absent is `false`.
pub fn info_bool(info: &[u8], key: &str) -> bool {
    info_value(info, key).is_some_and(|v| v.starts_with(b"true"))
}

fn info_value<'a>(info: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut quoted = Vec::with_capacity(key.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(key.as_bytes());
    quoted.push(b'"');
    let at = info.windows(quoted.len()).position(|w| w == quoted)?;
    let rest = trim(&info[at + quoted.len()..]);
    Some(trim(rest.strip_prefix(b":")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(buf: &[u8]) -> (ServerOp<'_>, usize) {
        match parse(buf, 1 << 20) {
            Ok(Status::Complete(x)) => x,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn control_operations_parse_in_any_case() {
        assert_eq!(one(b"PING\r\n"), (ServerOp::Ping, 6));
        assert_eq!(one(b"pong\r\nPING\r\n"), (ServerOp::Pong, 6));
        assert_eq!(one(b"+OK\r\n"), (ServerOp::Ok, 5));
        assert_eq!(
            one(b"-ERR 'Unknown Protocol Operation'\r\n").0,
            ServerOp::Err(b"Unknown Protocol Operation")
        );
        assert_eq!(
            one(b"INFO {\"max_payload\":1048576} \r\n").0,
            ServerOp::Info(b"{\"max_payload\":1048576}")
        );
    }

    #[test]
    fn msg_with_and_without_reply() {
        let (op, n) = one(b"MSG a.b 7 5\r\nhello\r\nPING\r\n");
        assert_eq!(
            op,
            ServerOp::Msg {
                subject: b"a.b",
                sid: 7,
                reply: None,
                payload: b"hello"
            }
        );
        assert_eq!(n, 20);
        let (op, _) = one(b"MSG a 1 r.x 0\r\n\r\n");
        assert_eq!(
            op,
            ServerOp::Msg {
                subject: b"a",
                sid: 1,
                reply: Some(b"r.x"),
                payload: b""
            }
        );
    }

    #[test]
    fn a_payload_may_hold_crlf_and_binary() {
        let (op, n) = one(b"MSG s 1 4\r\n\r\n\0\xff\r\n");
        assert_eq!(n, 17);
        let ServerOp::Msg { payload, .. } = op else {
            panic!()
        };
        assert_eq!(payload, b"\r\n\0\xff");
    }

    #[test]
    fn every_prefix_of_an_operation_is_partial() {
        let wire = b"MSG topic.x 12 5\r\nhello\r\n";
        for i in 0..wire.len() {
            assert_eq!(parse(&wire[..i], 100), Ok(Status::Partial), "{i}");
        }
        assert!(matches!(parse(wire, 100), Ok(Status::Complete(_))));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(parse(b"HMSG a 1 5 5\r\n", 9), Err(ParseError::UnknownOp));
        assert_eq!(parse(b"MSG a\r\n", 9), Err(ParseError::BadMsg));
        assert_eq!(parse(b"MSG a 1 x\r\n", 9), Err(ParseError::BadMsg));
        assert_eq!(parse(b"MSG a 1 r 2 3\r\n", 9), Err(ParseError::BadMsg));
        assert_eq!(
            parse(b"MSG a 1 10\r\n", 9),
            Err(ParseError::PayloadTooLarge)
        );
        assert_eq!(parse(b"MSG a 1 2\r\nabXY", 9), Err(ParseError::MissingCrlf));
        assert_eq!(
            parse(&vec![b'A'; MAX_LINE + 1], 9),
            Err(ParseError::LineTooLong)
        );
        assert_eq!(
            parse(b"MSG a 1 99999999999999999999\r\n", 9),
            Err(ParseError::BadMsg)
        );
    }

    #[test]
    fn client_operations_are_written_as_the_protocol_says() {
        let mut v = Vec::new();
        write_pub(&mut v, b"p.t", b"ab");
        write_sub(&mut v, b"p.t", 42);
        write_unsub(&mut v, 42);
        write_ping(&mut v);
        write_pong(&mut v);
        assert_eq!(
            v,
            b"PUB p.t 2\r\nab\r\nSUB p.t 42\r\nUNSUB 42\r\nPING\r\nPONG\r\n"
        );
        v.clear();
        write_connect(
            &mut v,
            &ConnectOptions {
                name: "n\"1",
                user: Some(("u", "p\\")),
                token: None,
            },
        );
        let s = String::from_utf8(v).unwrap();
        assert!(s.starts_with("CONNECT {") && s.ends_with("}\r\n"), "{s}");
        assert!(s.contains("\"echo\":false") && s.contains("\"verbose\":false"));
        assert!(s.contains("\"name\":\"n\\\"1\"") && s.contains("\"pass\":\"p\\\\\""));
    }

    #[test]
    fn info_fields() {
        let info =
            br#"{"server_id":"X","max_payload": 1048576,"tls_required":true,"headers":false}"#;
        assert_eq!(info_number(info, "max_payload"), Some(1 << 20));
        assert!(info_bool(info, "tls_required"));
        assert!(!info_bool(info, "headers"));
        assert!(!info_bool(info, "auth_required"));
        assert_eq!(info_number(info, "proto"), None);
    }
}
