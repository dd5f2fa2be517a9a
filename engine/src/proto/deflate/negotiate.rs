//! permessage-deflate negotiation (RFC 7692 §7): the server picks an offer and writes
//! its answer; the client writes its offer and checks the server's answer.
//!
//! Pure functions over parsed header values: no allocation, no I/O. A malformed or
//! unsupported offer is declined (the next one is tried), never an error: the
//! connection then simply runs without compression.

use super::super::conn::Role;
use super::super::error::HandshakeError;
use super::super::handshake::ExtensionOffer;
use super::codec::{Deflater, Inflater};

/// The extension's registered name.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// How a server uses permessage-deflate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeflateMode {
    /// Never negotiated (the default).
    #[default]
    Off,
    /// No context takeover in either direction: the server always answers
    /// `server_no_context_takeover; client_no_context_takeover`, so one deflater and one
    /// inflater per worker (per window size) serve every connection and an idle
    /// connection holds no compression memory at all.
    Shared,
    /// Context takeover kept unless the client asks otherwise: better ratios on
    /// similar messages, at the price of a deflater and an inflater per connection
    /// (see `docs/deflate.md` for their sizes).
    Dedicated,
}

/// The server's permessage-deflate policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeflateConfig {
    /// Whether and how to negotiate.
    pub mode: DeflateMode,
    /// Largest window the server compresses with, 9..=15 (zlib cannot write raw
    /// DEFLATE with 8). Default 15.
    pub server_max_window_bits: u8,
    /// Largest window asked of the client when it offers `client_max_window_bits`,
    /// 9..=15. Default 15. (Inflating costs the same memory whatever the window: see
    /// [`Inflater`].)
    pub client_max_window_bits: u8,
    /// zlib memLevel of the server's deflaters, 1..=9. Default 8.
    pub mem_level: u8,
    /// Messages shorter than this many bytes are sent uncompressed. Default 1024 (as
    /// Node's `ws`): below that the 6-10 bytes saved cost more CPU than they are worth.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            mode: DeflateMode::Off,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            mem_level: 8,
            threshold: 1024,
        }
    }
}

impl DeflateConfig {
    /// The same policy with every number moved into its range (windows 9..=15,
    /// memLevel 1..=9): what negotiation and the codec actually use.
    pub fn clamped(&self) -> DeflateConfig {
        DeflateConfig {
            server_max_window_bits: self.server_max_window_bits.clamp(9, 15),
            client_max_window_bits: self.client_max_window_bits.clamp(9, 15),
            mem_level: self.mem_level.clamp(1, 9),
            ..*self
        }
    }
}

/// What both ends agreed to. Window sizes are explicit: 15 where the answer named none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// Largest window the server compresses with (8..=15).
    pub server_max_window_bits: u8,
    /// Largest window the client compresses with (8..=15).
    pub client_max_window_bits: u8,
}

impl DeflateParams {
    /// Whether the end in `role` resets its compressor after every message.
    pub fn no_context_takeover(&self, role: Role) -> bool {
        match role {
            Role::Server => self.server_no_context_takeover,
            Role::Client => self.client_no_context_takeover,
        }
    }

    /// The window the end in `role` compresses with.
    pub fn max_window_bits(&self, role: Role) -> u8 {
        match role {
            Role::Server => self.server_max_window_bits,
            Role::Client => self.client_max_window_bits,
        }
    }

    /// A dedicated deflater for the end in `role` (its window, its takeover rule).
    pub fn deflater(&self, role: Role, mem_level: u8, threshold: usize) -> Deflater {
        Deflater::new(
            self.max_window_bits(role),
            mem_level,
            self.no_context_takeover(role),
        )
        .with_threshold(threshold)
    }

    /// A dedicated inflater for the end in `role`: it resets per message when the peer
    /// does not take over its context.
    pub fn inflater(&self, role: Role) -> Inflater {
        let peer = match role {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        };
        Inflater::new(self.no_context_takeover(peer))
    }
}

/// A `Sec-WebSocket-Extensions` value built on the stack (the longest one this module
/// writes is 119 bytes).
#[derive(Clone, Copy)]
pub struct ExtensionValue {
    buf: [u8; 128],
    len: u8,
}

