//! Alert triage on the Defender for Endpoint API (`/api/alerts...`): list (of the tenant, a
//! domain, a file, an IP address, a user or a device), get, update one or many, create from an
//! event, and the user, files, IP addresses and domains of an alert.
//!
//! Lists go through the asset's triage filters ([`super::triage`]): `lookback_days` becomes an
//! `alertCreationTime ge` condition of the request, the `ignore_*` lists leave records out of
//! the answer, and the summary says how many ([`IGNORED_SUMMARY_KEY`]).

use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::devices::{caller_filter, domain_input, hash_input};
use super::engine::{self, required_text};
use super::triage::{self, IGNORED_SUMMARY_KEY};
use super::{Action, ActionContext, HandlerFn, erase, truncate};
use crate::defender::{Call, DefenderError, Filter, ListQuery, endpoints};
use crate::envelope::{ActionError, Outcome};

/// Most alert ids `update_alerts` takes (Defender's batch size).
pub const MAX_BATCH: usize = 500;

/// Longest alert id accepted.
const MAX_ALERT_ID: usize = 100;

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<ListAlerts>(),
        erase::<GetFileAlerts>(),
        erase::<GetDeviceAlerts>(),
        erase::<GetUserAlerts>(),
        erase::<GetDomainAlerts>(),
        erase::<GetAlert>(),
        erase::<UpdateAlert>(),
        erase::<UpdateAlerts>(),
        erase::<CreateAlert>(),
        erase::<GetAlertUser>(),
        erase::<GetAlertFiles>(),
        erase::<GetAlertIps>(),
        erase::<GetAlertDomains>(),
    ]
}

/// Whether `s` has the shape of a Defender alert id (`da637…`, `ed637…`: letters, digits,
/// `_` and `-`, at most 100 characters).
pub fn is_alert_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ALERT_ID
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The alert id of parameter `param`, trimmed; 400 naming `param` when it has another shape.
pub fn alert_id(param: &str, raw: &str) -> Result<String, ActionError> {
    let id = raw.trim();
    if is_alert_id(id) {
        Ok(id.to_string())
    } else {
        Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': '{}' is not a Defender alert id (letters, digits, '_' and '-', \
             at most {MAX_ALERT_ID} characters, such as da637…)",
            truncate(id, 64)
        )))
    }
}

/// Alert ids given as a JSON list of strings or comma-separated; duplicates dropped, order
/// kept; 400 naming `param` when empty, malformed or longer than [`MAX_BATCH`].
pub fn alert_ids(param: &str, raw: &str) -> Result<Vec<String>, ActionError> {
    id_list(param, raw, "alert id", "Defender updates", |item| {
        alert_id(param, item)
    })
}

/// Items given as a JSON list of strings or comma-separated, each checked (and normalised) by
/// `check`; blanks skipped, duplicates dropped, order kept; 400 naming `param` when none is
/// given or more than [`MAX_BATCH`] are (`noun` names an item, `who` what takes at most that
/// many, e.g. "Defender updates").
pub fn id_list(
    param: &str,
    raw: &str,
    noun: &str,
    who: &str,
    check: impl Fn(&str) -> Result<String, ActionError>,
) -> Result<Vec<String>, ActionError> {
    let raw = raw.trim();
    let items: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str::<Vec<String>>(raw).map_err(|_| {
            ActionError::InvalidParameter(format!(
                "parameter '{param}': a JSON list must hold {noun} strings only"
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
        let id = check(item)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(ActionError::InvalidParameter(format!(
            "parameter '{param}' is required: one or more {noun}s, comma-separated or as a \
             JSON list"
        )));
    }
    if ids.len() > MAX_BATCH {
        return Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': {} {noun}s given; {who} at most {MAX_BATCH} at once",
            ids.len()
        )));
    }
    Ok(ids)
}

