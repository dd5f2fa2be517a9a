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

mod classify;
use classify::Classes;

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
        // a caller that breaks the same-start contract gets a rescan, never a panic
        let start = self.scanned.min(buf.len());
        let (blocks, tail) = buf[start..].as_chunks::<BLOCK>();
        let tail = (!tail.is_empty()).then(|| padded(tail));
        let mut lf_before = marks_before(buf, start, b'\n');
        for (i, block) in blocks.iter().chain(tail.as_ref()).enumerate() {
            let base = start + BLOCK * i;
            let lf = classify::equal(block, b'\n');
            if !self.first_line_done && lf != 0 {
                let nl = base + lf.trailing_zeros() as usize;
                if nl + 1 > limits.max_request_line {
                    return Err(HandshakeError::RequestLineTooLong);
                }
                self.first_line_done = true;
            }
            // an LF two bytes after another one, then an LF that ends CR LF CR LF; the LF
            // before it may end the first line, so every hit comes after the first line
            let pairs = lf & (lf << 2 | lf_before >> 62);
            if pairs != 0 {
                let cr = classify::equal(block, b'\r');
                let cr_before = marks_before(buf, base, b'\r');
                let ends = pairs & (cr << 1 | cr_before >> 63) & (cr << 3 | cr_before >> 61);
                if ends != 0 {
                    let nl = base + ends.trailing_zeros() as usize;
                    if nl + 1 > limits.max_head {
                        return Err(HandshakeError::HeadersTooLarge);
                    }
                    self.scanned = nl + 1;
                    return Ok(Status::Complete(nl + 1));
                }
            }
            lf_before = lf;
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

/// Which of the (up to) three bytes before `at` are `byte`, as bits 61-63 (byte
/// `at - 1` is bit 63), where they would sit in a block that ends at `at`.
#[inline(always)]
fn marks_before(buf: &[u8], at: usize, byte: u8) -> u64 {
    (1..=at.min(3)).fold(0, |m, back| {
        m | ((buf[at - back] == byte) as u64) << (64 - back)
    })
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

/// `TCHAR[c]`: whether `c` may appear in a token (RFC 9110 §5.6.2).
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let symbols = b"!#$%&'*+-.^_`|~";
    let mut i = 0;
    while i < symbols.len() {
        t[symbols[i] as usize] = true;
        i += 1;
    }
    t
};

#[inline]
fn is_tchar(c: u8) -> bool {
    TCHAR[c as usize]
}

/// Heads are scanned this many bytes at a time, one bit per byte in a `u64`.
const BLOCK: usize = 64;

/// The last bytes (fewer than [`BLOCK`]) of a buffer, padded with spaces, which no scan
/// here looks for.
#[inline(always)]
fn padded(tail: &[u8]) -> [u8; BLOCK] {
    let mut block = [b' '; BLOCK];
    block[..tail.len()].copy_from_slice(tail);
    block
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

/// A head without its final `\n\r\n`, and the same bytes as text when they are UTF-8
/// (the usual case): names, method and target are then cut from that text instead of
/// being validated one by one.
struct Body<'a> {
    bytes: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> Body<'a> {
    /// `bytes[start..end]` as text; callers only pass ranges they have checked to be
    /// ASCII, so this never fails.
    #[inline]
    fn str(&self, start: usize, end: usize) -> Result<&'a str, HandshakeError> {
        match self.text {
            Some(t) => t.get(start..end).ok_or(HandshakeError::Malformed),
            None => {
                core::str::from_utf8(&self.bytes[start..end]).map_err(|_| HandshakeError::Malformed)
            }
        }
    }
}

/// Splits a complete head into its body and its first line (CR removed; it starts at
/// offset 0 of the body), and appends its header fields to `headers`.
///
/// One pass over the body, a block at a time, finds every LF and, for each line, its
/// first colon and its first CR or NUL.
fn split_head<'a>(
    head: &'a [u8],
    max_headers: usize,
    headers: &mut Headers<'a>,
) -> Result<(Body<'a>, &'a [u8]), HandshakeError> {
    // every line, the last included, then ends in CR
    let bytes = head
        .strip_suffix(b"\n\r\n")
        .ok_or(HandshakeError::Malformed)?;
    let body = Body {
        bytes,
        text: simdutf8::basic::from_utf8(bytes).ok(),
    };
    let mut lines = Lines {
        body: &body,
        first: None,
        headers,
        max_headers,
    };
    let mut line = Line::at(0);
    let (blocks, tail) = bytes.as_chunks::<BLOCK>();
    for (i, block) in blocks.iter().enumerate() {
        lines.block(&mut line, BLOCK * i, classify::classes(block))?;
    }
    if !tail.is_empty() {
        let classes = classify::classes(&padded(tail));
        lines.block(&mut line, BLOCK * blocks.len(), classes)?;
    }
    // what follows the last LF is a line too
    lines.end(&line, bytes.len())?;
    let first = lines.first.ok_or(HandshakeError::Malformed)?;
    Ok((body, first))
}

