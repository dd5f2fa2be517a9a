//! The sans-I/O protocol core: RFC 6455 framing, masking, UTF-8, close rules, the
//! opening handshake, the per-connection state machine and permessage-deflate
//! (RFC 7692).
//!
//! Nothing in here touches a socket or a clock: callers own every buffer, pass bytes in
//! and take bytes out, and keep deadlines themselves. Every runtime (io_uring, epoll,
//! the load generator's client) drives this same code.

pub mod base64;
pub mod close;
pub mod conn;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
#[cfg(test)]
mod test_rng;
pub mod utf8;

pub use close::CloseCode;
pub use conn::{Connection, Event, Limits, Message, ReadyState, Role};
pub use error::{HandshakeError, ProtocolError};
pub use frame::{FrameHeader, OpCode, Status};
