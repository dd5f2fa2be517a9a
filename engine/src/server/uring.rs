//! The io_uring backend: multishot accept, multishot recv into a provided buffer ring
//! (an idle connection holds no receive buffer), one `sendmsg` in flight per
//! connection gathering its whole queue (header and payload chunks, broadcast frames
//! shared), and every submission of an iteration in one `io_uring_enter`.
//!
//! Ownership: a send's chunks stay in the connection's queue, sealed, until its
//! completion; a connection that ends with a send in flight is parked until that
//! completion arrives, and its multishot recv is cancelled. Every operation's
//! `user_data` carries the slot's generation, so a late completion for a reused slot
//! is recognised and dropped.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};

use crate::bufring::BufRing;

use super::handler::Handler;
use super::queue::OutQueue;
use super::worker::{Core, Slot};

const BGID: u16 = 0;
/// Chunks gathered by one sendmsg (the rest go in the next).
const IOV: usize = 16;
/// Idle send operations kept for reuse.
const FREE_SENDS_MAX: usize = 256;

const K_ACCEPT: u64 = 1;
const K_RECV: u64 = 2;
const K_SEND: u64 = 3;
const K_WAKE: u64 = 4;
const K_CANCEL: u64 = 5;

fn ud(kind: u64, idx: usize, gen: u32) -> u64 {
    kind << 60 | ((gen as u64) & 0x0fff_ffff) << 32 | idx as u64
}

fn ud_parts(u: u64) -> (u64, usize, u32) {
    (
        u >> 60,
        (u & 0xffff_ffff) as usize,
        ((u >> 32) & 0x0fff_ffff) as u32,
    )
}

/// Checks that the kernel has what this backend needs: a ring, the opcodes, and
/// provided buffer rings (5.19+) with multishot recv (6.0+).
pub(crate) fn probe() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("probe: {e}"))?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::SendMsg::CODE, "sendmsg"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
        (opcode::Read::CODE, "read"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("opcode {name} unsupported"));
        }
    }
    if !ring.params().is_feature_ext_arg() {
        return Err("IORING_FEAT_EXT_ARG missing (kernel < 5.11)".into());
    }
    // SAFETY: the buffer ring is dropped after the io_uring instance (below).
    let bufs = unsafe { BufRing::new(&ring, 2, 64, BGID) };
    drop(ring);
    bufs.map(drop)
        .map_err(|e| format!("provided buffer ring: {e}"))
}

/// A sendmsg in flight: its header and iovecs must stay put until the completion.
struct SendOp {
    msg: libc::msghdr,
    iov: [libc::iovec; IOV],
}

struct Uring {
    // dropped before `bufs` (the contract of `BufRing::new`)
    ring: IoUring,
    bufs: BufRing,
    /// Send operations by (slab index, generation): at most one per connection.
    sends: HashMap<(usize, u32), Box<SendOp>>,
    // boxed so an operation's address stays put while it moves between the maps
    #[allow(clippy::vec_box)]
    free_sends: Vec<Box<SendOp>>,
    /// Finished connections whose send is still in flight, by (idx, gen): their
    /// descriptor and queue live until the completion.
    parked: HashMap<(usize, u32), (OwnedFd, OutQueue)>,
    backlog: Vec<squeue::Entry>,
}

impl Uring {
    fn push(&mut self, e: squeue::Entry) {
        // SAFETY: every entry's buffers (provided ring, SendOp boxes, the eventfd
        // buffer) outlive the operation; see the module docs.
        if unsafe { self.ring.submission().push(&e) }.is_err() {
            self.backlog.push(e);
        }
    }

    fn drain_backlog(&mut self) {
        while let Some(e) = self.backlog.pop() {
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                self.backlog.push(e);
                break;
            }
        }
    }
}

fn new_send_op() -> Box<SendOp> {
    Box::new(SendOp {
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        msg: unsafe { std::mem::zeroed() },
        iov: [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; IOV],
    })
}

fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub(crate) fn run<H: Handler>(mut core: Core<H>, listener: OwnedFd) -> io::Result<()> {
    let entries = core.cfg.uring_buffers.max(2).next_power_of_two();
    // Completions run as task work in this thread when it next waits (DEFER_TASKRUN,
    // 6.1+), not by interrupting it after every packet: measured 5.4 -> 4.8 us of server
    // CPU per 20 B echo and 12.5 -> 9.6 us per 16 KiB echo. Older kernels get the
    // plainer rings.
    let ring = IoUring::builder()
        .setup_single_issuer()
        .setup_coop_taskrun()
        .setup_defer_taskrun()
        .build(4096)
        .or_else(|_| IoUring::builder().setup_single_issuer().build(4096))
        .or_else(|_| IoUring::new(4096))?;
    // SAFETY: `Uring` declares `ring` before `bufs`, so the ring is closed first.
    let bufs = unsafe { BufRing::new(&ring, entries, core.cfg.uring_buffer_size, BGID) }?;
    let mut u = Uring {
        ring,
        bufs,
        sends: HashMap::new(),
        free_sends: Vec::new(),
        parked: HashMap::new(),
        backlog: Vec::new(),
    };
    core.keep_reaped = true;
    // No synchronous writev for large payloads here (epoll does it): measured on 10 x
    // 1 KiB and 10 x 16 KiB echoes, copying into the queue and sending with the batch's
    // SENDMSG costs less server CPU (6.3 against 7.2 us/msg at 1 KiB, 7.2 against 8.2
    // at 16 KiB, medians of 6-8 interleaved runs) than a writev syscall per message.
    core.direct_write_min = usize::MAX;
    let wake = eventfd()?;
    let wake_raw = wake.as_raw_fd();
    core.shared.mailboxes[core.index].set_waker(Box::new(move || {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the eventfd.
        unsafe { libc::write(wake_raw, (&one as *const u64).cast(), 8) };
    }));
    let mut wake_buf = Box::new(0u64);
    let lfd = listener.as_raw_fd();
    let accept = |u: &mut Uring| {
        u.push(
            opcode::AcceptMulti::new(Fd(lfd))
                .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
                .build()
                .user_data(ud(K_ACCEPT, 0, 0)),
        )
    };
    accept(&mut u);
    let arm_wake = |u: &mut Uring, buf: &mut u64| {
        u.push(
            opcode::Read::new(Fd(wake_raw), (buf as *mut u64).cast(), 8)
                .build()
                .user_data(ud(K_WAKE, 0, 0)),
        )
    };
    arm_wake(&mut u, &mut wake_buf);
    core.on_commands();
    let mut dirty = Vec::new();
    let mut next_timer: Option<Instant> = None;
    let mut accept_again: Option<Instant> = None;
    let mut listening = true;
    let mut cqes: Vec<cqueue::Entry> = Vec::with_capacity(1024);
    loop {
        // flush: one sendmsg per connection with bytes queued and none in flight
        core.take_dirty(&mut dirty);
        for &idx in &dirty {
            start_send(&mut core, &mut u, idx);
        }
        reap(&mut core, &mut u);
        u.drain_backlog();
        let deadline = [next_timer, accept_again].into_iter().flatten().min();
        let r = match deadline {
            Some(t) => {
                let d = t
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_micros(50));
                let ts = Timespec::new().sec(d.as_secs()).nsec(d.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                u.ring.submitter().submit_with_args(1, &args)
            }
            None => u.ring.submit_and_wait(1),
        };
        match r {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        core.set_now(Instant::now());
        let mut recycled = false;
        cqes.clear();
        cqes.extend(u.ring.completion());
        for cqe in cqes.drain(..) {
            let (kind, idx, gen) = ud_parts(cqe.user_data());
            let res = cqe.result();
            let flags = cqe.flags();
            match kind {
                K_ACCEPT => {
                    if res >= 0 {
                        // SAFETY: the kernel returned a new descriptor we now own.
                        let fd = unsafe { OwnedFd::from_raw_fd(res) };
                        let raw = fd.as_raw_fd();
                        if let Some(i) = core.on_accept(fd) {
                            let g = core.slots[i].gen;
                            u.push(
                                opcode::RecvMulti::new(Fd(raw), BGID)
                                    .build()
                                    .user_data(ud(K_RECV, i, g)),
                            );
                        }
                    } else if res == -libc::EMFILE || res == -libc::ENFILE {
                        // out of descriptors: retry later instead of spinning
                        accept_again = Some(core.now + Duration::from_millis(50));
                    }
                    if !cqueue::more(flags) && listening && accept_again.is_none() {
                        accept(&mut u);
                    }
                }
                K_RECV => {
                    let bid = cqueue::buffer_select(flags);
                    let alive = core
                        .slots
                        .get(idx)
                        .is_some_and(|s| s.gen & 0x0fff_ffff == gen);
                    if let Some(bid) = bid {
                        u.bufs.lend(bid);
                    }
                    if res > 0 {
                        if let Some(bid) = bid {
                            if alive {
                                let data = u.bufs.get(bid, res as usize);
                                core.on_read(idx, data);
                            }
                            u.bufs.give_back(bid);
                            recycled = true;
                        }
                    } else if let Some(bid) = bid {
                        u.bufs.give_back(bid);
                        recycled = true;
                    }
                    let alive = core
                        .slots
                        .get(idx)
                        .is_some_and(|s| s.gen & 0x0fff_ffff == gen);
                    if !alive {
                        continue;
                    }
                    if res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED) {
                        core.on_eof(idx);
                    } else if !cqueue::more(flags) {
                        // ENOBUFS (ring ran dry) or the kernel ended the multishot
                        let raw = core.slots[idx].fd.as_raw_fd();
                        u.push(
                            opcode::RecvMulti::new(Fd(raw), BGID)
                                .build()
                                .user_data(ud(K_RECV, idx, gen)),
                        );
                    }
                }
                K_SEND => {
                    if let Some(op) = u.sends.remove(&(idx, gen)) {
                        if u.free_sends.len() < FREE_SENDS_MAX {
                            u.free_sends.push(op);
                        }
                    }
                    if u.parked.remove(&(idx, gen)).is_some() {
                        continue; // the connection ended meanwhile: buffers free now
                    }
                    let Some(slot) = core.slots.get_mut(idx) else {
                        continue;
                    };
                    if slot.gen & 0x0fff_ffff != gen {
                        continue;
                    }
                    slot.flags.sending = false;
                    if res >= 0 {
                        slot.out.advance(res as usize, &mut core.pool);
                    } else if res != -libc::EAGAIN && res != -libc::EINTR {
                        slot.flags.reset = true;
                    }
                    if core.after_write(idx) && !core.slots[idx].out.is_empty() {
                        start_send(&mut core, &mut u, idx);
                    }
                }
                K_WAKE => {
                    core.on_commands();
                    arm_wake(&mut u, &mut wake_buf);
                }
                _ => {}
            }
        }
        if recycled {
            u.bufs.publish();
        }
        if accept_again.is_some_and(|t| t <= core.now) && listening {
            accept_again = None;
            accept(&mut u);
        }
        next_timer = core.on_tick();
        if core.shutdown.is_some() {
            if listening {
                listening = false;
                u.push(
                    opcode::AsyncCancel::new(ud(K_ACCEPT, 0, 0))
                        .build()
                        .user_data(ud(K_CANCEL, 0, 0)),
                );
            }
            // parked sends were cancelled; dropping the ring at return reaps any straggler
            // before the buffers it points into are freed (field order in `Uring`)
            let late = core
                .shutdown
                .is_some_and(|d| core.now > d + Duration::from_secs(1));
            if core.shutdown_done() && (u.parked.is_empty() || late) {
                if !u.parked.is_empty() {
                    // sends that even cancellation did not complete: the kernel may still
                    // hold their buffers after the ring is closed, so they are leaked,
                    // once, at shutdown, rather than freed under it
                    std::mem::forget(std::mem::take(&mut u.parked));
                }
                reap(&mut core, &mut u);
                return Ok(());
            }
            let soon = core.now + Duration::from_millis(50);
            next_timer = Some(next_timer.map_or(soon, |t| t.min(soon)));
        }
    }
}

