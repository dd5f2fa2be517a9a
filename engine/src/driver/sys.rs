//! The system calls the drivers make, each through one `syscall!` macro, with socket
//! set-up done through `socket2`. Nothing outside `driver/` calls these.
#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Calls a libc function and turns `-1` into the `errno` error.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every call site passes valid pointers with matching lengths and
        // file descriptors it owns or borrows; see each caller.
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Makes a socket system call with `syscall(2)` rather than through glibc's wrapper,
/// and turns `-1` into the `errno` error. glibc's `recv`, `send` and `sendmsg` are
/// thread-cancellation points: in a process with more than one thread each call
/// brackets the system call with `__pthread_enable_asynccancel` and
/// `__pthread_disable_asynccancel`, 58 instructions per call (callgrind, a 20 B echo
/// makes two). Nothing here uses thread cancellation. Every argument is passed as a
/// `c_long`, as the kernel takes them.
macro_rules! sock_call {
    ($nr:expr, $($arg:expr),* $(,)?) => {{
        // SAFETY: every call site passes valid pointers with matching lengths and
        // file descriptors it owns or borrows; see each caller.
        let res = unsafe { libc::syscall($nr, $($arg as libc::c_long),*) };
        if res == -1 {
            Err(io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

/// Reads into `buf`; `Ok(0)` is end of stream.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // `buf` is valid for `buf.len()` writable bytes.
    syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// Receives from a socket into `buf`; `Ok(0)` is end of stream. `recv`, not `read`: the
/// socket call skips the VFS layers `read` goes through (`fdget_pos`, `rw_verify_area`,
/// the file-permission hook): 4-5 % of the server's samples at a 20 B echo (perf).
/// With `at`, also the kernel's receive time stamp (`SO_TIMESTAMPNS`, set with
/// [`set_rx_timestamps`]) of the last segment the read took, in nanoseconds since the
/// Unix epoch: `None` where the kernel gave none.
pub(crate) fn recv(fd: RawFd, buf: &mut [u8], at: Option<&mut Option<u64>>) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` writable bytes.
    unsafe { recv_raw(fd, buf.as_mut_ptr(), buf.len(), at) }
}

/// Receives from a socket up to `max` bytes onto the end of `v` (growing its capacity, not zeroing the
/// new room first); returns how many, `Ok(0)` at end of stream. With `at`, the receive
/// time stamp as [`recv`] gives it.
pub(crate) fn read_onto(
    fd: RawFd,
    v: &mut Vec<u8>,
    max: usize,
    at: Option<&mut Option<u64>>,
) -> io::Result<usize> {
    v.reserve(max);
    let room = v.spare_capacity_mut();
    let want = room.len().min(max);
    // SAFETY: `room` is `want` writable bytes of `v`'s allocation past its length; the
    // kernel writes at most that many.
    let n = unsafe { recv_raw(fd, room.as_mut_ptr().cast(), want, at) }?;
    debug_assert!(n <= want);
    // SAFETY: the kernel initialized the first `n` bytes of the spare capacity, which
    // lies within the allocation (`n <= want <= spare capacity`).
    unsafe { v.set_len(v.len() + n) };
    Ok(n)
}

/// The one receive both of the above make: `recvfrom` without a time stamp wanted,
/// `recvmsg` with room for one control message otherwise.
///
/// # Safety
/// `ptr` must be valid for `len` writable bytes.
unsafe fn recv_raw(
    fd: RawFd,
    ptr: *mut u8,
    len: usize,
    at: Option<&mut Option<u64>>,
) -> io::Result<usize> {
    let null = std::ptr::null_mut::<u8>();
    let Some(at) = at else {
        return sock_call!(libc::SYS_recvfrom, fd, ptr, len, 0, null, null).map(|n| n as usize);
    };
    // u64 words: the control buffer is aligned for `cmsghdr`
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    // SAFETY: all-zero is a valid `msghdr` (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control) as _;
    let mp: *mut libc::msghdr = &mut msg;
    let n = sock_call!(libc::SYS_recvmsg, fd, mp, 0)? as usize;
    *at = None;
    // SAFETY: `msg` was filled in by the kernel: its control pointer and length describe
    // the initialized part of `control`, which the CMSG macros walk within.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET
                && (*c).cmsg_type == libc::SCM_TIMESTAMPNS
                && (*c).cmsg_len as usize
                    >= libc::CMSG_LEN(size_of::<libc::timespec>() as u32) as usize
            {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                *at = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok(n)
}

/// The flags of a socket send: `MSG_NOSIGNAL`, and `MSG_MORE` when a FIN is to follow
/// (see [`send_vectored`]; io_uring's sends take the same).
pub(crate) fn send_flags(more: bool) -> libc::c_int {
    if more {
        libc::MSG_NOSIGNAL | libc::MSG_MORE
    } else {
        libc::MSG_NOSIGNAL
    }
}

/// Gathers `bufs` into one send on a socket: `send` for one buffer, `sendmsg` for
/// several (the socket calls, not `write`/`writev`, which add the VFS layers; see
/// [`recv`]). `MSG_NOSIGNAL`: a peer that is gone is an `EPIPE` error, never a signal.
/// `more` (`MSG_MORE`): the last segment waits for what follows, so that a FIN sent
/// next (`shutdown`, `close`) leaves in the same segment instead of one of its own.
pub(crate) fn send_vectored(fd: RawFd, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
    let flags = send_flags(more);
    if let [one] = bufs {
        // `one` is valid for `one.len()` readable bytes.
        let null = std::ptr::null::<u8>();
        return sock_call!(
            libc::SYS_sendto,
            fd,
            one.as_ptr(),
            one.len(),
            flags,
            null,
            0
        )
        .map(|n| n as usize);
    }
    // SAFETY: msghdr is plain data; all-zero is a valid empty header (no address, no
    // control data), filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec; at most IOV_MAX are passed by callers. The
    // kernel only reads through the pointer.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = bufs.len().min(1024) as _;
    // `msg` and the iovecs it points to outlive the call.
    sock_call!(libc::SYS_sendmsg, fd, &msg as *const libc::msghdr, flags).map(|n| n as usize)
}

/// Shuts down the writing half (sends FIN once queued data is out).
pub(crate) fn shutdown_write(fd: RawFd) -> io::Result<()> {
    syscall!(shutdown(fd, libc::SHUT_WR)).map(drop)
}

/// Sets SO_LINGER to 0, so that closing sends a reset.
pub(crate) fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // `l` outlives the call and its size is passed.
    syscall!(setsockopt(
        fd,
        libc::SOL_SOCKET,
        libc::SO_LINGER,
        (&l as *const libc::linger).cast(),
        size_of::<libc::linger>() as libc::socklen_t,
    ))
    .map(drop)
}

/// Sets an integer socket option.
fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // `v` outlives the call and its size is passed.
    syscall!(setsockopt(
        fd,
        level,
        name,
        (&v as *const libc::c_int).cast(),
        size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(drop)
}

/// Sets TCP_NODELAY.
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Whether TCP_NODELAY is set.
pub(crate) fn nodelay(fd: RawFd) -> io::Result<bool> {
    socket2::SockRef::from(&borrow(fd)).tcp_nodelay()
}

/// Asks the kernel for receive time stamps (`SO_TIMESTAMPNS`): the software time each
/// segment reached the socket, read with [`recv`] or [`read_onto`].
pub(crate) fn set_rx_timestamps(fd: RawFd) -> io::Result<()> {
    set_int_opt(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)
}

/// The pending error of a socket (SO_ERROR), cleared by reading it.
pub(crate) fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    socket2::SockRef::from(&borrow(fd)).take_error()
}

/// A borrowed descriptor as a `BorrowedFd` with the caller's lifetime.
fn borrow<'a>(fd: RawFd) -> std::os::fd::BorrowedFd<'a> {
    // SAFETY: callers pass descriptors the driver owns and keeps open for the call.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// The peer address of a connected socket.
pub(crate) fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    socket2::SockRef::from(&borrow(fd))
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket())
}

/// A non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT.
pub(crate) fn listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.set_cloexec(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// Starts a non-blocking connect to `addr` (from `source`, if given, with
/// IP_BIND_ADDRESS_NO_PORT so that a source address gives a full port range per
/// destination). The socket is writable once connected.
pub(crate) fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    nodelay: bool,
) -> io::Result<OwnedFd> {
    use socket2::{Domain, Protocol, Socket, Type};
    // non-blocking and close-on-exec from the start: one system call, where setting
    // them afterwards took three `fcntl`s per connection
    let kind = Type::STREAM.nonblocking().cloexec();
    let s = Socket::new_raw(Domain::for_address(addr), kind, Some(Protocol::TCP))?;
    if nodelay {
        s.set_tcp_nodelay(true)?;
    }
    if let Some(ip) = source {
        // failure (an old kernel) only costs port range
        let _ = set_int_opt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            1,
        );
        s.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match s.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

/// Accepts one connection, non-blocking and close-on-exec, with the peer's address
/// (accept4 fills it in: no `getpeername` afterwards).
pub(crate) fn accept(listener: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    let init = |storage: *mut socket2::SockAddrStorage, len: *mut libc::socklen_t| {
        syscall!(accept4(
            listener,
            storage.cast(),
            len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        ))
    };
    // SAFETY: `try_init` passes a zeroed `sockaddr_storage` and its length, which
    // accept4 fills in; it reads the address only up to the length accept4 returns.
    let (fd, addr) = unsafe { socket2::SockAddr::try_init(init) }?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, addr.as_socket()))
}

/// Wraps a descriptor the kernel just returned (an io_uring accept's result).
///
/// # Safety
/// `fd` must be an open descriptor that nothing else owns.
pub(crate) unsafe fn own(fd: RawFd) -> OwnedFd {
    debug_assert!(fd >= 0);
    // SAFETY: the caller's contract.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A spare descriptor, given up to accept-and-close one connection when the process
/// is out of descriptors (EMFILE), so the listener does not spin.
pub(crate) fn spare_fd() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

/// The local address of a socket.
pub(crate) fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let s = socket2::SockRef::from(fd);
    s.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an inet socket"))
}

/// A non-blocking, close-on-exec eventfd.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    let fd = syscall!(eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC))?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter (wakes whoever waits on it).
pub(crate) fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // 8 bytes from a live u64; EAGAIN (counter at its maximum) still leaves it readable.
    let _ = syscall!(write(fd, (&one as *const u64).cast(), 8));
}

/// Resets an eventfd's counter.
pub(crate) fn eventfd_clear(fd: RawFd) {
    let mut v: u64 = 0;
    // 8 writable bytes; EAGAIN (already zero) is fine.
    let _ = syscall!(read(fd, (&mut v as *mut u64).cast(), 8));
}

/// A non-blocking, close-on-exec CLOCK_MONOTONIC timerfd.
pub(crate) fn timerfd() -> io::Result<OwnedFd> {
    let fd = syscall!(timerfd_create(
        libc::CLOCK_MONOTONIC,
        libc::TFD_NONBLOCK | libc::TFD_CLOEXEC
    ))?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arms a timerfd to fire once after `after` (at least 1 ns).
pub(crate) fn timerfd_arm(fd: RawFd, after: Duration) {
    let after = after.max(Duration::from_nanos(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: after.as_secs() as libc::time_t,
            tv_nsec: after.subsec_nanos() as libc::c_long,
        },
    };
    // `spec` is valid for the call; the old-value pointer may be null.
    let _ = syscall!(timerfd_settime(fd, 0, &spec, std::ptr::null_mut()));
}

/// The open-files limit: (soft, hard).
pub(crate) fn nofile_limit() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // `r` is a valid, writable rlimit for the call.
    let _ = syscall!(getrlimit(libc::RLIMIT_NOFILE, &mut r));
    (r.rlim_cur, r.rlim_max)
}

/// Raises the soft open-files limit towards `want` (at most the hard limit); returns
/// the soft limit in force afterwards.
pub(crate) fn raise_nofile(want: u64) -> u64 {
    let (soft, hard) = nofile_limit();
    if soft >= want {
        return soft;
    }
    let r = libc::rlimit {
        rlim_cur: want.min(hard),
        rlim_max: hard,
    };
    // `r` is a valid rlimit for the call.
    match syscall!(setrlimit(libc::RLIMIT_NOFILE, &r)) {
        Ok(_) => r.rlim_cur,
        Err(_) => soft,
    }
}

/// The size of a memory page in bytes (4096 where `sysconf` cannot say).
pub(crate) fn page_size() -> u64 {
    // sysconf takes a plain integer name and reads no memory of ours.
    match syscall!(sysconf(libc::_SC_PAGESIZE)) {
        Ok(n) if n > 0 => n as u64,
        _ => 4096,
    }
}

/// Lowers this thread's timer slack to 1 µs, so that timed wake-ups (an open-loop
/// send schedule) are not deferred by the default 50 µs.
pub(crate) fn set_timer_slack_1us() {
    // PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    let _ = syscall!(prctl(
        libc::PR_SET_TIMERSLACK,
        1000 as libc::c_ulong,
        0,
        0,
        0
    ));
}

/// Segments a TCP socket has received and sent (`tcpi_segs_in`, `tcpi_segs_out`).
#[cfg(test)]
pub(crate) fn segments(fd: RawFd) -> (u32, u32) {
    // SAFETY: tcp_info is plain data: all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    let out: *mut libc::tcp_info = &mut info;
    // `info` is writable for `len` bytes; getsockopt writes at most that.
    syscall!(getsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_INFO,
        out.cast(),
        &mut len
    ))
    .expect("TCP_INFO");
    (info.tcpi_segs_in, info.tcpi_segs_out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn page_size_is_a_power_of_two_of_at_least_4_kib() {
        let p = page_size();
        assert!(p >= 4096 && p.is_power_of_two(), "{p}");
    }

    #[test]
    fn send_vectored_and_recv_move_the_bytes_in_order() {
        let (a, b) = UnixStream::pair().expect("socket pair");
        let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
        assert_eq!(
            send_vectored(fa, &[IoSlice::new(b"one")], false).expect("send"),
            3
        );
        let parts = [
            IoSlice::new(b"-two"),
            IoSlice::new(b""),
            IoSlice::new(b"-three"),
        ];
        assert_eq!(send_vectored(fa, &parts, false).expect("sendmsg"), 10);
        let mut buf = [0u8; 64];
        let n = recv(fb, &mut buf, None).expect("recv");
        assert_eq!(&buf[..n], b"one-two-three");
        // onto a vector's end, at most `max`
        send_vectored(fa, &[IoSlice::new(b"abcdef")], true).expect("send");
        let mut v = b"xy".to_vec();
        assert_eq!(read_onto(fb, &mut v, 4, None).expect("recv onto"), 4);
        assert_eq!(v, b"xyabcd");
        // end of stream, and a send to a peer that is gone is an error, not a signal
        drop(a);
        assert_eq!(read_onto(fb, &mut v, 16, None).expect("recv onto"), 2);
        assert_eq!(recv(fb, &mut buf, None).expect("recv at the end"), 0);
        let (c, d) = UnixStream::pair().expect("socket pair");
        drop(d);
        let e = send_vectored(c.as_raw_fd(), &[IoSlice::new(b"z")], false).expect_err("peer gone");
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    /// A loopback connection, accepted with `accept` (whose peer address must be the
    /// connecting socket's own), as (accepted side, connecting side).
    fn accepted_pair() -> (OwnedFd, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.set_nonblocking(true).expect("non-blocking");
        let c = std::net::TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        c.set_nodelay(true).expect("nodelay");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match accept(l.as_raw_fd()) {
                Ok((fd, peer)) => {
                    assert_eq!(peer, Some(c.local_addr().expect("local")));
                    set_nodelay(fd.as_raw_fd()).expect("nodelay");
                    return (fd, c);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "nothing to accept");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    /// With `more`, the last bytes wait for the FIN that `shutdown` sends next, and the
    /// two leave as one segment; without it, as two. The peer reads the bytes, then the
    /// end of stream, either way.
    #[test]
    fn a_send_with_more_shares_its_segment_with_the_fin() {
        use std::io::Read;
        for more in [true, false] {
            let (fd, mut c) = accepted_pair();
            let fd = fd.as_raw_fd();
            std::thread::sleep(Duration::from_millis(20)); // handshake ACKs settle
            let before = segments(fd).1;
            let parts = [IoSlice::new(b"\x88\x02"), IoSlice::new(b"\x03\xe8")];
            assert_eq!(send_vectored(fd, &parts, more).expect("send"), 4);
            shutdown_write(fd).expect("shutdown");
            let mut got = Vec::new();
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            c.read_to_end(&mut got).expect("read to the end");
            assert_eq!(got, b"\x88\x02\x03\xe8");
            let sent = segments(fd).1 - before;
            assert_eq!(sent, if more { 1 } else { 2 }, "more: {more}");
        }
    }

    /// A TCP socket with receive time stamps on: each read reports the time its last
    /// segment arrived (after the send, before the read), on both receive calls; a read
    /// of two segments reports the later one.
    #[test]
    fn receive_time_stamps_over_tcp() {
        use std::io::Write;
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let now = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        };
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut a = std::net::TcpStream::connect(l.local_addr().unwrap()).expect("connect");
        a.set_nodelay(true).unwrap();
        let (b, _) = l.accept().expect("accept");
        let fb = b.as_raw_fd();
        set_rx_timestamps(fb).expect("SO_TIMESTAMPNS");
        let mut buf = [0u8; 64];
        // The kernel turns receive time stamps on for the machine when the first socket
        // asks, from a work queue: segments before that come without one. Wait (at
        // most 2 s) until one has a time stamp.
        let until = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            a.write_all(b"w").unwrap();
            std::thread::sleep(Duration::from_millis(5));
            let mut at = None;
            let n = recv(fb, &mut buf, Some(&mut at)).expect("recv");
            assert!(n >= 1);
            if at.is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < until,
                "no receive time stamp in 2 s"
            );
        }
        let t0 = now();
        a.write_all(b"one").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let t1 = now();
        let mut at = None;
        let n = recv(fb, &mut buf, Some(&mut at)).expect("recv");
        assert_eq!(&buf[..n], b"one");
        let at = at.expect("a time stamp");
        assert!(
            t0 <= at && at + 20_000_000 < t1,
            "{t0} <= {at} < {t1} - 20 ms"
        );
        // two segments, 30 ms apart, in one read: the later one's time
        a.write_all(b"two").unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let t2 = now();
        a.write_all(b"three").unwrap();
        std::thread::sleep(Duration::from_millis(10));
        let mut v = Vec::new();
        let mut at = None;
        let n = read_onto(fb, &mut v, 64, Some(&mut at)).expect("recv onto");
        assert_eq!(&v[..n], b"twothree");
        assert!(at.expect("a time stamp") >= t2, "the later segment's time");
        // without the option, no time stamp
        let (mut c, _) = (
            std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap(),
            (),
        );
        let (d, _) = l.accept().unwrap();
        c.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(10));
        let mut at = None;
        recv(d.as_raw_fd(), &mut buf, Some(&mut at)).expect("recv");
        assert_eq!(at, None);
    }
}
