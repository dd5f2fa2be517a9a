//! The epoll backend (mio, edge-triggered). One receive buffer per worker: a read goes
//! into it and is lent to the sink, unless the sink keeps a partial frame, which the
//! next read lands straight behind. Writes are queued per socket and written with one
//! `writev` per socket when the loop submits, then again whenever the socket turns
//! writable. Deadlines closer than a few milliseconds use a timerfd (epoll's own
//! timeout counts whole milliseconds).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token as MioToken};
use slab::Slab;

use super::{sys, Chunk, DriverConfig, NoDelay, Sink, Token, Waker};
use crate::alloc::mostly_room;
use crate::pool::{OutQueue, Pool};

const LISTENER: MioToken = MioToken(usize::MAX - 1);
const WAKE: MioToken = MioToken(usize::MAX - 2);
const TIMER: MioToken = MioToken(usize::MAX - 3);
/// Deadlines nearer than this are kept by the timerfd, the rest by epoll's timeout.
const PRECISE: Duration = Duration::from_millis(5);

fn mio_token(t: Token) -> MioToken {
    MioToken(t.idx as usize | (t.gen as usize) << 32)
}

#[derive(Debug)]
struct Sock {
    fd: OwnedFd,
    /// The token's generation, 16 bits (tokens name a socket for as long as the caller
    /// holds it; a stale one would need 65,536 sockets through the same slab index in
    /// between): 16 bytes a socket with the flags and the queue.
    gen: u16,
    f: SockFlags,
    q: OutQueue,
}

impl Sock {
    /// Whether `t` names this socket (and not an earlier one at its index).
    #[inline]
    fn holds(&self, t: Token) -> bool {
        self.gen as u32 == t.gen
    }

    /// A FIN is wanted and everything queued before it is written.
    #[inline]
    fn fin_due(&self) -> bool {
        self.q.is_empty() && self.f.shut_wanted() && !self.f.shut_done()
    }
}

crate::bits::bit_flags! {
    /// A socket's state bits.
    SockFlags:
    /// The connect is under way.
    connecting set_connecting = 1;
    /// The end of the read side was reported.
    ended set_ended = 2;
    /// The socket took less than was offered: wait for writability.
    blocked set_blocked = 4;
    /// In the list of sockets to write at the next submit.
    dirty set_dirty = 8;
    /// FIN once the queue is written.
    shut_wanted set_shut_wanted = 16;
    /// FIN sent.
    shut_done set_shut_done = 32;
    /// The caller wants it read.
    reading set_reading = 64;
    /// Readability came (or may have come) while not reading: read on resume.
    read_pending set_read_pending = 128;
}

/// What the submit phase found, reported at the next dispatch.
#[derive(Debug)]
enum Done {
    Sent(Token, usize),
    Closed(Token, io::Error),
    Resume(Token),
}

pub(super) struct Epoll {
    poll: Poll,
    events: Events,
    waker: Waker,
    timer: OwnedFd,
    timer_at: Option<Instant>,
    listener: Option<OwnedFd>,
    spare: Option<OwnedFd>,
    socks: Slab<Sock>,
    gen: u16,
    /// The receive buffer, `buf[buf_at..buf_at + buf_len]`: its start on a 64-byte
    /// boundary, where the kernel's copy into it runs fastest.
    buf: Vec<u8>,
    buf_at: usize,
    buf_len: usize,
    dirty: Vec<Token>,
    done: Vec<Done>,
    pool: Pool,
    nodelay: bool,
    /// How accepted sockets get `TCP_NODELAY`.
    accepted_nodelay: NoDelay,
    /// Receive time stamps asked for: set on every socket, read with each receive.
    rx_timestamps: bool,
}

