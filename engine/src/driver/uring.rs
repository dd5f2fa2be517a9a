//! The io_uring backend: multishot accept, multishot recv into a provided buffer ring
//! (an idle socket holds no receive buffer), one `sendmsg` in flight per socket
//! gathering its queue (owned chunks and shared broadcast frames), a connect as a poll
//! for writability, a descriptor's close as an operation too, and every submission of
//! an iteration in one `io_uring_enter`.
//!
//! Ownership, as the module contract in `driver` states it: each socket counts the
//! operations naming its descriptor (`ops`: the receive, the send, the connect poll),
//! including those still in the submission backlog. A socket the caller closed stays
//! in the table, with its descriptor and its in-flight send's chunks (sealed in its
//! queue), until that count is zero; only then is the descriptor's close queued
//! (nothing names it after that) and the index given to another socket. Every
//! `user_data` carries the socket's generation too, and a completion that does not
//! match is ignored (it cannot happen by the rule above; the check is a second line).
//!
//! The ring runs with SINGLE_ISSUER, COOP_TASKRUN and DEFER_TASKRUN (6.1+; plainer
//! rings on older kernels): completions are produced as task work in this thread when
//! it waits, not by interrupting it after every packet (measured 5.4 -> 4.8 µs of server
//! CPU per 20 B echo and 12.5 -> 9.6 µs per 16 KiB echo).
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::time::{Duration, Instant};

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use slab::Slab;

use super::bufring::{BufRing, SweepWatch};
use super::{sys, Chunk, DriverConfig, NoDelay, Sink, Token, Waker};
use crate::alloc::mostly_room;
use crate::pool::{OutQueue, Pool};

const BGID: u16 = 0;
/// Chunks gathered by one sendmsg (the rest go in the next), as many as epoll's
/// writev takes: one send is in flight per socket, so a queue of shared frames goes
/// out in as few round trips as it can.
const IOV: usize = 64;
/// Idle send operations kept for reuse.
const FREE_SENDS_MAX: usize = 256;
/// Submission queue entries (more are submitted early when it fills).
const SQ_ENTRIES: u32 = 4096;
/// Longest wait at drop for operations in flight to end after their cancellation.
const DROP_WAIT: Duration = Duration::from_millis(250);
/// Most passes over the completions in one `dispatch` while receives run out of
/// buffers (each pass reads as many sockets as the ring has buffers).
const RECV_PASSES: usize = 16;
/// How long to wait before accepting again after running out of descriptors.
const EMFILE_BACKOFF: Duration = Duration::from_millis(50);

const K_ACCEPT: u64 = 1;
const K_RECV: u64 = 2;
const K_SEND: u64 = 3;
const K_WAKE: u64 = 4;
const K_CANCEL: u64 = 5;
const K_POLL: u64 = 6;
/// A multishot `recvmsg` (receive time stamps on); handled as `K_RECV` otherwise.
const K_RECVMSG: u64 = 7;
/// A descriptor's close (its completion is posted only for a failure).
const K_CLOSE: u64 = 8;
const GEN_MASK: u32 = 0x0fff_ffff;

/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;
/// How many deferred task work items the kernel runs per enter that asks for fewer
/// completions (`IO_LOCAL_TW_DEFAULT_MAX`, Linux 6.10 and later).
const TASK_WORK_BATCH: usize = 20;
/// Most enters of one [`Uring::gather`].
const GATHER_PASSES: usize = 256;

/// Whether a completion kind is a receive.
fn is_recv(kind: u64) -> bool {
    kind == K_RECV || kind == K_RECVMSG
}

/// `struct io_uring_recvmsg_out`: what a multishot `recvmsg` writes at the start of its
/// buffer, before the name, the control messages and the payload.
const RECVMSG_OUT: usize = 16;
/// Room for the control messages of a multishot `recvmsg`: one `SCM_TIMESTAMPNS`
/// (`CMSG_SPACE(sizeof(struct timespec))`, 32 bytes on 64-bit Linux).
const RECVMSG_CONTROL: usize = 32;

/// The layout a multishot `recvmsg` reads: no name, room for one time stamp.
struct MsgTemplate(libc::msghdr);

impl MsgTemplate {
    fn new() -> MsgTemplate {
        // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_controllen = RECVMSG_CONTROL as _;
        MsgTemplate(m)
    }
}

