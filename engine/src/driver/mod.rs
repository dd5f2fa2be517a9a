//! The drivers: the only code that touches sockets. One interface, two backends —
//! io_uring ([`Backend::IoUring`]) and epoll through mio ([`Backend::Epoll`]) — chosen
//! once per worker, dispatched statically (an enum, not a trait object: the worker loop
//! calls the driver a few times per event, and a `match` on two variants inlines where a
//! virtual call would not; the two backends also share no code path that a trait would
//! make generic).
//!
//! A driver is used by one thread, the worker that made it. It runs the server and the
//! client roles alike: sockets come from [`Driver::listen`] (accepted) or
//! [`Driver::connect`], and from then on are the same.
//!
//! # The contract
//!
//! Every backend meets these rules; the worker relies on nothing else.
//!
//! * **Tokens.** A socket is named by a [`Token`] from the moment it is reported
//!   ([`Sink::accepted`], or `connect`'s return value) until the caller gives it up with
//!   [`Driver::close`]. While the caller holds a token, its index is not given to
//!   another socket. After `close`, nothing more is reported for it and every call
//!   naming it is ignored.
//! * **Ownership.** The driver owns every descriptor and every buffer an operation is
//!   using. Bytes handed to [`Driver::write`] are moved in (owned bytes, or a shared
//!   broadcast frame's reference) and dropped only once written or once the socket is
//!   gone; a socket closed while an operation is in flight keeps its descriptor and
//!   that operation's buffers until the operation's completion arrives, and **a
//!   descriptor is closed only when no submitted or queued operation can name it**, so
//!   a number reused by a new socket never receives an old operation.
//! * **Receive.** [`Sink::received`] lends the bytes read (from the io_uring provided
//!   buffer ring, or the epoll worker's buffer) for the call only; the sink may change
//!   them (unmasking in place). An idle socket holds no receive buffer. Where the sink
//!   keeps a partial frame ([`Sink::carry`]), the epoll backend reads the next bytes
//!   straight in behind it and calls [`Sink::received_in_carry`] instead.
//! * **Write.** Writes to one socket go out in the order given, each wholly, with no
//!   interleaving. The epoll backend writes when the loop submits (one `writev` per
//!   socket per iteration) and again when the socket turns writable; io_uring keeps at
//!   most one `sendmsg` in flight per socket, gathering what is queued. Every byte
//!   written is reported with [`Sink::sent`] (in a later [`Driver::dispatch`]).
//! * **End.** The end of the read side — the peer's FIN, a reset, a failed send — is
//!   reported once with [`Sink::closed`]; the socket stays the caller's until it calls
//!   `close`. [`Driver::shutdown_write`] sends FIN after everything queued is written;
//!   [`Driver::close`] with `reset` drops what is queued and sends RST. Like a write,
//!   each goes out by the next submission at the latest (io_uring queues a
//!   descriptor's `close` as an operation of its own).
//! * **Wake and wait.** [`Driver::submit_and_wait`] submits everything queued (sends,
//!   receives, cancellations) and sleeps until there is something to dispatch, the
//!   [`Waker`] is woken from any thread, or the deadline passes (with sub-millisecond
//!   precision). A waker stays valid after its driver is gone (waking it then does
//!   nothing harmful: its descriptor lives as long as the last waker).
//! * **Shutdown.** Dropping a driver cancels what is in flight; buffers the kernel might
//!   still write after that are leaked, never freed under it.

pub(crate) mod bufring;
mod epoll;
pub(crate) mod sys;
#[cfg(target_os = "linux")]
mod uring;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use crate::pool::OutQueue;
pub use crate::pool::{Chunk, Pool};

/// Which I/O backend a driver uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring where the kernel allows it, else epoll (the choice and the reason are
    /// logged).
    #[default]
    Auto,
    /// io_uring (multishot accept and recv, provided buffer ring). Asking for it where
    /// the kernel lacks what it needs is an error, not a silent fallback.
    IoUring,
    /// epoll through mio, edge-triggered.
    Epoll,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Backend::Auto),
            "uring" | "io_uring" | "io-uring" => Ok(Backend::IoUring),
            "epoll" => Ok(Backend::Epoll),
            other => Err(format!("unknown backend {other:?} (auto, uring, epoll)")),
        }
    }
}

