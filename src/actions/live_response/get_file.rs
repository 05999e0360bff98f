//! `get_file`: a file from a device, streamed into the vault.
//!
//! The download (from a link asked for afresh) is read chunk by chunk: each chunk goes through
//! the [`Unpacker`] (gunzip when the download starts with the gzip magic) into a
//! [`VaultWriter`](crate::vault::VaultWriter), which hashes it (SHA1, SHA256) on its way to a
//! temporary file that becomes `<vault>/<sha256>`. Memory stays bounded whatever the file's size.

use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::Kind;
use super::command::{CommandInfo, LiveCommand};
use super::download::{self, Fetch, Unpacker};
use super::flow::{self, Fields, Finished, Request, Session, Tracked};
use crate::actions::{Action, ActionContext};
use crate::envelope::{ActionError, Outcome};
use crate::vault::{Origin, Stored, Vault, VaultError};

/// Decoded bytes gathered before one write to the vault file.
const WRITE_BATCH: usize = 256 * 1024;

/// `get_file`.
pub struct GetFile;

/// Parameters of `get_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetFileParams {
    /// An earlier get_file to resume.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Device id.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Path of the file on the device.
    #[serde(default)]
    pub file_path: Option<String>,
    /// Comment recorded with the live response.
    #[serde(default)]
    pub comment: Option<String>,
    /// Seconds to wait.
    pub timeout: u64,
}

impl Action for GetFile {
    const ID: &'static str = "get_file";
    type Params = GetFileParams;

    async fn run(ctx: ActionContext, p: GetFileParams) -> Result<Outcome, ActionError> {
        let mut f = Fields::default();
        let device = f.required("device_id", p.device_id.as_deref());
        let path = f.required("file_path", p.file_path.as_deref());
        let comment = f.required("comment", p.comment.as_deref());
        let session = f.session(|| {
            Some(Session {
                device_id: device?,
                command: LiveCommand::get_file(&path?),
                comment: comment?,
            })
        });
        let req = Request {
            kind: Kind::GetFile,
            event_id: flow::event_id_param(p.event_id.as_deref()),
            session,
            timeout: p.timeout,
        };
        flow::run(&ctx, req).await
    }
}

/// A file stored from a download.
#[derive(Debug)]
pub struct Collected {
    /// What the vault holds.
    pub stored: Stored,
    /// The name of this download (the vault keeps the first name of identical content).
    pub file_name: Option<String>,
    /// The download was gzip and was gunzipped.
    pub gunzipped: bool,
}

/// Fetches the file of a succeeded GetFile into the vault and builds the envelope.
pub async fn collect(
    ctx: &ActionContext,
    t: &Tracked,
    cmd: &CommandInfo,
    deadline: Instant,
) -> Result<Finished, ActionError> {
    let kind = Kind::GetFile;
    let path = cmd.command.param("Path").map(str::to_string);
    match retrieve(ctx, t, cmd, path.as_deref(), deadline).await {
        Ok(c) => {
            let e = &c.stored.entry;
            let name = c.file_name.clone().unwrap_or_else(|| e.file_name.clone());
            let how = if c.stored.already_present {
                "already in the vault"
            } else {
                "stored in the vault"
            };
            let o = t
                .outcome(
                    kind,
                    false,
                    format!(
                        "File {name} ({} bytes) retrieved by {}; {how} as {}",
                        e.size,
                        t.label(kind),
                        e.sha256
                    ),
                )
                .with_summary("vault_id", e.sha256.as_str())
                .with_summary("file_name", name.as_str())
                .with_summary("size", e.size)
                .with_summary("sha1", e.sha1.as_str())
                .with_summary("sha256", e.sha256.as_str())
                .with_data(json!({
                    "vault_id": e.sha256,
                    "file_name": name,
                    "size": e.size,
                    "sha1": e.sha1,
                    "sha256": e.sha256,
                    "file_path": path,
                    "device_id": t.device_id,
                    "event_id": t.action.id,
                    "gunzipped": c.gunzipped,
                    "already_in_vault": c.stored.already_present,
                }));
            Ok(Finished::Done(o))
        }
        Err(Fetch::Throttled(e)) => Err(e.into()),
        Err(Fetch::Gone(why)) => Ok(flow::result_gone(kind, t, &why)),
        Err(Fetch::Failed(why)) => Ok(Finished::Done(flow::fetch_failed(kind, t, &why))),
    }
}

/// Downloads command `cmd`'s file into the vault.
async fn retrieve(
    ctx: &ActionContext,
    t: &Tracked,
    cmd: &CommandInfo,
    device_path: Option<&str>,
    deadline: Instant,
) -> Result<Collected, Fetch> {
    ctx.progress(&format!(
        "live response {} succeeded; asking for the download link of command {}",
        t.action.id, cmd.index
    ));
    let link = download::result_link(ctx, &t.action.id, cmd.index, deadline).await?;
    let host = download::link_host(&link);
    ctx.progress(&format!("downloading the file from {host}"));
    let mut response = download::open(ctx, link).await?;
    let disposition = response
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let vault = Vault::of(&ctx.app.config);
    let vault_err = |e: VaultError| Fetch::Failed(e.to_string());
    let mut writer = vault.writer().await.map_err(vault_err)?;
    let mut unpacker = Unpacker::new();
    let mut batch: Vec<u8> = Vec::with_capacity(WRITE_BATCH);
    let mut received: u64 = 0;
    let mut produced: u64 = 0;
    let ratio = vault.limits().max_gunzip_ratio;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                return Err(Fetch::Failed(format!(
                    "the download from {host} broke off after {received} bytes: {}",
                    e.without_url()
                )));
            }
        };
        received += chunk.len() as u64;
        let mut rest: &[u8] = &chunk;
        while !rest.is_empty() {
            let (used, out) = unpacker
                .feed(rest)
                .map_err(|e| Fetch::Failed(e.to_string()))?;
            rest = &rest[used..];
            produced += out.len() as u64;
            if unpacker.is_gzip() {
                download::check_ratio(produced, received, ratio, &host).map_err(Fetch::Failed)?;
            }
            if batch.is_empty() && out.len() >= WRITE_BATCH {
                writer.write(&out).await.map_err(vault_err)?;
            } else {
                batch.extend_from_slice(&out);
                if batch.len() >= WRITE_BATCH {
                    writer.write(&batch).await.map_err(vault_err)?;
                    batch.clear();
                }
            }
        }
    }
    let end = unpacker
        .finish()
        .map_err(|e| Fetch::Failed(e.to_string()))?;
    batch.extend_from_slice(&end.tail);
    writer.write(&batch).await.map_err(vault_err)?;
    drop(batch);
    let file_name = download::file_name(
        disposition.as_deref(),
        end.gunzipped,
        end.gzip_name.as_deref(),
        device_path,
    );
    ctx.progress(&format!(
        "downloaded {received} bytes; storing {} bytes{}",
        writer.size(),
        if end.gunzipped { " (gunzipped)" } else { "" }
    ));
    let stored = writer
        .finish(Origin {
            file_name: file_name
                .clone()
                .unwrap_or_else(|| format!("live-response-{}-{}.bin", t.action.id, cmd.index)),
            asset: ctx.asset.config.id.clone(),
            device: (!t.device_id.is_empty()).then(|| t.device_id.clone()),
            event_id: Some(t.action.id.clone()),
        })
        .await
        .map_err(vault_err)?;
    Ok(Collected {
        stored,
        file_name,
        gunzipped: end.gunzipped,
    })
}
