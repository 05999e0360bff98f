//! Custom indicators (threat intelligence) on the Defender API (`/api/indicators...`): list,
//! get, submit (create or update one), update (one item of an import), update in batches
//! (imports of up to 500), delete one and delete many (BatchDelete).
//!
//! Every parameter is checked before any call: the value must match its type, the type,
//! action and severity come from Defender's lists, an expiration must be in the future and
//! action Audit needs generate_alert. A refusal because the tenant already holds 15,000
//! active indicators is explained ([`explain_limit`]).

use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::devices::{caller_filter, domain_input};
use super::listing::clean;
use super::{Action, ActionContext, HandlerFn, erase, truncate};
use crate::defender::endpoints::{self, INDICATOR_BATCH_MAX, TENANT_INDICATOR_LIMIT};
use crate::defender::{DefenderError, ListQuery};
use crate::envelope::{ActionError, Outcome};

/// Longest title accepted.
pub const MAX_TITLE: usize = 250;
/// Longest description (and recommended actions) accepted.
pub const MAX_DESCRIPTION: usize = 4000;
/// Longest application name accepted.
pub const MAX_APPLICATION: usize = 250;
/// Longest RBAC group name accepted.
pub const MAX_GROUP_NAME: usize = 200;
/// Longest indicator value accepted.
pub const MAX_VALUE: usize = 2048;

/// Indicator types, in Defender's spelling.
pub const TYPES: [&str; 7] = [
    "FileSha1",
    "FileSha256",
    "FileMd5",
    "CertificateThumbprint",
    "IpAddress",
    "DomainName",
    "Url",
];

/// Indicator actions, in Defender's spelling (Alert and AlertAndBlock are the legacy ones).
pub const ACTIONS: [&str; 7] = [
    "Warn",
    "Block",
    "Audit",
    "Alert",
    "AlertAndBlock",
    "BlockAndRemediate",
    "Allowed",
];

/// Indicator severities.
pub const SEVERITIES: [&str; 4] = ["Informational", "Low", "Medium", "High"];

/// An http(s) URL as indicators take it: scheme, host (dot-separated labels of letters,
/// digits and '-'), optional port, and optionally a path, query or fragment of visible ASCII.
pub const URL_PATTERN: &str = "^[hH][tT][tT][pP][sS]?://[A-Za-z0-9-]{1,63}(?:\\.[A-Za-z0-9-]{1,63})*(?::[0-9]{1,5})?(?:[/?#][\\x21-\\x7e]*)?$";

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<ListIndicators>(),
        erase::<GetIndicator>(),
        erase::<SubmitIndicator>(),
        erase::<UpdateIndicator>(),
        erase::<UpdateIndicatorBatch>(),
        erase::<DeleteIndicator>(),
        erase::<DeleteIndicators>(),
    ]
}

fn invalid(param: &str, why: impl std::fmt::Display) -> ActionError {
    ActionError::InvalidParameter(format!("parameter '{param}': {why}"))
}

/// `value` from `allowed` ignoring letter case, in the listed spelling; `why` otherwise.
fn listed(param: &str, value: &str, allowed: &[&'static str]) -> Result<&'static str, String> {
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value.trim()))
        .copied()
        .ok_or_else(|| {
            format!(
                "parameter '{param}': must be one of {} (got '{}')",
                allowed.join(", "),
                truncate(value.trim(), 64)
            )
        })
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn url_regex() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| Regex::new(URL_PATTERN).ok()).as_ref()
}

/// The indicator value of parameter `param`, trimmed, checked against `kind` (a listed type);
/// hashes lower-cased, addresses in canonical form, domains lower-cased.
pub fn indicator_value(param: &str, kind: &str, raw: &str) -> Result<String, String> {
    let v = raw.trim();
    let shown = truncate(v, 64);
    let hex = |len: usize, what: &str| {
        if is_hex(v, len) {
            Ok(v.to_ascii_lowercase())
        } else {
            Err(format!(
                "parameter '{param}': '{shown}' is not {what} ({len} hex characters) as \
                 indicator type {kind} needs"
            ))
        }
    };
    match kind {
        "FileSha1" => hex(40, "a SHA1"),
        "FileSha256" => hex(64, "a SHA256"),
        "FileMd5" => hex(32, "an MD5"),
        "CertificateThumbprint" => hex(40, "a certificate thumbprint"),
        "IpAddress" => v
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.to_string())
            .map_err(|_| {
                format!(
                    "parameter '{param}': '{shown}' is not an IPv4 or IPv6 address as \
                     indicator type IpAddress needs"
                )
            }),
        "DomainName" => domain_input(param, v).map_err(|e| e.to_string()),
        "Url" => {
            let ok = v.len() <= MAX_VALUE && url_regex().is_some_and(|re| re.is_match(v));
            if ok {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "parameter '{param}': '{shown}' is not an http or https URL (such as \
                     https://contoso.example/path) as indicator type Url needs"
                ))
            }
        }
        other => Err(format!(
            "parameter '{param}': unknown indicator type '{}'",
            truncate(other, 64)
        )),
    }
}

