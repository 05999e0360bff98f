//! `redis-server` as a child process for the scenarios that run several hosts on shared state:
//! Debian's binary, a free loopback port, no persistence (`--save ""`, `--appendonly no`), its
//! working directory a temporary one, ready once it answers `PING`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::BoxError;
use crate::process::{self, ProcStats, TempDir};

/// Where Debian's `redis-server` package installs the server.
pub const REDIS_SERVER: &str = "/usr/bin/redis-server";
/// How long the server may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between two `PING`s while it starts.
const READY_POLL: Duration = Duration::from_millis(20);

/// A running Redis server (killed when dropped; its directory is removed then too).
pub struct RedisProcess {
    child: Child,
    pid: u32,
    port: u16,
    _dir: TempDir,
}

impl RedisProcess {
    /// Starts [`REDIS_SERVER`] on a free loopback port and waits for it to answer `PING`; a
    /// missing binary is an error saying how to install it.
    pub async fn spawn() -> Result<RedisProcess, BoxError> {
        let program = PathBuf::from(REDIS_SERVER);
        if !program.is_file() {
            return Err(format!(
                "{REDIS_SERVER} not found: this scenario needs Redis \
                 (apt-get install -y redis-server; .ci/run installs it)"
            )
            .into());
        }
        Self::spawn_at(&program).await
    }

    async fn spawn_at(program: &Path) -> Result<RedisProcess, BoxError> {
        let dir = TempDir::new("redis")?;
        let port = process::free_port()?;
        let mut child = Command::new(program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().ok_or("redis-server exited at once")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ping(port).await {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("redis-server exited ({status}) before it was ready").into());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server did not answer PING on port {port} within {} s",
                    READY_TIMEOUT.as_secs()
                )
                .into());
            }
            tokio::time::sleep(READY_POLL).await;
        }
        Ok(RedisProcess {
            child,
            pid,
            port,
            _dir: dir,
        })
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// CPU time so far and memory of the process.
    pub fn stats(&self) -> Result<ProcStats, BoxError> {
        process::stats(self.pid)
    }

    /// Stops the process and reaps it (the directory goes with `self`).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Whether a Redis server on `port` answers `PING` with `+PONG` within a second.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 16];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(true))
    )
}