/// Whether `bytes[start..end]` is all token bytes. A name of up to 32 bytes with 32
/// bytes of `bytes` from its start is checked 16 bytes at a time for the letters,
/// digits and `-` that almost every name is made of; anything else goes by the table.
#[inline(always)]
fn is_token(bytes: &[u8], start: usize, end: usize) -> bool {
    let len = end - start;
    if let Some(window) = bytes.get(start..start + 32) {
        if len <= 32 {
            let (lo, hi) = window.split_at(16);
            let lo: &[u8; 16] = lo.try_into().expect("16 bytes");
            let hi: &[u8; 16] = hi.try_into().expect("16 bytes");
            let simple = classify::name_bytes(lo) | classify::name_bytes(hi) << 16;
            let want = ((1u64 << len) - 1) as u32;
            if simple & want == want {
                return true;
            }
        }
    }
    bytes[start..end]
        .iter()
        .fold(true, |ok, &c| ok & is_tchar(c))
}

/// The line being scanned.
struct Line {
    start: usize,
    /// Its first colon, or `usize::MAX` while none has been seen.
    colon: usize,
    /// Its first CR or NUL, or `usize::MAX` while none has been seen.
    bad: usize,
}

impl Line {
    #[inline(always)]
    const fn at(start: usize) -> Line {
        Line {
            start,
            colon: usize::MAX,
            bad: usize::MAX,
        }
    }
}

/// What [`split_head`] has found so far.
struct Lines<'b, 'a> {
    body: &'b Body<'a>,
    first: Option<&'a [u8]>,
    headers: &'b mut Headers<'a>,
    max_headers: usize,
}

impl<'a> Lines<'_, 'a> {
    /// Goes through the block at offset `base`, given its classes; `line` is the line
    /// that the block starts in.
    #[inline(always)]
    fn block(
        &mut self,
        line: &mut Line,
        base: usize,
        classes: Classes,
    ) -> Result<(), HandshakeError> {
        let Classes {
            mut newlines,
            mut colons,
            mut bad,
        } = classes;
        loop {
            let lowest = newlines & newlines.wrapping_neg();
            // the bytes of this block before the next LF (all of them if there is none)
            let before = lowest.wrapping_sub(1);
            if line.colon == usize::MAX && colons & before != 0 {
                line.colon = base + (colons & before).trailing_zeros() as usize;
            }
            if line.bad == usize::MAX && bad & before != 0 {
                line.bad = base + (bad & before).trailing_zeros() as usize;
            }
            if newlines == 0 {
                return Ok(());
            }
            let end = base + newlines.trailing_zeros() as usize;
            self.end(line, end)?;
            *line = Line::at(end + 1);
            let done = lowest | before;
            newlines &= !done;
            colons &= !done;
            bad &= !done;
        }
    }

    /// Handles `line`, which ends (before its LF) at `end`: the first line becomes the
    /// request or status line, every other one a header field.
    #[inline(always)]
    fn end(&mut self, line: &Line, end: usize) -> Result<(), HandshakeError> {
        let bytes = self.body.bytes;
        if self.first.is_none() {
            self.first = Some(
                bytes[..end]
                    .strip_suffix(b"\r")
                    .ok_or(HandshakeError::Malformed)?,
            );
            return Ok(());
        }
        // the line ends in CR and holds no other CR, nor any NUL
        if end == line.start || bytes[end - 1] != b'\r' {
            return Err(HandshakeError::Malformed);
        }
        let cr = end - 1;
        if line.bad < cr {
            return Err(HandshakeError::Malformed);
        }
        // the name runs to the first colon and must be a non-empty token (this also
        // rejects obs-fold: a line starting with whitespace)
        if line.colon >= cr || line.colon == line.start {
            return Err(HandshakeError::Malformed);
        }
        if !is_token(bytes, line.start, line.colon) {
            return Err(HandshakeError::Malformed);
        }
        let value = trim(&bytes[line.colon + 1..cr]);
        if self.headers.len() == self.max_headers {
            return Err(HandshakeError::HeadersTooLarge);
        }
        self.headers.push(Header {
            name: self.body.str(line.start, line.colon)?,
            value,
        });
        Ok(())
    }
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
        .filter(move |h| eq_ignore_case(h.name.as_bytes(), name.as_bytes()))
        .map(|h| h.value)
}

