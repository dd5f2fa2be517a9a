//! The opening handshake (RFC 6455 §4) over HTTP/1.1, both roles, without I/O.
//!
//! Server role, in order:
//! 1. [`HeadScanner::feed`] finds the end of the request head in the bytes received so
//!    far, remembering how far it looked (input is never re-scanned from the start), and
//!    enforces the request-line (414) and head-size (431) limits.
//! 2. [`Request::parse`] splits the head into method, target and headers, all borrowed.
//! 3. [`negotiate`] classifies it as plain HTTP or checks it as an upgrade, applying the
//!    Origin policy and choosing a subprotocol; it yields the `Sec-WebSocket-Accept`
//!    value, computed without allocation.
//! 4. [`write_accept_response`] or [`write_error_response`] appends the response to the
//!    caller's buffer.
//!
//! Client role: [`write_client_request`] and [`check_response`].

use smallvec::SmallVec;

use super::base64;
use super::error::HandshakeError;
use super::frame::Status;

/// The GUID appended to the key before hashing (RFC 6455 §1.3).
pub const GUID: &[u8; 36] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    let digest = h.finalize();
    let mut out = [0u8; 28];
    base64::encode_into(&digest, &mut out);
    out
}

/// Size limits for a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// Longest request line, CRLF included (414 past it). Default 8 KiB.
    pub max_request_line: usize,
    /// Longest head, request line and headers included (431 past it). Default 16 KiB.
    pub max_head: usize,
    /// Most header fields (431 past it). Default 64.
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_request_line: 8 * 1024,
            max_head: 16 * 1024,
            max_headers: 64,
        }
    }
}

/// Finds the end of an HTTP head (`\r\n\r\n`) in a growing buffer, scanning each byte
/// once across calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadScanner {
    scanned: usize,
    first_line_done: bool,
}

impl HeadScanner {
    /// A scanner at the start of a head.
    pub const fn new() -> Self {
        HeadScanner {
            scanned: 0,
            first_line_done: false,
        }
    }

    /// Looks at `buf` (everything received so far, same start as on earlier calls) and
    /// returns the head's length, CRLFCRLF included, once it is complete.
    pub fn feed(
        &mut self,
        buf: &[u8],
        limits: &HeadLimits,
    ) -> Result<Status<usize>, HandshakeError> {
        let mut i = self.scanned;
        while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
            let nl = i + off;
            if !self.first_line_done {
                if nl + 1 > limits.max_request_line {
                    return Err(HandshakeError::RequestLineTooLong);
                }
                self.first_line_done = true;
            } else if nl >= 3 && &buf[nl - 3..nl] == b"\r\n\r" {
                if nl + 1 > limits.max_head {
                    return Err(HandshakeError::HeadersTooLarge);
                }
                self.scanned = nl + 1;
                return Ok(Status::Complete(nl + 1));
            }
            i = nl + 1;
        }
        self.scanned = buf.len();
        if !self.first_line_done && buf.len() >= limits.max_request_line {
            return Err(HandshakeError::RequestLineTooLong);
        }
        if buf.len() >= limits.max_head {
            return Err(HandshakeError::HeadersTooLarge);
        }
        Ok(Status::Partial)
    }
}

/// One header field, borrowed from the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Field name as sent (compare case-insensitively).
    pub name: &'a str,
    /// Field value with surrounding whitespace removed.
    pub value: &'a [u8],
}

type Headers<'a> = SmallVec<[Header<'a>; 16]>;

/// A parsed HTTP request head; every part borrows from the receive buffer.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    method: &'a str,
    target: &'a str,
    minor_version: u8,
    headers: Headers<'a>,
}