/// An expiration time of parameter `param` (`%Y-%m-%dT%H:%M:%SZ` or any RFC 3339 date-time),
/// later than `now`, as Defender takes it (UTC, whole seconds).
pub fn expiration(param: &str, raw: &str, now: OffsetDateTime) -> Result<String, String> {
    let raw = raw.trim();
    let t = OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
        format!(
            "parameter '{param}': '{}' is not a date-time such as 2030-01-01T00:00:00Z \
             (%Y-%m-%dT%H:%M:%SZ or RFC 3339)",
            truncate(raw, 64)
        )
    })?;
    let utc = t
        .checked_to_offset(UtcOffset::UTC)
        .ok_or_else(|| format!("parameter '{param}': '{raw}' is out of range"))?;
    if utc <= now {
        return Err(format!(
            "parameter '{param}': '{raw}' is not in the future; an indicator's expiration must \
             be later than now"
        ));
    }
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    utc.format(format)
        .map_err(|_| format!("parameter '{param}': '{raw}' is out of range"))
}

/// A required free text of at most `max` characters, trimmed.
fn bounded_text(
    param: &str,
    raw: Option<&str>,
    max: usize,
    required: bool,
) -> Result<Option<String>, String> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None if required => Err(format!("parameter '{param}' is required (not blank)")),
        None => Ok(None),
        Some(s) if s.chars().count() > max => Err(format!(
            "parameter '{param}': must be at most {max} characters (got {})",
            s.chars().count()
        )),
        Some(s) => Ok(Some(s.to_string())),
    }
}

/// RBAC group names: a JSON list of strings or comma-separated; blanks dropped.
pub fn group_names(param: &str, text: &str) -> Result<Vec<String>, String> {
    let t = text.trim();
    let names: Vec<String> = if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t).map_err(|_| {
            format!(
                "parameter '{param}': a list must be a JSON list of strings, such as [\"a\", \"b\"]"
            )
        })?
    } else {
        t.split(',').map(str::to_string).collect()
    };
    if names.iter().any(|s| s.chars().any(char::is_control)) {
        return Err(format!(
            "parameter '{param}': a group name contains a control character"
        ));
    }
    if names.iter().any(|s| s.chars().count() > MAX_GROUP_NAME) {
        return Err(format!(
            "parameter '{param}': a group name is longer than {MAX_GROUP_NAME} characters"
        ));
    }
    Ok(names
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// One indicator as given, under the names of its source (action parameters or Defender's
/// fields), before checking.
#[derive(Debug, Default)]
pub struct Draft<'a> {
    /// (parameter name, value) of each field.
    pub title: (&'a str, Option<&'a str>),
    /// Description.
    pub description: (&'a str, Option<&'a str>),
    /// Type.
    pub kind: (&'a str, Option<&'a str>),
    /// Value.
    pub value: (&'a str, Option<&'a str>),
    /// Action.
    pub action: (&'a str, Option<&'a str>),
    /// Application.
    pub application: (&'a str, Option<&'a str>),
    /// Expiration time.
    pub expiration: (&'a str, Option<&'a str>),
    /// Severity.
    pub severity: (&'a str, Option<&'a str>),
    /// Recommended actions.
    pub recommended: (&'a str, Option<&'a str>),
    /// RBAC group names (already split).
    pub groups: Vec<String>,
    /// Generate an alert (name, value).
    pub generate_alert: (&'a str, bool),
}

/// A checked indicator: Defender's body fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// The body (Defender's field names).
    pub body: Map<String, Value>,
}

