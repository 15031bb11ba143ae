//! The runner's own resource use: RSS from `/proc/self/status`, CPU time from `getrusage`;
//! and the CPU time of the store's server process when the runner started it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};

/// A `kB` field of `/proc/self/status` (e.g. `VmRSS`, `VmHWM`), in bytes.
fn status_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// Resident set size now, in bytes.
pub fn rss() -> Option<u64> {
    status_kb("VmRSS")
}

/// Peak resident set size of the process so far, in bytes.
pub fn peak_rss() -> Option<u64> {
    status_kb("VmHWM")
}

/// User plus system CPU time used by this process so far.
pub fn cpu_time() -> Option<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
    let micros = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(tv.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(tv.tv_usec()).unwrap_or(0))
    };
    Some(micros(usage.user_time()) + micros(usage.system_time()))
}

/// The pid of the server process whose CPU time the throughput rows report; 0 for none.
static SERVER_PID: AtomicU32 = AtomicU32::new(0);

/// Names the store's server process (`None`: the memory store, which runs in the runner, or
/// a server the runner did not start, whose process it cannot see).
pub fn watch_server(pid: Option<u32>) {
    SERVER_PID.store(pid.unwrap_or(0), Ordering::Relaxed);
}

/// User plus system CPU time used by the watched server so far (10 ms ticks, from /proc);
/// `None` if there is none.
pub fn server_cpu_time() -> Option<Duration> {
    match SERVER_PID.load(Ordering::Relaxed) {
        0 => None,
        pid => leadership_testkit::harness::cpu_time(pid),
    }
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Cores available to the runner.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `123456789` → `117.7 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_process_reports_its_cpu_time_and_no_process_reports_none() {
        watch_server(None);
        assert_eq!(server_cpu_time(), None);
        watch_server(Some(std::process::id()));
        let before = server_cpu_time().expect("this process's CPU time");
        // Burn well over one 10 ms tick.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = server_cpu_time().expect("this process's CPU time");
        watch_server(None);
        assert!(after > before, "{before:?} → {after:?}");
    }
}