/// A parsed HTTP response head (client role).
#[derive(Clone, Debug)]
pub struct Response<'a> {
    status: u16,
    headers: Headers<'a>,
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Splits a complete head into its first line and its header fields.
fn split_head<'a>(
    head: &'a [u8],
    max_headers: usize,
) -> Result<(&'a [u8], Headers<'a>), HandshakeError> {
    // every line, the last included, then ends in CR
    let body = head
        .strip_suffix(b"\n\r\n")
        .ok_or(HandshakeError::Malformed)?;
    let mut lines = body.split(|&b| b == b'\n');
    let first = lines.next().ok_or(HandshakeError::Malformed)?;
    let first = first.strip_suffix(b"\r").ok_or(HandshakeError::Malformed)?;
    let mut headers = Headers::new();
    for line in lines {
        let line = line.strip_suffix(b"\r").ok_or(HandshakeError::Malformed)?;
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HandshakeError::Malformed)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            // also rejects obs-fold (a line starting with whitespace)
            return Err(HandshakeError::Malformed);
        }
        let value = trim(&line[colon + 1..]);
        if value.iter().any(|&c| c == b'\r' || c == 0) {
            return Err(HandshakeError::Malformed);
        }
        if headers.len() == max_headers {
            return Err(HandshakeError::HeadersTooLarge);
        }
        headers.push(Header {
            name: core::str::from_utf8(name).map_err(|_| HandshakeError::Malformed)?,
            value,
        });
    }
    Ok((first, headers))
}

fn parse_version(v: &[u8]) -> Result<u8, HandshakeError> {
    match v {
        b"HTTP/1.1" => Ok(1),
        b"HTTP/1.0" => Ok(0),
        [b'H', b'T', b'T', b'P', b'/', d, b'.', _] if d.is_ascii_digit() => {
            Err(HandshakeError::UnsupportedHttpVersion)
        }
        _ => Err(HandshakeError::Malformed),
    }
}

fn find<'h, 'a>(headers: &'h [Header<'a>], name: &'h str) -> impl Iterator<Item = &'a [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The comma-separated tokens of every field called `name`, whitespace trimmed.
fn tokens<'h, 'a>(headers: &'h [Header<'a>], name: &'h str) -> impl Iterator<Item = &'a [u8]> + 'h {
    find(headers, name)
        .flat_map(|v| v.split(|&b| b == b','))
        .map(trim)
        .filter(|t| !t.is_empty())
}

fn has_token(headers: &[Header<'_>], name: &str, token: &str) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

impl<'a> Request<'a> {
    /// Parses a complete head (as delimited by [`HeadScanner`]).
    pub fn parse(head: &'a [u8], limits: &HeadLimits) -> Result<Request<'a>, HandshakeError> {
        let (line, headers) = split_head(head, limits.max_headers)?;
        let mut parts = line.split(|&b| b == b' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(HandshakeError::Malformed);
        };
        if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
            return Err(HandshakeError::Malformed);
        }
        if target.is_empty() || !target.iter().all(|&c| c.is_ascii_graphic()) {
            return Err(HandshakeError::Malformed);
        }
        let minor_version = parse_version(version)?;
        Ok(Request {
            // both checked to be ASCII above
            method: core::str::from_utf8(method).map_err(|_| HandshakeError::Malformed)?,
            target: core::str::from_utf8(target).map_err(|_| HandshakeError::Malformed)?,
            minor_version,
            headers,
        })
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request target, e.g. `/chat?room=1`.
    pub fn target(&self) -> &'a str {
        self.target
    }

    /// The path part of the target (before `?`).
    pub fn path(&self) -> &'a str {
        self.target.split('?').next().unwrap_or(self.target)
    }

    /// The query part of the target (after `?`), if any.
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub fn minor_version(&self) -> u8 {
        self.minor_version
    }

    /// Every header field in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }

    /// The first field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        find(&self.headers, name).next()
    }

    /// The first field called `name`, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| core::str::from_utf8(v).ok())
    }

    /// Whether this request asks for a WebSocket upgrade (`Upgrade: websocket`).
    pub fn is_upgrade(&self) -> bool {
        has_token(&self.headers, "upgrade", "websocket")
    }

    /// The subprotocols offered in `Sec-WebSocket-Protocol`, in the client's order.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + '_ {
        tokens(&self.headers, "sec-websocket-protocol").filter_map(|t| core::str::from_utf8(t).ok())
    }

    /// The extensions offered in `Sec-WebSocket-Extensions`, in order.
    pub fn extensions(&self) -> impl Iterator<Item = ExtensionOffer<'a>> + '_ {
        find(&self.headers, "sec-websocket-extensions").flat_map(ExtensionOffer::parse_list)
    }
}

