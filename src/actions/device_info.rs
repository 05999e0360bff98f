//! Device information and investigation: details of several devices, the users logged on to
//! a device, offboarding (only where the asset allows it), automated investigations (start,
//! list, get), the machine action list, and the link of a collected investigation package.

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::alerts::moment;
use super::engine::{self, Ran, is_device_id, required_text};
use super::enrichment::failure;
use super::listing::{self, clean};
use super::machine::device::{self as device_actions, DeviceKind};
use super::{Action, ActionContext, HandlerFn, erase, truncate};
use crate::defender::{DefenderError, Filter, endpoints, link_host, presigned_link};
use crate::envelope::{ActionError, Outcome};

/// Most device ids `get_device_details` takes (one GET each).
pub const MAX_DEVICE_IDS: usize = 100;
/// Longest investigation id accepted.
const MAX_INVESTIGATION_ID: usize = 100;

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<GetDeviceDetails>(),
        erase::<ListSessions>(),
        erase::<OffboardDevice>(),
        erase::<StartInvestigation>(),
        erase::<ListInvestigations>(),
        erase::<GetInvestigation>(),
        erase::<ListMachineActions>(),
        erase::<GetInvestigationUri>(),
    ]
}

// --- get_device_details ---------------------------------------------------------------------

/// Device ids given as a JSON list of strings or comma-separated (blank items skipped,
/// duplicates dropped, order kept), each 40 hexadecimal characters, at most
/// [`MAX_DEVICE_IDS`]; 400 naming `param` otherwise.
pub fn device_ids(param: &str, raw: &str) -> Result<Vec<String>, ActionError> {
    let raw = raw.trim();
    let items: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw).map_err(|_| {
            ActionError::InvalidParameter(format!(
                "parameter '{param}': a JSON list must hold device id strings only"
            ))
        })?
    } else {
        raw.split(',').map(str::to_string).collect()
    };
    let mut ids: Vec<String> = Vec::new();
    for item in items {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        if !is_device_id(item) {
            return Err(ActionError::InvalidParameter(format!(
                "parameter '{param}': '{}' is not a Defender device id (40 hexadecimal \
                 characters)",
                truncate(item, 64)
            )));
        }
        let id = item.to_ascii_lowercase();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(ActionError::InvalidParameter(format!(
            "parameter '{param}' is required: one or more device ids, comma-separated or as a \
             JSON list"
        )));
    }
    if ids.len() > MAX_DEVICE_IDS {
        return Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': {} device ids given; at most {MAX_DEVICE_IDS} at once",
            ids.len()
        )));
    }
    Ok(ids)
}

/// `get_device_details`: one GET per device id.
pub struct GetDeviceDetails;

/// Parameters of `get_device_details`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetailsParams {
    /// Device ids, comma-separated or as a JSON list.
    pub device_ids: String,
}

impl Action for GetDeviceDetails {
    const ID: &'static str = "get_device_details";
    type Params = DetailsParams;

    async fn run(ctx: ActionContext, p: DetailsParams) -> Result<Outcome, ActionError> {
        let ids = device_ids("device_ids", &p.device_ids)?;
        let mut rows = Vec::with_capacity(ids.len());
        let mut missing: Vec<String> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        for id in &ids {
            match ctx.asset.defender.get(&endpoints::MACHINE.at(&[id])).await {
                Ok(m) => rows.push(clean(m)),
                Err(e) if e.retry_after().is_some() => return Err(e.into()),
                Err(e) if e.is_not_found() => {
                    missing.push(id.clone());
                    rows.push(json!({"id": id, "found": false, "error": "not found"}));
                }
                Err(e) => {
                    failed.push(id.clone());
                    rows.push(json!({"id": id, "found": false, "error": e.to_string()}));
                }
            }
        }
        let found = ids.len() - missing.len() - failed.len();
        let mut message = format!("Found {found} of {} devices", ids.len());
        if !missing.is_empty() {
            message.push_str(&format!("; not found: {}", missing.join(", ")));
        }
        if !failed.is_empty() {
            message.push_str(&format!("; the lookup failed for: {}", failed.join(", ")));
        }
        let mut outcome = if found == 0 {
            Outcome::failed(message)
        } else {
            Outcome::success(message)
        }
        .with_summary("total_devices", found)
        .with_summary("not_found", missing.len())
        .with_summary("failed", failed.len());
        outcome.data = rows;
        Ok(outcome)
    }
}