impl Checked {
    fn text(&self, key: &str) -> &str {
        self.body
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

impl Draft<'_> {
    /// Checks every field; the error is the whole message naming the field.
    pub fn check(&self, now: OffsetDateTime) -> Result<Checked, String> {
        let title = bounded_text(self.title.0, self.title.1, MAX_TITLE, true)?;
        let description = bounded_text(
            self.description.0,
            self.description.1,
            MAX_DESCRIPTION,
            true,
        )?;
        let kind_raw = bounded_text(self.kind.0, self.kind.1, 64, true)?.unwrap_or_default();
        let kind = listed(self.kind.0, &kind_raw, &TYPES)?;
        let value_raw =
            bounded_text(self.value.0, self.value.1, MAX_VALUE, true)?.unwrap_or_default();
        let value = indicator_value(self.value.0, kind, &value_raw)?;
        let action_raw = bounded_text(self.action.0, self.action.1, 64, true)?.unwrap_or_default();
        let action = listed(self.action.0, &action_raw, &ACTIONS)?;
        if action == "Audit" && !self.generate_alert.1 {
            return Err(format!(
                "parameter '{}': action Audit needs {} true (Defender refuses an Audit \
                 indicator that raises no alert)",
                self.action.0, self.generate_alert.0
            ));
        }
        let severity = bounded_text(self.severity.0, self.severity.1, 64, false)?
            .map(|s| listed(self.severity.0, &s, &SEVERITIES))
            .transpose()?;
        let application = bounded_text(
            self.application.0,
            self.application.1,
            MAX_APPLICATION,
            false,
        )?;
        let recommended = bounded_text(
            self.recommended.0,
            self.recommended.1,
            MAX_DESCRIPTION,
            false,
        )?;
        let expires = bounded_text(self.expiration.0, self.expiration.1, 40, false)?
            .map(|e| expiration(self.expiration.0, &e, now))
            .transpose()?;
        let mut body = Map::new();
        body.insert("indicatorValue".into(), json!(value));
        body.insert("indicatorType".into(), json!(kind));
        body.insert("action".into(), json!(action));
        body.insert("title".into(), json!(title));
        body.insert("description".into(), json!(description));
        body.insert("generateAlert".into(), json!(self.generate_alert.1));
        if let Some(s) = severity {
            body.insert("severity".into(), json!(s));
        }
        if let Some(a) = application {
            body.insert("application".into(), json!(a));
        }
        if let Some(r) = recommended {
            body.insert("recommendedActions".into(), json!(r));
        }
        if let Some(e) = expires {
            body.insert("expirationTime".into(), json!(e));
        }
        if !self.groups.is_empty() {
            body.insert("rbacGroupNames".into(), json!(self.groups));
        }
        Ok(Checked { body })
    }
}

/// When Defender refused because the tenant is full, the explanation; `None` otherwise.
pub fn explain_limit(message: &str) -> Option<String> {
    let m = message.to_ascii_lowercase();
    let names_number = m.contains("15000") || m.contains("15,000");
    let names_limit = ["limit", "maximum", "capacity", "exceed", "quota"]
        .iter()
        .any(|w| m.contains(w));
    (names_number || (names_limit && m.contains("indicator"))).then(|| {
        format!(
            "Defender refused the indicator because the tenant already holds the most active \
             indicators it allows ({TENANT_INDICATOR_LIMIT}); delete expired or unneeded \
             indicators first (list_indicators with a filter such as expirationTime lt \
             <now>, then delete_indicators with their ids) and try again. Defender said: {}",
            truncate(message, 300)
        )
    })
}

/// How a Defender failure ends an indicator action: throttled past the deadline is a 503, an
/// unknown id a failed envelope saying so, the tenant limit explained, anything else a failed
/// envelope naming `what`.
fn failure(e: DefenderError, what: &str, id: Option<&str>) -> Result<Outcome, ActionError> {
    if e.retry_after().is_some() {
        return Err(e.into());
    }
    if e.is_not_found()
        && let Some(id) = id
    {
        return Ok(Outcome::failed(format!(
            "no indicator with id {id} in this tenant (or, with the Ti.ReadWrite permission, \
             none this app created)"
        )));
    }
    if let Some(explained) = explain_limit(&e.to_string()) {
        return Ok(Outcome::failed(explained));
    }
    Ok(Outcome::failed(format!("{what} failed: {e}")))
}

/// An indicator id of parameter `param`: digits.
pub fn indicator_id(param: &str, raw: &str) -> Result<String, ActionError> {
    let id = raw.trim();
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            param,
            format!(
                "'{}' is not an indicator id (digits, such as 995)",
                truncate(id, 64)
            ),
        ));
    }
    Ok(id.to_string())
}

/// Indicator ids as a JSON list (strings or numbers) or comma-separated; duplicates dropped,
/// order kept; at most [`INDICATOR_BATCH_MAX`].
pub fn indicator_ids(param: &str, raw: &str) -> Result<Vec<String>, ActionError> {
    let raw = raw.trim();
    let items: Vec<String> = if raw.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(raw)
            .map_err(|_| invalid(param, "a JSON list must hold indicator ids"))?;
        values
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(invalid(param, "a JSON list must hold indicator ids")),
            })
            .collect::<Result<_, _>>()?
    } else {
        raw.split(',').map(str::to_string).collect()
    };
    let mut ids: Vec<String> = Vec::new();
    for item in items {
        if item.trim().is_empty() {
            continue;
        }
        let id = indicator_id(param, &item)?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err(ActionError::InvalidParameter(format!(
            "parameter '{param}' is required: one or more indicator ids, comma-separated or as \
             a JSON list"
        )));
    }
    if ids.len() > INDICATOR_BATCH_MAX {
        return Err(invalid(
            param,
            format!(
                "{} indicator ids given; at most {INDICATOR_BATCH_MAX} are deleted at once \
                 (split them over several calls)",
                ids.len()
            ),
        ));
    }
    Ok(ids)
}

