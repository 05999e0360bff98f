//! Settings of the edge: the vault's limits (`[vault]`) and the hosts download links may point
//! at (`[assets.<id>] download_hosts`).

use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::Environment;

/// Default largest stored file (after gunzip): 4 GiB (GetFile accepts files up to 3 GB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 4 << 30;
/// Default largest vault: 20 GiB.
pub const DEFAULT_MAX_TOTAL_BYTES: u64 = 20 << 30;
/// Default largest output:input ratio while gunzipping (checked past the first MiB).
pub const DEFAULT_MAX_GUNZIP_RATIO: u64 = 200;
/// Default free space kept on the vault's file system: 1 GiB.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;

/// What a new file does when it would take the vault past `max_total_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Remove the oldest files until it fits (default).
    #[default]
    Evict,
    /// Refuse the new file.
    Refuse,
}

impl FromStr for WhenFull {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "evict" => Ok(WhenFull::Evict),
            "refuse" => Ok(WhenFull::Refuse),
            _ => Err(format!(
                "{:?} is not one of: evict, refuse",
                crate::actions::truncate(s, 40)
            )),
        }
    }
}

/// `[vault]`: where retrieved files go and how much they may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// `vault_dir`: the vault's directory; `None` means `<state_dir>/vault`.
    pub vault_dir: Option<PathBuf>,
    /// `max_file_bytes`: largest stored file, after gunzip; default 4 GiB.
    pub max_file_bytes: u64,
    /// `max_total_bytes`: largest sum of stored files; default 20 GiB.
    pub max_total_bytes: u64,
    /// `when_full`: `evict` (oldest first, default) or `refuse`.
    pub when_full: WhenFull,
    /// `max_gunzip_ratio`: largest output:input ratio of a gunzipped download, checked once
    /// the output passes 1 MiB; default 200.
    pub max_gunzip_ratio: u64,
    /// `min_free_bytes`: free space the vault's file system keeps; downloads that would go
    /// below it are refused. Default 1 GiB; 0 turns the check off.
    pub min_free_bytes: u64,
    /// `retention_days`: files older than this are removed; `None` (default) keeps them.
    pub retention_days: Option<u64>,
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            vault_dir: None,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            max_total_bytes: DEFAULT_MAX_TOTAL_BYTES,
            when_full: WhenFull::Evict,
            max_gunzip_ratio: DEFAULT_MAX_GUNZIP_RATIO,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            retention_days: None,
        }
    }
}

impl VaultConfig {
    /// The vault directory: `vault_dir`, else `<state_dir>/vault`.
    pub fn dir(&self, state_dir: &Path) -> PathBuf {
        self.vault_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("vault"))
    }
}

/// One allowed download host: `host`, `*.domain` (any host under it), with `http://` in front
/// when plain HTTP is allowed for it (otherwise HTTPS only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// Plain HTTP is allowed (the entry was written `http://…`).
    pub allow_http: bool,
    /// Lower-case host, or `*.` and a domain.
    pub pattern: String,
}

impl HostRule {
    fn matches(&self, host: &str) -> bool {
        match self.pattern.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .and_then(|rest| rest.strip_suffix('.'))
                .is_some_and(|label| !label.is_empty()),
            None => host == self.pattern,
        }
    }
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim().to_ascii_lowercase();
        let (allow_http, host) = if let Some(h) = text.strip_prefix("http://") {
            (true, h)
        } else if let Some(h) = text.strip_prefix("https://") {
            (false, h)
        } else {
            (false, text.as_str())
        };
        let host = host.trim_end_matches('/');
        let bare = host.strip_prefix("*.").unwrap_or(host);
        let ipv6 = bare.starts_with('[') && bare.ends_with(']');
        let valid = !bare.is_empty()
            && bare.len() <= 253
            && (ipv6 && !host.starts_with("*.")
                || bare
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    && !bare.starts_with('.')
                    && !bare.ends_with('.')
                    && !bare.contains(".."));
        if !valid {
            return Err(format!(
                "{:?} is not a host name, `*.domain` or `http://host` (no port, no path)",
                crate::actions::truncate(s, 80)
            ));
        }
        Ok(HostRule {
            allow_http,
            pattern: host.to_owned(),
        })
    }
}

/// `download_hosts`: where result and package links may point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadHosts(pub Vec<HostRule>);

