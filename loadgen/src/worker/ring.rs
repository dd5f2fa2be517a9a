//! The io_uring driver of a worker (`--io uring`): the same connections, states and
//! handlers as the epoll driver, with the I/O done through [`crate::uring::Ring`].
//!
//! - connect: a nonblocking `connect`, then a poll for writability; its completion goes
//!   to the same `finish_connect`, and a multishot receive is armed once connected;
//! - receive: one multishot receive per connection into the shared provided buffer
//!   ring; each chunk is handled in place (a partial frame is copied onto the
//!   connection and completed by the next chunks), then the buffer goes back;
//! - send: one send in flight per connection, of its whole queue; what is queued while
//!   it flies goes in the next one. All sends of an iteration, and the wait, are one
//!   `io_uring_enter`;
//! - end: the receive (or poll, or send) is cancelled and the socket closed after the
//!   next submit, so that no queued entry names a descriptor number reused meanwhile.

use std::os::fd::AsRawFd;
use std::time::Duration;

use super::*;
use crate::uring::{Cqe, Ring};

/// Operation kinds, in the top bits of a tag (tag 0 is a cancellation's own
/// completion, ignored).
pub(super) const K_POLL: u64 = 1;
pub(super) const K_RECV: u64 = 2;
pub(super) const K_SEND: u64 = 3;
const GEN_MASK: u32 = 0x07ff_ffff;
/// Receive buffer size: a 16 KiB message with its header fits in one.
const BUF_SIZE: usize = 32 * 1024;
/// Fewest and most receive buffers per worker. The kernel takes them in ring order, so
/// every buffer is written in turn: about one per connection keeps the memory the
/// kernel copies into small enough to stay in cache (with 64 buffers for 10 connections
/// of 16 KiB echoes, the receive copy took 11% of the profile against 6.6% on epoll,
/// and 8.5% with 16). Running short is no loss: the receive ends with ENOBUFS, the
/// data waits in the socket, and the receive is armed again.
const BUFS_MIN: usize = 16;
const BUFS_MAX: usize = 1024;
/// Longest single wait (the loop reads the controller's phase changes on waking).
const MAX_WAIT: u64 = 250_000_000;

/// A tag: kind (bits 59-62), slot generation (27 bits), slot index (32 bits).
pub(super) fn ud(kind: u64, i: usize, gen: u32) -> u64 {
    kind << 59 | ((gen & GEN_MASK) as u64) << 32 | (i as u64 & 0xffff_ffff)
}

fn ud_parts(u: u64) -> (u64, usize, u32) {
    (
        u >> 59,
        (u & 0xffff_ffff) as usize,
        ((u >> 32) as u32) & GEN_MASK,
    )
}

pub(super) struct UringIo {
    // dropped first: in-flight operations end before the sockets below close
    pub(super) ring: Ring,
    cqes: Vec<Cqe>,
    /// Sockets of ended connections, closed once nothing queued can name them.
    to_close: Vec<TcpStream>,
    /// For SOLITON_LOAD_DEBUG: chunks and bytes received, receives that found no free
    /// buffer, sends, short sends.
    recvs: u64,
    recv_bytes: u64,
    no_bufs: u64,
    sends: u64,
    short_sends: u64,
}

impl UringIo {
    /// A ring with receive buffers for about `conns` connections.
    pub(super) fn new(conns: usize) -> io::Result<UringIo> {
        let n = conns.clamp(BUFS_MIN, BUFS_MAX).next_power_of_two() as u16;
        Ok(UringIo {
            ring: Ring::new(n, BUF_SIZE)?,
            cqes: Vec::with_capacity(1024),
            to_close: Vec::new(),
            recvs: 0,
            recv_bytes: 0,
            no_bufs: 0,
            sends: 0,
            short_sends: 0,
        })
    }

    pub(super) fn counters(&self) -> String {
        format!(
            "{} receives ({:.0} B each), {} without a free buffer, {} sends, {} short",
            self.recvs,
            self.recv_bytes as f64 / self.recvs.max(1) as f64,
            self.no_bufs,
            self.sends,
            self.short_sends
        )
    }

    /// A connection ended (reaped): cancel what it has armed; its socket closes after
    /// the next submit.
    pub(super) fn release(&mut self, c: &mut Conn, i: usize) {
        if c.recv_armed {
            self.ring.cancel(ud(K_RECV, i, c.gen));
        }
        if c.poll_armed {
            self.ring.cancel(ud(K_POLL, i, c.gen));
        }
        if c.sending {
            // a send to a peer that stopped reading could wait forever; its completion
            // (sent, or cancelled) gives the buffer back and is then dropped as stale
            self.ring.cancel_send(ud(K_SEND, i, c.gen));
        }
        c.recv_armed = false;
        c.poll_armed = false;
        c.sending = false;
        c.in_flight = 0;
        if let Some(s) = c.sock.take() {
            self.to_close.push(s);
        }
    }
}

