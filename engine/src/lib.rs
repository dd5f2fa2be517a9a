//! # Soliton
//!
//! A WebSocket engine (RFC 6455) built as a sans-I/O protocol core driven by
//! thread-per-core runtimes.
//!
//! ```text
//!  socket ──► driver (io_uring | epoll) ──► pool buffer ──► proto::Connection::poll_read
//!                                                         (unmask in place, UTF-8 check)
//!                                                                   │
//!            handler gets &[u8] / &str borrowed from the buffer ◄───┘
//!                                   │
//!  socket ◄── writev / send SQE ◄── frame header + shared payload (send / publish)
//! ```
//!
//! [`proto`] holds everything that is protocol: frames, masking (SIMD, runtime
//! detected), streaming UTF-8, close codes, the handshake and the connection state
//! machine. It performs no I/O and reads no clock.
#![warn(missing_docs)]

#[cfg(target_os = "linux")]
pub mod bufring;
pub mod proto;
pub mod server;
mod sys;

/// The README's embedding example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
