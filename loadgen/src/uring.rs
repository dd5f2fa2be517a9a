//! The io_uring ring of one worker, behind a safe interface: the only place (with
//! `sys`) where `unsafe` is allowed in the load generator.
//!
//! What the kernel may touch is owned here until it is done with it:
//! - receive buffers live in a provided buffer ring; a buffer the kernel hands back with
//!   a completion is lent to the caller ([`Ring::buffer`]) until [`Ring::recycle`];
//! - a send's bytes are moved in with [`Ring::send`] and handed back only with that
//!   send's own completion ([`Cqe::sent`]);
//! - on drop, everything in flight is cancelled and waited for (bounded) before the
//!   buffers are freed; what the kernel still holds after that is leaked, not freed.
//!
//! The ring is built with SINGLE_ISSUER, COOP_TASKRUN and DEFER_TASKRUN (6.1+):
//! completions are produced as task work in this thread when it waits, not by
//! interrupting it after every packet. It must be created and used on one thread.
#![allow(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use soliton::bufring::BufRing;

/// Buffer group of the provided buffer ring.
const BGID: u16 = 0;
/// Set in the `user_data` of every send this module builds, so that a send's
/// completion (and only that) gives its buffer back. Callers' tags stay below it.
const SEND_BIT: u64 = 1 << 63;
/// Submission queue entries (more are submitted early when it fills).
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries (the kernel keeps overflow on a list, FEAT_NODROP).
const CQ_ENTRIES: u32 = 8192;
/// Longest wait at drop for sends in flight to finish after their cancellation.
const DROP_WAIT: Duration = Duration::from_millis(250);

/// One completion, copied out of the queue.
#[derive(Debug)]
pub(crate) struct Cqe {
    /// The caller's tag (below 2^63).
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    pub(crate) flags: u32,
    /// For a send: its buffer and the offset it was sent from, back to the caller.
    pub(crate) sent: Option<(Vec<u8>, usize)>,
}

impl Cqe {
    /// The provided buffer this completion filled, lent until [`Ring::recycle`].
    pub(crate) fn buffer(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// A multishot operation stays armed.
    pub(crate) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
}

/// Checks that this kernel gives what the worker's ring needs: the setup flags,
/// waits with a timeout (EXT_ARG), the opcodes, and a provided buffer ring.
pub(crate) fn probe() -> Result<(), String> {
    Ring::new(64, 4096).map(drop).map_err(|e| e.to_string())
}

/// A multiplicative hash for `user_data` keys (the default SipHash is slower, and
/// the keys are not attacker-chosen).
#[derive(Default)]
struct MulHasher(u64);

impl Hasher for MulHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = (v ^ v >> 29).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type SendMap = HashMap<u64, (Vec<u8>, usize), BuildHasherDefault<MulHasher>>;

/// A worker's io_uring.
pub(crate) struct Ring {
    // dropped before `bufs`: the buffer ring is unregistered first (see `Drop`)
    ring: IoUring,
    bufs: ManuallyDrop<BufRing>,
    /// Sends in flight by `user_data` (with `SEND_BIT`): their bytes, and the offset.
    sends: SendMap,
    /// Entries that found the submission queue full even after a submit, in order.
    backlog: VecDeque<squeue::Entry>,
    /// Buffers pushed back since the last publish.
    recycled: bool,
    /// Sends queued since the last wait.
    new_sends: usize,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("sends", &self.sends.len())
            .field("buffers", &self.bufs.entries())
            .finish()
    }
}