impl Backend {
    /// The backend `self` resolves to on this kernel, and why; an error where
    /// io_uring is asked for and unavailable.
    pub fn resolve(self) -> Result<(Backend, String), String> {
        match self {
            Backend::Epoll => Ok((Backend::Epoll, "asked for".into())),
            #[cfg(target_os = "linux")]
            Backend::IoUring | Backend::Auto => match uring::probe() {
                Ok(()) => Ok((Backend::IoUring, "the kernel supports what it needs".into())),
                Err(why) if self == Backend::Auto => {
                    Ok((Backend::Epoll, format!("io_uring unavailable: {why}")))
                }
                Err(why) => Err(format!("io_uring asked for but unavailable: {why}")),
            },
            #[cfg(not(target_os = "linux"))]
            Backend::Auto => Ok((Backend::Epoll, "io_uring needs Linux".into())),
            #[cfg(not(target_os = "linux"))]
            Backend::IoUring => Err("io_uring needs Linux".into()),
        }
    }

    /// A short name (`io_uring`, `epoll`, `auto`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io_uring",
            Backend::Epoll => "epoll",
        }
    }
}

/// A driver's settings.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    /// The backend; [`Backend::Auto`] is resolved by [`Driver::new`].
    pub backend: Backend,
    /// Provided buffers in the io_uring receive ring (a power of two); default 128.
    pub uring_buffers: u16,
    /// Size of one io_uring provided buffer; default 32 KiB.
    pub uring_buffer_size: usize,
    /// Size of the epoll worker's receive buffer; default 64 KiB.
    pub recv_buffer_size: usize,
    /// `TCP_NODELAY` on every accepted and connected socket; default on.
    pub nodelay: bool,
    /// Ask the kernel for the time each read's data arrived (`SO_TIMESTAMPNS`) and
    /// report it with [`Sink::arrived`]; default off (a receive then costs `recvmsg`
    /// with a control message instead of `recvfrom` on epoll, a multishot `recvmsg`
    /// instead of `recv` on io_uring; a one-shot receive after a pause carries none).
    pub rx_timestamps: bool,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            backend: Backend::Auto,
            uring_buffers: 128,
            uring_buffer_size: 32 * 1024,
            recv_buffer_size: 64 * 1024,
            nodelay: true,
            rx_timestamps: false,
        }
    }
}

/// `TCP_NODELAY` on accepted sockets: set once on the listener, whose accepted sockets
/// inherit it on Linux (a `setsockopt` less per connection); the first one accepted is
/// checked, and where it did not inherit the option each socket gets it set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NoDelay {
    /// Not wanted.
    Off,
    /// Set on the listener; not yet seen on an accepted socket.
    Unchecked,
    /// Accepted sockets have it from the listener.
    Inherited,
    /// Set on each accepted socket.
    EachSocket,
}

impl NoDelay {
    /// For a new listener: sets the option on it when `want`.
    fn listening(want: bool, listener: std::os::fd::RawFd) -> NoDelay {
        match want {
            false => NoDelay::Off,
            true if sys::set_nodelay(listener).is_ok() => NoDelay::Unchecked,
            true => NoDelay::EachSocket,
        }
    }

    /// For each accepted socket.
    fn accepted(&mut self, fd: std::os::fd::RawFd) {
        match *self {
            NoDelay::Off | NoDelay::Inherited => {}
            NoDelay::Unchecked if sys::nodelay(fd).unwrap_or(false) => {
                *self = NoDelay::Inherited;
            }
            NoDelay::Unchecked | NoDelay::EachSocket => {
                *self = NoDelay::EachSocket;
                let _ = sys::set_nodelay(fd);
            }
        }
    }
}

/// Names one socket of a driver; see the module docs for how long it stays valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    idx: u32,
    gen: u32,
}

impl Token {
    pub(crate) fn new(idx: usize, gen: u32) -> Token {
        Token {
            idx: idx as u32,
            gen,
        }
    }

    /// A small index, dense over the sockets the caller holds (for a table of its own).
    pub fn index(self) -> usize {
        self.idx as usize
    }

    pub(crate) fn gen(self) -> u32 {
        self.gen
    }
}