/// Where an alert list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertSource {
    /// `/api/alerts`.
    All,
    /// `/api/domains/{domain}/alerts`.
    Domain(String),
    /// `/api/files/{hash}/alerts`.
    File(String),
    /// `/api/ips/{ip}/alerts`.
    Ip(String),
    /// `/api/users/{user}/alerts`.
    User(String),
    /// `/api/machines/{id}/alerts`; the id, DNS name or IP address as given (resolved later).
    Device(String),
}

/// A user as Defender's `/users/{id}` takes it: an account name (`jdoe`), also written
/// `DOMAIN\jdoe` or `jdoe@contoso.com`; the account name is used.
pub fn user_input(param: &str, raw: &str) -> Result<String, ActionError> {
    let raw = raw.trim();
    let account = raw
        .rsplit('\\')
        .next()
        .unwrap_or(raw)
        .split('@')
        .next()
        .unwrap_or_default();
    let ok = !account.is_empty()
        && account.len() <= 104
        && account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '$'));
    if ok {
        Ok(account.to_string())
    } else {
        Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': '{}' is not a user account name (such as jdoe, CONTOSO\\jdoe \
             or jdoe@contoso.com)",
            truncate(raw, 64)
        )))
    }
}

/// An IPv4 or IPv6 address given in parameter `param`, in its canonical text; 400 naming
/// `param` otherwise.
pub fn ip_input(param: &str, raw: &str) -> Result<String, ActionError> {
    raw.trim()
        .parse::<std::net::IpAddr>()
        .map(|ip| ip.to_string())
        .map_err(|_| {
            ActionError::InvalidParameter(format!(
                "parameter '{param}': '{}' is not an IPv4 or IPv6 address",
                truncate(raw.trim(), 64)
            ))
        })
}

/// Checks `input` (parameter `param`) against `input_type`.
pub fn alert_source(
    input_type: &str,
    param: &str,
    input: Option<&str>,
) -> Result<AlertSource, ActionError> {
    let input = input.map(str::trim).filter(|s| !s.is_empty());
    let need = |what: &str| {
        input.ok_or_else(|| {
            ActionError::InvalidParameter(format!(
                "parameter '{param}' is required when input_type is {input_type} ({what})"
            ))
        })
    };
    match input_type {
        "All" => Ok(AlertSource::All),
        "Domain" => domain_input(param, need("a domain name")?).map(AlertSource::Domain),
        "File Hash" => hash_input(param, need("a SHA1 or SHA256")?).map(AlertSource::File),
        "IP" => ip_input(param, need("an IP address")?).map(AlertSource::Ip),
        "User" => user_input(param, need("a user account name")?).map(AlertSource::User),
        "Device" => {
            let d = need("a device id, computer DNS name or IP address")?;
            Ok(AlertSource::Device(d.to_string()))
        }
        other => Err(ActionError::InvalidParameter(format!(
            "parameter 'input_type': must be one of All, Domain, File Hash, IP, User, Device \
             (got '{}')",
            truncate(other, 64)
        ))),
    }
}

/// An ISO 8601 / RFC 3339 moment (`2025-11-01T00:00:00Z`) or a date (`2025-11-01`, midnight
/// UTC) given in parameter `param`.
pub fn moment(param: &str, raw: &str) -> Result<OffsetDateTime, ActionError> {
    let raw = raw.trim();
    if let Ok(t) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(t);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(raw, &date_format) {
        return Ok(d.midnight().assume_utc());
    }
    Err(ActionError::InvalidParameter(format!(
        "parameter '{param}': '{}' is not an ISO 8601 date-time such as 2025-11-01T00:00:00Z \
         (or a date such as 2025-11-01)",
        truncate(raw, 64)
    )))
}