fn groups_param(param: &str, raw: Option<&str>) -> Result<Vec<String>, ActionError> {
    raw.map(|t| group_names(param, t))
        .transpose()
        .map_err(ActionError::InvalidParameter)
        .map(Option::unwrap_or_default)
}

fn summary_of(outcome: Outcome, indicator: &Map<String, Value>) -> Outcome {
    let mut outcome = outcome;
    for (key, field) in [
        ("indicator_id", "id"),
        ("indicator_value", "indicatorValue"),
        ("indicator_type", "indicatorType"),
        ("action", "action"),
    ] {
        if let Some(v) = indicator.get(field).and_then(Value::as_str) {
            outcome = outcome.with_summary(key, v);
        }
    }
    outcome
}

// --- list_indicators / get_indicator --------------------------------------------------------

/// `list_indicators`.
pub struct ListIndicators;

/// Parameters of `list_indicators`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// The caller's OData filter.
    #[serde(default)]
    pub filter: Option<String>,
    /// Most indicators returned.
    pub limit: u64,
}

impl Action for ListIndicators {
    const ID: &'static str = "list_indicators";
    type Params = ListParams;

    async fn run(ctx: ActionContext, p: ListParams) -> Result<Outcome, ActionError> {
        let query = ListQuery {
            filter: caller_filter("filter", p.filter.as_deref())?.map(String::from),
            ..ListQuery::default()
        };
        let limit = usize::try_from(p.limit).unwrap_or(usize::MAX);
        let call = endpoints::INDICATORS.at(&[]);
        let records = match ctx.asset.defender.list(&call, &query, limit).await {
            Ok(r) => r,
            Err(e) => return failure(e, "listing indicators", None),
        };
        let records: Vec<Value> = records
            .into_iter()
            .filter(Value::is_object)
            .map(clean)
            .collect();
        let n = records.len();
        let message = match n {
            0 => "No indicators found".to_string(),
            1 => "Found 1 indicator".to_string(),
            n => format!("Found {n} indicators"),
        };
        let mut outcome = Outcome::success(message).with_summary("total_indicators", n);
        outcome.data = records;
        Ok(outcome)
    }
}

/// `get_indicator`.
pub struct GetIndicator;

/// Parameters of `get_indicator` and `delete_indicator`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdParams {
    /// The indicator id.
    pub indicator_id: String,
}

impl Action for GetIndicator {
    const ID: &'static str = "get_indicator";
    type Params = IdParams;

    async fn run(ctx: ActionContext, p: IdParams) -> Result<Outcome, ActionError> {
        let id = indicator_id("indicator_id", &p.indicator_id)?;
        let call = endpoints::INDICATOR.at(&[&id]);
        let indicator = match ctx.asset.defender.get(&call).await {
            Ok(v) => clean(v),
            Err(e) => return failure(e, "getting the indicator", Some(&id)),
        };
        let map = indicator.as_object().cloned().unwrap_or_default();
        let title = map
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("(no title)");
        let outcome = summary_of(Outcome::success(format!("Indicator {id}: {title}")), &map);
        Ok(outcome.with_data(indicator))
    }
}

// --- submit_indicator / update_indicator ----------------------------------------------------

/// `submit_indicator`.
pub struct SubmitIndicator;

/// Parameters of `submit_indicator`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitParams {
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Type.
    pub indicator_type: String,
    /// Value.
    pub indicator_value: String,
    /// Action.
    pub action: String,
    /// Application.
    #[serde(default)]
    pub application: Option<String>,
    /// Expiration time.
    #[serde(default)]
    pub expiration_time: Option<String>,
    /// Severity.
    #[serde(default)]
    pub severity: Option<String>,
    /// Recommended actions.
    #[serde(default)]
    pub recommended_actions: Option<String>,
    /// RBAC group names (JSON list or comma-separated).
    #[serde(default)]
    pub rbac_group_names: Option<String>,
    /// Raise an alert on a match.
    pub generate_alert: bool,
}

impl Action for SubmitIndicator {
    const ID: &'static str = "submit_indicator";
    type Params = SubmitParams;

