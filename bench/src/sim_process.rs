//! `defender-sim` as a child process on a free loopback port, with its CPU time and peak memory
//! read from `/proc`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BoxError;
use crate::process::{self, ProcStats};

/// How long the simulator may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running simulator process (killed when dropped).
pub struct SimProcess {
    child: Child,
    pid: u32,
    base_url: String,
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

    /// CPU time so far and memory of the process.
    pub fn stats(&self) -> Result<ProcStats, BoxError> {
        process::stats(self.pid)
    }

    /// Stops the process and reaps it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