impl Epoll {
    pub(super) fn new(cfg: &DriverConfig, waker: Waker) -> io::Result<Epoll> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut SourceFd(&waker.raw()), WAKE, Interest::READABLE)?;
        let timer = sys::timerfd()?;
        poll.registry()
            .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)?;
        let buf_len = cfg.recv_buffer_size.max(512);
        let buf = vec![0; buf_len + 64];
        let buf_at = buf.as_ptr().align_offset(64).min(64);
        Ok(Epoll {
            poll,
            events: Events::with_capacity(1024),
            waker,
            timer,
            timer_at: None,
            listener: None,
            spare: None,
            socks: Slab::new(),
            gen: 0,
            buf,
            buf_at,
            buf_len,
            dirty: Vec::new(),
            done: Vec::new(),
            pool: Pool::default(),
            nodelay: cfg.nodelay,
            accepted_nodelay: NoDelay::Off,
            rx_timestamps: cfg.rx_timestamps,
        })
    }

    fn sock(&mut self, t: Token) -> Option<&mut Sock> {
        self.socks.get_mut(t.index()).filter(|s| s.holds(t))
    }

    fn insert(&mut self, fd: OwnedFd, connecting: bool) -> io::Result<Token> {
        self.gen = self.gen.wrapping_add(1);
        let raw = fd.as_raw_fd();
        if self.rx_timestamps {
            sys::set_rx_timestamps(raw)?;
        }
        let entry = self.socks.vacant_entry();
        let t = Token::new(entry.key(), self.gen as u32);
        self.poll.registry().register(
            &mut SourceFd(&raw),
            mio_token(t),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut f = SockFlags::default();
        f.set_connecting(connecting);
        f.set_blocked(connecting);
        f.set_reading(true);
        entry.insert(Sock {
            fd,
            gen: self.gen,
            f,
            q: OutQueue::default(),
        });
        Ok(t)
    }

    pub(super) fn listen(&mut self, listener: OwnedFd) -> io::Result<()> {
        self.accepted_nodelay = NoDelay::listening(self.nodelay, listener.as_raw_fd());
        self.poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTENER,
            Interest::READABLE,
        )?;
        self.listener = Some(listener);
        self.spare = sys::spare_fd();
        Ok(())
    }

    pub(super) fn stop_listening(&mut self) {
        if let Some(l) = self.listener.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&l.as_raw_fd()));
        }
    }

    pub(super) fn connect(
        &mut self,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> io::Result<Token> {
        let fd = sys::connect(addr, source, self.nodelay)?;
        self.insert(fd, true)
    }

    #[inline]
    pub(super) fn write(&mut self, t: Token, chunk: Chunk) {
        self.enqueue(t, |q, pool| q.push_chunk(pool, chunk));
    }

    pub(super) fn write_queue(&mut self, t: Token, out: &mut OutQueue, pool: &mut Pool) {
        if !self.enqueue(t, |q, dpool| q.append_queue(dpool, out, pool)) {
            out.clear(pool);
        }
    }

    /// Runs `f` on the queue of `t`, if it is live, and marks it to be written; false
    /// when `t` is gone.
    #[inline]
    fn enqueue(&mut self, t: Token, f: impl FnOnce(&mut OutQueue, &mut Pool)) -> bool {
        let Some(s) = self.socks.get_mut(t.index()).filter(|s| s.holds(t)) else {
            return false;
        };
        f(&mut s.q, &mut self.pool);
        if !s.f.dirty() {
            s.f.set_dirty(true);
            self.dirty.push(t);
        }
        true
    }

    /// Writes `bytes` to `t` at once when nothing is queued for it or waiting on it;
    /// how many went out (0 when the socket took none), or `None` when it could not be
    /// tried or failed (the caller then queues as usual, and the queue's write
    /// reports the error).
    pub(super) fn write_now(&mut self, t: Token, bytes: &[u8]) -> Option<usize> {
        let s = self.socks.get_mut(t.index()).filter(|s| s.holds(t))?;
        if !s.q.is_empty() || s.f.blocked() || s.f.connecting() || s.f.ended() || s.f.shut_wanted()
        {
            return None;
        }
        match sys::send_vectored(s.fd.as_raw_fd(), &[io::IoSlice::new(bytes)], false) {
            Ok(n) => {
                if n < bytes.len() {
                    s.f.set_blocked(true);
                }
                Some(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.f.set_blocked(true);
                Some(0)
            }
            Err(_) => None,
        }
    }

    pub(super) fn shutdown_write(&mut self, t: Token) {
        let Some(s) = self.sock(t) else { return };
        s.f.set_shut_wanted(true);
        if !s.f.dirty() {
            s.f.set_dirty(true);
            self.dirty.push(t);
        }
    }

    pub(super) fn close(&mut self, t: Token, reset: bool) {
        if self.sock(t).is_none() {
            return;
        }
        let mut s = self.socks.remove(t.index());
        if reset {
            let _ = sys::set_linger_zero(s.fd.as_raw_fd());
        }
        s.q.clear(&mut self.pool);
        // the descriptor closes here: no operation is ever in flight on epoll. Closing
        // it takes it out of the epoll set too (the driver never duplicates a socket's
        // descriptor), so no EPOLL_CTL_DEL: one system call less per connection.
    }

    pub(super) fn set_reading(&mut self, t: Token, on: bool) {
        let Some(s) = self.sock(t) else { return };
        s.f.set_reading(on);
        if on && s.f.read_pending() {
            // edge-triggered: the readiness that came while paused will not come again
            s.f.set_read_pending(false);
            self.done.push(Done::Resume(t));
        }
    }

    #[cfg(test)]
    pub(super) fn fd(&mut self, t: Token) -> Option<RawFd> {
        self.sock(t).map(|s| s.fd.as_raw_fd())
    }

    pub(super) fn peer_addr(&mut self, t: Token) -> Option<SocketAddr> {
        self.sock(t).and_then(|s| sys::peer_addr(s.fd.as_raw_fd()))
    }

    pub(super) fn queued(&mut self, t: Token) -> usize {
        self.sock(t).map_or(0, |s| s.q.len())
    }

    pub(super) fn sockets(&mut self) -> usize {
        self.socks.len()
    }

    /// Frees the buffers its pool keeps; gives back the socket table's room past its
    /// last entry in use, when that is most of it.
    pub(super) fn compact(&mut self) {
        self.pool.clear();
        if mostly_room(self.socks.capacity(), self.socks.len()) {
            self.socks.shrink_to_fit();
        }
    }

    pub(super) fn reclaim(&mut self, pool: &mut Pool) {
        self.pool.give_buffers(pool);
    }

    /// Writes what `t` has queued until done or the socket is full. Returns the bytes
    /// written and the error that ended the socket, if any.
    fn flush(&mut self, t: Token) -> (usize, Option<io::Error>) {
        let Some(s) = self.socks.get_mut(t.index()).filter(|s| s.holds(t)) else {
            return (0, None);
        };
        let fd = s.fd.as_raw_fd();
        let mut total = 0;
        let mut err = None;
        // a FIN is to follow: it leaves in the last segment (a close frame and the FIN
        // as one packet; partial segments go out as ACKs come, corked or not)
        let fin = s.f.shut_wanted() && !s.f.connecting();
        while !s.q.is_empty() && !s.f.blocked() {
            let mut iov = [io::IoSlice::new(&[]); 64];
            let n = s.q.iovecs(&mut iov);
            let want: usize = iov[..n].iter().map(|b| b.len()).sum();
            match sys::send_vectored(fd, &iov[..n], fin) {
                Ok(w) => {
                    s.q.advance(w, &mut self.pool);
                    total += w;
                    if w < want {
                        s.f.set_blocked(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => s.f.set_blocked(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    s.q.clear(&mut self.pool);
                    err = Some(e);
                }
            }
        }
        if s.fin_due() && !s.f.connecting() {
            s.f.set_shut_done(true);
            let _ = sys::shutdown_write(fd);
        }
        if err.is_some() {
            if s.f.ended() {
                err = None;
            } else {
                s.f.set_ended(true);
            }
        }
        (total, err)
    }

    pub(super) fn submit_and_wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.submit();
        let timeout = if !self.done.is_empty() {
            Some(Duration::ZERO)
        } else {
            deadline.map(|d| {
                let left = d.saturating_duration_since(Instant::now());
                if left < PRECISE && !left.is_zero() {
                    if self.timer_at != Some(d) {
                        self.timer_at = Some(d);
                        sys::timerfd_arm(self.timer.as_raw_fd(), left);
                    }
                    PRECISE * 2
                } else {
                    left
                }
            })
        };
        self.poll(timeout)
    }

    /// Writes what was queued since, and collects what is ready without waiting.
    pub(super) fn submit_and_gather(&mut self) -> io::Result<()> {
        self.submit();
        self.poll(Some(Duration::ZERO))
    }

    fn poll(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Writes every socket written to since the last submit.
    pub(super) fn submit(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &t in &dirty {
            if let Some(s) = self.sock(t) {
                s.f.set_dirty(false);
            } else {
                continue;
            }
            let (n, err) = self.flush(t);
            if n > 0 {
                self.done.push(Done::Sent(t, n));
            }
            if let Some(e) = err {
                self.done.push(Done::Closed(t, e));
            }
        }
        let mut dirty = dirty;
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    pub(super) fn dispatch<S: Sink>(&mut self, sink: &mut S) {
        // the list is kept between iterations (taking it each time cost an allocation
        // per loop iteration: about 100 instructions per 20 B echo, callgrind)
        let mut done = std::mem::take(&mut self.done);
        for d in done.drain(..) {
            match d {
                Done::Sent(t, n) => {
                    if self.sock(t).is_some() {
                        sink.sent(t, n);
                    }
                }
                Done::Closed(t, e) => {
                    if self.sock(t).is_some() {
                        sink.closed(t, Some(e));
                    }
                }
                Done::Resume(t) => self.read(t, true, sink),
            }
        }
        if self.done.is_empty() {
            std::mem::swap(&mut self.done, &mut done);
        }
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for ev in events.iter() {
            match ev.token() {
                LISTENER => self.accept_all(sink),
                WAKE => {
                    sys::eventfd_clear(self.waker.raw());
                    sink.woken();
                }
                TIMER => {
                    self.timer_at = None;
                    let mut b = [0u8; 8];
                    let _ = sys::read(self.timer.as_raw_fd(), &mut b);
                }
                MioToken(raw) => {
                    let t = Token::new(raw & 0xffff_ffff, (raw >> 32) as u32);
                    let Some(s) = self.sock(t) else { continue };
                    let hup = ev.is_read_closed() || ev.is_error();
                    if s.f.connecting() {
                        if !(ev.is_writable() || hup) {
                            continue;
                        }
                        s.f.set_connecting(false);
                        let res = match sys::take_error(s.fd.as_raw_fd()) {
                            Ok(None) if !ev.is_error() => Ok(()),
                            Ok(None) => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
                            Ok(Some(e)) | Err(e) => Err(e),
                        };
                        let ok = res.is_ok();
                        if !ok {
                            s.f.set_ended(true);
                        }
                        sink.connected(t, res);
                        if !ok {
                            continue;
                        }
                    }
                    // every event of a socket with room says writable (the kernel
                    // reports its whole state): only a queue, or a FIN waiting for one,
                    // needs the write (about 50 instructions per one-in-flight echo, callgrind)
                    let pending = ev.is_writable()
                        && self.sock(t).is_some_and(|s| {
                            s.f.set_blocked(false);
                            !s.q.is_empty() || s.fin_due()
                        });
                    if pending {
                        let (n, err) = self.flush(t);
                        if n > 0 {
                            sink.sent(t, n);
                        }
                        if let Some(e) = err {
                            sink.closed(t, Some(e));
                            continue;
                        }
                    }
                    if hup && self.sock(t).is_some_and(|s| s.f.shut_done()) {
                        // our FIN is out and the peer's has come: the connection is over,
                        // and whatever came before the FIN would be thrown away unread
                        // (a lingering close only waits for the FIN): no read for it
                        self.end(t, None, sink);
                    } else if ev.is_readable() || hup {
                        self.read(t, hup, sink);
                    }
                }
            }
        }
        self.events = events;
    }

    /// Reads `t` until the socket is drained, the sink stops reading it, or it ends.
    /// `hup`: the peer's FIN (or an error) is known to have come, so a short read does
    /// not mean drained: read on to the end (no further edge will say so).
    fn read<S: Sink>(&mut self, t: Token, hup: bool, sink: &mut S) {
        let at = self.buf_at;
        loop {
            let Some(s) = self.socks.get_mut(t.index()).filter(|s| s.holds(t)) else {
                return;
            };
            if s.f.ended() {
                return;
            }
            let budget = if s.f.reading() {
                sink.read_budget(t)
            } else {
                0
            };
            if budget == 0 {
                if let Some(s) = self.socks.get_mut(t.index()) {
                    s.f.set_read_pending(true);
                }
                return;
            }
            let chunk = budget.min(self.buf_len);
            let end = at + chunk;
            let Some(s) = self.socks.get_mut(t.index()) else {
                return;
            };
            s.f.set_read_pending(false);
            let fd: RawFd = s.fd.as_raw_fd();
            // nothing queued for it here: what the sink writes at once goes first
            let direct = s.q.is_empty() && !s.f.blocked() && !s.f.connecting();
            if direct {
                sink.immediate(Some(super::Immediate { fd, token: t }));
            }
            let stamps = self.rx_timestamps;
            let mut stamp = None;
            let res = if let Some(carry) = sink.carry(t) {
                // a partial frame is pending: read straight in behind it, no copy
                let r = sys::read_onto(fd, carry, chunk, stamps.then_some(&mut stamp));
                if let Ok(n @ 1..) = r {
                    if stamps {
                        sink.arrived(stamp);
                    }
                    sink.received_in_carry(t, n);
                }
                r
            } else {
                let r = sys::recv(fd, &mut self.buf[at..end], stamps.then_some(&mut stamp));
                if let Ok(n @ 1..) = r {
                    if stamps {
                        sink.arrived(stamp);
                    }
                    sink.received(t, &mut self.buf[at..at + n]);
                }
                r
            };
            if direct {
                sink.immediate(None);
            }
            match res {
                Ok(0) => {
                    self.end(t, None, sink);
                    return;
                }
                // a short read drained the socket: the next arrival raises a new edge
                Ok(n) if n < chunk && !hup => return,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.end(t, Some(e), sink);
                    return;
                }
            }
        }
    }

    fn end<S: Sink>(&mut self, t: Token, e: Option<io::Error>, sink: &mut S) {
        if let Some(s) = self.sock(t) {
            if !s.f.ended() {
                s.f.set_ended(true);
                sink.closed(t, e);
            }
        }
    }

    fn accept_all<S: Sink>(&mut self, sink: &mut S) {
        loop {
            let Some(l) = self.listener.as_ref() else {
                return;
            };
            let lfd = l.as_raw_fd();
            match sys::accept(lfd) {
                Ok((fd, peer)) => {
                    self.accepted_nodelay.accepted(fd.as_raw_fd());
                    match self.insert(fd, false) {
                        Ok(t) => sink.accepted(t, peer),
                        Err(e) => {
                            tracing::warn!(error = %e, "epoll register failed: connection dropped")
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    // Out of descriptors: give up the spare to accept and reset one waiting
                    // connection, so the listener does not stay readable and spin. (accept
                    // reports EMFILE before it looks at the queue, so an empty queue shows
                    // up only once the spare is free: stop there.)
                    if self.spare.take().is_some() {
                        let accepted = match sys::accept(lfd) {
                            Ok((fd, _)) => {
                                let _ = sys::set_linger_zero(fd.as_raw_fd());
                                drop(fd); // frees the slot the spare takes back
                                true
                            }
                            Err(_) => false,
                        };
                        self.spare = sys::spare_fd();
                        if accepted {
                            continue;
                        }
                        return;
                    }
                    tracing::warn!(error = %e, "accept: out of descriptors (connections dropped)");
                    return;
                }
                // ECONNABORTED and friends: that connection is gone, try the next
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// What the driver keeps per socket is part of every idle connection's cost.
    #[test]
    fn socket_record_stays_small() {
        let n = size_of::<super::Sock>();
        assert!(n <= 16, "epoll Sock grew to {n} bytes");
        // as `slab` keeps it: a vacant entry's next index beside the record
        #[allow(dead_code)]
        enum Entry {
            Vacant(usize),
            Occupied(super::Sock),
        }
        let n = size_of::<Entry>();
        assert!(n <= 16, "a slab entry of an epoll Sock is {n} bytes");
    }
}
