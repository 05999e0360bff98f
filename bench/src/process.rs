//! What the bench needs from the operating system: CPU time and memory of a process from
//! `/proc`, a temporary directory removed on drop, a free loopback port, and a peak-RSS sampler.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::BoxError;

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// Resource use of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// User plus system CPU time, in seconds.
    pub cpu_secs: f64,
    /// Resident set size now (VmRSS), in KiB.
    pub rss_kib: u64,
    /// Peak resident set size (VmHWM), in KiB.
    pub max_rss_kib: u64,
}

/// Reads CPU time and memory of process `pid`.
pub fn stats(pid: u32) -> Result<ProcStats, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(ProcStats {
        cpu_secs: parse_cpu_ticks(&stat).ok_or("unreadable /proc/<pid>/stat")? as f64
            / TICKS_PER_SEC,
        rss_kib: status_kib(&status, "VmRSS:").ok_or("no VmRSS in /proc/<pid>/status")?,
        max_rss_kib: status_kib(&status, "VmHWM:").ok_or("no VmHWM in /proc/<pid>/status")?,
    })
}

/// VmRSS of process `pid`, in KiB (`None` when it cannot be read).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmRSS:")
}

/// CPU time of this process so far, in seconds (to tell a load-bound from a server-bound run).
pub fn own_cpu_secs() -> Result<f64, BoxError> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    Ok(parse_cpu_ticks(&stat).ok_or("unreadable /proc/self/stat")? as f64 / TICKS_PER_SEC)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The value of a `Key:  N kB` line of `/proc/<pid>/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples a process's VmRSS at a fixed period and keeps the largest value, until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    max_kib: Arc<AtomicU64>,
    samples: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid` every `period` (for at most `limit`, a bound on the loop).
    pub fn start(pid: u32, period: Duration, limit: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let max_kib = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let (s, m, n) = (stop.clone(), max_kib.clone(), samples.clone());
        let task = tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + limit;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !s.load(Ordering::Relaxed) && tokio::time::Instant::now() < deadline {
                tick.tick().await;
                if let Some(kib) = rss_kib(pid) {
                    m.fetch_max(kib, Ordering::Relaxed);
                    n.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        RssSampler {
            stop,
            max_kib,
            samples,
            task,
        }
    }

    /// Stops sampling; answers the largest VmRSS seen (KiB) and the number of samples.
    pub async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.max_kib.load(Ordering::Relaxed),
            self.samples.load(Ordering::Relaxed),
        )
    }
}

/// A directory under the system temp dir, removed with its content when dropped.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/defender-bench-<pid>-<n>-<nanos>`.
    pub fn new(label: &str) -> Result<TempDir, BoxError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "defender-bench-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago (the OS picks it; the socket is closed again).
pub fn free_port() -> Result<u16, BoxError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// `name` next to this executable (`target/release/<name>` when run through cargo).
pub fn sibling_binary(name: &str) -> Result<PathBuf, BoxError> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate own executable: {e}"))?;
    Ok(exe.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        let stat = "4242 (defender sim) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    730 120 0 0 20 0 3 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(850));
        let status =
            "Name:\tdefender-sim\nVmPeak:\t  9000 kB\nVmHWM:\t   12345 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(12345));
        assert_eq!(status_kib(status, "VmRSS:"), Some(1));
        assert_eq!(status_kib("Name: x\n", "VmHWM:"), None);
    }

    #[test]
    fn reads_own_process() {
        let s = stats(std::process::id()).unwrap();
        assert!(s.max_rss_kib > 0 && s.rss_kib > 0);
        assert!(own_cpu_secs().is_ok());
    }

    #[test]
    fn temp_dir_is_removed() {
        let d = TempDir::new("test").unwrap();
        let p = d.path().to_path_buf();
        std::fs::write(p.join("f"), b"x").unwrap();
        drop(d);
        assert!(!p.exists());
    }
}