/// The filters of an alert list, besides the source.
#[derive(Debug, Default, Clone)]
pub struct Conditions {
    /// The caller's own OData expression (checked).
    pub filter: Option<Filter>,
    /// `status eq`.
    pub status: Option<String>,
    /// `severity eq`.
    pub severity: Option<String>,
    /// `category eq`.
    pub category: Option<String>,
    /// `detectionSource eq`.
    pub detection_source: Option<String>,
    /// `alertCreationTime ge`.
    pub since: Option<OffsetDateTime>,
}

impl Conditions {
    /// The OData filter of the request: every condition and the asset's look-back window joined
    /// with `and`; `None` when there is none.
    pub fn to_filter(&self, lookback: Option<OffsetDateTime>) -> Option<Filter> {
        let mut parts: Vec<Filter> = Vec::new();
        let eq =
            |field: &'static str, v: &Option<String>| v.as_deref().map(|v| Filter::eq(field, v));
        parts.extend(eq("status", &self.status));
        parts.extend(eq("severity", &self.severity));
        parts.extend(eq("category", &self.category));
        parts.extend(eq("detectionSource", &self.detection_source));
        parts.extend(
            self.since
                .map(|t| Filter::ge_datetime("alertCreationTime", t)),
        );
        parts.extend(lookback.map(|t| Filter::ge_datetime("alertCreationTime", t)));
        parts.extend(self.filter.clone());
        parts.into_iter().reduce(Filter::and)
    }
}

