//! Runtime configuration (servers and clients): every limit has a documented default.

use std::net::SocketAddr;
use std::time::Duration;

pub use crate::driver::Backend;
use crate::layer::LayerFactory;
use crate::proto::conn::Limits;
use crate::proto::deflate::DeflateConfig;
use crate::proto::handshake::{HandshakePolicy, HeadLimits, OriginPolicy};

/// Everything a server needs to run; built by [`crate::server::Server::builder`].
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (every worker binds it with `SO_REUSEPORT`).
    pub addr: SocketAddr,
    /// Worker threads; default: the available cores.
    pub workers: usize,
    /// I/O backend; default [`Backend::Auto`].
    pub backend: Backend,
    /// Pin worker `i` to core `i` (mod the core count); default true.
    pub pin_cores: bool,
    /// First core to pin to (worker `i` goes to core `first_core + i`); default 0.
    pub first_core: usize,
    /// Frame and message size limits (1009 past them); default 16 MiB each.
    pub limits: Limits,
    /// Handshake policy: Origin allow-list, subprotocols, request head limits.
    pub handshake: HandshakePolicy,
    /// Most open connections per worker; past it a new connection gets 503.
    /// Default 100,000.
    pub max_connections: usize,
    /// Time to complete the opening handshake (slowloris guard); default 10 s.
    pub handshake_timeout: Duration,
    /// A connection silent this long is pinged; silent for as long again after the
    /// ping, it is closed (1001). `None` disables; default 120 s.
    pub idle_timeout: Option<Duration>,
    /// Time to wait for the peer's close frame after ours; default 5 s.
    pub close_timeout: Duration,
    /// Above this many buffered outgoing bytes, `send` reports backpressure, `on_drain`
    /// fires once the queue is back at or below it, and the connection is not read
    /// meanwhile (TCP's window then slows a peer that sends faster than it reads).
    /// Default 64 KiB (as uWebSockets' `maxBackpressure`): under an open flood of 100
    /// connections the server's RSS then stays about 30 MiB, where 1 MiB let it reach
    /// about 170 MiB, at the same CPU per message.
    pub backpressure_limit: usize,
    /// Read-side flow control (default on): a connection over `backpressure_limit` is
    /// not read until its queue drains. A load generator that floods its peer turns
    /// it off, since its own long queue is no reason to leave the answers unread.
    pub read_throttle: bool,
    /// Hard cap on buffered outgoing bytes: a connection over it is dropped (TCP reset,
    /// close code 1006 to the application). Default 64 MiB.
    pub max_buffered: usize,
    /// Listen backlog; default 4096.
    pub backlog: i32,
    /// `TCP_NODELAY` on every connection (default on): each write goes out at once
    /// instead of waiting, under Nagle's algorithm, for the peer to acknowledge what is
    /// in flight, which with delayed ACKs can hold a small message back for tens of
    /// milliseconds. Turning it off saves kernel CPU per small message on epoll
    /// (measured 7.3 -> 6.0 µs per 20 B echo here) at that latency risk.
    pub nodelay: bool,
    /// Receive time stamps (default off): the kernel notes when each read's data
    /// reached the socket, and [`WebSocket::received_at`](crate::server::WebSocket::received_at)
    /// gives it to the application. A receive then costs a `recvmsg` with a control
    /// message (epoll) or writes one into the provided buffer before the payload
    /// (io_uring's multishot `recvmsg`).
    pub rx_timestamps: bool,
    /// Provided buffers per io_uring worker (a power of two); default 128.
    pub uring_buffers: u16,
    /// Size of one io_uring provided buffer; default 32 KiB.
    pub uring_buffer_size: usize,
    /// Size of the epoll worker's receive buffer; default 64 KiB.
    pub recv_buffer_size: usize,
    /// Makes each connection's layer (between the socket's bytes and the protocol);
    /// `None` (the default): plain `ws://`.
    pub layer: Option<LayerFactory>,
    /// permessage-deflate (RFC 7692): off (the default), shared (no context takeover,
    /// no memory per connection) or dedicated (context takeover, a compressor and a
    /// decompressor per connection), with the windows, memLevel and size threshold.
    /// A server negotiates it with clients that offer it; a client offers it when its
    /// `ConnectRequest` says so, and uses this policy's memLevel and threshold.
    pub deflate: DeflateConfig,
    /// Most bytes of dedicated compression state per worker; past it, new connections
    /// are negotiated as in shared mode. Default 64 MiB (about 150 connections at
    /// windows of 15 bits and memLevel 8: 380 KB to compress, 48 KB to decompress).
    pub deflate_budget: usize,
    /// After this many connections have opened or closed on a worker (counted since
    /// the last time), the worker hands the C allocator's free pages back to the
    /// kernel ([`crate::alloc::release_free_memory`], glibc's `malloc_trim`) a second
    /// later, and counts again: what a storm of handshakes or closes freed does not
    /// stay resident; first the worker gives back its tables' free room (timer heap,
    /// slot table, socket slab) and its pools' kept buffers, and the io_uring driver
    /// the pages of its empty receive buffers (which it also does after any burst of
    /// receives that swept its ring, a round of idle pings' pongs say, whatever this
    /// setting). 0 never does. Default 1,000: with it the server's RSS over 15,000
    /// idle connections opened in one go is 176-185 B per connection on io_uring, not
    /// 193-206 B, and 132-141 B on epoll, not 183-190 B (`soliton-load hold`, see
    /// `docs/memory.md`); a storm of handshakes and closes costs no more CPU per
    /// connection within the noise (a release a second). A release stops the worker
    /// while glibc walks its free lists: 0.04-1.5 ms for heaps of a server's size, but
    /// it walks the whole process's arenas, 15 ms for 400 MB freed in 4 KiB blocks.
    /// An application with a large heap of its own and a tight latency target sets
    /// 0 (or uses another allocator).
    pub release_memory_after: usize,
    /// Client role: the TLS trust and session cache for `wss://` requests that bring
    /// none of their own; `None`: the system's roots.
    #[cfg(feature = "tls")]
    pub tls_client: Option<crate::tls::TlsConnector>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 9001)),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            backend: Backend::Auto,
            pin_cores: true,
            first_core: 0,
            limits: Limits::default(),
            handshake: HandshakePolicy {
                origins: OriginPolicy::Any,
                protocols: Vec::new(),
                limits: HeadLimits::default(),
            },
            max_connections: 100_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(120)),
            close_timeout: Duration::from_secs(5),
            backpressure_limit: 64 << 10,
            max_buffered: 64 << 20,
            backlog: 4096,
            nodelay: true,
            rx_timestamps: false,
            read_throttle: true,
            uring_buffers: 128,
            uring_buffer_size: 32 * 1024,
            recv_buffer_size: 64 * 1024,
            layer: None,
            deflate: DeflateConfig::default(),
            deflate_budget: 64 << 20,
            release_memory_after: 1_000,
            #[cfg(feature = "tls")]
            tls_client: None,
        }
    }
}