impl ExtensionValue {
    fn new() -> Self {
        let mut v = ExtensionValue {
            buf: [0; 128],
            len: 0,
        };
        v.push(EXTENSION_NAME);
        v
    }

    fn push(&mut self, s: &str) {
        let at = self.len as usize;
        self.buf[at..at + s.len()].copy_from_slice(s.as_bytes());
        self.len += s.len() as u8;
    }

    fn param(&mut self, name: &str, value: Option<u8>) {
        self.push("; ");
        self.push(name);
        if let Some(v) = value {
            self.push("=");
            if v >= 10 {
                self.push("1");
            }
            let d = [b'0' + v % 10];
            self.push(core::str::from_utf8(&d).unwrap_or("0"));
        }
    }

    /// The value (ASCII).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or(EXTENSION_NAME)
    }
}

impl core::fmt::Debug for ExtensionValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for ExtensionValue {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ExtensionValue {}

/// The server's choice: the parameters and the exact header value to answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreement {
    /// What both ends will do.
    pub params: DeflateParams,
    /// The `Sec-WebSocket-Extensions` value for the 101 response
    /// ([`super::super::handshake::write_accept_response`]'s `extensions`).
    pub response: ExtensionValue,
}

/// The four parameters of one offer or answer, checked for syntax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// A token character (RFC 7230 §3.2.6 `tchar`).
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

/// A window-bits value: a decimal integer 8..=15 without leading zeros or sign
/// (RFC 7692 §7.1.2.1), after quoted-string unescaping.
fn window_bits(v: &[u8]) -> Option<u8> {
    match v {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// The value of a parameter: a token, or a quoted-string whose unescaped content is a
/// token (RFC 7692 §7.1, RFC 6455 §9.1). Unescaped into `scratch`.
fn param_value<'s>(raw: &[u8], scratch: &'s mut [u8; 8]) -> Option<&'s [u8]> {
    let (content, quoted) = match raw {
        [b'"', inner @ .., b'"'] => (inner, true),
        _ => (raw, false),
    };
    let mut n = 0;
    let mut i = 0;
    while i < content.len() {
        let mut c = content[i];
        if quoted && c == b'\\' {
            i += 1;
            c = *content.get(i)?;
        } else if c == b'"' {
            return None;
        }
        if !is_tchar(c) || n == scratch.len() {
            return None;
        }
        scratch[n] = c;
        n += 1;
        i += 1;
    }
    (n > 0).then_some(&scratch[..n])
}

/// Parses the parameters of one permessage-deflate element. `None` when any is
/// unknown, repeated, malformed or has a bad value; `in_response` demands a value for
/// `client_max_window_bits` (RFC 7692 §7.1.2.2).
fn parse_params(raw: &[u8], in_response: bool) -> Option<Params> {
    let mut p = Params::default();
    if raw.is_empty() {
        return Some(p);
    }
    let mut rest = raw;
    loop {
        // one parameter runs to the next `;` outside a quoted-string
        let mut quoted = false;
        let mut escaped = false;
        let end = rest
            .iter()
            .position(|&c| {
                if escaped {
                    escaped = false;
                } else if quoted && c == b'\\' {
                    escaped = true;
                } else if c == b'"' {
                    quoted = !quoted;
                }
                c == b';' && !quoted
            })
            .unwrap_or(rest.len());
        let item = trim(&rest[..end]);
        let (name, value) = match item.iter().position(|&c| c == b'=') {
            Some(e) => (trim(&item[..e]), Some(trim(&item[e + 1..]))),
            None => (item, None),
        };
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            return None;
        }
        let mut scratch = [0u8; 8];
        let value = match value {
            Some(v) => Some(param_value(v, &mut scratch)?),
            None => None,
        };
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        if is("server_no_context_takeover") {
            if p.server_no_context_takeover || value.is_some() {
                return None;
            }
            p.server_no_context_takeover = true;
        } else if is("client_no_context_takeover") {
            if p.client_no_context_takeover || value.is_some() {
                return None;
            }
            p.client_no_context_takeover = true;
        } else if is("server_max_window_bits") {
            if p.server_max_window_bits.is_some() {
                return None;
            }
            p.server_max_window_bits = Some(window_bits(value?)?);
        } else if is("client_max_window_bits") {
            if p.client_max_window_bits.is_some() {
                return None;
            }
            p.client_max_window_bits = Some(match value {
                Some(v) => Some(window_bits(v)?),
                None if in_response => return None,
                None => None,
            });
        } else {
            return None;
        }
        if end >= rest.len() {
            return Some(p);
        }
        rest = &rest[end + 1..];
    }
}