impl<'a> Response<'a> {
    /// Parses a complete response head.
    pub fn parse(head: &'a [u8], limits: &HeadLimits) -> Result<Response<'a>, HandshakeError> {
        let (line, headers) = split_head(head, limits.max_headers)?;
        let mut parts = line.splitn(3, |&b| b == b' ');
        let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
            return Err(HandshakeError::Malformed);
        };
        parse_version(version)?;
        let status = match code {
            [a, b, c] if code.iter().all(u8::is_ascii_digit) => {
                (a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16
            }
            _ => return Err(HandshakeError::Malformed),
        };
        Ok(Response { status, headers })
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Every header field in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }

    /// The first field called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        find(&self.headers, name).next()
    }
}

/// One offered (or accepted) extension: a name and its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionOffer<'a> {
    /// The extension's name, e.g. `permessage-deflate`.
    pub name: &'a str,
    raw_params: &'a [u8],
}

impl<'a> ExtensionOffer<'a> {
    /// Splits one `Sec-WebSocket-Extensions` value into offers (commas inside quoted
    /// parameter values do not split).
    pub fn parse_list(value: &'a [u8]) -> impl Iterator<Item = ExtensionOffer<'a>> {
        let mut rest = value;
        core::iter::from_fn(move || loop {
            if rest.is_empty() {
                return None;
            }
            let mut quoted = false;
            let end = rest
                .iter()
                .position(|&c| {
                    if c == b'"' {
                        quoted = !quoted;
                    }
                    c == b',' && !quoted
                })
                .unwrap_or(rest.len());
            let item = trim(&rest[..end]);
            rest = rest.get(end + 1..).unwrap_or(&[]);
            let (name, params) = match item.iter().position(|&c| c == b';') {
                Some(p) => (trim(&item[..p]), &item[p + 1..]),
                None => (item, &[][..]),
            };
            if name.is_empty() {
                continue;
            }
            if let Ok(name) = core::str::from_utf8(name) {
                return Some(ExtensionOffer {
                    name,
                    raw_params: params,
                });
            }
        })
    }

    /// The parameters: `(name, Some(value))` or `(name, None)` for a bare one; quotes
    /// around a value are removed.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        self.raw_params
            .split(|&c| c == b';')
            .map(trim)
            .filter(|p| !p.is_empty())
            .filter_map(|p| {
                let (k, v) = match p.iter().position(|&c| c == b'=') {
                    Some(e) => {
                        let v = trim(&p[e + 1..]);
                        let v = v
                            .strip_prefix(b"\"")
                            .and_then(|v| v.strip_suffix(b"\""))
                            .unwrap_or(v);
                        (trim(&p[..e]), Some(v))
                    }
                    None => (p, None),
                };
                let k = core::str::from_utf8(k).ok()?;
                let v = match v {
                    Some(v) => Some(core::str::from_utf8(v).ok()?),
                    None => None,
                };
                Some((k, v))
            })
    }
}

/// Which `Origin` values the server accepts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Any origin, or none (the default: non-browser clients send none).
    #[default]
    Any,
    /// Only these origins (compared ASCII case-insensitively, e.g.
    /// `https://example.com`); a request without `Origin` is refused too (403).
    AllowList(Vec<String>),
}

