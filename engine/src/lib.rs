//! # Soliton
//!
//! A WebSocket engine (RFC 6455) built as a sans-I/O protocol core driven by
//! thread-per-core runtimes, for servers and clients alike.
//!
//! ```text
//!  socket ──► driver (io_uring | epoll) ──► receive buffer (provided ring / worker's)
//!                                                   │
//!                                          layer slot (None | TLS | test)
//!                                                   │
//!                                  proto::Connection::poll_read
//!                                  (unmask in place, UTF-8 check)
//!                                                   │
//!            handler gets &[u8] / &str borrowed from the buffer
//!                                                   │ send / publish
//!                                  out-queue: header + payload, or a shared frame
//!                                                   │
//!                                          layer slot (encode)
//!                                                   │
//!  socket ◄── writev / sendmsg SQE ◄── driver's wire queue (owns what is in flight)
//! ```
//!
//! * [`proto`]: everything that is protocol — frames, masking (SIMD, runtime
//!   detected), streaming UTF-8, close codes, the handshake and the connection state
//!   machine. It performs no I/O and reads no clock.
//! * [`driver`]: the only code that touches sockets; io_uring and epoll behind one
//!   interface, with its contract in the module docs.
//! * [`layer`]: the per-connection slot between the driver's bytes and the protocol.
//! * `tls` (feature `tls`, on by default): `wss://` with rustls as a layer.
//! * `cluster` (feature `nats`): topics shared by several servers through a NATS
//!   broker.
//! * [`server`] and [`client`]: the two roles, on the same workers, drivers and
//!   [`server::Handler`].
//! * `bridge` (feature `tokio`, off by default): an application on tokio awaits
//!   connection events and sends with backpressure, through the workers' mailboxes.
//! * [`metrics`]: counters per worker (connections, handshakes by status, messages and
//!   bytes, backpressure, drops, close codes) in the Prometheus text format, and a
//!   small `/metrics` endpoint. Logs are [`tracing`] events: each rejected handshake
//!   and each close at `debug`, nothing per message.
#![warn(missing_docs)]

pub mod alloc;
mod batch;
mod bits;
#[cfg(feature = "tokio")]
pub mod bridge;
pub mod client;
#[cfg(feature = "nats")]
pub mod cluster;
pub mod driver;
pub mod layer;
pub mod metrics;
pub mod pool;
pub mod proto;
mod runtime;
pub mod server;
#[cfg(feature = "tls")]
pub mod tls;

/// The README's embedding example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