// --- list_sessions (get_active_users) -------------------------------------------------------

/// `list_sessions`, also called `get_active_users`: users logged on to a device.
pub struct ListSessions;

/// Parameters of `list_sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsParams {
    /// The device: id, computer DNS name or IP address.
    pub device_id: String,
}

impl Action for ListSessions {
    const ID: &'static str = "list_sessions";
    type Params = SessionsParams;

    async fn run(ctx: ActionContext, p: SessionsParams) -> Result<Outcome, ActionError> {
        let device = engine::resolve_device(&ctx, "device_id", &p.device_id).await?;
        let id = device.id;
        let call = endpoints::MACHINE_LOGON_USERS.at(&[&id]);
        let answer = match ctx.asset.defender.get(&call).await {
            Ok(a) => a,
            Err(e) => {
                return failure(
                    e,
                    "listing the device's logged-on users",
                    &format!("device {id}"),
                );
            }
        };
        let users: Vec<Value> = answer
            .get("value")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(Value::is_object)
            .map(clean)
            .collect();
        let n = users.len();
        let mut outcome = Outcome::success(match n {
            0 => format!("No user logged on to device {id}"),
            1 => format!("1 user logged on to device {id}"),
            n => format!("{n} users logged on to device {id}"),
        })
        .with_summary("device_id", id.as_str())
        .with_summary("total_users", n);
        outcome.data = users;
        Ok(outcome)
    }
}

// --- offboard_device ------------------------------------------------------------------------

/// Offboarding, a machine action followed like isolation.
pub const OFFBOARD: DeviceKind = DeviceKind {
    defender_type: "Offboard",
    endpoint: &endpoints::OFFBOARD,
    status_key: "offboard_status",
};

/// `offboard_device`: refused unless the asset sets `allow_offboard = true`.
pub struct OffboardDevice;

/// Parameters of `offboard_device`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OffboardParams {
    /// The device: id, computer DNS name or IP address.
    pub device_id: String,
    /// Comment recorded with the action.
    pub comment: Option<String>,
    /// Seconds to wait for a final status.
    pub timeout: u64,
}

impl Action for OffboardDevice {
    const ID: &'static str = "offboard_device";
    type Params = OffboardParams;

    async fn run(ctx: ActionContext, p: OffboardParams) -> Result<Outcome, ActionError> {
        if !ctx.asset.config.allow_offboard {
            return Err(ActionError::Disabled(format!(
                "offboard_device is not enabled for asset '{}': offboarding cannot be undone \
                 through the API (the device must be onboarded again locally); set \
                 allow_offboard = true in [assets.{}] to allow it",
                ctx.asset.config.id, ctx.asset.config.id
            )));
        }
        let comment = required_text("comment", p.comment.as_deref())?;
        let device = engine::resolve_device(&ctx, "device_id", &p.device_id).await?;
        let body = json!({ "Comment": comment });
        let id = device.id;
        match engine::submit_and_follow(&ctx, &OFFBOARD, &id, &body, p.timeout).await? {
            Ran::Followed(f) => Ok(device_actions::outcome(&OFFBOARD, &id, p.timeout, &f)),
            Ran::Refused(o) => Ok(o.with_summary("device_id", id.as_str())),
        }
    }
}

// --- automated investigations ---------------------------------------------------------------

/// `start_investigation`: starts an automated investigation on a device.
pub struct StartInvestigation;

/// Parameters of `start_investigation`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartParams {
    /// The device: id, computer DNS name or IP address.
    pub device_id: String,
    /// Comment recorded with the investigation.
    pub comment: Option<String>,
}

impl Action for StartInvestigation {
    const ID: &'static str = "start_investigation";
    type Params = StartParams;

