//! The system calls the runtimes make, each through one `syscall!` macro, with the
//! socket set-up done through `socket2`.
#![allow(unsafe_code)]

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// Reads into `buf`; `Ok(0)` is end of stream.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // `buf` is valid for `buf.len()` writable bytes.
    syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len())).map(|n| n as usize)
}

/// Gathers `bufs` into one write.
pub(crate) fn writev(fd: RawFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // IoSlice is ABI-compatible with iovec; at most IOV_MAX are passed by callers.
    let n = bufs.len().min(1024) as libc::c_int;
    syscall!(writev(fd, bufs.as_ptr().cast(), n)).map(|n| n as usize)
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

/// Sets TCP_NODELAY.
pub(crate) fn set_nodelay(fd: RawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // `one` outlives the call and its size is passed.
    syscall!(setsockopt(
        fd,
        libc::IPPROTO_TCP,
        libc::TCP_NODELAY,
        (&one as *const libc::c_int).cast(),
        size_of::<libc::c_int>() as libc::socklen_t,
    ))
    .map(drop)
}

/// The peer address of a connected socket.
pub(crate) fn peer_addr(fd: RawFd) -> Option<SocketAddr> {
    // `fd` is borrowed for the call only: ManuallyDrop keeps socket2 from closing it.
    // SAFETY: the socket stays open for the duration; it is never closed here.
    let s = std::mem::ManuallyDrop::new(unsafe { socket2::Socket::from_raw_fd(fd) });
    s.peer_addr().ok().and_then(|a| a.as_socket())
}

/// A non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT.
pub(crate) fn listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// Accepts one connection, non-blocking and close-on-exec.
pub(crate) fn accept(listener: RawFd) -> io::Result<OwnedFd> {
    // null address pointers are allowed by accept4.
    let fd = syscall!(accept4(
        listener,
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
    ))?;
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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

/// Borrowed raw descriptor.
pub(crate) fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}