impl DownloadHosts {
    /// The blob storage domains Microsoft serves download links from in `environment`.
    pub fn for_environment(environment: Environment) -> DownloadHosts {
        let patterns: &[&str] = match environment {
            Environment::GccHigh | Environment::Dod => &["*.blob.core.usgovcloudapi.net"],
            Environment::Gcc => &["*.blob.core.windows.net", "*.blob.core.usgovcloudapi.net"],
            _ => &["*.blob.core.windows.net"],
        };
        DownloadHosts(
            patterns
                .iter()
                .map(|p| HostRule {
                    allow_http: false,
                    pattern: (*p).to_owned(),
                })
                .collect(),
        )
    }

    /// Parses configured entries (see [`HostRule`]).
    pub fn parse(entries: &[String]) -> Result<DownloadHosts, String> {
        entries
            .iter()
            .map(|e| e.parse())
            .collect::<Result<Vec<_>, _>>()
            .map(DownloadHosts)
    }

    /// Whether `link` may be fetched: HTTPS (or HTTP where allowed) to a listed host, no
    /// credentials in the URL. The error names the host, never the link (its query is a
    /// signature).
    pub fn check(&self, link: &url::Url) -> Result<(), String> {
        let host = link.host_str().unwrap_or_default().to_ascii_lowercase();
        if host.is_empty() {
            return Err("the link names no host".into());
        }
        if !link.username().is_empty() || link.password().is_some() {
            return Err(format!("the link to {host} carries credentials"));
        }
        let scheme = link.scheme();
        let allowed = self.0.iter().any(|rule| {
            rule.matches(&host) && (scheme == "https" || scheme == "http" && rule.allow_http)
        });
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "the link points at {scheme}://{host}, which is not among the asset's \
                 download_hosts ({})",
                self.describe()
            ))
        }
    }

    /// The entries, as written back.
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|r| {
                if r.allow_http {
                    format!("http://{}", r.pattern)
                } else {
                    r.pattern.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> url::Url {
        s.parse().unwrap()
    }

    #[test]
    fn default_hosts_per_cloud() {
        let public = DownloadHosts::for_environment(Environment::Public);
        assert!(
            public
                .check(&url("https://acct1.blob.core.windows.net/c/f?sig=x"))
                .is_ok()
        );
        assert!(
            public
                .check(&url("http://acct1.blob.core.windows.net/c/f"))
                .is_err(),
            "https only"
        );
        assert!(
            public
                .check(&url("https://blob.core.windows.net.evil.example/x"))
                .is_err()
        );
        assert!(
            public
                .check(&url("https://blob.core.windows.net/x"))
                .is_err()
        );
        assert!(public.check(&url("https://169.254.169.254/x")).is_err());
        assert!(public.check(&url("https://127.0.0.1/x")).is_err());
        assert!(
            public
                .check(&url("https://u:p@a.blob.core.windows.net/x"))
                .is_err()
        );
        let gov = DownloadHosts::for_environment(Environment::GccHigh);
        assert!(
            gov.check(&url("https://a.blob.core.usgovcloudapi.net/x"))
                .is_ok()
        );
        assert!(
            gov.check(&url("https://a.blob.core.windows.net/x"))
                .is_err()
        );
    }

    #[test]
    fn configured_entries() {
        let hosts = DownloadHosts::parse(&[
            "http://127.0.0.1".into(),
            "https://files.example.com/".into(),
            "*.Blob.Example.NET".into(),
        ])
        .unwrap();
        assert!(
            hosts
                .check(&url("http://127.0.0.1:8123/download/x"))
                .is_ok()
        );
        assert!(hosts.check(&url("https://127.0.0.1/x")).is_ok());
        assert!(hosts.check(&url("http://127.0.0.2/x")).is_err());
        assert!(hosts.check(&url("https://files.example.com/x")).is_ok());
        assert!(hosts.check(&url("http://files.example.com/x")).is_err());
        assert!(hosts.check(&url("https://a.b.blob.example.net/x")).is_ok());
        let msg = hosts
            .check(&url("https://10.0.0.1/x?sig=SECRET"))
            .unwrap_err();
        assert!(msg.contains("10.0.0.1") && !msg.contains("SECRET"), "{msg}");
        for bad in [
            "",
            "http://",
            "a b",
            "host:8080",
            "a/b",
            "*.",
            "..x",
            "ftp://x",
        ] {
            assert!(DownloadHosts::parse(&[bad.into()]).is_err(), "{bad:?}");
        }
    }
}
