//! CPU time of a process, from `/proc/PID/stat`.

/// CPU seconds (user + system) of this process.
pub fn process_cpu() -> f64 {
    proc_cpu("self")
}

/// CPU seconds (user + system) of process `pid` (`"self"` for this one), or 0 when
/// `/proc` does not have it.
pub fn proc_cpu(pid: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // the command name may hold spaces and parentheses: fields start after the last ')'
    let Some(rest) = s.rsplit(')').next() else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_grows_with_work_and_missing_pid_reads_zero() {
        let before = process_cpu();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(process_cpu() >= before);
        assert!(process_cpu() > 0.0);
        assert_eq!(proc_cpu("999999999"), 0.0);
    }
}
