//! What the standard library does not offer: the open-files limit, a source-address
//! socket option, a precise timer for the open-loop schedules, and readings of CPU time
//! and RSS from /proc. Every `unsafe` block is one libc call, documented where it is.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Instant;

/// The process-wide clock: nanoseconds since the first call, on CLOCK_MONOTONIC.
/// Time stamps in payloads are on this clock, so they compare across worker threads.
struct Clock {
    start: Instant,
    /// CLOCK_MONOTONIC at `start`, in nanoseconds (for absolute timerfd deadlines).
    mono_base: u64,
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

fn clock() -> &'static Clock {
    CLOCK.get_or_init(|| {
        let start = Instant::now();
        Clock {
            start,
            mono_base: monotonic_ns(),
        }
    })
}

/// Starts the process clock (call once early, before any thread reads it).
pub(crate) fn init_clock() {
    let _ = clock();
}

/// Nanoseconds since the process clock started.
#[inline]
pub(crate) fn now_ns() -> u64 {
    clock().start.elapsed().as_nanos() as u64
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The open-files limit: (soft, hard).
pub(crate) fn nofile_limit() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the call.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    (r.rlim_cur, r.rlim_max)
}

/// Raises the soft open-files limit to `want` (or as far as the hard limit allows) and
/// returns the soft limit now in force.
pub(crate) fn raise_nofile(want: u64) -> u64 {
    let (soft, hard) = nofile_limit();
    if soft >= want {
        return soft;
    }
    let new = want.min(hard);
    let r = libc::rlimit {
        rlim_cur: new,
        rlim_max: hard,
    };
    // SAFETY: `r` is a valid rlimit, read by the kernel during the call only.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    if rc == 0 {
        new
    } else {
        soft
    }
}

/// Sets IP_BIND_ADDRESS_NO_PORT, so that binding a source address before `connect`
/// does not reserve an ephemeral port by itself: ports are then chosen per destination
/// at connect time and each source address gives a full port range per server.
pub(crate) fn set_bind_no_port(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is an open socket owned by the caller; `one` outlives the call and
    // its size is passed. Failure (an old kernel) only costs port range, so it is ignored.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Lowers this thread's timer slack to 1 µs so that timed wake-ups for the send
/// schedule are not deferred by the default 50 µs.
pub(crate) fn set_timer_slack_1us() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only this thread.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0) };
}

/// A CLOCK_MONOTONIC timerfd, armed at absolute instants of the process clock.
#[derive(Debug)]
pub(crate) struct Timer {
    fd: OwnedFd,
    armed: u64,
}

impl Timer {
    pub(crate) fn new() -> io::Result<Timer> {
        // SAFETY: plain call with flag arguments; the result is checked below.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Timer { fd, armed: 0 })
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Arms the timer to fire at `at` (process-clock nanoseconds); a no-op when it is
    /// already armed there. Re-arming also clears an expiry not yet read.
    pub(crate) fn arm(&mut self, at: u64) {
        if at == self.armed {
            return;
        }
        self.armed = at;
        let abs = clock().mono_base + at.max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (abs / 1_000_000_000) as libc::time_t,
                tv_nsec: (abs % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: the fd is a timerfd owned by `self`; `spec` is valid for the call and
        // the old-value pointer may be null.
        unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
    }
}

/// Clock ticks per second for /proc CPU times.
fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        // SAFETY: sysconf only reads a configuration value.
        let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if t > 0 {
            t as f64
        } else {
            100.0
        }
    })
}

/// CPU seconds (user, system) from a /proc `stat` file (a process or a task).
pub(crate) fn stat_cpu_split(path: &str) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    // after the command: state(0) ppid pgrp session tty tpgid flags minflt cminflt
    // majflt cmajflt utime(11) stime(12)
    let utime: f64 = f.nth(11)?.parse().ok()?;
    let stime: f64 = f.next()?.parse().ok()?;
    Some((utime / clk_tck(), stime / clk_tck()))
}

/// CPU seconds (user + system) from a /proc `stat` file (a process or a task).
pub(crate) fn stat_cpu(path: &str) -> Option<f64> {
    stat_cpu_split(path).map(|(u, s)| u + s)
}

/// CPU seconds of process `pid` (all its threads).
pub(crate) fn process_cpu(pid: u32) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of this process: (user, system).
pub(crate) fn self_cpu() -> (f64, f64) {
    stat_cpu_split("/proc/self/stat").unwrap_or((0.0, 0.0))
}

/// CPU seconds of each thread of process `pid`, by thread id.
pub(crate) fn thread_cpus(pid: u32) -> Vec<(u32, f64)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        Some((tid, stat_cpu(&format!("/proc/{pid}/task/{tid}/stat"))?))
    })
    .collect()
}

/// The calling thread's id (from /proc/thread-self).
pub(crate) fn current_tid() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .unwrap_or(0)
}

/// Resident set size of process `pid`, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