/// How a Defender failure ends an alert action: an unknown alert fails saying so.
fn failure(e: DefenderError, what: &str, alert: Option<&str>) -> Result<Outcome, ActionError> {
    super::listing::failure(e, what, alert.map(|id| format!("alert {id}")).as_deref())
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Lists alerts of `source` with `conditions`, up to `limit`, through the asset's triage
/// filters.
async fn list_alerts(
    ctx: &ActionContext,
    source: AlertSource,
    conditions: &Conditions,
    limit: u64,
) -> Result<Outcome, ActionError> {
    let filters = &ctx.asset.config.triage;
    let lookback = triage::lookback_start(filters, OffsetDateTime::now_utc())
        .and_then(|s| OffsetDateTime::parse(&s, &Rfc3339).ok());
    let device_id;
    let call: Call = match &source {
        AlertSource::All => endpoints::ALERTS.at(&[]),
        AlertSource::Domain(d) => endpoints::DOMAIN_ALERTS.at(&[d]),
        AlertSource::File(h) => endpoints::FILE_ALERTS.at(&[h]),
        AlertSource::Ip(ip) => endpoints::IP_ALERTS.at(&[ip]),
        AlertSource::User(u) => endpoints::USER_ALERTS.at(&[u]),
        AlertSource::Device(raw) => {
            device_id = engine::resolve_device(ctx, "input", raw).await?.id;
            endpoints::MACHINE_ALERTS.at(&[&device_id])
        }
    };
    let query = ListQuery {
        filter: conditions.to_filter(lookback).map(String::from),
        ..ListQuery::default()
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let records = match ctx.asset.defender.list(&call, &query, limit).await {
        Ok(r) => r,
        Err(e) if e.is_not_found() && matches!(source, AlertSource::Device(_)) => {
            return Ok(Outcome::failed(format!(
                "the device was not found in this tenant ({})",
                call.path
            )));
        }
        // A domain, file, address or user Defender has never seen has no alerts.
        Err(e) if e.is_not_found() && source != AlertSource::All => Vec::new(),
        Err(e) => return failure(e, "listing alerts", None),
    };
    let records: Vec<Value> = records
        .into_iter()
        .filter(Value::is_object)
        .map(super::listing::clean)
        .collect();
    let (kept, ignored) = triage::apply(filters, records);
    let total = kept.len();
    let mut message = match total {
        0 => "No alerts found".to_string(),
        1 => "Found 1 alert".to_string(),
        n => format!("Found {n} alerts"),
    };
    if ignored > 0 {
        message.push_str(&format!(
            "; {ignored} left out by the asset's triage filters"
        ));
    }
    let mut outcome = Outcome::success(message)
        .with_summary("total_alerts", total)
        .with_summary(IGNORED_SUMMARY_KEY, ignored);
    outcome.data = kept;
    Ok(outcome)
}

// --- list_alerts and its Splunk-named variants ----------------------------------------------

/// `list_alerts`.
pub struct ListAlerts;

/// Parameters of `list_alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// All, Domain, File Hash, IP, User or Device.
    pub input_type: String,
    /// The domain, hash, address, user or device.
    #[serde(default)]
    pub input: Option<String>,
    /// Most alerts returned.
    pub limit: u64,
    /// The caller's own OData filter.
    #[serde(default)]
    pub filter: Option<String>,
    /// `status eq`.
    #[serde(default)]
    pub status: Option<String>,
    /// `severity eq`.
    #[serde(default)]
    pub severity: Option<String>,
    /// `category eq`.
    #[serde(default)]
    pub category: Option<String>,
    /// `detectionSource eq`.
    #[serde(default)]
    pub detection_source: Option<String>,
    /// `alertCreationTime ge`.
    #[serde(default)]
    pub since: Option<String>,
}

impl ListParams {
    /// The checked conditions.
    pub fn conditions(&self) -> Result<Conditions, ActionError> {
        let blank = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(Conditions {
            filter: caller_filter("filter", self.filter.as_deref())?,
            status: blank(&self.status),
            severity: blank(&self.severity),
            category: blank(&self.category),
            detection_source: blank(&self.detection_source),
            since: blank(&self.since)
                .map(|s| moment("since", &s))
                .transpose()?,
        })
    }
}

impl Action for ListAlerts {
    const ID: &'static str = "list_alerts";
    type Params = ListParams;

    async fn run(ctx: ActionContext, p: ListParams) -> Result<Outcome, ActionError> {
        let source = alert_source(&p.input_type, "input", p.input.as_deref())?;
        let conditions = p.conditions()?;
        list_alerts(&ctx, source, &conditions, p.limit).await
    }
}

macro_rules! entity_alerts {
    ($action:ident, $params:ident, $id:literal, $field:ident, $input_type:literal, $doc:literal) => {
        #[doc = concat!("`", $id, "`: ", $doc, " (`list_alerts` with input_type ", $input_type, ").")]
        pub struct $action;

        #[doc = concat!("Parameters of `", $id, "`.")]
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $params {
            #[doc = concat!("The ", stringify!($field), ".")]
            pub $field: String,
            /// Most alerts returned.
            pub limit: u64,
        }

        impl Action for $action {
            const ID: &'static str = $id;
            type Params = $params;

            async fn run(ctx: ActionContext, p: $params) -> Result<Outcome, ActionError> {
                let source = alert_source($input_type, stringify!($field), Some(&p.$field))?;
                list_alerts(&ctx, source, &Conditions::default(), p.limit).await
            }
        }
    };
}

entity_alerts!(
    GetFileAlerts,
    FileAlertsParams,
    "get_file_alerts",
    file_hash,
    "File Hash",
    "alerts of a file"
);
entity_alerts!(
    GetDomainAlerts,
    DomainAlertsParams,
    "get_domain_alerts",
    domain,
    "Domain",
    "alerts of a domain"
);
entity_alerts!(
    GetUserAlerts,
    UserAlertsParams,
    "get_user_alerts",
    user,
    "User",
    "alerts of a user"
);

/// `get_device_alerts`: alerts of a device (`list_alerts` with input_type Device).
pub struct GetDeviceAlerts;

/// Parameters of `get_device_alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceAlertsParams {
    /// The device: id, computer DNS name or IP address.
    pub device_id: String,
    /// Most alerts returned.
    pub limit: u64,
}

impl Action for GetDeviceAlerts {
    const ID: &'static str = "get_device_alerts";
    type Params = DeviceAlertsParams;