    async fn run(ctx: ActionContext, p: StartParams) -> Result<Outcome, ActionError> {
        let comment = required_text("comment", p.comment.as_deref())?;
        let device = engine::resolve_device(&ctx, "device_id", &p.device_id).await?;
        let id = device.id;
        let call = endpoints::START_INVESTIGATION.at(&[&id]);
        let investigation = match ctx
            .asset
            .defender
            .with_deadline(Instant::now() + engine::ANSWER_GRACE)
            .post(&call, &json!({ "Comment": comment }))
            .await
        {
            Ok(i) => clean(i),
            Err(e @ DefenderError::Throttled { .. }) => {
                let retry_after = e.retry_after_secs().unwrap_or(60);
                return Err(ActionError::Throttled {
                    message: format!(
                        "{e}; Defender starts at most 50 automated investigations an hour per \
                         tenant and application: try again later"
                    ),
                    retry_after,
                });
            }
            Err(e) => {
                return failure(e, "starting the investigation", &format!("device {id}"));
            }
        };
        let inv_id = text_of(&investigation, "id");
        let state = text_of(&investigation, "state");
        Ok(Outcome::success(format!(
            "Automated investigation {inv_id} started on device {id} ({state})"
        ))
        .with_summary("investigation_id", inv_id.as_str())
        .with_summary("investigation_state", state.as_str())
        .with_summary("device_id", id.as_str())
        .with_data(investigation))
    }
}

/// A field as text (numbers too), empty when absent.
fn text_of(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// An investigation id given in parameter `param`: letters, digits, `_` and `-`, at most 100.
pub fn investigation_id(param: &str, raw: &str) -> Result<String, ActionError> {
    let id = raw.trim();
    let ok = !id.is_empty()
        && id.len() <= MAX_INVESTIGATION_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(id.to_string())
    } else {
        Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': '{}' is not an investigation id (letters, digits, '_' and '-', \
             at most {MAX_INVESTIGATION_ID} characters)",
            truncate(id, 64)
        )))
    }
}

/// `list_investigations`.
pub struct ListInvestigations;

/// Parameters of `list_investigations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListInvestigationsParams {
    /// One investigation id.
    #[serde(default)]
    pub id: Option<String>,
    /// Investigation state.
    #[serde(default)]
    pub state: Option<String>,
    /// The device: id, computer DNS name or IP address.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Most investigations returned.
    pub limit: u64,
    /// Investigations skipped first.
    pub offset: u64,
}

impl Action for ListInvestigations {
    const ID: &'static str = "list_investigations";
    type Params = ListInvestigationsParams;

    async fn run(ctx: ActionContext, p: ListInvestigationsParams) -> Result<Outcome, ActionError> {
        let nonblank = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let mut parts: Vec<Filter> = Vec::new();
        if let Some(id) = nonblank(&p.id) {
            parts.push(Filter::eq("id", &investigation_id("id", &id)?));
        }
        if let Some(state) = nonblank(&p.state) {
            parts.push(Filter::eq("state", &state));
        }
        if let Some(raw) = nonblank(&p.device_id) {
            let device = engine::resolve_device(&ctx, "device_id", &raw).await?;
            parts.push(Filter::eq("machineId", &device.id));
        }
        let noun = listing::Noun {
            one: "investigation",
            many: "investigations",
            total_key: "total_investigations",
        };
        let call = endpoints::INVESTIGATIONS.at(&[]);
        let query = listing::query(parts, p.offset);
        listing::list(&ctx.asset.defender, &call, &query, p.limit, &noun).await
    }
}

/// `get_investigation`.
pub struct GetInvestigation;

/// Parameters of `get_investigation`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetInvestigationParams {
    /// The investigation id.
    pub investigation_id: String,
}

impl Action for GetInvestigation {
    const ID: &'static str = "get_investigation";
    type Params = GetInvestigationParams;