/// Starts a sendmsg of `idx`'s whole queue (up to 64 chunks), unless one is in flight.
fn start_send<H: Handler>(core: &mut Core<H>, u: &mut Uring, idx: usize) {
    let Some(slot) = core.slots.get_mut(idx) else {
        return;
    };
    // a connection dropped past max_buffered is finished now, not after a send that a
    // peer that stopped reading would never complete (`reap` cancels one in flight)
    if slot.flags.reset {
        core.after_write(idx);
        return;
    }
    if slot.flags.sending || slot.out.is_empty() {
        if !slot.flags.sending {
            core.after_write(idx);
        }
        return;
    }
    let mut op = u.free_sends.pop().unwrap_or_else(new_send_op);
    let mut slices = [IoSlice::new(&[]); IOV];
    let n = slot.out.iovecs(&mut slices);
    for (dst, src) in op.iov.iter_mut().zip(&slices[..n]) {
        dst.iov_base = src.as_ptr().cast_mut().cast();
        dst.iov_len = src.len();
    }
    op.msg.msg_iov = op.iov.as_mut_ptr();
    op.msg.msg_iovlen = n as _;
    slot.out.seal();
    slot.flags.sending = true;
    let fd: RawFd = slot.fd.as_raw_fd();
    let e = opcode::SendMsg::new(Fd(fd), &op.msg)
        .flags(libc::MSG_NOSIGNAL as u32)
        .build()
        .user_data(ud(K_SEND, idx, slot.gen));
    u.sends.insert((idx, slot.gen & 0x0fff_ffff), op);
    u.push(e);
}

/// Connections the core finished: cancel their recv; park those with a send in
/// flight until its completion (their queue's buffers and descriptor live on).
fn reap<H: Handler>(core: &mut Core<H>, u: &mut Uring) {
    for (idx, slot) in std::mem::take(&mut core.reaped) {
        let Slot {
            fd,
            gen,
            flags,
            out,
            ..
        } = slot;
        u.push(
            opcode::AsyncCancel::new(ud(K_RECV, idx, gen))
                .build()
                .user_data(ud(K_CANCEL, 0, 0)),
        );
        if flags.sending {
            // a send to a peer that stopped reading could wait forever: cancel it; its
            // completion (data sent, or -ECANCELED) releases the parked buffers
            u.push(
                opcode::AsyncCancel::new(ud(K_SEND, idx, gen))
                    .build()
                    .user_data(ud(K_CANCEL, 0, 0)),
            );
            u.parked.insert((idx, gen & 0x0fff_ffff), (fd, out));
        }
    }
}