    async fn run(ctx: ActionContext, p: DeviceAlertsParams) -> Result<Outcome, ActionError> {
        let id = engine::resolve_device(&ctx, "device_id", &p.device_id)
            .await?
            .id;
        list_alerts(
            &ctx,
            AlertSource::Device(id),
            &Conditions::default(),
            p.limit,
        )
        .await
    }
}

// --- get_alert ------------------------------------------------------------------------------

/// `get_alert`.
pub struct GetAlert;

/// Parameters of `get_alert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// The alert id.
    pub alert_id: String,
    /// Ask for the alert's evidence (`$expand=evidence`).
    pub expand_evidence: bool,
}

impl Action for GetAlert {
    const ID: &'static str = "get_alert";
    type Params = GetParams;

    async fn run(ctx: ActionContext, p: GetParams) -> Result<Outcome, ActionError> {
        let id = alert_id("alert_id", &p.alert_id)?;
        let call = endpoints::ALERT.at(&[&id]);
        let expand = p.expand_evidence.then_some("evidence");
        let alert = match ctx.asset.defender.get_expanded(&call, expand).await {
            Ok(a) => super::listing::clean(a),
            Err(e) => return failure(e, "getting the alert", Some(&id)),
        };
        let mut outcome = Outcome::success(format!(
            "Alert {id}: {}",
            text(&alert, "title").unwrap_or("(no title)")
        ))
        .with_summary("alert_id", id.as_str());
        for (key, field) in [("alert_status", "status"), ("severity", "severity")] {
            if let Some(v) = text(&alert, field) {
                outcome = outcome.with_summary(key, v);
            }
        }
        if p.expand_evidence {
            let n = alert
                .get("evidence")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            outcome = outcome.with_summary("total_evidence", n);
        }
        Ok(outcome.with_data(alert))
    }
}

// --- update_alert / update_alerts -----------------------------------------------------------

/// The changes of an update: Defender's body fields, from the parameters.
fn changes(
    status: &Option<String>,
    assigned_to: &Option<String>,
    classification: &Option<String>,
    determination: &Option<String>,
    comment: &Option<String>,
) -> Result<Map<String, Value>, ActionError> {
    let mut body = Map::new();
    for (field, value) in [
        ("status", status),
        ("assignedTo", assigned_to),
        ("classification", classification),
        ("determination", determination),
        ("comment", comment),
    ] {
        if let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            body.insert(field.to_string(), json!(v));
        }
    }
    if body.is_empty() {
        return Err(ActionError::InvalidParameter(
            "nothing to update: give at least one of status, assigned_to, classification, \
             determination, comment"
                .into(),
        ));
    }
    Ok(body)
}

/// `update_alert`.
pub struct UpdateAlert;

/// Parameters of `update_alert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateParams {
    /// The alert id.
    pub alert_id: String,
    /// New, InProgress or Resolved.
    #[serde(default)]
    pub status: Option<String>,
    /// Owner (an email address).
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// Classification.
    #[serde(default)]
    pub classification: Option<String>,
    /// Determination.
    #[serde(default)]
    pub determination: Option<String>,
    /// A comment to add.
    #[serde(default)]
    pub comment: Option<String>,
}

impl Action for UpdateAlert {
    const ID: &'static str = "update_alert";
    type Params = UpdateParams;

    async fn run(ctx: ActionContext, p: UpdateParams) -> Result<Outcome, ActionError> {
        let id = alert_id("alert_id", &p.alert_id)?;
        let body = changes(
            &p.status,
            &p.assigned_to,
            &p.classification,
            &p.determination,
            &p.comment,
        )?;
        let fields: Vec<&str> = body.keys().map(String::as_str).collect();
        let what = fields.join(", ");
        let call = endpoints::UPDATE_ALERT.at(&[&id]);
        let alert = match ctx
            .asset
            .defender
            .patch(&call, &Value::Object(body.clone()))
            .await
        {
            Ok(a) => super::listing::clean(a),
            Err(e) => return failure(e, "updating the alert", Some(&id)),
        };
        let mut outcome = Outcome::success(format!("Alert {id} updated ({what})"))
            .with_summary("alert_id", id.as_str());
        for (key, field) in [
            ("alert_status", "status"),
            ("assigned_to", "assignedTo"),
            ("classification", "classification"),
            ("determination", "determination"),
        ] {
            if let Some(v) = text(&alert, field) {
                outcome = outcome.with_summary(key, v);
            }
        }
        Ok(outcome.with_data(alert))
    }
}