impl Ring {
    /// A ring with `buffers` (a power of two) receive buffers of `size` bytes.
    pub(crate) fn new(buffers: u16, size: usize) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_defer_taskrun()
            .setup_cqsize(CQ_ENTRIES)
            .build(SQ_ENTRIES)?;
        if !ring.params().is_feature_ext_arg() {
            return Err(io::Error::other("IORING_FEAT_EXT_ARG missing"));
        }
        let mut p = io_uring::Probe::new();
        ring.submitter().register_probe(&mut p)?;
        for (code, name) in [
            (opcode::RecvMulti::CODE, "recv"),
            (opcode::Send::CODE, "send"),
            (opcode::PollAdd::CODE, "poll_add"),
            (opcode::AsyncCancel::CODE, "async_cancel"),
        ] {
            if !p.is_supported(code) {
                return Err(io::Error::other(format!("opcode {name} unsupported")));
            }
        }
        // SAFETY: kept in a `ManuallyDrop` that `Drop` drops only after unregistering
        // the group (or leaks).
        let bufs = unsafe { BufRing::new(&ring, buffers, size, BGID) }?;
        Ok(Ring {
            ring,
            bufs: ManuallyDrop::new(bufs),
            sends: SendMap::default(),
            backlog: VecDeque::new(),
            recycled: false,
            new_sends: 0,
        })
    }

    /// Queues an entry built in this module (see each builder for what it points to).
    fn push(&mut self, e: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY: the entries built in this module point to no memory of the
            // caller's: sends point into buffers kept in `sends` until their completion,
            // receives into the provided buffer ring, owned here until drop.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            // full: submit what is queued to make room (rare: a burst of new work)
            let _ = self.ring.submit();
            // SAFETY: as above.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
        }
        self.backlog.push_back(e);
    }

    fn drain_backlog(&mut self) {
        while let Some(e) = self.backlog.pop_front() {
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                self.backlog.push_front(e);
                break;
            }
        }
    }

    /// Waits for a socket to become writable (a connect finishing): one completion
    /// with the poll mask, or a negative errno.
    pub(crate) fn poll_writable(&mut self, fd: RawFd, user_data: u64) {
        debug_assert!(user_data < SEND_BIT);
        let e = opcode::PollAdd::new(Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(user_data & !SEND_BIT);
        self.push(e);
    }

    /// Arms a multishot receive into the provided buffers: a completion per chunk
    /// received, flagged `more` while it stays armed; 0 at end of stream.
    pub(crate) fn recv(&mut self, fd: RawFd, user_data: u64) {
        debug_assert!(user_data < SEND_BIT);
        let e = opcode::RecvMulti::new(Fd(fd), BGID)
            .build()
            .user_data(user_data & !SEND_BIT);
        self.push(e);
    }

    /// Sends `buf[off..]`, which comes back in the completion's [`Cqe::sent`] (with
    /// `off`). A second send with the same `user_data` while one is in flight is
    /// refused: the buffer is given back.
    pub(crate) fn send(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        off: usize,
        user_data: u64,
    ) -> Result<(), Vec<u8>> {
        debug_assert!(user_data < SEND_BIT);
        let ud = user_data | SEND_BIT;
        if off >= buf.len() || self.sends.contains_key(&ud) {
            return Err(buf);
        }
        let len = (buf.len() - off).min(u32::MAX as usize) as u32;
        let ptr = buf[off..].as_ptr();
        // the heap block does not move with the Vec: `ptr` stays valid while the Vec
        // sits in `sends`, which it leaves only with this send's completion
        self.sends.insert(ud, (buf, off));
        self.new_sends += 1;
        let e = opcode::Send::new(Fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(ud);
        self.push(e);
        Ok(())
    }

    /// Cancels the operation tagged `user_data` (a poll or a receive).
    pub(crate) fn cancel(&mut self, user_data: u64) {
        debug_assert!(user_data < SEND_BIT);
        self.push_cancel(user_data & !SEND_BIT);
    }

    /// Cancels the send tagged `user_data`: its completion (bytes sent, or
    /// `-ECANCELED`) still comes, with the buffer.
    pub(crate) fn cancel_send(&mut self, user_data: u64) {
        debug_assert!(user_data < SEND_BIT);
        self.push_cancel(user_data | SEND_BIT);
    }

    fn push_cancel(&mut self, target: u64) {
        // the cancellation's own completion carries tag 0 with SEND_BIT clear: the
        // caller ignores tag 0
        let e = opcode::AsyncCancel::new(target).build().user_data(0);
        self.push(e);
    }

    /// Submits everything queued and waits up to `timeout` (zero: only collect what is
    /// ready) for a completion other than those of the sends just submitted. Deferred
    /// task work (receives, send retries) runs in here.
    pub(crate) fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        if self.recycled {
            self.bufs.publish();
            self.recycled = false;
        }
        self.drain_backlog();
        // A send to a socket with room completes during the submit, and its completion
        // alone would end the wait at once: a second enter per iteration, and smaller
        // batches. So the wait is for one completion more than the new sends, unless a
        // send from an earlier wait is still in flight (its completion may be the only
        // thing to come: it must end the wait). A send that does not complete at once
        // can at worst hold the wait to `timeout`, which the caller bounds.
        let earlier = self.sends.len() - self.new_sends.min(self.sends.len());
        let want = if earlier == 0 {
            (self.new_sends + 1).min(CQ_ENTRIES as usize)
        } else {
            1
        };
        self.new_sends = 0;
        let ts = Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(want, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Nothing is queued that the kernel has not taken yet.
    pub(crate) fn all_submitted(&mut self) -> bool {
        self.backlog.is_empty() && self.ring.submission().is_empty()
    }

    /// Moves the completions that arrived into `out` (appended).
    pub(crate) fn completions(&mut self, out: &mut Vec<Cqe>) {
        for c in self.ring.completion() {
            let ud = c.user_data();
            let flags = c.flags();
            let sent = if ud & SEND_BIT != 0 {
                self.sends.remove(&ud)
            } else {
                None
            };
            if let Some(bid) = cqueue::buffer_select(flags) {
                self.bufs.lend(bid);
            }
            out.push(Cqe {
                user_data: ud & !SEND_BIT,
                result: c.result(),
                flags,
                sent,
            });
        }
    }

    /// The `len` bytes received into buffer `bid` (lent by a completion).
    pub(crate) fn buffer(&mut self, bid: u16, len: usize) -> &mut [u8] {
        self.bufs.get(bid, len)
    }

    /// Gives buffer `bid` back to the kernel (visible at the next submit).
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.bufs.give_back(bid);
        self.recycled = true;
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // everything in flight is cancelled; sends are waited for (their bytes may be
        // read until their completion), then the buffer ring is unregistered, so no
        // receive can pick a buffer any more, before the memory goes
        self.drain_backlog();
        let _ = self.ring.submit();
        let e = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(0);
        // SAFETY: a cancellation points to no memory.
        if unsafe { self.ring.submission().push(&e) }.is_err() {
            let _ = self.ring.submit();
            // SAFETY: as above.
            let _ = unsafe { self.ring.submission().push(&e) };
        }
        let until = Instant::now() + DROP_WAIT;
        let mut first = true;
        while first || (!self.sends.is_empty() && Instant::now() < until) {
            first = false;
            let ts = Timespec::new().nsec(10_000_000);
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            for c in self.ring.completion() {
                self.sends.remove(&c.user_data());
            }
        }
        // sends that even cancellation did not end: the kernel may still read their
        // bytes, so they are leaked rather than freed under it
        std::mem::forget(std::mem::take(&mut self.sends));
        if self.ring.submitter().unregister_buf_ring(BGID).is_ok() {
            // SAFETY: dropped once, here; the kernel no longer knows the buffer ring and
            // the receives that used it were cancelled above.
            unsafe { ManuallyDrop::drop(&mut self.bufs) };
        }
        // else the buffers are leaked: the kernel may still hold them
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    /// Send and multishot receive over a loopback pair, when the kernel allows.
    #[test]
    fn send_and_receive() {
        let Ok(mut r) = Ring::new(8, 1024) else {
            eprintln!("SKIPPED: io_uring unavailable here");
            return;
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        r.recv(a.as_raw_fd(), 7);
        let msg = b"hello, ring".to_vec();
        r.send(b.as_raw_fd(), msg, 2, 9).unwrap();
        // a second send on the same tag is refused, not lost
        assert!(r.send(b.as_raw_fd(), b"x".to_vec(), 0, 9).is_err());
        let mut got = Vec::new();
        let mut sent_back = None;
        let until = Instant::now() + Duration::from_secs(5);
        while (got.len() < 9 || sent_back.is_none()) && Instant::now() < until {
            r.submit_and_wait(Duration::from_millis(50)).unwrap();
            let mut cqes = Vec::new();
            r.completions(&mut cqes);
            for c in cqes {
                match c.user_data {
                    7 => {
                        assert!(c.result > 0 && c.more());
                        let bid = c.buffer().unwrap();
                        got.extend_from_slice(r.buffer(bid, c.result as usize));
                        r.recycle(bid);
                    }
                    9 => {
                        assert_eq!(c.result, 9);
                        sent_back = c.sent;
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(got, b"llo, ring");
        let (buf, off) = sent_back.expect("the send's buffer comes back");
        assert_eq!((&buf[..], off), (&b"hello, ring"[..], 2));
        // the end of the stream is a 0-byte completion
        drop(b);
        let mut eof = false;
        let until = Instant::now() + Duration::from_secs(5);
        while !eof && Instant::now() < until {
            r.submit_and_wait(Duration::from_millis(50)).unwrap();
            let mut cqes = Vec::new();
            r.completions(&mut cqes);
            eof = cqes.iter().any(|c| c.user_data == 7 && c.result == 0);
        }
        assert!(eof);
        drop(a);
    }
}