/// Starts a send of `c`'s whole queue, unless one is in flight or nothing is queued.
pub(super) fn start_send(ring: &mut Ring, c: &mut Conn, i: usize) {
    if c.sending || c.tx_off >= c.tx.len() {
        return;
    }
    let Some(fd) = c.sock.as_ref().map(|s| s.as_raw_fd()) else {
        return;
    };
    let buf = std::mem::replace(&mut c.tx, std::mem::take(&mut c.spare));
    let off = std::mem::replace(&mut c.tx_off, 0);
    let len = buf.len() - off;
    match ring.send(fd, buf, off, ud(K_SEND, i, c.gen)) {
        Ok(()) => {
            c.sending = true;
            c.in_flight = len;
        }
        Err(buf) => {
            // refused (cannot happen: one send per connection): keep it queued
            c.spare = std::mem::replace(&mut c.tx, buf);
            c.tx_off = off;
        }
    }
}

/// Receives `data` on `c`: behind an incomplete frame or head, if one is pending;
/// otherwise in place, keeping an incomplete end on the connection.
fn absorb(c: &mut Conn, cx: &mut Ctx, i: usize, data: &mut [u8]) {
    let n = data.len();
    if c.rx_hi > c.rx_lo {
        if c.rx.len() - c.rx_hi < n {
            c.rx.copy_within(c.rx_lo..c.rx_hi, 0);
            c.rx_hi -= c.rx_lo;
            c.rx_lo = 0;
            if c.rx.len() - c.rx_hi < n {
                let want = (c.rx.len() * 2).max(c.rx_hi + n + RX_GROW);
                c.rx.resize(want, 0);
            }
        }
        c.rx[c.rx_hi..c.rx_hi + n].copy_from_slice(data);
        c.rx_hi += n;
        let mut own = std::mem::take(&mut c.rx);
        let used = cx.process(c, i, &mut own[c.rx_lo..c.rx_hi]);
        c.rx = own;
        c.rx_lo += used;
    } else {
        let used = cx.process(c, i, data);
        if c.state != State::Free && used < n {
            let left = n - used;
            if c.rx.len() < left + RX_MIN_ROOM {
                c.rx.resize(left + RX_GROW, 0);
            }
            c.rx[..left].copy_from_slice(&data[used..]);
            c.rx_lo = 0;
            c.rx_hi = left;
        }
    }
    if c.rx_lo == c.rx_hi || c.state == State::Free {
        c.rx_lo = 0;
        c.rx_hi = 0;
        // idle connections (hold, connect) keep no buffer
        if cx.idle_mode && !c.rx.is_empty() {
            c.rx = Vec::new();
        }
    }
}

impl Worker {
    /// Submits the iteration's work and waits until `wake` at the latest (not at all
    /// with `spin`).
    pub(super) fn uring_wait(&mut self, wake: u64, spin: bool) -> io::Result<()> {
        let Driver::Uring(u) = &mut self.io else {
            return Ok(());
        };
        let timeout = if spin {
            0
        } else {
            wake.saturating_sub(sys::now_ns()).min(MAX_WAIT)
        };
        let r = u.ring.submit_and_wait(Duration::from_nanos(timeout));
        if u.ring.all_submitted() {
            u.to_close.clear();
        }
        r
    }

    /// Handles the completions that arrived.
    pub(super) fn uring_dispatch(&mut self) {
        let Driver::Uring(u) = &mut self.io else {
            return;
        };
        let mut cqes = std::mem::take(&mut u.cqes);
        u.ring.completions(&mut cqes);
        self.polled_events += cqes.len() as u64;
        for cqe in cqes.drain(..) {
            let (kind, i, gen) = ud_parts(cqe.user_data);
            match kind {
                K_RECV => self.on_recv(cqe, i, gen),
                K_SEND => self.on_sent(cqe, i, gen),
                K_POLL => self.on_connect_poll(&cqe, i, gen),
                _ => {}
            }
        }
        if let Driver::Uring(u) = &mut self.io {
            u.cqes = cqes;
        }
    }

    /// Slot `i` still holds the connection of generation `gen`, not ended.
    fn alive(&self, i: usize, gen: u32) -> bool {
        self.conns
            .get(i)
            .is_some_and(|c| c.gen & GEN_MASK == gen && c.state != State::Free)
    }