impl OriginPolicy {
    /// Whether a request with this `Origin` value (or none) is allowed.
    pub fn allows(&self, origin: Option<&[u8]>) -> bool {
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::AllowList(list) => {
                origin.is_some_and(|o| list.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(o)))
            }
        }
    }
}

/// What the server accepts in a handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandshakePolicy {
    /// The Origin policy.
    pub origins: OriginPolicy,
    /// Supported subprotocols, most preferred first.
    pub protocols: Vec<String>,
    /// Head size limits.
    pub limits: HeadLimits,
}

/// A request that passed the upgrade checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted<'a> {
    /// The `Sec-WebSocket-Accept` value to send.
    pub accept: [u8; 28],
    /// The subprotocol chosen, borrowed from the policy.
    pub protocol: Option<&'a str>,
}

/// A request head classified by [`negotiate`].
#[derive(Debug)]
pub enum Negotiation<'p> {
    /// A valid upgrade request.
    Upgrade(Accepted<'p>),
    /// Not an upgrade request: plain HTTP for the application to answer.
    Http,
}

/// Checks a parsed request against RFC 6455 §4.2.1 and the policy.
///
/// A request with no `Upgrade: websocket` is [`Negotiation::Http`]. An upgrade request
/// must be GET (405), HTTP/1.1 with a Host (400), list `Upgrade` in `Connection` (400),
/// carry a `Sec-WebSocket-Key` that decodes to 16 bytes (400), ask for version 13 (426),
/// and pass the Origin policy (403). The subprotocol is the server's most preferred one
/// that the client offered.
pub fn negotiate<'p>(
    req: &Request<'_>,
    policy: &'p HandshakePolicy,
) -> Result<Negotiation<'p>, HandshakeError> {
    if !req.is_upgrade() {
        return Ok(Negotiation::Http);
    }
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if req.minor_version < 1 {
        return Err(HandshakeError::Malformed);
    }
    if req.header("host").is_none() {
        return Err(HandshakeError::MissingHost);
    }
    if !has_token(&req.headers, "connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let mut keys = find(&req.headers, "sec-websocket-key");
    let key = match (keys.next(), keys.next()) {
        (Some(k), None) if base64::is_16_bytes(k) => k,
        _ => return Err(HandshakeError::InvalidKey),
    };
    let mut versions = find(&req.headers, "sec-websocket-version");
    match (versions.next(), versions.next()) {
        (Some(b"13"), None) => {}
        _ => return Err(HandshakeError::UnsupportedVersion),
    }
    let mut origins = find(&req.headers, "origin");
    let origin = origins.next();
    if origins.next().is_some() || !policy.origins.allows(origin) {
        return Err(HandshakeError::ForbiddenOrigin);
    }
    let protocol = policy
        .protocols
        .iter()
        .find(|p| req.protocols().any(|o| o == p.as_str()))
        .map(String::as_str);
    Ok(Negotiation::Upgrade(Accepted {
        accept: accept_key(key),
        protocol,
    }))
}