impl Config {
    /// The settings of `next` that differ from `self` and cannot change while the
    /// server runs (sockets, threads, buffers and compression are set up at start).
    pub(crate) fn fixed_changes(&self, next: &Config) -> Vec<&'static str> {
        let mut v = Vec::new();
        macro_rules! fixed {
            ($($f:ident),*) => {$(
                if self.$f != next.$f {
                    v.push(stringify!($f));
                }
            )*};
        }
        fixed!(
            addr,
            workers,
            backend,
            pin_cores,
            first_core,
            backlog,
            nodelay,
            rx_timestamps,
            uring_buffers,
            uring_buffer_size,
            recv_buffer_size,
            deflate,
            deflate_budget
        );
        if self.layer.is_some() != next.layer.is_some() {
            v.push("layer (TLS on or off; its certificates may change)");
        }
        v
    }
}

/// The setters a server's and a client's builder share (each has a `cfg: Config`).
macro_rules! common_setters {
    () => {
        /// Replaces the whole configuration.
        pub fn config(mut self, cfg: Config) -> Self {
            self.cfg = cfg;
            self
        }
        /// Worker threads.
        pub fn workers(mut self, n: usize) -> Self {
            self.cfg.workers = n.max(1);
            self
        }
        /// The backend asked for (before [`Backend::Auto`] is resolved at start).
        pub fn backend_asked(&self) -> Backend {
            self.cfg.backend
        }
        /// I/O backend.
        pub fn backend(mut self, b: Backend) -> Self {
            self.cfg.backend = b;
            self
        }
        /// Pin workers to cores, starting at `first_core`; `None` leaves them unpinned.
        pub fn pin(mut self, first_core: Option<usize>) -> Self {
            self.cfg.pin_cores = first_core.is_some();
            self.cfg.first_core = first_core.unwrap_or(0);
            self
        }
        /// Frame and message size limits for what peers send (1009 past them).
        pub fn limits(mut self, l: Limits) -> Self {
            self.cfg.limits = l;
            self
        }
        /// Idle timeout (ping, then close); `None` disables it.
        pub fn idle_timeout(mut self, d: Option<Duration>) -> Self {
            self.cfg.idle_timeout = d;
            self
        }
        /// Backpressure limit and hard cap on buffered outgoing bytes.
        pub fn buffered_limits(mut self, backpressure: usize, max: usize) -> Self {
            self.cfg.backpressure_limit = backpressure;
            self.cfg.max_buffered = max.max(backpressure);
            self
        }
        /// Receive buffers: io_uring's provided ring (`count` buffers of `size` bytes
        /// per worker) and the epoll worker's buffer (`epoll_size` bytes).
        pub fn receive_buffers(mut self, count: u16, size: usize, epoll_size: usize) -> Self {
            self.cfg.uring_buffers = count.max(2);
            self.cfg.uring_buffer_size = size.max(512);
            self.cfg.recv_buffer_size = epoll_size.max(512);
            self
        }
        /// Read-side flow control: stop reading a connection whose outgoing queue is
        /// over the backpressure limit until it drains; default on (see
        /// [`Config::read_throttle`]).
        pub fn read_throttle(mut self, on: bool) -> Self {
            self.cfg.read_throttle = on;
            self
        }
        /// `TCP_NODELAY` on every connection; default on (see [`Config::nodelay`]).
        pub fn nodelay(mut self, on: bool) -> Self {
            self.cfg.nodelay = on;
            self
        }
        /// Receive time stamps from the kernel for
        /// [`WebSocket::received_at`](crate::server::WebSocket::received_at); default off
        /// (see [`Config::rx_timestamps`]).
        pub fn receive_timestamps(mut self, on: bool) -> Self {
            self.cfg.rx_timestamps = on;
            self
        }
        /// Hand the allocator's free memory back after this many connections have
        /// opened or closed on a worker; 0 never (see [`Config::release_memory_after`]).
        pub fn release_memory_after(mut self, connections: usize) -> Self {
            self.cfg.release_memory_after = connections;
            self
        }
        /// Each connection's layer, between the socket's bytes and the protocol.
        pub fn layer(mut self, f: LayerFactory) -> Self {
            self.cfg.layer = Some(f);
            self
        }
    };
}

pub(crate) use common_setters;