/// `update_alerts`.
pub struct UpdateAlerts;

/// Parameters of `update_alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchParams {
    /// Alert ids: a JSON list or comma-separated.
    pub alert_ids: String,
    /// New, InProgress or Resolved.
    #[serde(default)]
    pub status: Option<String>,
    /// Owner (an email address).
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// Classification.
    #[serde(default)]
    pub classification: Option<String>,
    /// Determination.
    #[serde(default)]
    pub determination: Option<String>,
    /// A comment to add.
    #[serde(default)]
    pub comment: Option<String>,
}

impl Action for UpdateAlerts {
    const ID: &'static str = "update_alerts";
    type Params = BatchParams;

    async fn run(ctx: ActionContext, p: BatchParams) -> Result<Outcome, ActionError> {
        let ids = alert_ids("alert_ids", &p.alert_ids)?;
        let mut body = changes(
            &p.status,
            &p.assigned_to,
            &p.classification,
            &p.determination,
            &p.comment,
        )?;
        let what = body.keys().cloned().collect::<Vec<_>>().join(", ");
        body.insert("alertIds".into(), json!(ids));
        let call = endpoints::BATCH_UPDATE_ALERTS.at(&[]);
        if let Err(e) = ctx
            .asset
            .defender
            .post(&call, &Value::Object(body.clone()))
            .await
        {
            return failure(e, "updating the alerts", None);
        }
        let n = ids.len();
        let mut outcome = Outcome::success(format!(
            "{n} alert{} updated ({what})",
            if n == 1 { "" } else { "s" }
        ))
        .with_summary("total_alerts", n);
        body.remove("comment");
        for id in ids {
            let mut row = body.clone();
            row.remove("alertIds");
            row.insert("id".into(), json!(id));
            outcome = outcome.with_data(Value::Object(row));
        }
        Ok(outcome)
    }
}

// --- create_alert ---------------------------------------------------------------------------

/// `create_alert`.
pub struct CreateAlert;

/// Parameters of `create_alert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// The event's report id (from advanced hunting).
    pub report_id: String,
    /// The event's time (ISO 8601).
    pub event_time: String,
    /// The device: id, computer DNS name or IP address.
    pub device_id: String,
    /// Informational, Low, Medium or High.
    pub severity: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Recommended action.
    pub recommended_action: String,
    /// Category.
    pub category: String,
}

impl Action for CreateAlert {
    const ID: &'static str = "create_alert";
    type Params = CreateParams;

    async fn run(ctx: ActionContext, p: CreateParams) -> Result<Outcome, ActionError> {
        let report_id = required_text("report_id", Some(&p.report_id))?;
        let event_time = moment("event_time", &p.event_time)?;
        let title = required_text("title", Some(&p.title))?;
        let description = required_text("description", Some(&p.description))?;
        let recommended = required_text("recommended_action", Some(&p.recommended_action))?;
        let event_time = event_time
            .to_offset(time::UtcOffset::UTC)
            .format(&Rfc3339)
            .map_err(|e| ActionError::InvalidParameter(format!("parameter 'event_time': {e}")))?;
        let device = engine::resolve_device(&ctx, "device_id", &p.device_id)
            .await?
            .id;
        let body = json!({
            "machineId": device,
            "severity": p.severity,
            "title": title,
            "description": description,
            "recommendedAction": recommended,
            "eventTime": event_time,
            "reportId": report_id,
            "category": p.category,
        });
        let call = endpoints::CREATE_ALERT_BY_REFERENCE.at(&[]);
        let alert = match ctx.asset.defender.post(&call, &body).await {
            Ok(a) => super::listing::clean(a),
            Err(e) => return failure(e, "creating the alert", None),
        };
        let id = text(&alert, "id").unwrap_or_default().to_string();
        Ok(Outcome::success(format!("Alert {id} created"))
            .with_summary("alert_id", id.as_str())
            .with_data(alert))
    }
}

