//! `defender-soar serve` as a child process, for tests that need real processes (crashes,
//! hosts sharing a state directory). Included by those test files with `#[path]`; each uses
//! part of it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A host child process, killed (by its own pid) when dropped, also on panic.
pub struct HostProcess {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl HostProcess {
    /// Writes `config` (TOML, whose listen address must be `port`) to `dir/<name>.toml` and
    /// starts `defender-soar serve` on it with `env` set, `unset` removed and no
    /// `DEFENDER_SOAR__*` override of the test's own environment; stderr goes to
    /// `dir/<name>.log`.
    pub fn serve(
        dir: &Path,
        name: &str,
        port: u16,
        config: &str,
        env: &[(&str, &str)],
        unset: &[&str],
    ) -> HostProcess {
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_defender-soar"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("DEFENDER_SOAR_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            command.env(k, v);
        }
        for k in unset {
            command.env_remove(k);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("DEFENDER_SOAR__") {
                command.env_remove(name);
            }
        }
        HostProcess {
            child: command.spawn().unwrap(),
            port,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The host's log output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `/readyz` until it answers 200 (20 s at most).
    pub async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(self.url("/readyz")).send().await
                && r.status().as_u16() == 200
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the host exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the host was not ready within 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `[server]` section of a host listening on `port`, its state under `dir/state`, its API
/// key read from `DEFENDER_SOAR_API_KEY`.
pub fn server_section(port: u16, dir: &Path) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
         state_dir = \"{}\"\napi_key_env = \"DEFENDER_SOAR_API_KEY\"\n",
        dir.join("state").display()
    )
}

/// What [`serve_contoso`] adds to its configuration and environment.
#[derive(Default, Clone, Copy)]
pub struct More<'a> {
    /// TOML added to `[server]` (sub-sections included).
    pub server: &'a str,
    /// TOML after the asset (its sub-sections).
    pub asset: &'a str,
    /// Environment variables.
    pub env: &'a [(&'a str, &'a str)],
}

/// The environment variable the asset of [`serve_contoso`] reads its client secret from.
pub const CONTOSO_SECRET_ENV: &str = "CONTOSO_CLIENT_SECRET";

/// Starts `defender-soar serve` (log and config `dir/<name>.*`, state `dir/state`) with the
/// API key `api_key` and one asset, `contoso`, on the simulator at `sim_base` with the first app
/// of the scenario's first tenant (download links from the simulator allowed), and `more`.
pub fn serve_contoso(
    dir: &Path,
    name: &str,
    scenario: &defender_sim::Scenario,
    sim_base: &str,
    api_key: &str,
    more: More<'_>,
) -> HostProcess {
    let More {
        server: server_extra,
        asset: extra,
        env,
    } = more;
    let port = free_port();
    let tenant = scenario.first_tenant().unwrap();
    let app = tenant.apps.first().unwrap();
    let config = format!(
        "{server}{server_extra}\n[assets.contoso]\ntenant_id = \"{tenant}\"\nclient_id = \"{client}\"\n\
         client_secret_env = \"{CONTOSO_SECRET_ENV}\"\nlogin_url = \"{sim_base}\"\napi_url = \"{sim_base}\"\n\
         graph_url = \"{sim_base}\"\ndownload_hosts = [\"http://127.0.0.1\"]\n\n{extra}",
        server = server_section(port, dir),
        tenant = tenant.id,
        client = app.client_id,
    );
    let mut all_env = vec![
        ("DEFENDER_SOAR_API_KEY", api_key),
        (CONTOSO_SECRET_ENV, app.secret.as_str()),
    ];
    all_env.extend_from_slice(env);
    HostProcess::serve(
        dir,
        name,
        port,
        &config,
        &all_env,
        &["DEFENDER_SOAR_STATE_KEY"],
    )
}

/// A port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