    fn on_connect_poll(&mut self, cqe: &Cqe, i: usize, gen: u32) {
        if !self.alive(i, gen) {
            return;
        }
        self.conns[i].poll_armed = false;
        let res = cqe.result;
        if res < 0 {
            let e = io::Error::from_raw_os_error(-res);
            let c = &mut self.conns[i];
            self.cx.conn_failed(c, i, ErrKind::of_connect(&e));
            return;
        }
        let ev = res as u32;
        let writable =
            ev & libc::POLLOUT as u32 != 0 && ev & (libc::POLLERR | libc::POLLHUP) as u32 == 0;
        self.finish_connect(i, writable);
        let Driver::Uring(u) = &mut self.io else {
            return;
        };
        let c = &mut self.conns[i];
        let Some(fd) = c.sock.as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        match c.state {
            // not connected yet after all: wait again
            State::Connecting => {
                u.ring.poll_writable(fd, ud(K_POLL, i, c.gen));
                c.poll_armed = true;
            }
            State::Handshake => {
                u.ring.recv(fd, ud(K_RECV, i, c.gen));
                c.recv_armed = true;
            }
            _ => {}
        }
    }

    fn on_recv(&mut self, cqe: Cqe, i: usize, gen: u32) {
        let alive = self.alive(i, gen);
        let Driver::Uring(u) = &mut self.io else {
            return;
        };
        let res = cqe.result;
        if res > 0 {
            u.recvs += 1;
            u.recv_bytes += res as u64;
        } else if res == -libc::ENOBUFS {
            u.no_bufs += 1;
        }
        if alive && !cqe.more() {
            self.conns[i].recv_armed = false;
        }
        if let Some(bid) = cqe.buffer() {
            if res > 0 && alive && self.conns[i].state != State::Failing {
                let data = u.ring.buffer(bid, res as usize);
                absorb(&mut self.conns[i], &mut self.cx, i, data);
            }
            u.ring.recycle(bid);
        }
        if !alive {
            return;
        }
        let c = &mut self.conns[i];
        if c.state == State::Free {
            return;
        }
        if res == 0 {
            self.cx.on_eof(c, i);
        } else if res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED {
            let e = io::Error::from_raw_os_error(-res);
            self.cx.on_read_error(c, i, &e);
        } else if !c.recv_armed
            && matches!(c.state, State::Handshake | State::Open | State::Closing)
        {
            // the multishot ended (no buffer was free, or the kernel stopped it): again
            if let Some(fd) = c.sock.as_ref().map(|s| s.as_raw_fd()) {
                u.ring.recv(fd, ud(K_RECV, i, c.gen));
                c.recv_armed = true;
            }
        }
    }

    fn on_sent(&mut self, cqe: Cqe, i: usize, gen: u32) {
        let Some((mut buf, off)) = cqe.sent else {
            return;
        };
        if !self.alive(i, gen) {
            return; // the connection ended meanwhile: its bytes no longer matter
        }
        let Driver::Uring(u) = &mut self.io else {
            return;
        };
        let c = &mut self.conns[i];
        c.sending = false;
        c.in_flight = 0;
        let res = cqe.result;
        u.sends += 1;
        if res >= 0 && off + (res as usize) < buf.len() {
            u.short_sends += 1;
        }
        let resend_from = if res >= 0 {
            let done = off + res as usize;
            (done < buf.len()).then_some(done)
        } else if res == -libc::EAGAIN || res == -libc::EINTR {
            Some(off)
        } else {
            let e = io::Error::from_raw_os_error(-res);
            self.cx.on_read_error(c, i, &e);
            return;
        };
        if let Some(from) = resend_from {
            // a short send: the rest goes first, before anything queued since
            let Some(fd) = c.sock.as_ref().map(|s| s.as_raw_fd()) else {
                return;
            };
            let len = buf.len() - from;
            if u.ring.send(fd, buf, from, ud(K_SEND, i, c.gen)).is_ok() {
                c.sending = true;
                c.in_flight = len;
            }
            return;
        }
        if !self.cx.idle_mode && buf.capacity() <= 256 * 1024 {
            buf.clear();
            if c.tx.is_empty() {
                // nothing queued meanwhile: the next frames go in this buffer again, which
                // is still in cache
                c.spare = std::mem::replace(&mut c.tx, buf);
            } else if c.spare.capacity() == 0 {
                c.spare = buf;
            }
        }
        if c.tx_off < c.tx.len() {
            mark_dirty(c, i, &mut self.cx.dirty);
        } else if c.state == State::Failing {
            self.cx.kill(c, i);
        }
    }
}