// --- the user, files, IP addresses and domains of an alert ----------------------------------

/// `get_alert_user`.
pub struct GetAlertUser;

/// Parameters of `get_alert_user`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertOnlyParams {
    /// The alert id.
    pub alert_id: String,
}

impl Action for GetAlertUser {
    const ID: &'static str = "get_alert_user";
    type Params = AlertOnlyParams;

    async fn run(ctx: ActionContext, p: AlertOnlyParams) -> Result<Outcome, ActionError> {
        let id = alert_id("alert_id", &p.alert_id)?;
        let user = match ctx
            .asset
            .defender
            .get(&endpoints::ALERT_USER.at(&[&id]))
            .await
        {
            Ok(u) => super::listing::clean(u),
            Err(e) => return failure(e, "getting the alert's user", Some(&id)),
        };
        if user.is_null() || user.as_object().is_some_and(Map::is_empty) {
            return Ok(Outcome::success(format!("Alert {id} has no user"))
                .with_summary("alert_id", id.as_str()));
        }
        let name = text(&user, "accountName")
            .or_else(|| text(&user, "id"))
            .unwrap_or_default()
            .to_string();
        Ok(Outcome::success(format!("Alert {id} is about user {name}"))
            .with_summary("alert_id", id.as_str())
            .with_summary("username", name.as_str())
            .with_data(user))
    }
}

/// Parameters of `get_alert_files`, `get_alert_ips` and `get_alert_domains`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelatedParams {
    /// The alert id.
    pub alert_id: String,
    /// Most records returned.
    pub limit: u64,
    /// Records skipped first.
    pub offset: u64,
}

async fn related(
    ctx: &ActionContext,
    p: &RelatedParams,
    endpoint: &'static crate::defender::Endpoint,
    noun: &str,
    key: &str,
) -> Result<Outcome, ActionError> {
    let id = alert_id("alert_id", &p.alert_id)?;
    let mut query = ListQuery::new();
    if p.offset > 0 {
        query = query.skip(p.offset);
    }
    let limit = usize::try_from(p.limit).unwrap_or(usize::MAX);
    let items = match ctx
        .asset
        .defender
        .list(&endpoint.at(&[&id]), &query, limit)
        .await
    {
        Ok(items) => items,
        Err(e) => return failure(e, &format!("getting the alert's {noun}"), Some(&id)),
    };
    let items: Vec<Value> = items
        .into_iter()
        .filter(Value::is_object)
        .map(super::listing::clean)
        .collect();
    let n = items.len();
    let mut outcome = Outcome::success(format!("Alert {id}: {n} {noun}"))
        .with_summary("alert_id", id.as_str())
        .with_summary(key, n);
    outcome.data = items;
    Ok(outcome)
}

/// `get_alert_files`.
pub struct GetAlertFiles;

impl Action for GetAlertFiles {
    const ID: &'static str = "get_alert_files";
    type Params = RelatedParams;

    async fn run(ctx: ActionContext, p: RelatedParams) -> Result<Outcome, ActionError> {
        related(&ctx, &p, &endpoints::ALERT_FILES, "files", "total_files").await
    }
}

/// `get_alert_ips`.
pub struct GetAlertIps;

impl Action for GetAlertIps {
    const ID: &'static str = "get_alert_ips";
    type Params = RelatedParams;