fn is_deflate(offer: &ExtensionOffer<'_>) -> bool {
    offer.name.eq_ignore_ascii_case(EXTENSION_NAME)
}

/// Server side: picks the first acceptable permessage-deflate offer among `offers`
/// (from [`super::super::handshake::Request::extensions`], all headers, in order) under
/// `config`, and returns the agreed parameters and the response value. `None` when
/// the mode is off or no offer is acceptable: the connection runs uncompressed.
///
/// An offer is declined (and the next one tried) when a parameter is unknown, repeated,
/// has a malformed value (`010`, `+9`, `16`, `"1 5"`), or asks the server for an 8-bit
/// window (`server_max_window_bits=8`: zlib cannot write raw DEFLATE with a 256-byte
/// window, and answering 9 would break the client's bound). Offers of other extensions
/// are skipped.
///
/// The answer:
/// * `server_no_context_takeover` when the client asked for it, and always in
///   [`DeflateMode::Shared`] (RFC 7692 §7.1.1.1 lets a server add it unasked);
/// * `client_no_context_takeover` when the client offered it, and always in
///   [`DeflateMode::Shared`] (§7.1.1.2 lets a server add it unasked);
/// * `server_max_window_bits=N` when the client offered it, N the smaller of the
///   offer and the policy (the server uses `config.server_max_window_bits` silently
///   otherwise: a smaller window than the peer allows is always valid);
/// * `client_max_window_bits=N` only when the client offered the parameter (§7.1.2.2
///   forbids it otherwise) and N < 15 or the client named a value: the smaller of its
///   value and the policy.
pub fn negotiate_server<'a, I>(offers: I, config: &DeflateConfig) -> Option<Agreement>
where
    I: IntoIterator<Item = ExtensionOffer<'a>>,
{
    if config.mode == DeflateMode::Off {
        return None;
    }
    let config = config.clamped();
    let shared = config.mode == DeflateMode::Shared;
    offers
        .into_iter()
        .filter(is_deflate)
        .find_map(|offer| accept_offer(&offer, &config, shared))
}

fn accept_offer(
    offer: &ExtensionOffer<'_>,
    config: &DeflateConfig,
    shared: bool,
) -> Option<Agreement> {
    let p = parse_params(offer.raw_params(), false)?;
    let server_window = match p.server_max_window_bits {
        Some(8) => return None,
        Some(n) => n.min(config.server_max_window_bits),
        None => config.server_max_window_bits,
    };
    let client_window = match p.client_max_window_bits {
        None => None,
        Some(None) => Some(config.client_max_window_bits),
        Some(Some(n)) => Some(n.min(config.client_max_window_bits)),
    };
    let params = DeflateParams {
        server_no_context_takeover: p.server_no_context_takeover || shared,
        client_no_context_takeover: p.client_no_context_takeover || shared,
        server_max_window_bits: server_window,
        client_max_window_bits: client_window.unwrap_or(15),
    };
    let mut response = ExtensionValue::new();
    if params.server_no_context_takeover {
        response.param("server_no_context_takeover", None);
    }
    if params.client_no_context_takeover {
        response.param("client_no_context_takeover", None);
    }
    if p.server_max_window_bits.is_some() {
        response.param("server_max_window_bits", Some(server_window));
    }
    match (p.client_max_window_bits, client_window) {
        (Some(Some(_)), Some(w)) => response.param("client_max_window_bits", Some(w)),
        (Some(None), Some(w)) if w < 15 => response.param("client_max_window_bits", Some(w)),
        _ => {}
    }
    Some(Agreement { params, response })
}

/// What a client offers for `client_max_window_bits`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ClientWindowOffer {
    /// Not offered: the server may not limit the client's window.
    NotOffered,
    /// Offered without a value (browsers do): the server may choose a limit.
    #[default]
    Any,
    /// Offered with this value (9..=15): the client will not use a larger window.
    Max(u8),
}

