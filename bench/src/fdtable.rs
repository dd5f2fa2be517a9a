//! A one-worker `soliton-server` whose worker is alone in its descriptor table.
//!
//! Threads of a process share one table of file descriptors. While more than one
//! thread uses the table, the kernel takes and drops a reference to the file on every
//! system call that names a descriptor (`fdget` / `fput`); with one user it borrows
//! the file instead. A one-worker server has two threads: the worker, which makes
//! every system call of the data path, and the main thread, which only waits for
//! signals. [`leave_shared_table`] gives the main thread a copy of the table once the
//! server is up, so that the worker is alone in the one it uses (perf, epoll, 100 x
//! 20 B echo: `fdget` + `fput` 57 ns less per message, about 0.9 % of the server's CPU;
//! docs/benchmarks.md).
//!
//! What the main thread opens afterwards (the metrics listener, the signal pipe, files
//! read on SIGHUP) is in its own table only. Signal handlers write to the signal pipe
//! by number, so they must not run on a worker: [`block_signals`] blocks the signals
//! while the workers are spawned, and the workers keep that mask.
#![allow(unsafe_code)]

use std::io;

/// Signals blocked in the calling thread until this is dropped (the previous mask
/// comes back). Threads spawned meanwhile keep them blocked.
#[derive(Debug)]
pub struct BlockedSignals {
    old: libc::sigset_t,
}

/// Blocks `sigs` in the calling thread.
pub fn block_signals(sigs: &[libc::c_int]) -> io::Result<BlockedSignals> {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before any use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pthread_sigmask fills it in.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned here.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in sigs {
        // SAFETY: as above; an invalid signal number is an error, not UB.
        if unsafe { libc::sigaddset(&mut set, s) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: both pointers are to valid sigset_t values owned here.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(BlockedSignals { old })
}

impl Drop for BlockedSignals {
    fn drop(&mut self) {
        // SAFETY: `old` is the mask pthread_sigmask returned; the old-mask pointer may
        // be null.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Gives the calling thread a copy of the descriptor table in place of the shared one
/// (`unshare(CLONE_FILES)`), then closes in the copy every socket above standard
/// error: the copies of the listeners and of any connection accepted meanwhile, which
/// would otherwise stay open until the process exits (a listener its worker closed
/// would still take connections; a connection its worker closed would send no FIN).
/// Returns how many it closed.
///
/// The caller must hold no socket object of its own (its copy is closed here), and may
/// afterwards use only the descriptors that were open before the call (they are in
/// both tables: a worker's waker, say) or that it opens itself.
pub fn leave_shared_table() -> io::Result<usize> {
    // SAFETY: unshare(CLONE_FILES) replaces this thread's table by a copy of it; no
    // memory is touched.
    if unsafe { libc::unshare(libc::CLONE_FILES) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    for e in std::fs::read_dir("/proc/thread-self/fd")?.flatten() {
        if let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
            if fd > 2 {
                fds.push(fd);
            }
        }
    }
    // the directory's own descriptor, listed too, is closed by now: fstat fails on it
    let mut closed = 0;
    for fd in fds {
        if is_socket(fd) {
            // SAFETY: `fd` is an entry of this thread's new table, which no other thread
            // uses and no object of this thread owns (see above); closing it leaves the
            // entry of the table the workers use alone.
            unsafe { libc::close(fd) };
            closed += 1;
        }
    }
    Ok(closed)
}

fn is_socket(fd: i32) -> bool {
    // SAFETY: stat is plain data; fstat fills it in or fails (EBADF for a closed one).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat owned here.
    unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn blocked(sig: libc::c_int) -> bool {
        // SAFETY: as in block_signals.
        let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: a null new mask only queries the current one.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur) };
        // SAFETY: `cur` was filled in above.
        unsafe { libc::sigismember(&cur, sig) == 1 }
    }

    #[test]
    fn signals_are_blocked_until_dropped_and_threads_spawned_meanwhile_keep_them() {
        std::thread::spawn(|| {
            assert!(!blocked(libc::SIGHUP));
            let g = block_signals(&[libc::SIGHUP, libc::SIGTERM]).unwrap();
            assert!(blocked(libc::SIGHUP) && blocked(libc::SIGTERM));
            let child = std::thread::spawn(|| blocked(libc::SIGHUP)).join().unwrap();
            drop(g);
            assert!(!blocked(libc::SIGHUP) && !blocked(libc::SIGTERM));
            assert!(child, "a thread spawned while blocked keeps the mask");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_that_leaves_closes_its_copies_of_sockets_and_the_rest_keeps_them() {
        // a listener and a file, opened in the shared table
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lfd = listener.as_raw_fd();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let ffd = file.as_raw_fd();
        let (closed, listener_kept, file_kept) = std::thread::spawn(move || {
            let closed = leave_shared_table().unwrap();
            // its copy of the listener is gone, the file's copy is not
            (closed, is_open(lfd), is_open(ffd))
        })
        .join()
        .unwrap();
        assert!(closed >= 1);
        assert_eq!((listener_kept, file_kept), (false, true));
        // the shared table still has the listener, working
        assert!(is_open(lfd));
        let mut c = TcpStream::connect(addr).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        c.write_all(b"ok").unwrap();
        let mut b = [0; 2];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ok");
        assert!(is_open(ffd));
        drop(file);
    }

    fn is_open(fd: i32) -> bool {
        // SAFETY: F_GETFD only queries the descriptor's flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }
}
