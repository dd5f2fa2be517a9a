//! The per-connection layer slot: a byte-stream transformation between the driver's
//! bytes and the protocol, in both directions, on both backends and both roles.
//!
//! ```text
//!  driver ── wire bytes ──► Layer::decode ── plain bytes ──► proto::Connection
//!  driver ◄── wire bytes ── Layer::encode / flush ◄── plain bytes (frames) ◄── send
//! ```
//!
//! A plain `ws://` connection has no layer (`None`): its bytes go straight through, at
//! the cost of one branch. TLS (`wss://`) is a layer; so is anything else that wraps the
//! stream. [`Xor`] is a test layer that proves the slot: it changes every byte on the
//! wire, so a connection works only if every byte goes through the layer, in order.

use std::fmt;
use std::sync::Arc;

/// A layer failed: the connection is dropped (the application sees 1006).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerError(pub String);

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LayerError {}

/// A transformation of one connection's byte stream.
///
/// Call order, per connection: [`decode`](Layer::decode) for every batch of bytes
/// received; [`encode`](Layer::encode) for bytes to send, in order; after either,
/// [`flush`](Layer::flush) when [`wants_write`](Layer::wants_write) says the layer has
/// bytes of its own to send (a TLS handshake message, an alert); [`close`](Layer::close)
/// once before the connection's write side is shut.
pub trait Layer: 'static {
    /// Bytes from the peer (which the layer may change in place); appends what the
    /// protocol should see to `plain`.
    fn decode(&mut self, wire: &mut [u8], plain: &mut Vec<u8>) -> Result<(), LayerError>;

    /// Bytes to send: appends what goes on the wire to `wire`, or keeps them for the
    /// next [`flush`](Layer::flush) (a TLS layer gathers a loop iteration's frames into
    /// full records), saying so through [`wants_write`](Layer::wants_write).
    fn encode(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), LayerError>;

    /// The layer has bytes to send: its own (a handshake message, an alert) or kept
    /// from [`encode`](Layer::encode).
    fn wants_write(&self) -> bool {
        false
    }

    /// Appends the layer's own pending bytes to `wire`.
    fn flush(&mut self, wire: &mut Vec<u8>) -> Result<(), LayerError> {
        let _ = wire;
        Ok(())
    }

    /// The connection is closing: queue what the layer sends at the end (a TLS
    /// `close_notify`), for the next [`flush`](Layer::flush).
    fn close(&mut self) {}

    /// The peer ended its stream inside the layer (a TLS `close_notify`): nothing more
    /// comes, as after a TCP FIN.
    fn peer_closed(&self) -> bool {
        false
    }

    /// What the connection's TLS agreed, for a TLS layer.
    fn tls(&self) -> Option<TlsInfo> {
        None
    }
}

/// What a TLS connection agreed in its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1_3` or `TLSv1_2` (empty while handshaking).
    pub version: &'static str,
    /// The cipher suite's name (empty while handshaking).
    pub cipher: &'static str,
    /// The handshake resumed an earlier session (no certificate, no key exchange
    /// signature).
    pub resumed: bool,
    /// The host name the client asked for (SNI), on the server side.
    pub server_name: Option<Box<str>>,
    /// The application protocol agreed by ALPN (`http/1.1`), if any.
    pub alpn: Option<Box<str>>,
}

impl fmt::Debug for dyn Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Layer")
    }
}

/// Makes the layer of each new connection (`None`: plain). Shared by every worker.
#[derive(Clone)]
pub struct LayerFactory(Arc<dyn Fn() -> Option<Box<dyn Layer>> + Send + Sync>);

impl LayerFactory {
    /// A factory calling `f` for each new connection.
    pub fn new(f: impl Fn() -> Option<Box<dyn Layer>> + Send + Sync + 'static) -> Self {
        LayerFactory(Arc::new(f))
    }

    /// The layer of a new connection.
    pub fn make(&self) -> Option<Box<dyn Layer>> {
        (self.0)()
    }
}

impl fmt::Debug for LayerFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LayerFactory")
    }
}

/// A test layer: XORs every byte with a key, both ways. A peer must do the same (see
/// [`xor_in_place`]). Not security: it exists to prove that every byte of a connection
/// goes through the layer slot.
#[derive(Debug, Clone, Copy)]
pub struct Xor(pub u8);

/// XORs `bytes` with `key` in place.
pub fn xor_in_place(bytes: &mut [u8], key: u8) {
    for b in bytes {
        *b ^= key;
    }
}

impl Layer for Xor {
    fn decode(&mut self, wire: &mut [u8], plain: &mut Vec<u8>) -> Result<(), LayerError> {
        xor_in_place(wire, self.0);
        plain.extend_from_slice(wire);
        Ok(())
    }

    fn encode(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), LayerError> {
        let at = wire.len();
        wire.extend_from_slice(plain);
        xor_in_place(&mut wire[at..], self.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_round_trips_and_changes_every_byte() {
        let mut l = Xor(0x5a);
        let mut wire = Vec::new();
        l.encode(b"hello", &mut wire).unwrap();
        assert!(wire.iter().zip(b"hello").all(|(a, b)| a != b));
        let mut plain = Vec::new();
        l.decode(&mut wire, &mut plain).unwrap();
        assert_eq!(plain, b"hello");
    }
}