/// Client side: the offer to send, and the check of the server's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientOffer {
    /// Ask the server to reset its compressor per message.
    pub server_no_context_takeover: bool,
    /// Tell the server this client resets its compressor per message.
    pub client_no_context_takeover: bool,
    /// Ask the server for at most this window (8..=15).
    pub server_max_window_bits: Option<u8>,
    /// The client's own window.
    pub client_max_window_bits: ClientWindowOffer,
}

impl Default for ClientOffer {
    /// What browsers send: `permessage-deflate; client_max_window_bits`.
    fn default() -> Self {
        ClientOffer {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: ClientWindowOffer::Any,
        }
    }
}

impl ClientOffer {
    /// The `Sec-WebSocket-Extensions` value to send
    /// ([`super::super::handshake::ClientRequest::extensions`]). Windows are moved into
    /// range: 8..=15 for the server's, 9..=15 for the client's own (it compresses).
    pub fn header_value(&self) -> ExtensionValue {
        let mut v = ExtensionValue::new();
        if self.server_no_context_takeover {
            v.param("server_no_context_takeover", None);
        }
        if self.client_no_context_takeover {
            v.param("client_no_context_takeover", None);
        }
        if let Some(w) = self.server_max_window_bits {
            v.param("server_max_window_bits", Some(w.clamp(8, 15)));
        }
        match self.client_max_window_bits {
            ClientWindowOffer::NotOffered => {}
            ClientWindowOffer::Any => v.param("client_max_window_bits", None),
            ClientWindowOffer::Max(w) => v.param("client_max_window_bits", Some(w.clamp(9, 15))),
        }
        v
    }

    /// Checks the server's `Sec-WebSocket-Extensions` answer
    /// ([`super::super::handshake::ClientAccepted::extensions`]) against this offer.
    ///
    /// No answer, or one without permessage-deflate elements: `Ok(None)`, run
    /// uncompressed. Any other extension, two permessage-deflate elements,
    /// `client_max_window_bits` not offered, or a window larger than offered:
    /// [`HandshakeError::UnrequestedNegotiation`]. An unknown, repeated or malformed
    /// parameter, or `client_max_window_bits` without a value:
    /// [`HandshakeError::InvalidExtensionResponse`]. Fail the connection on either.
    ///
    /// Lenient where the client can cope: the server may add `server_no_context_takeover`
    /// or `server_max_window_bits` unasked (RFC 7692 §7.1.1.1, §7.1.2.1), and an answer
    /// that leaves out one we asked for is taken as it is (our inflater handles any
    /// window and either takeover rule).
    pub fn check_response(
        &self,
        extensions: Option<&[u8]>,
    ) -> Result<Option<DeflateParams>, HandshakeError> {
        let Some(value) = extensions else {
            return Ok(None);
        };
        let mut agreed = None;
        for ext in ExtensionOffer::parse_list(value) {
            if !is_deflate(&ext) || agreed.is_some() {
                return Err(HandshakeError::UnrequestedNegotiation);
            }
            let p = parse_params(ext.raw_params(), true)
                .ok_or(HandshakeError::InvalidExtensionResponse)?;
            let server_window = match (p.server_max_window_bits, self.server_max_window_bits) {
                (Some(n), Some(asked)) if n > asked.clamp(8, 15) => {
                    return Err(HandshakeError::UnrequestedNegotiation)
                }
                (n, _) => n.unwrap_or(15),
            };
            let own_limit = match self.client_max_window_bits {
                ClientWindowOffer::Max(w) => w.clamp(9, 15),
                _ => 15,
            };
            let client_window = match (p.client_max_window_bits, self.client_max_window_bits) {
                (None, _) => own_limit,
                (Some(_), ClientWindowOffer::NotOffered) => {
                    return Err(HandshakeError::UnrequestedNegotiation)
                }
                (Some(Some(n)), _) if n > own_limit => {
                    return Err(HandshakeError::UnrequestedNegotiation)
                }
                (Some(n), _) => n.unwrap_or(own_limit),
            };
            agreed = Some(DeflateParams {
                server_no_context_takeover: p.server_no_context_takeover,
                client_no_context_takeover: p.client_no_context_takeover
                    || self.client_no_context_takeover,
                server_max_window_bits: server_window,
                client_max_window_bits: client_window,
            });
        }
        Ok(agreed)
    }
}

#[cfg(test)]
mod tests;
