//! Readings from /proc (CPU time, RSS, thread ids) and the process clock that message
//! stamps use. No system calls of its own: the sockets, the timers and the event loop
//! are the engine's (`soliton::client`).

use std::sync::OnceLock;
use std::time::Instant;

/// The process clock's start: stamps are nanoseconds since it, so they compare across
/// worker threads.
static START: OnceLock<Instant> = OnceLock::new();

/// Starts the process clock (call once early, before any thread reads it).
pub(crate) fn init_clock() {
    let _ = START.get_or_init(Instant::now);
}

/// Nanoseconds since the process clock started.
#[inline]
pub(crate) fn now_ns() -> u64 {
    ns_of(Instant::now())
}

/// An instant on the process clock, in nanoseconds.
#[inline]
pub(crate) fn ns_of(t: Instant) -> u64 {
    t.saturating_duration_since(*START.get_or_init(Instant::now))
        .as_nanos() as u64
}

/// The instant of a process-clock time.
pub(crate) fn instant_of(ns: u64) -> Instant {
    *START.get_or_init(Instant::now) + std::time::Duration::from_nanos(ns)
}

/// Clock ticks per second of /proc CPU times: USER_HZ, which Linux fixes at 100 for
/// user space on every architecture it runs this on (x86, ARM, RISC-V).
fn clk_tck() -> f64 {
    100.0
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

/// One process's resident set size, read again and again through one open
/// `/proc/PID/statm` (each read at offset 0 has the kernel write it afresh). The
/// controller samples the server's RSS every 20 ms for its peak (and reads it at the
/// window's ends through the same probe): opening, sizing, reading and closing
/// `/proc/PID/status` each time cost the load generator about 2 ms of CPU a second,
/// 1 µs a message at 2,000 msg/s.
pub(crate) struct RssProbe {
    file: std::fs::File,
    page: u64,
}

impl RssProbe {
    pub(crate) fn open(pid: u32) -> Option<RssProbe> {
        let file = std::fs::File::open(format!("/proc/{pid}/statm")).ok()?;
        Some(RssProbe {
            file,
            page: soliton::driver::page_size(),
        })
    }

    /// The resident set size now, in bytes (`None`, or 0, once the process is gone).
    pub(crate) fn read(&self) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        // "size resident shared text lib data dt", in pages
        let mut buf = [0u8; 160];
        let n = self.file.read_at(&mut buf, 0).ok()?;
        let s = std::str::from_utf8(&buf[..n]).ok()?;
        let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * self.page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// VmRSS from `status`, the way this module read it before.
    fn status_rss() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }

    #[test]
    fn rss_probe_agrees_with_status_and_follows_growth() {
        let probe = RssProbe::open(std::process::id()).expect("statm");
        let before = probe.read().unwrap();
        let st = status_rss();
        // other test threads allocate meanwhile: close, not equal
        assert!(
            before.abs_diff(st) < 16 << 20,
            "statm {before}, status {st}"
        );
        // 64 MiB touched: the same open file reads the new size
        let v = std::hint::black_box(vec![1u8; 64 << 20]);
        let after = probe.read().unwrap();
        assert!(after >= before + (48 << 20), "{before} -> {after}");
        assert_eq!(v[v.len() / 2], 1);
        assert!(RssProbe::open(u32::MAX).is_none());
    }
}