/// Appends a `101 Switching Protocols` response to `out`. `extensions` is the
/// `Sec-WebSocket-Extensions` value agreed, if any; `extra` are more header fields
/// (e.g. `Set-Cookie`).
pub fn write_accept_response(
    out: &mut Vec<u8>,
    accepted: &Accepted<'_>,
    extensions: Option<&str>,
    extra: &[(&str, &str)],
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accepted.accept);
    out.extend_from_slice(b"\r\n");
    if let Some(p) = accepted.protocol {
        push_header(out, "Sec-WebSocket-Protocol", p);
    }
    if let Some(e) = extensions {
        push_header(out, "Sec-WebSocket-Extensions", e);
    }
    for (k, v) in extra {
        push_header(out, k, v);
    }
    out.extend_from_slice(b"\r\n");
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    // a value may not break the response: drop CR and LF
    out.extend(value.bytes().filter(|&c| c != b'\r' && c != b'\n'));
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for the statuses this crate sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Appends an HTTP response that closes the connection, with `body` as plain text.
/// 426 carries `Sec-WebSocket-Version: 13` (and `Upgrade: websocket`); 405 carries
/// `Allow: GET`.
pub fn write_error_response(out: &mut Vec<u8>, status: u16, body: &str, extra: &[(&str, &str)]) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
        reason_phrase(status),
        body.len()
    );
    match status {
        426 => out.extend_from_slice(b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"),
        405 => out.extend_from_slice(b"Allow: GET\r\n"),
        _ => {}
    }
    for (k, v) in extra {
        push_header(out, k, v);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// What a client offers in its opening request.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientRequest<'a> {
    /// `Host` value, e.g. `example.com:9001`.
    pub host: &'a str,
    /// Request target, e.g. `/chat`.
    pub path: &'a str,
    /// Subprotocols to offer, most preferred first.
    pub protocols: &'a [&'a str],
    /// `Sec-WebSocket-Extensions` to offer.
    pub extensions: Option<&'a str>,
    /// `Origin` to send.
    pub origin: Option<&'a str>,
    /// More header fields.
    pub extra: &'a [(&'a str, &'a str)],
}

/// Appends the client's opening request to `out`, with `nonce` (16 random bytes: the
/// caller supplies the randomness) as the key. Returns the accept value to expect.
pub fn write_client_request(
    out: &mut Vec<u8>,
    req: &ClientRequest<'_>,
    nonce: [u8; 16],
) -> [u8; 28] {
    let mut key = [0u8; 24];
    base64::encode_into(&nonce, &mut key);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(if req.path.is_empty() {
        b"/"
    } else {
        req.path.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_header(out, "Host", req.host);
    out.extend_from_slice(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ");
    out.extend_from_slice(&key);
    out.extend_from_slice(b"\r\n");
    if !req.protocols.is_empty() {
        push_header(out, "Sec-WebSocket-Protocol", &req.protocols.join(", "));
    }
    if let Some(e) = req.extensions {
        push_header(out, "Sec-WebSocket-Extensions", e);
    }
    if let Some(o) = req.origin {
        push_header(out, "Origin", o);
    }
    for (k, v) in req.extra {
        push_header(out, k, v);
    }
    out.extend_from_slice(b"\r\n");
    accept_key(&key)
}

/// What the server agreed to, from the client's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAccepted<'a> {
    /// The subprotocol the server chose.
    pub protocol: Option<&'a str>,
    /// The raw `Sec-WebSocket-Extensions` the server answered with.
    pub extensions: Option<&'a [u8]>,
}

/// Checks the server's response (RFC 6455 §4.1): status 101, `Upgrade: websocket`,
/// `Connection: Upgrade`, the accept value, and a subprotocol among those offered.
/// Extensions are returned for the caller to check against its offer.
pub fn check_response<'a>(
    resp: &Response<'a>,
    expected_accept: &[u8; 28],
    offered_protocols: &[&str],
) -> Result<ClientAccepted<'a>, HandshakeError> {
    if resp.status != 101 {
        return Err(HandshakeError::BadStatus(resp.status));
    }
    if !has_token(&resp.headers, "upgrade", "websocket")
        || !has_token(&resp.headers, "connection", "upgrade")
    {
        return Err(HandshakeError::MissingUpgrade);
    }
    if resp.header("sec-websocket-accept") != Some(&expected_accept[..]) {
        return Err(HandshakeError::AcceptMismatch);
    }
    let protocol = match resp.header("sec-websocket-protocol") {
        None => None,
        Some(p) => {
            let p = core::str::from_utf8(p).map_err(|_| HandshakeError::UnrequestedNegotiation)?;
            if !offered_protocols.contains(&p) {
                return Err(HandshakeError::UnrequestedNegotiation);
            }
            Some(p)
        }
    };
    Ok(ClientAccepted {
        protocol,
        extensions: resp.header("sec-websocket-extensions"),
    })
}

#[cfg(test)]
mod tests;
