//! Protocol errors and the close code or HTTP status each one causes.

use core::fmt;

/// A violation of RFC 6455 (or of a configured limit) found in the peer's bytes.
///
/// Small and `Copy`: it carries no data from the input. [`ProtocolError::close_code`]
/// (defined beside the codes, in [`super::close`]) maps each error to the close code
/// the connection is failed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Opcode 3-7 or 11-15.
    ReservedOpcode,
    /// An RSV bit that no negotiated extension owns.
    ReservedBits,
    /// A control frame with a payload over 125 bytes.
    ControlFrameTooLong,
    /// A control frame with FIN clear.
    FragmentedControlFrame,
    /// A 64-bit payload length with its most significant bit set.
    InvalidLength,
    /// A payload length in a longer form than it needs (RFC 6455 §5.2: the minimal
    /// number of bytes MUST be used), e.g. 5 sent as `126, 0, 5`.
    NonMinimalLength,
    /// A client sent an unmasked frame (server role).
    UnmaskedFrame,
    /// A server sent a masked frame (client role).
    MaskedFrame,
    /// A text or binary frame arrived while a fragmented message was unfinished.
    ExpectedContinuation,
    /// A continuation frame arrived with no message to continue.
    UnexpectedContinuation,
    /// A frame's payload is over the configured frame size limit.
    FrameTooLarge,
    /// A message's payload is over the configured message size limit.
    MessageTooLarge,
    /// A text message (or a close reason) is not valid UTF-8.
    InvalidUtf8,
    /// A close frame with a 1-byte payload.
    InvalidClosePayload,
    /// A close frame whose code may not appear on the wire.
    InvalidCloseCode,
    /// A frame arrived after the peer's close frame.
    DataAfterClose,
    /// A compressed message (RSV1, permessage-deflate) is not a valid DEFLATE stream.
    InvalidCompressedData,
    /// A compressed message arrived but the runtime supplied no inflater although it
    /// allowed RSV1: a runtime bug, failed with 1011 rather than a panic.
    MissingInflater,
}

impl ProtocolError {
    /// A short, static description.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProtocolError::ReservedOpcode => "reserved opcode",
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::ControlFrameTooLong => "control frame over 125 bytes",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::InvalidLength => "payload length has its top bit set",
            ProtocolError::NonMinimalLength => "payload length not in its shortest form",
            ProtocolError::UnmaskedFrame => "unmasked frame from client",
            ProtocolError::MaskedFrame => "masked frame from server",
            ProtocolError::ExpectedContinuation => "expected a continuation frame",
            ProtocolError::UnexpectedContinuation => "continuation with nothing to continue",
            ProtocolError::FrameTooLarge => "frame too large",
            ProtocolError::MessageTooLarge => "message too large",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::InvalidClosePayload => "close payload of 1 byte",
            ProtocolError::InvalidCloseCode => "invalid close code",
            ProtocolError::DataAfterClose => "frame after close",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
            ProtocolError::MissingInflater => "no inflater for a compressed message",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ProtocolError {}

/// Why a handshake was refused: maps to an HTTP status (server role) or to a failed
/// connection attempt (client role).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request line is longer than the limit (414).
    RequestLineTooLong,
    /// The header block is over the byte limit or has too many fields (431).
    HeadersTooLarge,
    /// The request is not well-formed HTTP/1.1 (400).
    Malformed,
    /// An upgrade request with a method other than GET (405).
    MethodNotAllowed,
    /// An upgrade request over HTTP/1.0 or with no Host header (400).
    MissingHost,
    /// `Connection` does not list `Upgrade` (400).
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` is missing or does not decode to 16 bytes (400).
    InvalidKey,
    /// `Sec-WebSocket-Version` is missing or not 13 (426).
    UnsupportedVersion,
    /// The Origin policy refused the request (403).
    ForbiddenOrigin,
    /// The HTTP version is not 1.1 or later (505 for a request; an error for a response).
    UnsupportedHttpVersion,
    /// Client role: the response status was not 101.
    BadStatus(u16),
    /// Client role: the response lacks `Upgrade: websocket` or `Connection: Upgrade`.
    MissingUpgrade,
    /// Client role: `Sec-WebSocket-Accept` does not match the key sent.
    AcceptMismatch,
    /// Client role: the server chose a subprotocol or extension that was not offered.
    UnrequestedNegotiation,
    /// Client role: the server's `Sec-WebSocket-Extensions` answer is malformed (an
    /// unknown, repeated or invalid parameter, e.g. `server_max_window_bits=16`).
    InvalidExtensionResponse,
}

impl HandshakeError {
    /// The HTTP status a server answers this error with.
    pub const fn status(self) -> u16 {
        match self {
            HandshakeError::RequestLineTooLong => 414,
            HandshakeError::HeadersTooLarge => 431,
            HandshakeError::MethodNotAllowed => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::ForbiddenOrigin => 403,
            HandshakeError::UnsupportedHttpVersion => 505,
            _ => 400,
        }
    }

    /// A short, static description.
    pub const fn as_str(self) -> &'static str {
        match self {
            HandshakeError::RequestLineTooLong => "request line too long",
            HandshakeError::HeadersTooLarge => "request header fields too large",
            HandshakeError::Malformed => "malformed request",
            HandshakeError::MethodNotAllowed => "WebSocket upgrade requires GET",
            HandshakeError::MissingHost => "missing Host header",
            HandshakeError::MissingConnectionUpgrade => "Connection header lacks Upgrade",
            HandshakeError::InvalidKey => "invalid Sec-WebSocket-Key",
            HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version",
            HandshakeError::ForbiddenOrigin => "origin not allowed",
            HandshakeError::UnsupportedHttpVersion => "HTTP version not supported",
            HandshakeError::BadStatus(_) => "server did not answer 101",
            HandshakeError::MissingUpgrade => "response lacks Upgrade/Connection",
            HandshakeError::AcceptMismatch => "Sec-WebSocket-Accept mismatch",
            HandshakeError::UnrequestedNegotiation => "server chose something not offered",
            HandshakeError::InvalidExtensionResponse => "malformed extension response",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadStatus(s) => write!(f, "server answered {s}, not 101"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl std::error::Error for HandshakeError {}