    async fn run(ctx: ActionContext, p: SubmitParams) -> Result<Outcome, ActionError> {
        let draft = Draft {
            title: ("title", Some(&p.title)),
            description: ("description", Some(&p.description)),
            kind: ("indicator_type", Some(&p.indicator_type)),
            value: ("indicator_value", Some(&p.indicator_value)),
            action: ("action", Some(&p.action)),
            application: ("application", p.application.as_deref()),
            expiration: ("expiration_time", p.expiration_time.as_deref()),
            severity: ("severity", p.severity.as_deref()),
            recommended: ("recommended_actions", p.recommended_actions.as_deref()),
            groups: groups_param("rbac_group_names", p.rbac_group_names.as_deref())?,
            generate_alert: ("generate_alert", p.generate_alert),
        };
        let checked = draft
            .check(OffsetDateTime::now_utc())
            .map_err(ActionError::InvalidParameter)?;
        let call = endpoints::SUBMIT_INDICATOR.at(&[]);
        let indicator = match ctx
            .asset
            .defender
            .post(&call, &Value::Object(checked.body.clone()))
            .await
        {
            Ok(v) => clean(v),
            Err(e) => return failure(e, "submitting the indicator", None),
        };
        let map = indicator.as_object().cloned().unwrap_or_default();
        let id = map.get("id").and_then(Value::as_str).unwrap_or_default();
        let outcome = summary_of(
            Outcome::success(format!(
                "Indicator {id} submitted ({} {}: {})",
                checked.text("indicatorType"),
                checked.text("indicatorValue"),
                checked.text("action")
            )),
            &map,
        );
        Ok(outcome.with_data(indicator))
    }
}

/// `update_indicator`.
pub struct UpdateIndicator;

/// Parameters of `update_indicator` (Splunk's names).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateParams {
    /// Value.
    pub indicator_value: String,
    /// Type.
    pub indicator_type: String,
    /// Action.
    pub action: String,
    /// Severity.
    #[serde(default)]
    pub severity: Option<String>,
    /// Description.
    pub indicator_description: String,
    /// Title.
    pub indicator_title: String,
    /// Expiration time.
    #[serde(default)]
    pub expiration_time: Option<String>,
    /// Application.
    #[serde(default)]
    pub indicator_application: Option<String>,
    /// Recommended actions.
    #[serde(default)]
    pub recommended_actions: Option<String>,
    /// RBAC group names (JSON list or comma-separated).
    #[serde(default)]
    pub rbac_group_names: Option<String>,
    /// Raise an alert on a match.
    pub generate_alert: bool,
}

/// The import results of a call: `value` of `{id, indicator, isFailed, failureReason}`.
fn import_results(answer: &Value) -> Vec<Value> {
    answer
        .get("value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_failed(result: &Value) -> bool {
    result
        .get("isFailed")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn reason_of(result: &Value) -> String {
    let reason = result
        .get("failureReason")
        .and_then(Value::as_str)
        .unwrap_or("Defender gave no reason");
    explain_limit(reason).unwrap_or_else(|| reason.to_string())
}

impl Action for UpdateIndicator {
    const ID: &'static str = "update_indicator";
    type Params = UpdateParams;

    async fn run(ctx: ActionContext, p: UpdateParams) -> Result<Outcome, ActionError> {
        let draft = Draft {
            title: ("indicator_title", Some(&p.indicator_title)),
            description: ("indicator_description", Some(&p.indicator_description)),
            kind: ("indicator_type", Some(&p.indicator_type)),
            value: ("indicator_value", Some(&p.indicator_value)),
            action: ("action", Some(&p.action)),
            application: ("indicator_application", p.indicator_application.as_deref()),
            expiration: ("expiration_time", p.expiration_time.as_deref()),
            severity: ("severity", p.severity.as_deref()),
            recommended: ("recommended_actions", p.recommended_actions.as_deref()),
            groups: groups_param("rbac_group_names", p.rbac_group_names.as_deref())?,
            generate_alert: ("generate_alert", p.generate_alert),
        };
        let checked = draft
            .check(OffsetDateTime::now_utc())
            .map_err(ActionError::InvalidParameter)?;
        let call = endpoints::IMPORT_INDICATORS.at(&[]);
        let body = json!({"Indicators": [Value::Object(checked.body.clone())]});
        let answer = match ctx.asset.defender.post(&call, &body).await {
            Ok(v) => v,
            Err(e) => return failure(e, "updating the indicator", None),
        };
        let result = import_results(&answer)
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        let mut row = Map::new();
        row.insert(
            "id".into(),
            result.get("id").cloned().unwrap_or(Value::Null),
        );
        for key in ["indicatorValue", "indicatorType", "action"] {
            row.insert(key.into(), json!(checked.text(key)));
        }
        row.insert(
            "isFailed".into(),
            json!(is_failed(&result) || result.is_null()),
        );
        let failed_reason = if result.is_null() {
            Some("Defender's answer held no result for the indicator".to_string())
        } else if is_failed(&result) {
            Some(reason_of(&result))
        } else {
            None
        };
        row.insert("failureReason".into(), json!(failed_reason));
        let outcome = match &failed_reason {
            Some(why) => Outcome::failed(format!("Defender refused the indicator: {why}")),
            None => Outcome::success(format!(
                "Indicator {} {} updated ({})",
                checked.text("indicatorType"),
                checked.text("indicatorValue"),
                checked.text("action")
            )),
        };
        Ok(summary_of(outcome, &row).with_data(Value::Object(row)))
    }
}

// --- update_indicator_batch -----------------------------------------------------------------

/// `update_indicator_batch`.
pub struct UpdateIndicatorBatch;

/// Parameters of `update_indicator_batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchParams {
    /// A JSON list of indicator objects in Defender's field names.
    pub indicator_batch: String,
}

/// A field of a batch item under Defender's name, also accepted with a capital first letter.
fn item_field<'a>(item: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    item.get(key)
        .or_else(|| {
            let mut c = key.chars();
            let upper = c
                .next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default();
            item.get(&upper)
        })
        .filter(|v| !v.is_null())
}