    async fn run(ctx: ActionContext, p: GetInvestigationParams) -> Result<Outcome, ActionError> {
        let id = investigation_id("investigation_id", &p.investigation_id)?;
        let call = endpoints::INVESTIGATION.at(&[&id]);
        let inv = match ctx.asset.defender.get(&call).await {
            Ok(i) => clean(i),
            Err(e) => {
                return failure(
                    e,
                    "getting the investigation",
                    &format!("investigation {id}"),
                );
            }
        };
        let state = text_of(&inv, "state");
        Ok(Outcome::success(format!("Investigation {id}: {state}"))
            .with_summary("investigation_id", id.as_str())
            .with_summary("investigation_state", state.as_str())
            .with_data(inv))
    }
}

// --- list_machine_actions -------------------------------------------------------------------

/// `list_machine_actions`.
pub struct ListMachineActions;

/// Parameters of `list_machine_actions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListActionsParams {
    /// Action status.
    #[serde(default)]
    pub status: Option<String>,
    /// The device: id, computer DNS name or IP address.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Action type.
    #[serde(default, rename = "type")]
    pub action_type: Option<String>,
    /// Who asked for the action.
    #[serde(default)]
    pub requestor: Option<String>,
    /// Actions created at or after this moment.
    #[serde(default)]
    pub since: Option<String>,
    /// Most actions returned.
    pub limit: u64,
}

impl Action for ListMachineActions {
    const ID: &'static str = "list_machine_actions";
    type Params = ListActionsParams;

    async fn run(ctx: ActionContext, p: ListActionsParams) -> Result<Outcome, ActionError> {
        let nonblank = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let mut parts: Vec<Filter> = Vec::new();
        if let Some(status) = nonblank(&p.status) {
            parts.push(Filter::eq("status", &status));
        }
        if let Some(t) = nonblank(&p.action_type) {
            parts.push(Filter::eq("type", &t));
        }
        if let Some(r) = nonblank(&p.requestor) {
            parts.push(Filter::eq("requestor", &r));
        }
        if let Some(s) = nonblank(&p.since) {
            parts.push(Filter::ge_datetime(
                "creationDateTimeUtc",
                moment("since", &s)?,
            ));
        }
        if let Some(raw) = nonblank(&p.device_id) {
            let device = engine::resolve_device(&ctx, "device_id", &raw).await?;
            parts.push(Filter::eq("machineId", &device.id));
        }
        let noun = listing::Noun {
            one: "machine action",
            many: "machine actions",
            total_key: "total_actions",
        };
        let call = endpoints::MACHINE_ACTIONS.at(&[]);
        let query = listing::query(parts, 0);
        let mut outcome = listing::list(&ctx.asset.defender, &call, &query, p.limit, &noun).await?;
        outcome.data.iter_mut().for_each(entity_update_time);
        Ok(outcome)
    }
}

/// Gives a listed MachineAction the entity's `lastUpdateDateTimeUtc` (the output this action
/// declares) when the list named it `lastUpdateTimeUtc`, as Microsoft's list answers do; the
/// key as sent stays.
fn entity_update_time(row: &mut Value) {
    if let Some(obj) = row.as_object_mut()
        && !obj.contains_key("lastUpdateDateTimeUtc")
        && let Some(t) = obj.get("lastUpdateTimeUtc").cloned()
    {
        obj.insert("lastUpdateDateTimeUtc".into(), t);
    }
}

// --- get_investigation_uri ------------------------------------------------------------------

/// `get_investigation_uri`: the download link of a collected investigation package.
pub struct GetInvestigationUri;

/// Parameters of `get_investigation_uri`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UriParams {
    /// The collection's machine action id.
    pub action_id: String,
}

/// The expiry a storage link carries (`se=` of an Azure SAS), if any.
fn link_expiry(link: &url::Url) -> Option<String> {
    link.query_pairs()
        .find(|(k, _)| k == "se")
        .map(|(_, v)| v.into_owned())
}

impl Action for GetInvestigationUri {
    const ID: &'static str = "get_investigation_uri";
    type Params = UriParams;

