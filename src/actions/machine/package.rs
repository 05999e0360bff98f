//! `collect_investigation_package`: collect a device's investigation package and store it in
//! the vault.
//!
//! Without `event_id` the action submits a collection (like the other device actions) and, once
//! it succeeded, asks `getPackageUri` for a download link and streams the zip into the vault.
//! With `event_id` it resumes an earlier collection: waits for it if it still runs, then
//! downloads its package; when that collection failed or is unknown and a device and comment are
//! given too, it starts a new one. A package already in the vault for that event is not
//! downloaded again (`getPackageUri` allows two calls a minute), and concurrent invocations on
//! one event download it once.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::device::{self, COLLECT_PACKAGE};
use super::waiting::{self, ActionStatus, FRESH, MachineAction, WaitSpec, Waited};
use crate::actions::engine::{self, ANSWER_GRACE, End, Followed, Ran, required_text};
use crate::actions::{Action, ActionContext};
use crate::defender::{DefenderError, endpoints, link_host, presigned_link};
use crate::envelope::{ActionError, Outcome};
use crate::vault::{Origin, Stored, Vault, content_disposition_file_name};

/// Time allowed after the collection for the link and the download to start.
const LINK_GRACE: Duration = Duration::from_secs(120);
/// Longest a package download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// `collect_investigation_package`.
pub struct CollectInvestigationPackage;

/// Parameters of `collect_investigation_package`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageParams {
    /// Device id (required without `event_id`).
    #[serde(default)]
    pub device_id: Option<String>,
    /// Comment recorded with the action (required without `event_id`).
    #[serde(default)]
    pub comment: Option<String>,
    /// Seconds to wait for the collection to finish.
    pub timeout: u64,
    /// An earlier collection to resume.
    #[serde(default)]
    pub event_id: Option<String>,
}

impl Action for CollectInvestigationPackage {
    const ID: &'static str = "collect_investigation_package";
    type Params = PackageParams;

    async fn run(ctx: ActionContext, p: PackageParams) -> Result<Outcome, ActionError> {
        let deadline = Instant::now() + Duration::from_secs(p.timeout);
        let event_id = p
            .event_id
            .as_deref()
            .map(|e| e.trim().to_ascii_lowercase())
            .filter(|e| !e.is_empty());
        let new_request = match (&p.device_id, event_id.is_some()) {
            (Some(d), _) => Some((d.clone(), p.comment.clone())),
            (None, false) => {
                return Err(ActionError::InvalidParameter(
                    "parameter 'device_id' is required (or give event_id to resume an earlier \
                     collection)"
                        .into(),
                ));
            }
            (None, true) => None,
        };
        // Check the parameters of a new request before any call.
        let submission = match &new_request {
            Some((device, comment)) => Some((
                device.clone(),
                json!({ "Comment": required_text("comment", comment.as_deref())? }),
            )),
            None => None,
        };
        let mut note = String::new();
        if let Some(event_id) = &event_id {
            tracing::Span::current().record("event_id", event_id.as_str());
            match resume(&ctx, event_id, deadline).await? {
                Resumed::Followed(f) => {
                    let usable = !f.action.is_final()
                        || f.action.status == ActionStatus::Succeeded
                        || submission.is_none();
                    if usable {
                        return finish(&ctx, *f, p.timeout, deadline).await;
                    }
                    note = format!(
                        "Collection {event_id} ended {}; a new collection was started. ",
                        f.action.status
                    );
                }
                Resumed::Unusable(outcome) => {
                    if submission.is_none() {
                        return Ok(outcome);
                    }
                    note = format!("{} A new collection was started. ", outcome.message);
                }
            }
        }
        let Some((device, body)) = submission else {
            return Err(ActionError::Internal(
                "collect_investigation_package: nothing to do".into(),
            ));
        };
        let device = engine::resolve_device(&ctx, "device_id", &device).await?;
        let ran =
            engine::submit_and_follow(&ctx, &COLLECT_PACKAGE, &device.id, &body, p.timeout).await?;
        let mut outcome = match ran {
            Ran::Followed(f) => finish(&ctx, *f, p.timeout, deadline).await?,
            Ran::Refused(o) => o.with_summary("device_id", device.id.as_str()),
        };
        outcome.message = format!("{note}{}", outcome.message);
        Ok(outcome)
    }
}

/// What resuming an earlier collection found.
enum Resumed {
    /// The collection, followed until final or the deadline.
    Followed(Box<Followed>),
    /// It cannot be used (unknown, not a collection); the outcome says why.
    Unusable(Outcome),
}

/// Reads the event, checks it is a collection, and follows it until final or `deadline`.
async fn resume(
    ctx: &ActionContext,
    event_id: &str,
    deadline: Instant,
) -> Result<Resumed, ActionError> {
    let now = Instant::now();
    let spec = WaitSpec {
        event_id: event_id.to_string(),
        known: None,
        hold_until: now,
        answer_by: deadline.max(now + ANSWER_GRACE),
        fresh_since: Some(now.checked_sub(FRESH).unwrap_or(now)),
        eager: false,
    };
    let current = match waiting::wait(ctx, spec).await {
        Ok(Waited::Final(a)) | Ok(Waited::Running { last: a, .. }) => a,
        Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
        Err(e) => {
            return Ok(Resumed::Unusable(
                Outcome::failed(format!("Collection {event_id} could not be read: {e}"))
                    .with_summary("event_id", event_id),
            ));
        }
    };
    if let Some(t) = &current.action_type
        && !t.eq_ignore_ascii_case(COLLECT_PACKAGE.defender_type)
    {
        return Err(ActionError::InvalidParameter(format!(
            "parameter 'event_id': machine action {event_id} is a {t} action, not a \
             CollectInvestigationPackage"
        )));
    }
    Ok(Resumed::Followed(Box::new(
        engine::follow(ctx, current, deadline).await,
    )))
}