/// What the driver reports, in [`Driver::dispatch`].
pub trait Sink {
    /// A new connection on the listener, from `peer`.
    fn accepted(&mut self, token: Token, peer: Option<SocketAddr>);
    /// A connect started with [`Driver::connect`] finished (`Err`: it failed; the token
    /// must still be closed).
    fn connected(&mut self, token: Token, result: io::Result<()>);
    /// Bytes arrived, lent for this call (they may be changed in place).
    fn received(&mut self, token: Token, data: &mut [u8]);
    /// With [`DriverConfig::rx_timestamps`], just before every [`Sink::received`] and
    /// [`Sink::received_in_carry`]: the kernel's time (nanoseconds since the Unix
    /// epoch, `CLOCK_REALTIME`) at which the last segment of that read reached the
    /// socket, or `None` for a read without one. Never called without the option.
    fn arrived(&mut self, realtime_ns: Option<u64>) {
        let _ = realtime_ns;
    }
    /// A buffer holding a partial frame that the next bytes should be read in behind
    /// (epoll only); `None` to receive into the driver's buffer.
    fn carry(&mut self, token: Token) -> Option<&mut Vec<u8>> {
        let _ = token;
        None
    }
    /// `n` bytes were read into the end of the buffer [`Sink::carry`] returned.
    fn received_in_carry(&mut self, token: Token, n: usize) {
        let _ = (token, n);
    }
    /// The socket about to be received from may be written to at once, with `w`, until
    /// this is called again with `None` (offered only while nothing is queued or in
    /// flight for it, on either backend). A sink that echoes a large payload writes it
    /// from the receive buffer, with no copy.
    fn immediate(&mut self, w: Option<Immediate>) {
        let _ = w;
    }
    /// How many bytes to read from `token` now: 0 to stop reading it (epoll reads a
    /// socket until it is drained unless this says stop; io_uring's receive is
    /// cancelled by [`Driver::set_reading`]), a smaller number than the driver's
    /// buffer to read only that much (epoll; read-side flow control sizes a read by
    /// the room left in the connection's outgoing queue).
    fn read_budget(&mut self, token: Token) -> usize {
        let _ = token;
        usize::MAX
    }
    /// `n` more bytes of what was written to this socket went out.
    fn sent(&mut self, token: Token, n: usize);
    /// The read side ended: the peer's FIN (`None`) or an error. Reported once.
    fn closed(&mut self, token: Token, error: Option<io::Error>);
    /// The [`Waker`] was woken.
    fn woken(&mut self);
}

/// A write to one socket there and then (a `writev`), lent by [`Sink::immediate`]
/// while that socket is being received from. Valid only until the sink is told `None`.
#[derive(Debug, Clone, Copy)]
pub struct Immediate {
    fd: std::os::fd::RawFd,
    token: Token,
}

impl Immediate {
    /// The socket it writes to.
    pub fn token(self) -> Token {
        self.token
    }

    /// Writes what the socket takes now of `bufs`, in order; returns how many bytes
    /// (0 when it takes none, or fails: the next regular write finds out).
    pub fn write(self, bufs: &[io::IoSlice<'_>]) -> usize {
        sys::send_vectored(self.fd, bufs, false).unwrap_or(0)
    }
}

/// Wakes a driver's [`Driver::submit_and_wait`] from any thread.
#[derive(Clone, Debug)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    fn new() -> io::Result<Waker> {
        Ok(Waker(Arc::new(sys::eventfd()?)))
    }

    /// Wakes the driver (if it is gone, nothing happens: the descriptor lives as long
    /// as this waker).
    pub fn wake(&self) {
        sys::eventfd_signal(self.0.as_raw_fd());
    }

    fn raw(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// A bound, listening socket (`SO_REUSEADDR`, `SO_REUSEPORT`, non-blocking) for
/// [`Driver::listen`]; several may share one address (one per worker).
pub fn listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    sys::listener(addr, backlog)
}

/// The local address of a socket (a listener's port after binding port 0).
pub fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    sys::local_addr(fd)
}

/// Raises this process's soft open-files limit towards `want` (up to the hard limit);
/// returns the soft limit in force afterwards.
pub fn raise_nofile_limit(want: u64) -> u64 {
    sys::raise_nofile(want)
}

/// The open-files limit: (soft, hard).
pub fn nofile_limit() -> (u64, u64) {
    sys::nofile_limit()
}

/// The size of a memory page in bytes (what `/proc/PID/statm` counts in).
pub fn page_size() -> u64 {
    sys::page_size()
}

/// Lowers the calling thread's timer slack to 1 µs (precise timed wake-ups).
pub fn set_timer_slack_1us() {
    sys::set_timer_slack_1us()
}

enum Inner {
    #[cfg(target_os = "linux")]
    Uring(Box<uring::Uring>),
    Epoll(Box<epoll::Epoll>),
}

/// One worker's I/O: its sockets, their in-flight operations and buffers.
pub struct Driver {
    inner: Inner,
    backend: Backend,
    waker: Waker,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("backend", &self.backend)
            .finish()
    }
}

macro_rules! on_backend {
    ($self:expr, $d:ident => $e:expr) => {
        match &mut $self.inner {
            #[cfg(target_os = "linux")]
            Inner::Uring($d) => $e,
            Inner::Epoll($d) => $e,
        }
    };
}

impl Driver {
    /// A driver on `cfg.backend` (resolved, for [`Backend::Auto`]). Make it on the
    /// thread that will use it.
    pub fn new(cfg: &DriverConfig) -> io::Result<Driver> {
        let (backend, _) = cfg.backend.resolve().map_err(io::Error::other)?;
        let waker = Waker::new()?;
        let inner = match backend {
            #[cfg(target_os = "linux")]
            Backend::IoUring => Inner::Uring(Box::new(uring::Uring::new(cfg, waker.clone())?)),
            _ => Inner::Epoll(Box::new(epoll::Epoll::new(cfg, waker.clone())?)),
        };
        Ok(Driver {
            inner,
            backend,
            waker,
        })
    }