/// Checks one batch item (Defender's field names; the messages name the field).
pub fn check_item(item: &Value, now: OffsetDateTime) -> Result<Checked, String> {
    let Some(map) = item.as_object() else {
        return Err("an indicator must be a JSON object".into());
    };
    let text = |key: &'static str| -> Result<Option<&str>, String> {
        match item_field(map, key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("field '{key}' must be a string")),
        }
    };
    let generate_alert = match item_field(map, "generateAlert") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        Some(_) => return Err("field 'generateAlert' must be true or false".into()),
    };
    let groups = match item_field(map, "rbacGroupNames") {
        None => Vec::new(),
        Some(Value::Array(list)) => {
            let names: Option<Vec<String>> = list
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect();
            let names = names
                .ok_or_else(|| "field 'rbacGroupNames' must be a list of strings".to_string())?;
            let joined = serde_json::to_string(&names).unwrap_or_default();
            group_names("rbacGroupNames", &joined)?
        }
        Some(Value::String(s)) => group_names("rbacGroupNames", s)?,
        Some(_) => return Err("field 'rbacGroupNames' must be a list of strings".into()),
    };
    let draft = Draft {
        title: ("title", text("title")?),
        description: ("description", text("description")?),
        kind: ("indicatorType", text("indicatorType")?),
        value: ("indicatorValue", text("indicatorValue")?),
        action: ("action", text("action")?),
        application: ("application", text("application")?),
        expiration: ("expirationTime", text("expirationTime")?),
        severity: ("severity", text("severity")?),
        recommended: ("recommendedActions", text("recommendedActions")?),
        groups,
        generate_alert: ("generateAlert", generate_alert),
    };
    draft
        .check(now)
        .map_err(|m| m.replacen("parameter '", "field '", 1))
}

