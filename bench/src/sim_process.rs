//! `defender-sim` as a child process on a free loopback port, with its CPU time and peak memory
//! read from `/proc`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BoxError;

/// How long the simulator may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// A running simulator process (killed when dropped).
pub struct SimProcess {
    child: Child,
    pid: u32,
    base_url: String,
}

/// Resource use of a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStats {
    /// User plus system CPU time, in seconds.
    pub cpu_secs: f64,
    /// Peak resident set size (VmHWM), in KiB.
    pub max_rss_kib: u64,
}

impl SimProcess {
    /// Starts `bin --listen 127.0.0.1:0` and waits for the address it prints.
    pub async fn spawn(bin: &Path) -> Result<SimProcess, BoxError> {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let pid = child.id().ok_or("the simulator exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let mut lines = BufReader::new(stdout).lines();
        let base_url = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.split("listening on ").nth(1) {
                    return Ok(url.trim().to_string());
                }
            }
            Err(std::io::Error::other(
                "the simulator exited before listening",
            ))
        })
        .await
        .map_err(|_| "the simulator did not print its address in time")??;
        // Keep draining its output so a full pipe never blocks it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if !base_url.starts_with("http://127.") {
            return Err(format!("the simulator listens on {base_url}, not on loopback").into());
        }
        Ok(SimProcess {
            child,
            pid,
            base_url,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// CPU time so far and peak memory of the process.
    pub fn stats(&self) -> Result<ProcStats, BoxError> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        Ok(ProcStats {
            cpu_secs: parse_cpu_ticks(&stat).ok_or("unreadable /proc/<pid>/stat")? as f64
                / TICKS_PER_SEC,
            max_rss_kib: parse_vm_hwm(&status).ok_or("no VmHWM in /proc/<pid>/status")?,
        })
    }

    /// Stops the process and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// CPU time of this process so far, in seconds (to tell a load-bound from a sim-bound run).
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

/// The `VmHWM:` value of `/proc/<pid>/status`, in KiB.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
        assert_eq!(parse_vm_hwm(status), Some(12345));
        assert_eq!(parse_vm_hwm("Name: x\n"), None);
    }

    #[test]
    fn reads_own_process() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_cpu_ticks(&stat).is_some());
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(parse_vm_hwm(&status).unwrap() > 0);
    }
}