/// The payload's range in the filled part of a multishot `recvmsg` buffer, and the
/// receive time stamp among its control messages (ns since the Unix epoch), if any.
/// `None` for a buffer shorter than its header says.
fn parse_recvmsg(buf: &[u8]) -> Option<(std::ops::Range<usize>, Option<u64>)> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
    };
    let controllen = word(4)? as usize;
    let payloadlen = word(8)? as usize;
    let control = buf.get(RECVMSG_OUT..RECVMSG_OUT + controllen.min(RECVMSG_CONTROL))?;
    let start = RECVMSG_OUT + RECVMSG_CONTROL;
    let payload = start..start.checked_add(payloadlen)?;
    if payload.end > buf.len() {
        return None;
    }
    // cmsghdr: cmsg_len (usize), cmsg_level, cmsg_type (i32), then the data, aligned
    const HDR: usize = size_of::<usize>() + 8;
    let mut stamp = None;
    let mut at = 0;
    while let Some(h) = control.get(at..at + HDR) {
        let len = usize::from_ne_bytes(h[..size_of::<usize>()].try_into().ok()?);
        let level = i32::from_ne_bytes(h[HDR - 8..HDR - 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(h[HDR - 4..].try_into().ok()?);
        if len < HDR {
            break;
        }
        if level == libc::SOL_SOCKET && kind == libc::SCM_TIMESTAMPNS {
            if let Some(d) = control.get(at + HDR..at + HDR + 16) {
                let sec = i64::from_ne_bytes(d[..8].try_into().ok()?);
                let nsec = i64::from_ne_bytes(d[8..].try_into().ok()?);
                stamp = Some(sec as u64 * 1_000_000_000 + nsec as u64);
            }
        }
        at += len.next_multiple_of(size_of::<usize>());
    }
    Some((payload, stamp))
}

fn ud(kind: u64, idx: usize, gen: u32) -> u64 {
    kind << 60 | ((gen & GEN_MASK) as u64) << 32 | (idx as u64 & 0xffff_ffff)
}

fn ud_parts(u: u64) -> (u64, usize, u32) {
    (
        u >> 60,
        (u & 0xffff_ffff) as usize,
        ((u >> 32) as u32) & GEN_MASK,
    )
}

/// The result of an enter: a timeout, an interruption or a full completion queue is
/// not an error (the loop dispatches and enters again).
fn waited(r: io::Result<usize>) -> io::Result<()> {
    match r {
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

/// Checks that the kernel has what this backend needs: a ring with waits bounded by a
/// timeout (EXT_ARG, 5.11), the opcodes, and a provided buffer ring (5.19) for
/// multishot receive (6.0).
pub(super) fn probe() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("probe: {e}"))?;
    for (code, name) in [
        (opcode::AcceptMulti::CODE, "accept"),
        (opcode::RecvMulti::CODE, "recv"),
        (opcode::SendMsg::CODE, "sendmsg"),
        (opcode::Send::CODE, "send"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
        (opcode::PollAdd::CODE, "poll_add"),
        (opcode::Read::CODE, "read"),
        (opcode::Close::CODE, "close"),
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

crate::bits::bit_flags! {
    /// A socket's state bits.
    SockFlags:
    /// A multishot receive is armed (counted in `ops`).
    recv set_recv = 1;
    /// A connect's poll is armed (counted in `ops`).
    connecting set_connecting = 2;
    /// The caller gave the token up.
    released set_released = 4;
    /// The end of the read side was reported.
    ended set_ended = 8;
    /// In the list of sockets to send for at the next submit.
    dirty set_dirty = 16;
    /// The caller wants it read.
    reading set_reading = 32;
    /// FIN once the queue is written.
    shut_wanted set_shut_wanted = 64;
    /// FIN sent.
    shut_done set_shut_done = 128;
}

/// No send in flight (`Sock::send`).
const NO_SEND: u32 = u32::MAX;
/// A plain send of one chunk in flight (`Sock::send`): it needs no `SendOp`, so a
/// storm of single-chunk writes (every connection's close reply or pong at once) holds
/// no kilobyte-sized operation per connection. Other values index `Uring::sends`.
const PLAIN_SEND: u32 = u32::MAX - 1;

/// The index in `Uring::sends` of the operation a `Sock::send` value names, if any.
#[inline]
fn send_op(send: u32) -> Option<usize> {
    (send < PLAIN_SEND).then_some(send as usize)
}

struct Sock {
    fd: OwnedFd,
    gen: u32,
    /// Wire bytes; the sealed chunks are those of the send in flight.
    q: OutQueue,
    /// The in-flight sendmsg's header and iovecs: an index into `Uring::sends`.
    send: u32,
    /// Operations (queued or submitted) that name `fd`.
    ops: u8,
    f: SockFlags,
    /// Reading was stopped at least once (flow control or the application): receive one
    /// buffer per arm instead of a multishot, so that what arrives between a stop and
    /// its cancellation is one buffer, not as many as the ring holds.
    one_shot: bool,
    /// The receive armed is a multishot `recvmsg` (`K_RECVMSG`).
    msg: bool,
}

impl Sock {
    /// A FIN is wanted and everything queued before it is written.
    #[inline]
    fn fin_due(&self) -> bool {
        self.q.is_empty() && self.f.shut_wanted() && !self.f.shut_done()
    }
}

pub(super) struct Uring {
    // `ring` is declared first so that it is dropped first: with the ring gone, no
    // operation can use the buffers below (and `Drop` waits for cancellations first).
    ring: IoUring,
    bufs: ManuallyDrop<BufRing>,
    socks: Slab<Sock>,
    gen: u32,
    listener: Option<OwnedFd>,
    accept_armed: bool,
    accept_again: Option<Instant>,
    waker: Waker,
    wake_buf: Box<u64>,
    backlog: VecDeque<squeue::Entry>,
    dirty: Vec<Token>,
    /// Send operations in flight, by `Sock::send`; boxed so that an operation's
    /// address stays put while the slab grows.
    sends: Slab<Box<SendOp>>,
    // boxed likewise, kept for reuse
    #[allow(clippy::vec_box)]
    free_sends: Vec<Box<SendOp>>,
    /// Sends in flight.
    sends_in_flight: usize,
    /// A receive of this dispatch pass ended with ENOBUFS (and was armed again).
    starved: bool,
    /// Receive completions with data in this dispatch pass, and their bytes.
    pass_reads: usize,
    pass_bytes: usize,
    pool: Pool,
    cqes: Vec<cqueue::Entry>,
    nodelay: bool,
    /// How accepted sockets get `TCP_NODELAY`.
    accepted_nodelay: NoDelay,
    /// The ring runs its task work only inside this thread's `io_uring_enter`
    /// (`IORING_SETUP_DEFER_TASKRUN`): the kernel then never writes a receive while
    /// the worker runs its own code.
    defer_taskrun: bool,
    /// When the receive buffers' pages go back after a burst of receives.
    sweep: SweepWatch,
    /// Receive time stamps: set on every socket, received with multishot `recvmsg`
    /// shaped by this header (boxed: its address is in the submitted operations).
    rx_msg: Option<Box<MsgTemplate>>,
}

impl Uring {
    pub(super) fn new(cfg: &DriverConfig, waker: Waker) -> io::Result<Uring> {
        let deferred = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_defer_taskrun()
            .build(SQ_ENTRIES);
        let defer_taskrun = deferred.is_ok();
        let ring = deferred
            .or_else(|_| IoUring::builder().setup_single_issuer().build(SQ_ENTRIES))
            .or_else(|_| IoUring::new(SQ_ENTRIES))?;
        let entries = cfg.uring_buffers.max(2).next_power_of_two();
        // SAFETY: kept in a `ManuallyDrop` that `Drop` drops only after unregistering
        // the group (or leaks).
        let bufs = unsafe { BufRing::new(&ring, entries, cfg.uring_buffer_size, BGID) }?;
        let mut u = Uring {
            ring,
            bufs: ManuallyDrop::new(bufs),
            socks: Slab::new(),
            gen: 0,
            listener: None,
            accept_armed: false,
            accept_again: None,
            waker,
            wake_buf: Box::new(0),
            backlog: VecDeque::new(),
            dirty: Vec::new(),
            sends: Slab::new(),
            free_sends: Vec::new(),
            sends_in_flight: 0,
            starved: false,
            pass_reads: 0,
            pass_bytes: 0,
            pool: Pool::default(),
            cqes: Vec::with_capacity(1024),
            nodelay: cfg.nodelay,
            accepted_nodelay: NoDelay::Off,
            defer_taskrun,
            sweep: SweepWatch::default(),
            rx_msg: cfg.rx_timestamps.then(|| Box::new(MsgTemplate::new())),
        };
        u.arm_wake();
        Ok(u)
    }

    /// Queues an entry built in this module.
    fn push(&mut self, e: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY: every entry built here points only to memory owned here until its
            // completion: provided-ring buffers, `SendOp` boxes and the chunks sealed in
            // a socket's queue (kept past a close until the completion), the eventfd
            // buffer; descriptors stay open while an operation names them (`ops`).
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
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                continue;
            }
            let _ = self.ring.submit();
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(&e) }.is_err() {
                self.backlog.push_front(e);
                break;
            }
        }
    }

    fn arm_wake(&mut self) {
        let e = opcode::Read::new(
            Fd(self.waker.raw()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ud(K_WAKE, 0, 0));
        self.push(e);
    }

    fn arm_accept(&mut self) {
        let Some(l) = self.listener.as_ref() else {
            return;
        };
        let e = opcode::AcceptMulti::new(Fd(l.as_raw_fd()))
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build()
            .user_data(ud(K_ACCEPT, 0, 0));
        self.accept_armed = true;
        self.push(e);
    }

    fn arm_recv(&mut self, idx: usize) {
        let Some(s) = self.socks.get_mut(idx) else {
            return;
        };
        if s.f.recv() || s.f.released() || s.f.ended() || !s.f.reading() || s.f.connecting() {
            return;
        }
        s.f.set_recv(true);
        s.ops += 1;
        let fd = Fd(s.fd.as_raw_fd());
        // receive time stamps come as control messages, which only recvmsg carries; a
        // one-shot receive (after a pause) goes without them
        s.msg = !s.one_shot && self.rx_msg.is_some();
        let e = match &self.rx_msg {
            _ if s.one_shot => opcode::Recv::new(fd, std::ptr::null_mut(), 0)
                .buf_group(BGID)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
            Some(m) => opcode::RecvMsgMulti::new(fd, &m.0, BGID).build(),
            None => opcode::RecvMulti::new(fd, BGID).build(),
        }
        .user_data(ud(if s.msg { K_RECVMSG } else { K_RECV }, idx, s.gen));
        self.push(e);
    }

    fn cancel(&mut self, target: u64) {
        let e = opcode::AsyncCancel::new(target)
            .build()
            .user_data(ud(K_CANCEL, 0, 0));
        self.push(e);
    }

    fn insert(&mut self, fd: OwnedFd, connecting: bool) -> Token {
        if self.rx_msg.is_some() {
            // without it the socket's reads just carry no time stamp
            let _ = sys::set_rx_timestamps(fd.as_raw_fd());
        }
        self.gen = self.gen.wrapping_add(1) & GEN_MASK;
        let idx = self.socks.insert(Sock {
            fd,
            gen: self.gen,
            q: OutQueue::default(),
            send: NO_SEND,
            ops: 0,
            f: {
                let mut f = SockFlags::default();
                f.set_connecting(connecting);
                f.set_reading(true);
                f
            },
            one_shot: false,
            msg: false,
        });
        Token::new(idx, self.gen)
    }

    fn live(&mut self, t: Token) -> Option<&mut Sock> {
        self.socks
            .get_mut(t.index())
            .filter(|s| s.gen == t.gen() && !s.f.released())
    }

    pub(super) fn listen(&mut self, listener: OwnedFd) -> io::Result<()> {
        self.accepted_nodelay = NoDelay::listening(self.nodelay, listener.as_raw_fd());
        self.listener = Some(listener);
        self.arm_accept();
        Ok(())
    }

    pub(super) fn stop_listening(&mut self) {
        if self.accept_armed {
            self.cancel(ud(K_ACCEPT, 0, 0));
        }
        // the listener stays open until the accept's last completion (it names it)
        self.accept_again = None;
        if !self.accept_armed {
            self.listener = None;
        }
    }

    pub(super) fn connect(
        &mut self,
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> io::Result<Token> {
        let fd = sys::connect(addr, source, self.nodelay)?;
        let raw = fd.as_raw_fd();
        let t = self.insert(fd, true);
        if let Some(s) = self.socks.get_mut(t.index()) {
            s.ops += 1;
        }
        let e = opcode::PollAdd::new(Fd(raw), libc::POLLOUT as u32)
            .build()
            .user_data(ud(K_POLL, t.index(), t.gen()));
        self.push(e);
        Ok(t)
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
        let Some(s) = self
            .socks
            .get_mut(t.index())
            .filter(|s| s.gen == t.gen() && !s.f.released())
        else {
            return false;
        };
        f(&mut s.q, &mut self.pool);
        if !s.f.dirty() {
            s.f.set_dirty(true);
            self.dirty.push(t);
        }
        true
    }

    pub(super) fn shutdown_write(&mut self, t: Token) {
        let Some(s) = self.live(t) else { return };
        s.f.set_shut_wanted(true);
        if !s.f.dirty() {
            s.f.set_dirty(true);
            self.dirty.push(t);
        }
    }

    pub(super) fn close(&mut self, t: Token, reset: bool) {
        let Some(s) = self.live(t) else { return };
        s.f.set_released(true);
        let (fd, recv, sending, connecting, gen) = (
            s.fd.as_raw_fd(),
            s.f.recv().then_some(s.msg),
            s.send != NO_SEND,
            s.f.connecting(),
            s.gen,
        );
        if reset {
            let _ = sys::set_linger_zero(fd);
        }
        let idx = t.index();
        if let Some(msg) = recv {
            self.cancel(ud(if msg { K_RECVMSG } else { K_RECV }, idx, gen));
        }
        if sending {
            // a send to a peer that stopped reading could wait forever: cancel it; its
            // completion (bytes sent, or -ECANCELED) releases the sealed chunks
            self.cancel(ud(K_SEND, idx, gen));
        }
        if connecting {
            self.cancel(ud(K_POLL, idx, gen));
        }
        self.maybe_free(idx);
    }

    /// Frees a released socket once no operation names it: its queue goes back to the
    /// pool and its descriptor's close is queued.
    fn maybe_free(&mut self, idx: usize) {
        if self
            .socks
            .get(idx)
            .is_some_and(|s| s.f.released() && s.ops == 0)
        {
            let mut s = self.socks.remove(idx);
            s.q.clear(&mut self.pool);
            debug_assert_eq!(s.send, NO_SEND, "no send in flight: ops is 0");
            // closed by the next submit (with everything else queued), not by a system
            // call of its own; the descriptor's number stays taken until then, so no
            // socket accepted meanwhile can be confused with it
            let e = opcode::Close::new(Fd(s.fd.into_raw_fd()))
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(ud(K_CLOSE, 0, 0));
            self.push(e);
        }
    }

    /// Sends the FIN of `idx` (its queue is written). A system call, not an operation:
    /// io_uring runs every `IORING_OP_SHUTDOWN` in a worker thread of its own (it is
    /// never issued inline), and waking that thread for each connection's end cost
    /// more than the call (measured: 1.5-2 µs more server CPU per connection opened
    /// and closed in a storm, 5-7 %, in two runs of 24 and 12 interleaved repetitions).
    fn shut(&mut self, idx: usize) {
        let Some(s) = self.socks.get_mut(idx) else {
            return;
        };
        s.f.set_shut_done(true);
        let _ = sys::shutdown_write(s.fd.as_raw_fd());
    }

    pub(super) fn set_reading(&mut self, t: Token, on: bool) {
        let Some(s) = self.live(t) else { return };
        if s.f.reading() == on {
            return;
        }
        s.f.set_reading(on);
        if !on {
            s.one_shot = true;
        }
        let (recv, msg, gen) = (s.f.recv(), s.msg, s.gen);
        if on {
            self.arm_recv(t.index());
        } else if recv {
            // what the multishot already received still arrives; nothing more after
            self.cancel(ud(if msg { K_RECVMSG } else { K_RECV }, t.index(), gen));
        }
    }

    #[cfg(test)]
    pub(super) fn fd(&mut self, t: Token) -> Option<std::os::fd::RawFd> {
        self.live(t).map(|s| s.fd.as_raw_fd())
    }

    pub(super) fn peer_addr(&mut self, t: Token) -> Option<SocketAddr> {
        self.live(t).and_then(|s| sys::peer_addr(s.fd.as_raw_fd()))
    }

    pub(super) fn queued(&mut self, t: Token) -> usize {
        self.live(t).map_or(0, |s| s.q.len())
    }

    pub(super) fn sockets(&mut self) -> usize {
        self.socks.len()
    }

    /// Gives back the pages of the receive buffers that hold nothing (all of them
    /// between dispatch passes): what a storm left resident in the ring. Only with
    /// deferred task work, which is what makes it safe; the bytes advised.
    pub(super) fn release_memory(&mut self) -> usize {
        if !self.defer_taskrun {
            return 0;
        }
        self.sweep.released(self.bufs.swept().0);
        // SAFETY: with DEFER_TASKRUN the kernel copies receives into the ring only
        // inside this thread's `io_uring_enter` calls (their task work runs there), and
        // this runs on that thread between them.
        unsafe { self.bufs.release_unused() }
    }

    /// Frees the buffers its pool keeps; gives back the socket and send tables' room
    /// past their last entries in use, when that is most of it.
    pub(super) fn compact(&mut self) {
        self.pool.clear();
        if mostly_room(self.socks.capacity(), self.socks.len()) {
            self.socks.shrink_to_fit();
        }
        if mostly_room(self.sends.capacity(), self.sends.len()) {
            self.sends.shrink_to_fit();
        }
        if mostly_room(self.backlog.capacity(), self.backlog.len()) {
            self.backlog.shrink_to_fit();
        }
    }

    /// Gives the receive buffers' pages back a second after a burst of receives that
    /// swept the ring is over ([`SweepWatch`]); when to be called again.
    #[inline]
    pub(super) fn tend_buffers(&mut self, now: Instant) -> Option<Instant> {
        let (taken, entries) = self.bufs.swept();
        if self.defer_taskrun && self.sweep.tend(now, taken, entries) {
            self.release_memory();
        }
        self.sweep.next()
    }

    /// The provided buffers in the ring now, and those held out of it.
    #[cfg(test)]
    pub(super) fn ring_population(&self) -> (u16, usize) {
        self.bufs.population()
    }

    pub(super) fn reclaim(&mut self, pool: &mut Pool) {
        self.pool.give_buffers(pool);
    }

    fn recycle_send(&mut self, op: Box<SendOp>) {
        if self.free_sends.len() < FREE_SENDS_MAX {
            self.free_sends.push(op);
        }
    }

    /// Starts a sendmsg of `idx`'s queue (up to `IOV` chunks), unless one is in flight;
    /// with nothing queued, sends a wanted FIN.
    fn start_send(&mut self, idx: usize) {
        let Some(s) = self.socks.get_mut(idx) else {
            return;
        };
        if s.f.released() || s.send != NO_SEND || s.f.connecting() {
            return;
        }
        if s.q.is_empty() {
            if s.fin_due() {
                self.shut(idx);
            }
            return;
        }
        let fd = Fd(s.fd.as_raw_fd());
        // a FIN is to follow (sent when this send completes with the queue empty): the
        // last segment waits for it, and the two leave as one packet
        let flags = sys::send_flags(s.f.shut_wanted());
        // one chunk (an echo, a single queued frame) goes as a plain send: the kernel
        // then copies no msghdr and imports no iovec array for it, and it needs no
        // operation here (the sealed chunk stays where it is until the completion)
        let e = if let Some(first) = s.q.single() {
            let e = opcode::Send::new(
                fd,
                first.as_ptr(),
                first.len().min(u32::MAX as usize) as u32,
            )
            .flags(flags)
            .build();
            s.send = PLAIN_SEND;
            e
        } else {
            let mut op = self.free_sends.pop().unwrap_or_else(new_send_op);
            let iov = &mut op.iov;
            let n = s.q.slices(IOV, |i, b| {
                iov[i] = libc::iovec {
                    iov_base: b.as_ptr().cast_mut().cast(),
                    iov_len: b.len(),
                }
            });
            op.msg.msg_iov = op.iov.as_mut_ptr();
            op.msg.msg_iovlen = n as _;
            let e = opcode::SendMsg::new(fd, &op.msg)
                .flags(flags as u32)
                .build();
            s.send = self.sends.insert(op) as u32;
            e
        }
        .user_data(ud(K_SEND, idx, s.gen));
        s.q.seal();
        s.ops += 1;
        self.sends_in_flight += 1;
        self.push(e);
    }

    /// Starts the sends of every socket written to, re-arms accepting when its pause
    /// is over, and moves the operations waiting for room into the submission queue.
    fn prepare(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &t in &dirty {
            if let Some(s) = self.socks.get_mut(t.index()).filter(|s| s.gen == t.gen()) {
                s.f.set_dirty(false);
                self.start_send(t.index());
            }
        }
        dirty.clear();
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
        if self.accept_again.is_some_and(|t| t <= Instant::now()) {
            self.accept_again = None;
            if self.listener.is_some() && !self.accept_armed {
                self.arm_accept();
            }
        }
        self.drain_backlog();
    }

    /// Submits what is queued, without waiting.
    pub(super) fn submit(&mut self) -> io::Result<()> {
        self.prepare();
        waited(self.ring.submit())
    }

    /// Submits what was queued since, and collects what arrived (see [`Self::gather`]).
    pub(super) fn submit_and_gather(&mut self) -> io::Result<()> {
        self.prepare();
        self.gather()
    }

    /// Runs the deferred task work of what arrived, without waiting. The kernel runs it
    /// at most `TASK_WORK_BATCH` items per enter unless more completions are asked for,
    /// and an enter that asks for more than there are goes into the kernel's wait path
    /// (a timer, even for a zero timeout). So: enters that ask for none, while each
    /// brings a full batch (with one enter per tick, a thousand subscribers' deliveries
    /// took 50 ticks to come in). The first also submits what is queued.
    fn gather(&mut self) -> io::Result<()> {
        let room = self.ring.params().cq_entries() as usize / 2;
        for _ in 0..GATHER_PASSES {
            let before = self.ring.completion().len();
            let queued = self.ring.submission().len() as u32;
            // SAFETY: no argument is passed; the queued entries point only to memory
            // owned here until their completions (see `push`); `min_complete` 0 with
            // GETEVENTS runs task work and never waits.
            let r = unsafe {
                self.ring
                    .submitter()
                    .enter::<libc::sigset_t>(queued, 0, ENTER_GETEVENTS, None)
            };
            if let Err(e) = r {
                // an interruption or a full completion queue ends the gathering
                return waited(Err(e));
            }
            let now = self.ring.completion().len();
            if now.saturating_sub(before) < TASK_WORK_BATCH || now >= room {
                break;
            }
        }
        Ok(())
    }

    pub(super) fn submit_and_wait(&mut self, deadline: Option<Instant>) -> io::Result<()> {
        self.prepare();
        let deadline = [deadline, self.accept_again].into_iter().flatten().min();
        // The wait is for one completion. A send to a socket with room completes during
        // the submit, so after an iteration with sends this enter returns at once with
        // their completions (and whatever arrived meanwhile), and the next one sleeps: a
        // second enter where the worker goes idle. Waiting instead for one completion
        // more than the new sends, with the kernel's minimum wait as the bound for a
        // send that does not complete at once (IORING_FEAT_MIN_TIMEOUT, 100 µs), cost
        // more: that timer is armed and cancelled with every sleep, and an echo server
        // at 40,000 msg/s spent 14.8 µs of CPU per message with it against 10.9 without
        // (epoll: 11.4); at saturation the two read the same (docs/benchmarks.md).
        let d = deadline.map(|t| t.saturating_duration_since(Instant::now()));
        let r = match d {
            Some(d) => {
                let ts = Timespec::from(d);
                self.ring
                    .submitter()
                    .submit_with_args(1, &SubmitArgs::new().timespec(&ts))
            }
            None => self.ring.submit_and_wait(1),
        };
        waited(r)
    }

    /// Hands every completion to `sink`. When receives ran out of provided buffers
    /// (`ENOBUFS`) while each read brought little (many sockets with a message or two
    /// each, say 1,000 subscribers publishing at once), the buffers this pass gave back
    /// let the receives armed again read the rest at once: they are submitted and their
    /// completions handled here, up to `RECV_PASSES` passes, before the worker's sends
    /// of this iteration go out. Otherwise each pass of 128 reads would be followed by
    /// a send to every subscriber (eight sends of 2.8 KB each instead of one of 22 KB;
    /// epoll reads every ready socket in one pass). Likewise when a pass brought a full
    /// batch of the kernel's deferred task work (`TASK_WORK_BATCH` receives: the wait
    /// that asked for one completion ran only that many, and the rest of a fan-out
    /// round's publishes may be waiting): the rest is gathered before the sends (a
    /// round at 1,000 x 20 B took two iterations, a send to every subscriber in each).
    /// Where the reads fill their buffers (a flood), reading more before writing would
    /// only lengthen the queues, so the next pass waits for the next iteration as before.
    pub(super) fn dispatch<S: Sink>(&mut self, sink: &mut S) {
        for pass in 1..=RECV_PASSES {
            self.starved = false;
            self.pass_reads = 0;
            self.pass_bytes = 0;
            self.dispatch_pass(sink);
            let small = self.pass_bytes < self.pass_reads * (self.bufs.size() / 4);
            // a full batch of the kernel's deferred task work: more may be waiting
            let batch = self.pass_reads >= TASK_WORK_BATCH;
            if !(self.starved || batch) || !small || pass == RECV_PASSES {
                break;
            }
            // the receives armed again go in now (their data is waiting: they complete
            // during the submit), and the task work left over runs; errors are left to
            // the next submit_and_wait
            self.drain_backlog();
            if self.gather().is_err() || self.ring.completion().is_empty() {
                break;
            }
        }
    }

    fn dispatch_pass<S: Sink>(&mut self, sink: &mut S) {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion());
        // the buffers these completions took, all out of the ring before any comes back
        let taken = cqes
            .iter()
            .filter(|c| cqueue::buffer_select(c.flags()).is_some())
            .count();
        if taken > 0 {
            self.bufs.taken(taken);
        }
        let mut recycled = false;
        for cqe in cqes.drain(..) {
            let (kind, idx, gen) = ud_parts(cqe.user_data());
            let res = cqe.result();
            let flags = cqe.flags();
            match kind {
                K_ACCEPT => self.on_accept(res, flags, sink),
                K_RECV | K_RECVMSG => {
                    let mut res = res;
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        self.bufs.lend(bid);
                        // a recvmsg's buffer: header and control messages, then the
                        // payload (empty at the end of the stream)
                        let (payload, stamp) = if kind == K_RECVMSG && res > 0 {
                            let b = self.bufs.get(bid, res as usize);
                            parse_recvmsg(b).unwrap_or((0..0, None))
                        } else {
                            (0..res.max(0) as usize, None)
                        };
                        res = payload.len() as i32;
                        self.pass_reads += 1;
                        self.pass_bytes += payload.len();
                        let live = self
                            .socks
                            .get(idx)
                            .filter(|s| res > 0 && s.gen == gen && !s.f.released() && !s.f.ended());
                        if let Some(s) = live {
                            let t = Token::new(idx, gen);
                            // nothing queued or in flight for it: a large echo may go
                            // out at once with a system call of its own, from the
                            // received buffer, rather than be copied into the queue
                            // for the next submit
                            let direct = (s.send == NO_SEND
                                && s.q.is_empty()
                                && !s.f.connecting()
                                && !s.f.shut_wanted())
                            .then(|| super::Immediate {
                                fd: s.fd.as_raw_fd(),
                                token: t,
                            });
                            if direct.is_some() {
                                sink.immediate(direct);
                            }
                            if self.rx_msg.is_some() {
                                sink.arrived(stamp);
                            }
                            let data = self.bufs.get(bid, payload.end);
                            sink.received(t, &mut data[payload]);
                            if direct.is_some() {
                                sink.immediate(None);
                            }
                        }
                        self.bufs.give_back(bid);
                        recycled = true;
                    }
                    self.on_recv_status(idx, gen, res, cqueue::more(flags), sink);
                }
                K_SEND => self.on_send(idx, gen, res, sink),
                K_POLL => self.on_poll(idx, gen, res, sink),
                K_CLOSE => {
                    // the descriptor is gone from the table whatever the error (EBADF
                    // would be a bug here; EINTR and EIO leave it closed on Linux)
                    tracing::debug!(
                        error = %io::Error::from_raw_os_error(-res),
                        "close of a socket failed"
                    );
                }
                K_WAKE => {
                    sink.woken();
                    self.arm_wake();
                }
                _ => {}
            }
        }
        self.cqes = cqes;
        if recycled {
            self.bufs.publish();
        }
    }

    fn on_accept<S: Sink>(&mut self, res: i32, flags: u32, sink: &mut S) {
        if res >= 0 {
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            let fd = unsafe { sys::own(res) };
            self.accepted_nodelay.accepted(fd.as_raw_fd());
            let peer = sys::peer_addr(fd.as_raw_fd());
            let t = self.insert(fd, false);
            self.arm_recv(t.index());
            sink.accepted(t, peer);
        } else if res == -libc::EMFILE || res == -libc::ENFILE {
            // out of descriptors: retry later instead of spinning
            self.accept_again = Some(Instant::now() + EMFILE_BACKOFF);
            tracing::warn!(
                error = %io::Error::from_raw_os_error(-res),
                "accept: out of descriptors (retrying shortly)"
            );
        }
        if !cqueue::more(flags) {
            self.accept_armed = false;
            if self.listener.is_some() && self.accept_again.is_none() && res != -libc::ECANCELED {
                self.arm_accept();
            } else if res == -libc::ECANCELED {
                self.listener = None;
            }
        }
    }

    fn on_recv_status<S: Sink>(
        &mut self,
        idx: usize,
        gen: u32,
        res: i32,
        more: bool,
        sink: &mut S,
    ) {
        let Some(s) = self.socks.get_mut(idx).filter(|s| s.gen == gen) else {
            return;
        };
        if !more {
            s.f.set_recv(false);
            s.ops -= 1;
        }
        if s.f.released() {
            self.maybe_free(idx);
            return;
        }
        let t = Token::new(idx, gen);
        if res == 0 || (res < 0 && res != -libc::ENOBUFS && res != -libc::ECANCELED) {
            if !s.f.ended() {
                s.f.set_ended(true);
                let err = (res < 0).then(|| io::Error::from_raw_os_error(-res));
                sink.closed(t, err);
            }
        } else if !more {
            // ENOBUFS (the ring ran dry), a cancellation while paused and resumed since,
            // or the kernel ended the multishot: armed again where still wanted
            if res == -libc::ENOBUFS {
                self.starved = true;
                // the ring is filled again before the receive is armed again
                self.bufs.ran_dry();
                self.bufs.publish();
            }
            self.arm_recv(idx);
        }
    }

    fn on_send<S: Sink>(&mut self, idx: usize, gen: u32, res: i32, sink: &mut S) {
        let Some(s) = self.socks.get_mut(idx).filter(|s| s.gen == gen) else {
            return;
        };
        s.ops -= 1;
        let op = send_op(s.send).map(|i| self.sends.remove(i));
        s.send = NO_SEND;
        self.sends_in_flight -= 1;
        let t = Token::new(idx, gen);
        let released = s.f.released();
        if res >= 0 {
            s.q.advance(res as usize, &mut self.pool);
            if !released {
                s.q.unseal();
                if res > 0 {
                    sink.sent(t, res as usize);
                }
            }
        } else if res == -libc::EAGAIN || res == -libc::EINTR {
            s.q.unseal();
        } else {
            s.q.clear(&mut self.pool);
            if !released && !s.f.ended() {
                s.f.set_ended(true);
                sink.closed(t, Some(io::Error::from_raw_os_error(-res)));
            }
        }
        if let Some(op) = op {
            self.recycle_send(op);
        }
        if released {
            self.maybe_free(idx);
        } else if let Some(s) = self.socks.get_mut(idx) {
            if s.fin_due() {
                self.shut(idx);
            } else if !s.f.dirty() && !s.q.is_empty() {
                s.f.set_dirty(true);
                self.dirty.push(t);
            }
        }
    }

    fn on_poll<S: Sink>(&mut self, idx: usize, gen: u32, res: i32, sink: &mut S) {
        let Some(s) = self.socks.get_mut(idx).filter(|s| s.gen == gen) else {
            return;
        };
        s.ops -= 1;
        s.f.set_connecting(false);
        if s.f.released() {
            self.maybe_free(idx);
            return;
        }
        let t = Token::new(idx, gen);
        let result = if res < 0 {
            Err(io::Error::from_raw_os_error(-res))
        } else {
            match sys::take_error(s.fd.as_raw_fd()) {
                Ok(None) => Ok(()),
                Ok(Some(e)) | Err(e) => Err(e),
            }
        };
        let ok = result.is_ok();
        if !ok {
            s.f.set_ended(true);
        } else if !s.q.is_empty() && !s.f.dirty() {
            s.f.set_dirty(true);
            self.dirty.push(t);
        }
        sink.connected(t, result);
        if ok {
            self.arm_recv(idx);
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // Everything in flight is cancelled and waited for (bounded): sends may read
        // their chunks until their completion. Then the buffer ring is unregistered, so
        // no receive can pick a buffer any more, before its memory goes.
        self.drain_backlog();
        let e = opcode::AsyncCancel2::new(CancelBuilder::any())
            .build()
            .user_data(ud(K_CANCEL, 0, 0));
        self.push(e);
        self.drain_backlog();
        let until = Instant::now() + DROP_WAIT;
        loop {
            let busy = self.socks.iter().any(|(_, s)| s.ops > 0);
            if !busy || Instant::now() >= until {
                break;
            }
            let ts = Timespec::new().nsec(10_000_000);
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            for cqe in self.ring.completion() {
                let (kind, idx, gen) = ud_parts(cqe.user_data());
                if !matches!(kind, K_RECV | K_RECVMSG | K_SEND | K_POLL) {
                    continue;
                }
                if let Some(s) = self.socks.get_mut(idx).filter(|s| s.gen == gen) {
                    let last = !is_recv(kind) || !cqueue::more(cqe.flags());
                    if last {
                        s.ops = s.ops.saturating_sub(1);
                        if kind == K_SEND && s.send != NO_SEND {
                            s.q.unseal();
                            if let Some(i) = send_op(s.send) {
                                self.sends.remove(i);
                            }
                            s.send = NO_SEND;
                        }
                    }
                }
            }
        }
        // the closes queued meanwhile (and those of sockets freed before the drop): an
        // entry left in the submission queue would never run, and its descriptor would
        // leak
        self.drain_backlog();
        let _ = self.ring.submit();
        // queues whose send even cancellation did not end: the kernel may still read
        // them, so they are leaked rather than freed under it
        for (_, s) in self.socks.iter_mut() {
            if s.ops > 0 {
                std::mem::forget(std::mem::take(&mut s.q));
            }
        }
        // and so are the headers of those sends
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
    use super::{parse_recvmsg, RECVMSG_CONTROL, RECVMSG_OUT};

    /// A multishot recvmsg buffer as the kernel lays it out: the header, the control
    /// area (its full template size, used or not), the payload.
    fn recvmsg_buf(stamp: Option<(i64, i64)>, payload: &[u8]) -> Vec<u8> {
        let mut control = Vec::new();
        if let Some((sec, nsec)) = stamp {
            control.extend_from_slice(&32usize.to_ne_bytes()); // CMSG_LEN(16)
            control.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
            control.extend_from_slice(&libc::SCM_TIMESTAMPNS.to_ne_bytes());
            control.extend_from_slice(&sec.to_ne_bytes());
            control.extend_from_slice(&nsec.to_ne_bytes());
        }
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_ne_bytes()); // namelen
        b.extend_from_slice(&(control.len() as u32).to_ne_bytes());
        b.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // flags
        control.resize(RECVMSG_CONTROL, 0xee);
        b.extend_from_slice(&control);
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn recvmsg_buffers_give_their_payload_and_time_stamp() {
        let b = recvmsg_buf(Some((1_700_000_000, 123_456_789)), b"hello");
        let (p, at) = parse_recvmsg(&b).expect("parsed");
        assert_eq!(&b[p], b"hello");
        assert_eq!(at, Some(1_700_000_000_123_456_789));
        // no control message: no time stamp (the area's bytes are not read)
        let b = recvmsg_buf(None, b"x");
        assert_eq!(
            parse_recvmsg(&b),
            Some((RECVMSG_OUT + RECVMSG_CONTROL..b.len(), None))
        );
        // the end of the stream: an empty payload
        let b = recvmsg_buf(Some((1, 2)), b"");
        assert_eq!(parse_recvmsg(&b).map(|(p, _)| p.len()), Some(0));
        // a payload longer than the buffer, or a cut header: refused, never out of bounds
        let mut b = recvmsg_buf(None, b"abc");
        b.truncate(b.len() - 1);
        assert_eq!(parse_recvmsg(&b), None);
        assert_eq!(parse_recvmsg(&b[..10]), None);
    }

    /// What the driver keeps per socket is part of every idle connection's cost.
    #[test]
    fn socket_record_stays_small() {
        let n = size_of::<super::Sock>();
        assert!(n <= 24, "io_uring Sock grew to {n} bytes");
    }
}
