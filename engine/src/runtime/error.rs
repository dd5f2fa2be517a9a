//! Why a connection failed: what `on_error` reports.

use std::fmt;
use std::io;

use crate::layer::LayerError;
use crate::proto::ProtocolError;

/// Why a connection failed (see [`Handler::on_error`](super::Handler::on_error)).
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnError {
    /// Client: the TCP connection could not be made.
    Connect(io::Error),
    /// Client: the server answered the upgrade with this status instead of 101.
    Status(u16),
    /// Client: the server's answer broke the handshake rules.
    Handshake(&'static str),
    /// Client: the TCP connect did not finish in time.
    ConnectTimeout,
    /// The opening handshake did not finish in time.
    Timeout,
    /// The peer broke the protocol; the connection was failed with the error's code.
    Protocol(ProtocolError),
    /// The socket failed (a reset, or the peer went away without a close frame).
    Io(io::Error),
    /// The connection's layer (TLS) failed.
    Layer(LayerError),
    /// More than `max_buffered` bytes were queued for a peer that did not read them.
    Overflow,
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Connect(e) => write!(f, "connect: {e}"),
            ConnError::Status(s) => write!(f, "upgrade refused with HTTP {s}"),
            ConnError::Handshake(why) => write!(f, "bad handshake response: {why}"),
            ConnError::ConnectTimeout => f.write_str("connect timed out"),
            ConnError::Timeout => f.write_str("opening handshake timed out"),
            ConnError::Protocol(e) => write!(f, "protocol error: {}", e.as_str()),
            ConnError::Io(e) => write!(f, "socket: {e}"),
            ConnError::Layer(e) => write!(f, "layer: {e}"),
            ConnError::Overflow => f.write_str("send queue over max_buffered"),
        }
    }
}

impl std::error::Error for ConnError {}