/// The value and type of an item as given, for its result row.
fn given_identity(item: &Value) -> (Value, Value) {
    let get = |k: &str| {
        item.as_object()
            .and_then(|m| item_field(m, k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    (get("indicatorValue"), get("indicatorType"))
}

impl Action for UpdateIndicatorBatch {
    const ID: &'static str = "update_indicator_batch";
    type Params = BatchParams;

    async fn run(ctx: ActionContext, p: BatchParams) -> Result<Outcome, ActionError> {
        let items: Vec<Value> = serde_json::from_str(p.indicator_batch.trim()).map_err(|_| {
            invalid(
                "indicator_batch",
                "must be a JSON list of indicator objects, such as [{\"indicatorValue\": \
                 \"203.0.113.9\", \"indicatorType\": \"IpAddress\", \"action\": \"Block\", \
                 \"title\": \"C2\", \"description\": \"C2 server\"}]",
            )
        })?;
        if items.is_empty() {
            return Err(invalid("indicator_batch", "the list holds no indicator"));
        }
        let now = OffsetDateTime::now_utc();
        // One row per item, in order; the checked ones wait for their import call.
        let mut rows: Vec<Map<String, Value>> = Vec::with_capacity(items.len());
        let mut to_send: Vec<(usize, Checked)> = Vec::new();
        for (at, item) in items.iter().enumerate() {
            let (value, kind) = given_identity(item);
            let mut row = Map::new();
            row.insert("id".into(), Value::Null);
            row.insert("indicatorValue".into(), value);
            row.insert("indicatorType".into(), kind);
            match check_item(item, now) {
                Ok(checked) => {
                    row.insert(
                        "indicatorValue".into(),
                        json!(checked.text("indicatorValue")),
                    );
                    row.insert("indicatorType".into(), json!(checked.text("indicatorType")));
                    row.insert("isFailed".into(), json!(false));
                    row.insert("failureReason".into(), Value::Null);
                    to_send.push((at, checked));
                }
                Err(why) => {
                    row.insert("isFailed".into(), json!(true));
                    row.insert("failureReason".into(), json!(format!("not sent: {why}")));
                }
            }
            rows.push(row);
        }
        let call = endpoints::IMPORT_INDICATORS.at(&[]);
        let mut sent_any = false;
        for chunk in to_send.chunks(INDICATOR_BATCH_MAX) {
            let body = json!({
                "Indicators": chunk.iter().map(|(_, c)| Value::Object(c.body.clone())).collect::<Vec<_>>()
            });
            match ctx.asset.defender.post(&call, &body).await {
                Ok(answer) => {
                    sent_any = true;
                    let results = import_results(&answer);
                    for (n, (at, _)) in chunk.iter().enumerate() {
                        let row = &mut rows[*at];
                        match results.get(n) {
                            Some(r) if !is_failed(r) => {
                                row.insert(
                                    "id".into(),
                                    r.get("id").cloned().unwrap_or(Value::Null),
                                );
                            }
                            Some(r) => {
                                row.insert("isFailed".into(), json!(true));
                                row.insert("failureReason".into(), json!(reason_of(r)));
                            }
                            None => {
                                row.insert("isFailed".into(), json!(true));
                                row.insert(
                                    "failureReason".into(),
                                    json!("Defender's answer held no result for this indicator"),
                                );
                            }
                        }
                    }
                }
                Err(e) if e.retry_after().is_some() && !sent_any => return Err(e.into()),
                Err(e) => {
                    let why = explain_limit(&e.to_string())
                        .unwrap_or_else(|| format!("the import call failed: {e}"));
                    for (at, _) in chunk {
                        let row = &mut rows[*at];
                        row.insert("isFailed".into(), json!(true));
                        row.insert("failureReason".into(), json!(why));
                    }
                }
            }
        }
        let total = rows.len();
        let failed = rows
            .iter()
            .filter(|r| r.get("isFailed").and_then(Value::as_bool).unwrap_or(true))
            .count();
        let succeeded = total - failed;
        let message = format!("{succeeded} of {total} indicators imported, {failed} failed");
        let outcome = if failed == 0 {
            Outcome::success(message)
        } else {
            Outcome::failed(message)
        };
        let mut outcome = outcome
            .with_summary("total_indicators", total)
            .with_summary("succeeded", succeeded)
            .with_summary("failed", failed);
        outcome.data = rows.into_iter().map(Value::Object).collect();
        Ok(outcome)
    }
}

// --- delete_indicator / delete_indicators ---------------------------------------------------

/// `delete_indicator`.
pub struct DeleteIndicator;

impl Action for DeleteIndicator {
    const ID: &'static str = "delete_indicator";
    type Params = IdParams;

    async fn run(ctx: ActionContext, p: IdParams) -> Result<Outcome, ActionError> {
        let id = indicator_id("indicator_id", &p.indicator_id)?;
        let call = endpoints::DELETE_INDICATOR.at(&[&id]);
        if let Err(e) = ctx.asset.defender.delete(&call).await {
            return failure(e, "deleting the indicator", Some(&id));
        }
        Ok(Outcome::success(format!("Indicator {id} deleted"))
            .with_summary("indicator_id", id.as_str())
            .with_data(json!({"id": id})))
    }
}

/// `delete_indicators`.
pub struct DeleteIndicators;

/// Parameters of `delete_indicators`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteManyParams {
    /// Indicator ids: a JSON list or comma-separated.
    pub indicator_ids: String,
}

impl Action for DeleteIndicators {
    const ID: &'static str = "delete_indicators";
    type Params = DeleteManyParams;

    async fn run(ctx: ActionContext, p: DeleteManyParams) -> Result<Outcome, ActionError> {
        let ids = indicator_ids("indicator_ids", &p.indicator_ids)?;
        let call = endpoints::BATCH_DELETE_INDICATORS.at(&[]);
        if let Err(e) = ctx
            .asset
            .defender
            .post(&call, &json!({"IndicatorIds": ids}))
            .await
        {
            return failure(e, "deleting the indicators", None);
        }
        let n = ids.len();
        let mut outcome = Outcome::success(format!(
            "{n} indicator{} deleted",
            if n == 1 { "" } else { "s" }
        ))
        .with_summary("total_indicators", n);
        outcome.data = ids.into_iter().map(|id| json!({"id": id})).collect();
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        time::macros::datetime!(2026-01-01 00:00 UTC)
    }

    #[test]
    fn values_must_match_their_type() {
        let sha1 = "A".repeat(40);
        assert_eq!(
            indicator_value("v", "FileSha1", &format!(" {sha1} ")).unwrap(),
            "a".repeat(40)
        );
        assert!(indicator_value("v", "FileSha1", &"a".repeat(64)).is_err());
        assert!(indicator_value("v", "FileSha256", &"a".repeat(64)).is_ok());
        assert!(indicator_value("v", "FileMd5", &"a".repeat(32)).is_ok());
        assert!(indicator_value("v", "FileMd5", &"g".repeat(32)).is_err());
        assert!(indicator_value("v", "CertificateThumbprint", &"b".repeat(40)).is_ok());
        assert_eq!(
            indicator_value("v", "IpAddress", "2001:DB8::1").unwrap(),
            "2001:db8::1"
        );
        assert!(indicator_value("v", "IpAddress", "10.0.0.256").is_err());
        assert!(indicator_value("v", "DomainName", "Evil.Example").is_ok());
        assert!(indicator_value("v", "DomainName", "evil example").is_err());
        assert!(indicator_value("v", "Url", "https://evil.example/a?b=c").is_ok());
        assert!(indicator_value("v", "Url", "HTTP://10.0.0.1:8080").is_ok());
        assert!(indicator_value("v", "Url", "ftp://evil.example/").is_err());
        assert!(indicator_value("v", "Url", "https://evil example/").is_err());
        let e = indicator_value("indicator_value", "FileSha256", "abc").unwrap_err();
        assert!(
            e.contains("'indicator_value'") && e.contains("SHA256"),
            "{e}"
        );
    }

    #[test]
    fn expirations_parse_and_lie_ahead() {
        assert_eq!(
            expiration("e", "2030-01-01T00:00:00Z", now()).unwrap(),
            "2030-01-01T00:00:00Z"
        );
        assert_eq!(
            expiration("e", "2030-01-01T02:00:00.5+02:00", now()).unwrap(),
            "2030-01-01T00:00:00Z"
        );
        let e = expiration("expiration_time", "2020-01-01T00:00:00Z", now()).unwrap_err();
        assert!(e.contains("future"), "{e}");
        assert!(expiration("e", "2030-01-01", now()).is_err());
        assert!(expiration("e", "9999-12-31T23:59:59-23:59", now()).is_err());
    }

    #[test]
    fn drafts_check_audit_and_lists() {
        let mut d = Draft {
            title: ("title", Some("t")),
            description: ("description", Some("d")),
            kind: ("indicator_type", Some("ipaddress")),
            value: ("indicator_value", Some("10.0.0.1")),
            action: ("action", Some("audit")),
            generate_alert: ("generate_alert", false),
            ..Draft::default()
        };
        let e = d.check(now()).unwrap_err();
        assert!(e.contains("generate_alert"), "{e}");
        d.generate_alert = ("generate_alert", true);
        let c = d.check(now()).unwrap();
        assert_eq!(c.body["indicatorType"], "IpAddress");
        assert_eq!(c.body["action"], "Audit");
        d.title = ("title", Some("  "));
        assert!(d.check(now()).unwrap_err().contains("'title'"));
    }

    #[test]
    fn batch_items_name_their_field() {
        let item = json!({"indicatorValue": "x", "indicatorType": "FileSha1", "action": "Block",
            "title": "t", "description": "d"});
        let e = check_item(&item, now()).unwrap_err();
        assert!(e.starts_with("field 'indicatorValue'"), "{e}");
        let ok = json!({"IndicatorValue": "10.0.0.1", "indicatorType": "IpAddress",
            "action": "block", "title": "t", "description": "d", "rbacGroupNames": ["a", " "]});
        let c = check_item(&ok, now()).unwrap();
        assert_eq!(c.body["rbacGroupNames"], json!(["a"]));
        assert!(check_item(&json!(3), now()).is_err());
    }

    #[test]
    fn ids_and_limit_messages() {
        assert_eq!(
            indicator_ids("ids", "[1, \"2\", 1]").unwrap(),
            vec!["1", "2"]
        );
        assert!(indicator_ids("ids", "1,a").is_err());
        let many: Vec<String> = (0..501).map(|i| i.to_string()).collect();
        assert!(
            indicator_ids("ids", &many.join(","))
                .unwrap_err()
                .to_string()
                .contains("501")
        );
        assert!(explain_limit("Max capacity exceeded: 15000 active indicators").is_some());
        assert!(explain_limit("indicatorValue is required").is_none());
    }
}