    /// The backend running.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// io_uring: the provided buffers in the ring now, and those held out of it.
    #[cfg(test)]
    fn ring_population(&self) -> Option<(u16, usize)> {
        match &self.inner {
            Inner::Uring(u) => Some(u.ring_population()),
            Inner::Epoll(_) => None,
        }
    }

    /// Gives memory the driver keeps but does not need back to the kernel (io_uring:
    /// the pages of receive buffers that hold nothing; epoll keeps none): for the
    /// worker's release after connection churn. The bytes advised away.
    pub fn release_memory(&mut self) -> usize {
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Uring(u) => u.release_memory(),
            Inner::Epoll(_) => 0,
        }
    }

    /// Frees the buffers the driver's pool keeps, and gives back the room of the
    /// tables of sockets (and io_uring's send operations) past the last one in use,
    /// when that is most of them: after a storm of closes.
    pub fn compact(&mut self) {
        on_backend!(self, d => d.compact())
    }

    /// Gives back the pages of io_uring's receive buffers a second after a burst of
    /// receives that touched every buffer (a handshake storm, a round of pongs) is over;
    /// when it wants to be called again (`None`: on the next loop is fine). Call it once
    /// per loop iteration with the loop's clock.
    #[inline]
    pub fn tend_buffers(&mut self, now: Instant) -> Option<Instant> {
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Uring(u) => u.tend_buffers(now),
            Inner::Epoll(_) => None,
        }
    }

    /// A waker for this driver, usable from any thread.
    pub fn waker(&self) -> Waker {
        self.waker.clone()
    }

    /// Accepts connections on `listener` (see [`listener`]); each is reported with
    /// [`Sink::accepted`].
    pub fn listen(&mut self, listener: OwnedFd) -> io::Result<()> {
        on_backend!(self, d => d.listen(listener))
    }

    /// Stops accepting (the listener is closed once nothing names it).
    pub fn stop_listening(&mut self) {
        on_backend!(self, d => d.stop_listening())
    }

    /// Starts a connection to `addr` (from `source`, if given); the result comes with
    /// [`Sink::connected`].
    pub fn connect(&mut self, addr: SocketAddr, source: Option<IpAddr>) -> io::Result<Token> {
        on_backend!(self, d => d.connect(addr, source))
    }

    /// Queues `chunk` to be written to `token`, after what is queued already.
    #[inline]
    pub fn write(&mut self, token: Token, chunk: Chunk) {
        on_backend!(self, d => d.write(token, chunk))
    }

    /// Moves everything `out` holds (a connection's queue, allocated from `pool`) to be
    /// written to `token`, after what is queued already: into an empty socket queue
    /// the queue moves whole, and once written it comes back to `pool` as a spare
    /// with [`Self::reclaim`].
    #[inline]
    pub(crate) fn write_queue(&mut self, token: Token, out: &mut OutQueue, pool: &mut Pool) {
        if !out.is_empty() {
            on_backend!(self, d => d.write_queue(token, out, pool))
        }
    }

    /// Writes `bytes` to `token` there and then where the backend allows it (epoll,
    /// with nothing queued for that socket): how many bytes went out; `None` when not
    /// tried (io_uring, a queue in front, an error): queue them with [`Self::write`].
    #[inline]
    pub fn write_now(&mut self, token: Token, bytes: &[u8]) -> Option<usize> {
        match &mut self.inner {
            Inner::Epoll(d) => d.write_now(token, bytes),
            #[cfg(target_os = "linux")]
            Inner::Uring(_) => None,
        }
    }

    /// Sends FIN once everything queued on `token` is written.
    pub fn shutdown_write(&mut self, token: Token) {
        on_backend!(self, d => d.shutdown_write(token))
    }

    /// Gives `token` up: the socket is closed as soon as no operation names it (with
    /// `reset`, queued bytes are dropped and the peer gets RST).
    pub fn close(&mut self, token: Token, reset: bool) {
        on_backend!(self, d => d.close(token, reset))
    }

    /// Stops (`false`) or resumes (`true`) reading `token`: while stopped, nothing is
    /// received from it and the peer's sends fill TCP's window.
    pub fn set_reading(&mut self, token: Token, on: bool) {
        on_backend!(self, d => d.set_reading(token, on))
    }

    /// The peer's address.
    pub fn peer_addr(&mut self, token: Token) -> Option<SocketAddr> {
        on_backend!(self, d => d.peer_addr(token))
    }

    /// Whether `TCP_NODELAY` is set on `token`'s socket.
    #[cfg(test)]
    fn nodelay(&mut self, token: Token) -> Option<bool> {
        on_backend!(self, d => d.fd(token)).and_then(|fd| sys::nodelay(fd).ok())
    }

    /// Bytes queued on `token` and not yet written.
    pub fn queued(&mut self, token: Token) -> usize {
        on_backend!(self, d => d.queued(token))
    }

    /// Sockets held (the caller's and those closing).
    pub fn sockets(&mut self) -> usize {
        on_backend!(self, d => d.sockets())
    }

    /// Submits what is queued and waits for something to dispatch, a wake-up, or
    /// `deadline`.
    pub fn submit_and_wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        on_backend!(self, d => d.submit_and_wait(deadline))
    }

    /// Submits what is queued, then sleeps until `until` without waking for what
    /// arrives; [`Self::submit_and_gather`] then collects it all for one
    /// [`Self::dispatch`]: one wake-up for many events, where their times come from the
    /// kernel ([`DriverConfig::rx_timestamps`]).
    pub fn submit_and_sleep(&mut self, until: Instant) -> io::Result<()> {
        match &mut self.inner {
            #[cfg(target_os = "linux")]
            Inner::Uring(d) => d.submit()?,
            Inner::Epoll(d) => d.submit(),
        }
        let left = until.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            std::thread::sleep(left);
        }
        Ok(())
    }

    /// Submits what was queued since the sleep, and collects what is ready without
    /// waiting.
    pub fn submit_and_gather(&mut self) -> io::Result<()> {
        on_backend!(self, d => d.submit_and_gather())
    }

    /// Reports what happened since the last call to `sink`.
    pub fn dispatch<S: Sink>(&mut self, sink: &mut S) {
        on_backend!(self, d => d.dispatch(sink))
    }

    /// Moves buffers the driver is done with (written chunks, spare queues) into `pool`.
    pub fn reclaim(&mut self, pool: &mut Pool) {
        on_backend!(self, d => d.reclaim(pool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    fn backends() -> Vec<Backend> {
        let mut v = vec![Backend::Epoll];
        match Backend::IoUring.resolve() {
            Ok(_) => v.push(Backend::IoUring),
            Err(why) => eprintln!("SKIPPED io_uring: {why}"),
        }
        v
    }

    fn driver(backend: Backend) -> Driver {
        let d = Driver::new(&DriverConfig {
            backend,
            ..DriverConfig::default()
        })
        .expect("driver");
        assert_eq!(d.backend(), backend);
        d
    }

    /// Records what the driver reports.
    #[derive(Default)]
    struct Log {
        accepted: Vec<Token>,
        received: Vec<(Token, Vec<u8>)>,
        sent: usize,
        closed: Vec<Token>,
        woken: usize,
        /// What `read_budget` answers (`None`: no limit).
        budget: Option<usize>,
    }

    impl Sink for Log {
        fn read_budget(&mut self, _: Token) -> usize {
            self.budget.unwrap_or(usize::MAX)
        }
        fn accepted(&mut self, token: Token, peer: Option<SocketAddr>) {
            assert!(peer.is_some_and(|p| p.ip().is_loopback()));
            self.accepted.push(token);
        }
        fn connected(&mut self, _: Token, _: io::Result<()>) {}
        fn received(&mut self, token: Token, data: &mut [u8]) {
            self.received.push((token, data.to_vec()));
        }
        fn sent(&mut self, _: Token, n: usize) {
            self.sent += n;
        }
        fn closed(&mut self, token: Token, _: Option<io::Error>) {
            self.closed.push(token);
        }
        fn woken(&mut self) {
            self.woken += 1;
        }
    }

    fn turn(d: &mut Driver, log: &mut Log) {
        d.submit_and_wait(Some(Instant::now() + Duration::from_millis(20)))
            .expect("wait");
        d.dispatch(log);
    }

    /// `n` clients connected to `d` (listening on loopback) and accepted, their receives
    /// armed.
    fn accept_many(d: &mut Driver, log: &mut Log, n: usize) -> Vec<std::net::TcpStream> {
        let l = listener("127.0.0.1:0".parse().unwrap(), 128).unwrap();
        let addr = local_addr(&l).unwrap();
        d.listen(l).unwrap();
        let clients: Vec<_> = (0..n)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let until = Instant::now() + Duration::from_secs(5);
        while log.accepted.len() < n && Instant::now() < until {
            turn(d, log);
        }
        assert_eq!(log.accepted.len(), n, "accepted within 5 s");
        turn(d, log);
        clients
    }

    /// Every client writes its message (`m000`, `m001`, ...) at once; after 100 ms the
    /// data has settled. Returns the messages, sorted.
    fn burst(clients: &mut [std::net::TcpStream]) -> Vec<Vec<u8>> {
        let want: Vec<_> = (0..clients.len())
            .map(|i| format!("m{i:03}").into_bytes())
            .collect();
        for (c, m) in clients.iter_mut().zip(&want) {
            c.write_all(m).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
        want
    }

    /// What `log` received, one entry per read, sorted.
    fn sorted(log: &Log) -> Vec<Vec<u8>> {
        let mut got: Vec<_> = log.received.iter().map(|(_, b)| b.clone()).collect();
        got.sort();
        got
    }

    /// A driver on `backend` listening on loopback, a client connected to it (5 s read
    /// timeout) and the accepted socket's token.
    fn accepted(backend: Backend, log: &mut Log) -> (Driver, std::net::TcpStream, Token) {
        let mut d = driver(backend);
        let l = listener("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = local_addr(&l).unwrap();
        d.listen(l).unwrap();
        let c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let until = Instant::now() + Duration::from_secs(5);
        while log.accepted.is_empty() && Instant::now() < until {
            turn(&mut d, log);
        }
        let t = *log.accepted.first().expect("accepted within 5 s");
        (d, c, t)
    }

    /// Accept, receive, write (owned and shared chunks, in order), FIN after the
    /// queue, the peer's FIN reported once, wake-ups: the contract, on each backend.
    #[test]
    fn the_contract_over_loopback() {
        for backend in backends() {
            let mut log = Log::default();
            let (mut d, mut c, t) = accepted(backend, &mut log);
            let until = Instant::now() + Duration::from_secs(5);
            c.write_all(b"ping").unwrap();
            while log.received.is_empty() && Instant::now() < until {
                turn(&mut d, &mut log);
            }
            assert_eq!(log.received, vec![(t, b"ping".to_vec())]);
            d.write(t, Chunk::Owned(b"one ".to_vec()));
            d.write(t, Chunk::Shared(Arc::from(&b"two "[..])));
            d.write(t, Chunk::Owned(b"three".to_vec()));
            d.shutdown_write(t);
            while log.sent < 13 && Instant::now() < until {
                turn(&mut d, &mut log);
            }
            assert_eq!(log.sent, 13, "every byte written is reported");
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"one two three", "in order, then FIN");
            drop(c);
            while log.closed.is_empty() && Instant::now() < until {
                turn(&mut d, &mut log);
            }
            assert_eq!(log.closed, vec![t], "the peer's FIN, reported once");
            d.waker().wake();
            while log.woken == 0 && Instant::now() < until {
                turn(&mut d, &mut log);
            }
            assert_eq!(log.woken, 1);
            d.close(t, false);
            d.write(t, Chunk::Owned(b"late".to_vec())); // ignored: the token is given up
            turn(&mut d, &mut log);
            assert_eq!(d.sockets(), 0, "the socket is gone once nothing names it");
        }
    }

    /// Accepted sockets have `TCP_NODELAY` (from the listener, checked on the first
    /// one) when the configuration asks for it, and not otherwise, on each backend.
    #[test]
    fn accepted_sockets_have_nodelay_as_configured() {
        for backend in backends() {
            for want in [true, false] {
                let mut d = Driver::new(&DriverConfig {
                    backend,
                    nodelay: want,
                    ..DriverConfig::default()
                })
                .expect("driver");
                assert_eq!(d.backend(), backend, "no fallback to another backend");
                let mut log = Log::default();
                let _clients = accept_many(&mut d, &mut log, 3);
                for &t in &log.accepted {
                    assert_eq!(d.nodelay(t), Some(want), "{backend:?}, nodelay {want}");
                }
            }
        }
    }

    /// A socket given up is closed for good: by the next submission once nothing names
    /// it (a FIN, or a reset when asked for), and by the driver's drop where no turn
    /// came after that.
    #[test]
    fn a_closed_socket_is_closed_by_the_next_turn_or_the_drop() {
        use std::io::ErrorKind;
        // io_uring: the first turn's submission carries the receive's cancellation,
        // whose completion frees the socket and queues the descriptor's close for the
        // second; a drop after one turn must submit that close itself
        for backend in backends() {
            for (reset, turns) in [(false, 2), (true, 2), (false, 1), (false, 0)] {
                let mut log = Log::default();
                let (mut d, mut c, t) = accepted(backend, &mut log);
                d.close(t, reset);
                for _ in 0..turns {
                    turn(&mut d, &mut log);
                }
                if turns == 2 {
                    assert_eq!(d.sockets(), 0, "{backend:?}: gone once nothing names it");
                } else {
                    drop(d);
                }
                let mut got = Vec::new();
                let r = c.read_to_end(&mut got);
                let what = format!("{backend:?}, reset {reset}, {turns} turns: {r:?}");
                match r {
                    Ok(0) => assert!(!reset, "{what}"),
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => assert!(reset, "{what}"),
                    _ => panic!("{what}"),
                }
            }
        }
    }

    /// What is written last before a FIN (a close frame, an HTTP error's answer) and
    /// the FIN leave in one segment, on each backend: the peer sees one segment, with
    /// the bytes and the end of stream.
    #[test]
    fn the_last_write_and_the_fin_share_a_segment() {
        for backend in backends() {
            let mut log = Log::default();
            let (mut d, mut c, t) = accepted(backend, &mut log);
            std::thread::sleep(Duration::from_millis(20)); // the handshake's segments settle
            let before = sys::segments(c.as_raw_fd()).0;
            d.write(t, Chunk::Owned(b"\x88\x02\x03\xe8".to_vec()));
            d.shutdown_write(t);
            let until = Instant::now() + Duration::from_secs(5);
            while log.sent < 4 && Instant::now() < until {
                turn(&mut d, &mut log);
            }
            turn(&mut d, &mut log);
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            assert_eq!(got, b"\x88\x02\x03\xe8", "{backend:?}: the bytes, then FIN");
            assert_eq!(
                sys::segments(c.as_raw_fd()).0 - before,
                1,
                "{backend:?}: one segment"
            );
            d.close(t, false);
        }
    }

    /// One turn reads every socket that has a small message waiting, as a round of a
    /// fan-out brings them (each publisher's message goes to every subscriber, so a
    /// turn that reads only some of them sends twice to each). On io_uring the kernel
    /// runs 20 receives per enter that asks for one completion (Linux 6.10 and later);
    /// `dispatch` then gathers the rest.
    #[test]
    fn one_turn_reads_every_socket_with_a_message() {
        const N: usize = 100;
        for backend in backends() {
            let mut d = driver(backend);
            let mut log = Log::default();
            let mut clients = accept_many(&mut d, &mut log, N);
            let want = burst(&mut clients);
            turn(&mut d, &mut log);
            assert_eq!(
                log.received.len(),
                N,
                "{backend:?}: one turn read every socket"
            );
            assert_eq!(sorted(&log), want, "{backend:?}");
        }
    }

    /// io_uring keeps in its ring only as many buffers as the receives need: steady
    /// traffic on one socket shrinks the ring's population, and when a hundred sockets
    /// then read at once the ring runs dry (`ENOBUFS`), fills again, and every message
    /// is read, in the same turn or the next.
    #[test]
    fn uring_ring_shrinks_under_steady_reads_and_fills_again_when_they_burst() {
        const N: usize = 100;
        if !backends().contains(&Backend::IoUring) {
            // backends() said why
            return;
        }
        let mut d = driver(Backend::IoUring);
        let (full, held) = d.ring_population().unwrap();
        assert_eq!((full, held), (128, 0), "all buffers in the ring at first");
        let mut log = Log::default();
        let mut clients = accept_many(&mut d, &mut log, N);
        // steady: one read at a time on one socket, 4 windows of receives
        let until = Instant::now() + Duration::from_secs(20);
        for i in 0..4096 {
            clients[0].write_all(b"s").unwrap();
            while log.received.len() <= i && Instant::now() < until {
                turn(&mut d, &mut log);
            }
        }
        assert_eq!(log.received.len(), 4096, "every steady read within 20 s");
        let (in_ring, held) = d.ring_population().unwrap();
        assert!(
            in_ring <= 32 && held >= 96,
            "the population shrank to a quarter: {in_ring} in the ring, {held} held"
        );
        // a burst: a message on every socket at once, more than the ring now holds
        log.received.clear();
        let want = burst(&mut clients);
        let until = Instant::now() + Duration::from_secs(5);
        while log.received.len() < N && Instant::now() < until {
            turn(&mut d, &mut log);
        }
        assert_eq!(sorted(&log), want, "every message of the burst, once");
        let (in_ring, held) = d.ring_population().unwrap();
        assert_eq!(
            (in_ring, held),
            (128, 0),
            "the ring ran dry and every buffer went back in"
        );
    }

    /// epoll reads no more than the sink's budget at a time, and a read that fills the
    /// budget is not taken for a drained socket: every byte still arrives, in order,
    /// without another edge (the peer writes once, then waits).
    #[test]
    fn epoll_reads_at_most_the_budget_and_loses_nothing() {
        const BUDGET: usize = 1000;
        let mut log = Log {
            budget: Some(BUDGET),
            ..Log::default()
        };
        let (mut d, mut c, _) = accepted(Backend::Epoll, &mut log);
        let until = Instant::now() + Duration::from_secs(5);
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        c.write_all(&data).unwrap();
        let got = |log: &Log| log.received.iter().map(|(_, b)| b.len()).sum::<usize>();
        while got(&log) < data.len() && Instant::now() < until {
            turn(&mut d, &mut log);
        }
        assert!(
            log.received.iter().all(|(_, b)| b.len() <= BUDGET),
            "a read past the budget"
        );
        let all: Vec<u8> = log.received.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(all.len(), data.len(), "every byte read");
        assert!(all == data, "in order");
        assert!(log.received.len() >= data.len() / BUDGET);
    }

    /// epoll's write there and then: a buffer larger than the socket takes goes out in
    /// part, the socket is then left to its queue (no second direct write jumps ahead
    /// of what is queued), and the rest queued with `write` follows in order.
    #[test]
    fn epoll_write_now_in_part_then_the_queue_in_order() {
        let mut log = Log::default();
        let (mut d, mut c, t) = accepted(Backend::Epoll, &mut log);
        // more than loopback's socket buffers take while the peer does not read
        let data: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
        let n = d.write_now(t, &data).expect("tried");
        assert!(n < data.len(), "64 MiB taken at once");
        assert_eq!(d.write_now(t, b"x"), None, "blocked: no direct write");
        d.write(t, Chunk::Owned(data[n..].to_vec()));
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            c.read_to_end(&mut got).map(|_| got)
        });
        let until = Instant::now() + Duration::from_secs(30);
        while log.sent < data.len() - n && Instant::now() < until {
            turn(&mut d, &mut log);
        }
        assert_eq!(log.sent, data.len() - n, "the queued rest reported written");
        d.close(t, false);
        turn(&mut d, &mut log);
        let got = reader.join().unwrap().expect("read");
        assert_eq!(got.len(), data.len());
        assert!(got == data, "in order");
    }

    /// A waker keeps its descriptor as long as it lives: waking after the driver is
    /// gone writes to that eventfd, never to a descriptor number reused since.
    #[test]
    fn a_waker_outlives_its_driver() {
        for backend in backends() {
            let d = driver(backend);
            let w = d.waker();
            let raw = w.raw();
            drop(d);
            // a new descriptor does not get the waker's number
            let f = std::fs::File::open("/dev/null").unwrap();
            assert_ne!(AsRawFd::as_raw_fd(&f), raw);
            let link = std::fs::read_link(format!("/proc/self/fd/{raw}")).unwrap();
            assert!(
                link.to_string_lossy().contains("eventfd"),
                "fd {raw} is {link:?}"
            );
            w.wake();
        }
    }

    /// The calling thread's voluntary context switches so far (each a sleep). Panics
    /// where the count cannot be read, so that the test below cannot pass unmeasured.
    fn sleeps() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("voluntary_ctxt_switches")
    }

    /// A worker that answers each message as it comes sleeps once per message, not
    /// twice: after its answer goes out it sleeps until the next message, with no
    /// wake-up in between (io_uring once waited for one completion more than the sends
    /// it submitted, with a minimum wait, and that wait's expiry woke it after every
    /// answer). A client sends 30 messages 3 ms apart, each after the last one's echo.
    #[test]
    fn an_echo_costs_one_sleep() {
        const N: usize = 30;
        for backend in backends() {
            let mut log = Log::default();
            let (mut d, mut c, t) = accepted(backend, &mut log);
            turn(&mut d, &mut log);
            let client = std::thread::spawn(move || {
                let mut buf = [0u8; 8];
                for i in 0..N {
                    std::thread::sleep(Duration::from_millis(3));
                    let m = format!("msg{i:05}");
                    c.write_all(m.as_bytes()).unwrap();
                    c.read_exact(&mut buf).unwrap();
                    assert_eq!(&buf, m.as_bytes());
                }
            });
            let before = sleeps();
            let until = Instant::now() + Duration::from_secs(10);
            let mut answered = 0;
            while (log.sent < N * 8 || answered < N) && Instant::now() < until {
                d.submit_and_wait(Some(Instant::now() + Duration::from_secs(1)))
                    .expect("wait");
                d.dispatch(&mut log);
                for (tok, data) in log.received.drain(..) {
                    assert_eq!(tok, t);
                    answered += 1;
                    d.write(t, Chunk::Owned(data));
                }
            }
            let slept = sleeps() - before;
            client.join().unwrap();
            assert_eq!(log.sent, N * 8, "{backend:?}: every echo written");
            // one sleep per message, and a little slack for a message split in two
            assert!(
                slept <= (N + N / 3) as u64,
                "{backend:?}: {slept} sleeps for {N} messages"
            );
            eprintln!("{backend:?}: {slept} sleeps for {N} messages");
        }
    }
}