    async fn run(ctx: ActionContext, p: RelatedParams) -> Result<Outcome, ActionError> {
        related(&ctx, &p, &endpoints::ALERT_IPS, "IP addresses", "total_ips").await
    }
}

/// `get_alert_domains`.
pub struct GetAlertDomains;

impl Action for GetAlertDomains {
    const ID: &'static str = "get_alert_domains";
    type Params = RelatedParams;

    async fn run(ctx: ActionContext, p: RelatedParams) -> Result<Outcome, ActionError> {
        related(
            &ctx,
            &p,
            &endpoints::ALERT_DOMAINS,
            "domains",
            "total_domains",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_ids_have_defenders_shape() {
        assert!(is_alert_id("da637551227677560813_-961444813"));
        assert!(is_alert_id("ed637551227677560813"));
        assert!(!is_alert_id(""));
        assert!(!is_alert_id("da63/../machines"));
        assert!(!is_alert_id("id eq 'x'"));
        assert!(!is_alert_id(&"a".repeat(101)));
        let e = alert_id("alert_id", "bad id").unwrap_err();
        assert!(e.to_string().contains("'alert_id'"), "{e}");
    }

    #[test]
    fn alert_id_lists_parse_both_ways() {
        assert_eq!(
            alert_ids("alert_ids", "a1, b2 ,a1").unwrap(),
            vec!["a1", "b2"]
        );
        assert_eq!(
            alert_ids("alert_ids", r#"["a1","b2"]"#).unwrap(),
            vec!["a1", "b2"]
        );
        assert!(alert_ids("alert_ids", " , ").is_err());
        assert!(alert_ids("alert_ids", "[1,2]").is_err());
        assert!(alert_ids("alert_ids", "a1,b/2").is_err());
        let many: Vec<String> = (0..501).map(|i| format!("da{i}")).collect();
        let e = alert_ids("alert_ids", &many.join(",")).unwrap_err();
        assert!(e.to_string().contains("501"), "{e}");
        assert_eq!(
            alert_ids("alert_ids", &many[..500].join(","))
                .unwrap()
                .len(),
            500
        );
    }

    #[test]
    fn sources_are_checked_per_type() {
        assert_eq!(
            alert_source("All", "input", None).unwrap(),
            AlertSource::All
        );
        assert_eq!(
            alert_source("IP", "input", Some(" 10.0.0.1 ")).unwrap(),
            AlertSource::Ip("10.0.0.1".into())
        );
        assert!(alert_source("IP", "input", Some("10.0.0.300")).is_err());
        assert_eq!(
            alert_source("User", "user", Some("CONTOSO\\jdoe")).unwrap(),
            AlertSource::User("jdoe".into())
        );
        assert_eq!(
            alert_source("User", "user", Some("jdoe@contoso.com")).unwrap(),
            AlertSource::User("jdoe".into())
        );
        let e = alert_source("Domain", "domain", None).unwrap_err();
        assert!(e.to_string().contains("'domain'"), "{e}");
        assert!(alert_source("File Hash", "input", Some(&"a".repeat(32))).is_err());
    }

    #[test]
    fn conditions_join_with_and() {
        let c = Conditions {
            status: Some("New".into()),
            severity: Some("High".into()),
            since: Some(time::macros::datetime!(2025-11-01 00:00 UTC)),
            filter: Filter::passthrough("category eq 'Malware'").ok(),
            ..Conditions::default()
        };
        assert_eq!(
            c.to_filter(None).map(String::from).as_deref(),
            Some(
                "status eq 'New' and severity eq 'High' and alertCreationTime ge \
                 2025-11-01T00:00:00Z and (category eq 'Malware')"
            )
        );
        assert_eq!(Conditions::default().to_filter(None), None);
        assert!(moment("since", "2025-11-01").is_ok());
        assert!(moment("since", "yesterday").is_err());
    }
}