    async fn run(ctx: ActionContext, p: UriParams) -> Result<Outcome, ActionError> {
        let id = p.action_id.trim().to_ascii_lowercase();
        if uuid::Uuid::parse_str(&id).is_err() || id.len() != 36 {
            return Err(ActionError::InvalidParameter(format!(
                "parameter 'action_id': '{}' is not a machine action id (a GUID such as \
                 7a6f6e8c-1b2d-4c3e-8f90-0123456789ab)",
                truncate(p.action_id.trim(), 64)
            )));
        }
        let call = endpoints::PACKAGE_URI.at(&[&id]);
        let answer = match ctx.asset.defender.get(&call).await {
            Ok(a) => a,
            Err(e) if e.is_not_found() => {
                return Ok(Outcome::failed(format!(
                    "no investigation package is available for action {id}: {e} (the action \
                     must be a CollectInvestigationPackage that Succeeded)"
                )));
            }
            Err(e) => return failure(e, "getting the package link", &format!("action {id}")),
        };
        let link = match presigned_link(&answer) {
            Ok(l) => l,
            Err(e) => return Ok(Outcome::failed(format!("getPackageUri answered {e}"))),
        };
        let host = link_host(&link);
        let expiry = link_expiry(&link);
        // The link itself is what the caller asked for: it goes in the envelope's data only,
        // never in the message, progress lines or logs (its query is the signature).
        let message = match &expiry {
            Some(at) => format!(
                "The investigation package of action {id} can be downloaded from {host} until {at}"
            ),
            None => format!(
                "The investigation package of action {id} can be downloaded from {host} (the \
                 link is valid for a short time)"
            ),
        };
        let mut row = json!({"action_id": id, "link": link.as_str(), "host": host});
        let mut outcome = Outcome::success(message)
            .with_summary("action_id", id.as_str())
            .with_summary("link_host", host.as_str());
        if let Some(at) = expiry {
            row["expires"] = json!(at);
            outcome = outcome.with_summary("expires", at);
        }
        Ok(outcome.with_data(row))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn listed_actions_get_the_entity_update_time_key() {
        let mut listed =
            serde_json::json!({"id": "a", "lastUpdateTimeUtc": "2018-12-04T12:45:25.4049122Z"});
        entity_update_time(&mut listed);
        assert_eq!(
            listed["lastUpdateDateTimeUtc"],
            "2018-12-04T12:45:25.4049122Z"
        );
        assert_eq!(listed["lastUpdateTimeUtc"], "2018-12-04T12:45:25.4049122Z");
        let mut entity =
            serde_json::json!({"id": "a", "lastUpdateDateTimeUtc": "x", "lastUpdateTimeUtc": "y"});
        entity_update_time(&mut entity);
        assert_eq!(entity["lastUpdateDateTimeUtc"], "x");
        let mut neither = serde_json::json!({"id": "a"});
        entity_update_time(&mut neither);
        assert!(neither.get("lastUpdateDateTimeUtc").is_none());
    }

    use super::*;

    #[test]
    fn device_ids_parse_both_ways() {
        let a = "a".repeat(40);
        let b = "B".repeat(40);
        assert_eq!(
            device_ids("device_ids", &format!(" {a}, ,{b},{a} ")).unwrap(),
            vec![a.clone(), "b".repeat(40)]
        );
        assert_eq!(
            device_ids("device_ids", &format!("[\"{a}\"]")).unwrap(),
            vec![a.clone()]
        );
        for bad in ["", " , ", "xyz", "[1]"] {
            let e = device_ids("device_ids", bad).unwrap_err().to_string();
            assert!(e.contains("'device_ids'"), "{e}");
        }
        let many = (0..101)
            .map(|i| format!("{i:040x}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(device_ids("device_ids", &many).is_err());
    }

    #[test]
    fn investigation_ids_are_checked() {
        assert_eq!(investigation_id("id", " 42 ").unwrap(), "42");
        assert!(investigation_id("id", "a/b").is_err());
        assert!(investigation_id("id", "").is_err());
    }

    #[test]
    fn sas_expiry_is_read() {
        let link = url::Url::parse(
            "https://x.blob.core.windows.net/p?sv=1&se=2025-11-01T10%3A00%3A00Z&sig=s",
        )
        .unwrap();
        assert_eq!(link_expiry(&link).as_deref(), Some("2025-11-01T10:00:00Z"));
    }
}