/// The comma-separated tokens of every field called `name`, whitespace trimmed.
fn tokens<'h, 'a>(headers: &'h [Header<'a>], name: &'h str) -> impl Iterator<Item = &'a [u8]> + 'h {
    find(headers, name).flat_map(value_tokens)
}

/// The comma-separated tokens of one field value, whitespace trimmed.
fn value_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

fn has_token(headers: &[Header<'_>], name: &str, token: &str) -> bool {
    tokens(headers, name).any(|t| eq_ignore_case(t, token.as_bytes()))
}

/// Whether one field value lists `token` (what [`has_token`] asks of each field).
#[inline]
fn value_has_token(value: &[u8], token: &[u8]) -> bool {
    // usually the value is that one token
    eq_ignore_case(value, token)
        || value
            .split(|&b| b == b',')
            .map(trim)
            .any(|t| eq_ignore_case(t, token))
}

/// Whether the field name `name`, a token, is `known`, which has the same length (at
/// least 4) and only lowercase letters and `-`.
///
/// Setting bit 5 of every byte of a token lowercases its letters and maps no other
/// token byte to a lowercase letter or to `-` (only CR, which is no token byte, would
/// become `-`), so comparing with that bit set is exact here.
#[inline(always)]
fn is_token_named(name: &[u8], known: &[u8]) -> bool {
    const CASE: u64 = u64::from_ne_bytes([0x20; 8]);
    #[inline(always)]
    fn word(s: &[u8], i: usize) -> u64 {
        u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes"))
    }
    #[inline(always)]
    fn half(s: &[u8], i: usize) -> u64 {
        u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes")) as u64
    }
    debug_assert!(name.iter().all(|&c| is_tchar(c)));
    debug_assert!(known.iter().all(|&c| c == b'-' || c.is_ascii_lowercase()));
    let n = name.len();
    debug_assert!(n == known.len() && n >= 4);
    let mut i = 0;
    while i + 8 < n {
        if word(name, i) | CASE != word(known, i) {
            return false;
        }
        i += 8;
    }
    if n >= 8 {
        word(name, n - 8) | CASE == word(known, n - 8)
    } else {
        const CASE4: u64 = CASE >> 32;
        half(name, 0) | CASE4 == half(known, 0) && half(name, n - 4) | CASE4 == half(known, n - 4)
    }
}

/// `a.eq_ignore_ascii_case(b)`, a word at a time.
#[inline(always)]
fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    /// The word at `i` of `s`, lowercased.
    #[inline(always)]
    fn word(s: &[u8], i: usize) -> u64 {
        lowercase(u64::from_le_bytes(s[i..i + 8].try_into().expect("8 bytes")))
    }
    #[inline(always)]
    fn half(s: &[u8], i: usize) -> u64 {
        lowercase(u32::from_le_bytes(s[i..i + 4].try_into().expect("4 bytes")) as u64)
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n >= 8 {
        // whole words, then the last eight bytes (which may overlap the one before)
        let mut i = 0;
        while i + 8 < n {
            if word(a, i) != word(b, i) {
                return false;
            }
            i += 8;
        }
        word(a, n - 8) == word(b, n - 8)
    } else if n >= 4 {
        half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
    } else {
        a.eq_ignore_ascii_case(b)
    }
}

/// Every ASCII capital letter in the word `w` made small, all other bytes unchanged.
#[inline(always)]
const fn lowercase(w: u64) -> u64 {
    const LO: u64 = u64::from_ne_bytes([0x01; 8]);
    const LOW7: u64 = u64::from_ne_bytes([0x7f; 8]);
    const HI: u64 = u64::from_ne_bytes([0x80; 8]);
    let low = w & LOW7;
    // high bit of each byte: at least `A`, above `Z`; no carry leaves a byte
    let from_a = low.wrapping_add(LO * (0x80 - b'A' as u64));
    let past_z = low.wrapping_add(LO * (0x80 - b'Z' as u64 - 1));
    let capital = from_a & !past_z & !w & HI;
    w | capital >> 2
}

impl<'a> Request<'a> {
    /// Parses a complete head (as delimited by [`HeadScanner`]).
    pub fn parse(head: &'a [u8], limits: &HeadLimits) -> Result<Request<'a>, HandshakeError> {
        let mut req = Request {
            method: "",
            target: "",
            minor_version: 0,
            headers: Headers::new(),
        };
        let (body, line) = split_head(head, limits.max_headers, &mut req.headers)?;
        // exactly two spaces: method, target, version
        let (Some(sp1), Some(sp2)) = (
            line.iter().position(|&b| b == b' '),
            line.iter().rposition(|&b| b == b' '),
        ) else {
            return Err(HandshakeError::Malformed);
        };
        if sp1 == sp2 {
            return Err(HandshakeError::Malformed);
        }
        // a third space would be in the target, which the check below refuses
        let (method, target, version) = (&line[..sp1], &line[sp1 + 1..sp2], &line[sp2 + 1..]);
        if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
            return Err(HandshakeError::Malformed);
        }
        if target.is_empty() || !target.iter().all(|&c| c.is_ascii_graphic()) {
            return Err(HandshakeError::Malformed);
        }
        req.minor_version = parse_version(version)?;
        // both checked to be ASCII above; the first line starts the body
        req.method = body.str(0, sp1)?;
        req.target = body.str(sp1 + 1, sp2)?;
        Ok(req)
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
        let mut headers = Headers::new();
        let (_, line) = split_head(head, limits.max_headers, &mut headers)?;
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

    /// The parameter text after the extension name, as received (from just after the
    /// first `;`, untrimmed; empty when there are none), for an extension that checks its
    /// parameters strictly (e.g. [`super::deflate`], which declines malformed offers).
    pub fn raw_params(&self) -> &'a [u8] {
        self.raw_params
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
                origin.is_some_and(|o| list.iter().any(|a| eq_ignore_case(a.as_bytes(), o)))
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
    // one pass over the fields gathers what the checks below need, in their order
    let mut upgrade = false;
    let mut host = false;
    let mut connection_upgrade = false;
    let (mut keys, mut key) = (0u32, None);
    let (mut versions, mut version) = (0u32, None);
    let (mut origins, mut origin) = (0u32, None);
    let (mut protocols, mut first_protocol) = (0u32, None);
    for (i, h) in req.headers.iter().enumerate() {
        let name = h.name.as_bytes();
        let is = |known: &[u8]| is_token_named(name, known);
        match name.len() {
            4 if is(b"host") => host = true,
            6 if is(b"origin") => {
                origins += 1;
                origin = origin.or(Some(h.value));
            }
            7 if is(b"upgrade") => upgrade = upgrade || value_has_token(h.value, b"websocket"),
            10 if is(b"connection") => {
                connection_upgrade = connection_upgrade || value_has_token(h.value, b"upgrade");
            }
            17 if is(b"sec-websocket-key") => {
                keys += 1;
                key = key.or(Some(h.value));
            }
            21 if is(b"sec-websocket-version") => {
                versions += 1;
                version = version.or(Some(h.value));
            }
            22 if is(b"sec-websocket-protocol") => {
                protocols += 1;
                first_protocol = first_protocol.or(Some(i));
            }
            _ => {}
        }
    }
    if !upgrade {
        return Ok(Negotiation::Http);
    }
    if req.method != "GET" {
        return Err(HandshakeError::MethodNotAllowed);
    }
    if req.minor_version < 1 {
        return Err(HandshakeError::Malformed);
    }
    if !host {
        return Err(HandshakeError::MissingHost);
    }
    if !connection_upgrade {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    let key = match key {
        Some(k) if keys == 1 && base64::is_16_bytes(k) => k,
        _ => return Err(HandshakeError::InvalidKey),
    };
    if versions != 1 || version != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    if origins > 1 || !policy.origins.allows(origin) {
        return Err(HandshakeError::ForbiddenOrigin);
    }
    let protocol = first_protocol.and_then(|first| {
        // the fields before the first Sec-WebSocket-Protocol cannot offer any; a token
        // that is not UTF-8 cannot equal a protocol
        let offered = &req.headers[first..];
        let offers = |p: &String| match protocols {
            1 => value_tokens(offered[0].value).any(|o| o == p.as_bytes()),
            _ => tokens(offered, "sec-websocket-protocol").any(|o| o == p.as_bytes()),
        };
        policy
            .protocols
            .iter()
            .find(|p| offers(p))
            .map(String::as_str)
    });
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
    if value.bytes().any(|c| c == b'\r' || c == b'\n') {
        out.extend(value.bytes().filter(|&c| c != b'\r' && c != b'\n'));
    } else {
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase (RFC 9110 §15) for the statuses this crate sends and those an
/// application's `Reject` or `HttpResponse` commonly carries; "Error" for the rest.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Appends an HTTP response that closes the connection, with `body` as plain text
/// unless `extra` names a `Content-Type` (which then replaces the default one).
/// 426 carries `Sec-WebSocket-Version: 13` (and `Upgrade: websocket`); 405 carries
/// `Allow: GET`.
pub fn write_error_response(out: &mut Vec<u8>, status: u16, body: &str, extra: &[(&str, &str)]) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        reason_phrase(status),
        body.len()
    );
    if !extra
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        out.extend_from_slice(b"Content-Type: text/plain; charset=utf-8\r\n");
    }
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

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    use crate::proto::test_rng::Rng;

    #[test]
    fn eq_ignore_case_matches_std() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let alphabet = b"aAzZ@[`{-_09\x00\x7f\x80\xc1\xe1\xff";
        for _ in 0..20_000 {
            let n = (rng.next() % 24) as usize;
            let a: Vec<u8> = (0..n)
                .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
                .collect();
            let mut b = a.clone();
            for c in b.iter_mut() {
                match rng.next() % 4 {
                    0 => *c = c.to_ascii_uppercase(),
                    1 => *c = c.to_ascii_lowercase(),
                    2 if rng.next().is_multiple_of(8) => {
                        *c = alphabet[(rng.next() % alphabet.len() as u64) as usize]
                    }
                    _ => {}
                }
            }
            if rng.next().is_multiple_of(16) {
                b.pop();
            }
            assert_eq!(
                eq_ignore_case(&a, &b),
                a.eq_ignore_ascii_case(&b),
                "{a:?} {b:?}"
            );
        }
        for c in 0..=255u8 {
            let w = u64::from_le_bytes([c; 8]);
            assert_eq!(
                lowercase(w),
                u64::from_le_bytes([c.to_ascii_lowercase(); 8])
            );
        }
    }

    /// A head's first line and header fields.
    type Split<'a> = (&'a [u8], Vec<Header<'a>>);

    /// `HeadScanner::feed` as first written: one LF at a time.
    fn reference_feed(
        scanner: &mut HeadScanner,
        buf: &[u8],
        limits: &HeadLimits,
    ) -> Result<Status<usize>, HandshakeError> {
        let mut i = scanner.scanned.min(buf.len());
        while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
            let nl = i + off;
            if !scanner.first_line_done {
                if nl + 1 > limits.max_request_line {
                    return Err(HandshakeError::RequestLineTooLong);
                }
                scanner.first_line_done = true;
            } else if nl >= 3 && &buf[nl - 3..nl] == b"\r\n\r" {
                if nl + 1 > limits.max_head {
                    return Err(HandshakeError::HeadersTooLarge);
                }
                scanner.scanned = nl + 1;
                return Ok(Status::Complete(nl + 1));
            }
            i = nl + 1;
        }
        scanner.scanned = buf.len();
        if !scanner.first_line_done && buf.len() >= limits.max_request_line {
            return Err(HandshakeError::RequestLineTooLong);
        }
        if buf.len() >= limits.max_head {
            return Err(HandshakeError::HeadersTooLarge);
        }
        Ok(Status::Partial)
    }

    /// `split_head` as first written: split on LF, then look at each line.
    fn reference_split(head: &[u8], max_headers: usize) -> Result<Split<'_>, HandshakeError> {
        let body = head
            .strip_suffix(b"\n\r\n")
            .ok_or(HandshakeError::Malformed)?;
        let mut lines = body.split(|&b| b == b'\n');
        let first = lines.next().ok_or(HandshakeError::Malformed)?;
        let first = first.strip_suffix(b"\r").ok_or(HandshakeError::Malformed)?;
        let mut headers = Vec::new();
        for line in lines {
            let line = line.strip_suffix(b"\r").ok_or(HandshakeError::Malformed)?;
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or(HandshakeError::Malformed)?;
            let name = &line[..colon];
            if name.is_empty()
                || !name
                    .iter()
                    .all(|&c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
            {
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

    /// What `negotiate` decided: the accept value and subprotocol of an upgrade.
    type Outcome<'p> = Result<Option<([u8; 28], Option<&'p str>)>, HandshakeError>;

    /// `negotiate` as first written, on the slower public lookups.
    fn reference_negotiate<'p>(req: &Request<'_>, policy: &'p HandshakePolicy) -> Outcome<'p> {
        if !req.is_upgrade() {
            return Ok(None);
        }
        if req.method() != "GET" {
            return Err(HandshakeError::MethodNotAllowed);
        }
        if req.minor_version() < 1 {
            return Err(HandshakeError::Malformed);
        }
        if req.header("host").is_none() {
            return Err(HandshakeError::MissingHost);
        }
        if !has_token(req.headers(), "connection", "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let mut keys = find(req.headers(), "sec-websocket-key");
        let key = match (keys.next(), keys.next()) {
            (Some(k), None) if base64::is_16_bytes(k) => k,
            _ => return Err(HandshakeError::InvalidKey),
        };
        let mut versions = find(req.headers(), "sec-websocket-version");
        match (versions.next(), versions.next()) {
            (Some(b"13"), None) => {}
            _ => return Err(HandshakeError::UnsupportedVersion),
        }
        let mut origins = find(req.headers(), "origin");
        let origin = origins.next();
        if origins.next().is_some() || !policy.origins.allows(origin) {
            return Err(HandshakeError::ForbiddenOrigin);
        }
        let protocol = policy
            .protocols
            .iter()
            .find(|p| req.protocols().any(|o| o == p.as_str()))
            .map(String::as_str);
        Ok(Some((accept_key(key), protocol)))
    }

    /// Random edits of a few requests: the fast paths against the first versions.
    #[test]
    fn fast_paths_match_reference() {
        const SEEDS: &[&[u8]] = &[
            b"GET /chat?room=lobby HTTP/1.1\r\nHost: app.example.com\r\nConnection: Upgrade\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nUpgrade: websocket\r\n\
Origin: https://app.example.com\r\nSec-WebSocket-Version: 13\r\nCookie: a=1; b=2\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: chat.v1, chat.v2\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\
sec-websocket-protocol: a\r\nsec-websocket-protocol: chat.v3 , b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nOrigin: https://APP.example.com\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"POST /x HTTP/1.0\r\nX-\xce\xba: \xff caf\xc3\xa9\t \r\nUpgrade: websocket\r\n\r\n",
        ];
        const EDITS: &[u8] = b" \t\r\n:,;=\"\x00\xff\xceAz0-_/.GETHTTP13";
        let mut rng = Rng(0x0123_4567_89ab_cdef);
        let mut pick = |n: usize| (rng.next() % n as u64) as usize;
        let policies = [
            HandshakePolicy::default(),
            HandshakePolicy {
                origins: OriginPolicy::AllowList(vec!["https://app.example.com".into()]),
                protocols: vec!["chat.v3".into(), "chat.v1".into(), "b".into()],
                limits: HeadLimits {
                    max_request_line: 40,
                    max_head: 300,
                    max_headers: 5,
                },
            },
        ];
        let iterations = if cfg!(miri) { 50 } else { 20_000 };
        for _ in 0..iterations {
            let mut input = SEEDS[pick(SEEDS.len())].to_vec();
            for _ in 0..pick(4) {
                let at = pick(input.len());
                match pick(4) {
                    0 => input[at] = EDITS[pick(EDITS.len())],
                    1 => input.insert(at, EDITS[pick(EDITS.len())]),
                    2 => {
                        input.remove(at);
                    }
                    _ => input[at] = input[at].to_ascii_uppercase(),
                }
            }
            let policy = &policies[pick(2)];
            let limits = &policy.limits;
            let (mut fast, mut slow) = (HeadScanner::new(), HeadScanner::new());
            let mut cut = 0;
            while cut < input.len() {
                cut = (cut + 1 + pick(80)).min(input.len());
                let got = fast.feed(&input[..cut], limits);
                assert_eq!(got, reference_feed(&mut slow, &input[..cut], limits));
                assert_eq!(
                    (fast.scanned, fast.first_line_done),
                    (slow.scanned, slow.first_line_done)
                );
                if got != Ok(Status::Partial) {
                    break;
                }
            }
            let mut headers = Headers::new();
            let got = split_head(&input, limits.max_headers, &mut headers)
                .map(|(_, first)| (first, headers.to_vec()));
            assert_eq!(got, reference_split(&input, limits.max_headers));
            if let Ok(req) = Request::parse(&input, limits) {
                let got = negotiate(&req, policy).map(|n| match n {
                    Negotiation::Upgrade(a) => Some((a.accept, a.protocol)),
                    Negotiation::Http => None,
                });
                assert_eq!(got, reference_negotiate(&req, policy));
            };
        }
    }
}