/// The envelope of a followed collection: download the package when it succeeded.
async fn finish(
    ctx: &ActionContext,
    f: Followed,
    timeout: u64,
    deadline: Instant,
) -> Result<Outcome, ActionError> {
    let device = f
        .action
        .machine_id
        .clone()
        .unwrap_or_else(|| "unknown".into());
    let base = device::outcome(&COLLECT_PACKAGE, &device, timeout, &f);
    let succeeded = matches!(f.end, End::Final) && f.action.status == ActionStatus::Succeeded;
    if !succeeded {
        return Ok(base);
    }
    match retrieve(ctx, &f.action, deadline).await {
        Ok(stored) => {
            let e = &stored.entry;
            let how = if stored.already_present {
                "already in the vault"
            } else {
                "stored in the vault"
            };
            Ok(Outcome {
                message: format!(
                    "{}; the package ({} bytes) is {how} as {}",
                    base.message, e.size, e.sha256
                ),
                ..base
            }
            .with_summary("vault_id", e.sha256.as_str())
            .with_summary("file_name", e.file_name.as_str())
            .with_summary("size", e.size)
            .with_summary("sha1", e.sha1.as_str())
            .with_summary("sha256", e.sha256.as_str()))
        }
        Err(Retrieval::Throttled(e)) => Err(e.into()),
        Err(Retrieval::Failed(why)) => Ok(Outcome {
            failed: true,
            message: format!(
                "{}, but its package could not be stored: {why}. Run \
                 collect_investigation_package with event_id {} to retry the download",
                base.message, f.action.id
            ),
            ..base
        }),
    }
}

/// Why a package could not be stored.
enum Retrieval {
    /// The link request was throttled past the deadline.
    Throttled(DefenderError),
    /// Anything else, as a message.
    Failed(String),
}

/// Downloads the package of a succeeded collection into the vault (unless it is there).
async fn retrieve(
    ctx: &ActionContext,
    action: &MachineAction,
    deadline: Instant,
) -> Result<Stored, Retrieval> {
    let asset_id = ctx.asset.config.id.clone();
    let vault = Vault::of(&ctx.app.config);
    let lock = ctx.asset.package_locks.get(&action.id.to_ascii_lowercase());
    let _guard = lock.lock().await;
    match vault.find_by_event(&asset_id, &action.id).await {
        Ok(Some(entry)) => {
            return Ok(Stored {
                entry,
                already_present: true,
            });
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "vault lookup failed; downloading again"),
    }
    ctx.progress(&format!(
        "collection {} succeeded; asking for the package link",
        action.id
    ));
    let client = ctx
        .asset
        .defender
        .with_deadline(deadline.max(Instant::now() + LINK_GRACE));
    let answer = match client.get(&endpoints::PACKAGE_URI.at(&[&action.id])).await {
        Ok(v) => v,
        Err(e @ DefenderError::Throttled { .. }) => return Err(Retrieval::Throttled(e)),
        Err(e) => return Err(Retrieval::Failed(format!("getPackageUri failed: {e}"))),
    };
    let url = presigned_link(&answer)
        .map_err(|e| Retrieval::Failed(format!("getPackageUri answered {e}")))?;
    let host = link_host(&url);
    crate::actions::live_response::download::allowed(ctx, &url).map_err(Retrieval::Failed)?;
    ctx.progress(&format!("downloading the package from {host}"));
    // A pre-signed link: no bearer token goes with it. Errors never show the URL (its query
    // is the signature).
    let mut response = ctx
        .asset
        .defender
        .http()
        .get(url)
        .timeout(DOWNLOAD_TIMEOUT)
        .send()
        .await
        .map_err(|e| {
            Retrieval::Failed(format!("download from {host} failed: {}", e.without_url()))
        })?;
    if !response.status().is_success() {
        return Err(Retrieval::Failed(format!(
            "download from {host} answered HTTP {}",
            response.status().as_u16()
        )));
    }
    let offered = response
        .headers()
        .get(reqwest::header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(content_disposition_file_name)
        .unwrap_or_else(|| format!("investigation-package-{}.zip", action.id));
    let fail = |e: crate::vault::VaultError| Retrieval::Failed(e.to_string());
    let mut writer = vault.writer().await.map_err(fail)?;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => writer.write(&chunk).await.map_err(fail)?,
            Ok(None) => break,
            Err(e) => {
                return Err(Retrieval::Failed(format!(
                    "download from {host} broke off after {} bytes: {}",
                    writer.size(),
                    e.without_url()
                )));
            }
        }
    }
    writer
        .finish(Origin {
            file_name: offered,
            asset: asset_id,
            device: action.machine_id.clone(),
            event_id: Some(action.id.clone()),
        })
        .await
        .map_err(fail)
}
