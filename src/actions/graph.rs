//! Microsoft Graph security alerts (`/security/alerts_v2`) and incidents
//! (`/security/incidents`): `list_graph_alerts`, `get_graph_alert`, `update_graph_alert`,
//! `list_incidents`, `get_incident`, `update_incident`.
//!
//! Enum parameters carry Graph's camelCase spelling (the validator hands it over whatever the
//! caller's letter case); every OData filter is built with [`Filter`], so no caller text becomes
//! OData syntax; the asset's triage filters apply to every list.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::triage::{self, IGNORED_SUMMARY_KEY};
use super::{Action, ActionContext, HandlerFn, erase};
use crate::defender::odata::Filter;
use crate::defender::{DefenderError, ListQuery, endpoints};
use crate::envelope::{ActionError, Outcome};

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<ListGraphAlerts>(),
        erase::<GetGraphAlert>(),
        erase::<UpdateGraphAlert>(),
        erase::<ListIncidents>(),
        erase::<GetIncident>(),
        erase::<UpdateIncident>(),
    ]
}

/// The filters shared by `list_graph_alerts` and `list_incidents`.
#[derive(Debug, Default)]
pub struct ListFilters<'a> {
    /// `status eq`.
    pub status: Option<&'a str>,
    /// `severity eq`.
    pub severity: Option<&'a str>,
    /// `serviceSource eq` (alerts only).
    pub service_source: Option<&'a str>,
    /// `classification eq`.
    pub classification: Option<&'a str>,
    /// `determination eq`.
    pub determination: Option<&'a str>,
    /// `assignedTo eq`.
    pub assigned_to: Option<&'a str>,
    /// `createdDateTime ge`.
    pub created_since: Option<&'a str>,
    /// `lastUpdateDateTime ge`.
    pub updated_since: Option<&'a str>,
}

/// The OData filter of a list: each given filter, and `createdDateTime ge <start>` for the
/// asset's look-back window; `None` when nothing narrows the list.
pub fn list_filter(
    f: &ListFilters<'_>,
    triage_filters: &crate::config::TriageFilters,
    now: OffsetDateTime,
) -> Result<Option<Filter>, ActionError> {
    let mut parts = Vec::new();
    let given = |v: Option<&str>| {
        v.map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    for (field, value) in [
        ("status", f.status),
        ("severity", f.severity),
        ("serviceSource", f.service_source),
        ("classification", f.classification),
        ("determination", f.determination),
        ("assignedTo", f.assigned_to),
    ] {
        if let Some(v) = given(value) {
            parts.push(Filter::eq(field, &v));
        }
    }
    if let Some(v) = given(f.created_since) {
        parts.push(Filter::ge_datetime(
            "createdDateTime",
            super::alerts::moment("created_since", &v)?,
        ));
    }
    if let Some(v) = given(f.updated_since) {
        parts.push(Filter::ge_datetime(
            "lastUpdateDateTime",
            super::alerts::moment("updated_since", &v)?,
        ));
    }
    if let Some(start) = triage::lookback_start(triage_filters, now)
        && let Ok(at) = OffsetDateTime::parse(&start, &Rfc3339)
    {
        parts.push(Filter::ge_datetime("createdDateTime", at));
    }
    Ok(parts.into_iter().reduce(Filter::and))
}

/// An upstream failure as the envelope says it (see [`super::listing::failure`]).
fn upstream(e: DefenderError, what: &str, not_found: Option<&str>) -> Result<Outcome, ActionError> {
    super::listing::failure(e, what, not_found)
}

/// A Graph list the asset's triage filters apply to: what to call, its page limit, and the
/// words and summary key of the answer.
struct Listing {
    endpoint: &'static endpoints::Endpoint,
    max_top: usize,
    one: &'static str,
    many: &'static str,
    total_key: &'static str,
}

impl Listing {
    /// Lists up to `limit` records with `query`, leaves out what the triage filters ignore,
    /// and answers the records with their count and the ignored count.
    async fn run(
        &self,
        ctx: &ActionContext,
        query: &ListQuery,
        limit: u64,
    ) -> Result<Outcome, ActionError> {
        let call = self.endpoint.at(&[]);
        let records = match ctx
            .asset
            .graph
            .list_with_page_size(&call, query, limit_of(limit), self.max_top)
            .await
        {
            Ok(r) => r,
            Err(e) => return upstream(e, &format!("listing {}", self.many), None),
        };
        let (kept, ignored) = triage::apply(&ctx.asset.config.triage, records);
        let kept: Vec<Value> = kept.into_iter().filter(Value::is_object).collect();
        let mut outcome = Outcome::success(super::listing::found(kept.len(), self.one, self.many))
            .with_summary(self.total_key, kept.len())
            .with_summary(IGNORED_SUMMARY_KEY, ignored);
        outcome.data = kept;
        Ok(outcome)
    }
}

fn limit_of(limit: u64) -> usize {
    usize::try_from(limit).unwrap_or(usize::MAX)
}

fn count_of(record: &Value, key: &str) -> usize {
    record
        .get(key)
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
}

fn status_of(record: &Value) -> Value {
    record.get("status").cloned().unwrap_or(Value::Null)
}

// --- Alerts ---------------------------------------------------------------------------------

/// Lists Graph alerts.
pub struct ListGraphAlerts;

/// Parameters of `list_graph_alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListAlertsParams {
    /// Status.
    #[serde(default)]
    pub status: Option<String>,
    /// Severity.
    #[serde(default)]
    pub severity: Option<String>,
    /// Service source.
    #[serde(default)]
    pub service_source: Option<String>,
    /// Classification.
    #[serde(default)]
    pub classification: Option<String>,
    /// Determination.
    #[serde(default)]
    pub determination: Option<String>,
    /// Assigned user.
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// Created at or after.
    #[serde(default)]
    pub created_since: Option<String>,
    /// Updated at or after.
    #[serde(default)]
    pub updated_since: Option<String>,
    /// Maximum alerts returned.
    pub limit: u64,
}

impl Action for ListGraphAlerts {
    const ID: &'static str = "list_graph_alerts";
    type Params = ListAlertsParams;

    async fn run(ctx: ActionContext, p: ListAlertsParams) -> Result<Outcome, ActionError> {
        let triage_filters = &ctx.asset.config.triage;
        let filter = list_filter(
            &ListFilters {
                status: p.status.as_deref(),
                severity: p.severity.as_deref(),
                service_source: p.service_source.as_deref(),
                classification: p.classification.as_deref(),
                determination: p.determination.as_deref(),
                assigned_to: p.assigned_to.as_deref(),
                created_since: p.created_since.as_deref(),
                updated_since: p.updated_since.as_deref(),
            },
            triage_filters,
            OffsetDateTime::now_utc(),
        )?;
        let mut query = ListQuery::new();
        if let Some(f) = filter {
            query = query.filter(f);
        }
        let listing = Listing {
            endpoint: &endpoints::GRAPH_ALERTS,
            max_top: endpoints::GRAPH_ALERTS_MAX_TOP,
            one: "alert",
            many: "alerts",
            total_key: "total_alerts",
        };
        listing.run(&ctx, &query, p.limit).await
    }
}

/// Gets one Graph alert.
pub struct GetGraphAlert;

/// Parameters of `get_graph_alert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetAlertParams {
    /// The alert id.
    pub alert_id: String,
}

impl Action for GetGraphAlert {
    const ID: &'static str = "get_graph_alert";
    type Params = GetAlertParams;

    async fn run(ctx: ActionContext, p: GetAlertParams) -> Result<Outcome, ActionError> {
        let id = p.alert_id.trim();
        let call = endpoints::GRAPH_ALERT.at(&[id]);
        let alert = match ctx.asset.graph.get(&call).await {
            Ok(a) => a,
            Err(e) => return upstream(e, "reading the alert", Some(&format!("alert '{id}'"))),
        };
        Ok(Outcome::success(format!("Read alert {id}"))
            .with_summary("alert_id", id)
            .with_summary("status", status_of(&alert))
            .with_summary("total_evidence", count_of(&alert, "evidence"))
            .with_data(without_context(alert)))
    }
}

/// Drops `@odata.context` from a single-record answer.
fn without_context(mut record: Value) -> Value {
    if let Some(o) = record.as_object_mut() {
        o.remove("@odata.context");
    }
    record
}

/// Updates a Graph alert.
pub struct UpdateGraphAlert;

/// Parameters of `update_graph_alert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateAlertParams {
    /// The alert id.
    pub alert_id: String,
    /// New status.
    #[serde(default)]
    pub status: Option<String>,
    /// New classification.
    #[serde(default)]
    pub classification: Option<String>,
    /// New determination.
    #[serde(default)]
    pub determination: Option<String>,
    /// New assignee.
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// Comment to add.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Adds the non-blank values to a PATCH body.
fn patch_body(fields: &[(&str, Option<&str>)]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|(k, v)| {
            v.map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| ((*k).to_string(), json!(s)))
        })
        .collect()
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// An update of one Graph record (alert or incident): its endpoints and the words of the
/// answer.
struct Updated {
    record: &'static endpoints::Endpoint,
    update: &'static endpoints::Endpoint,
    comments: &'static endpoints::Endpoint,
    noun: &'static str,
    id_key: &'static str,
    /// The parameters that count as a change, for the message when none is given.
    fields: &'static str,
}

impl Updated {
    /// Applies `body` and `comment` to record `id` (400 when both are empty) and answers the
    /// record with its status and comment count.
    async fn run(
        &self,
        ctx: &ActionContext,
        id: &str,
        body: Map<String, Value>,
        comment: Option<&str>,
    ) -> Result<Outcome, ActionError> {
        if body.is_empty() && comment.is_none() {
            return Err(ActionError::InvalidParameter(format!(
                "nothing to update: give at least one of {}",
                self.fields
            )));
        }
        let record = match patch_and_comment(
            ctx,
            self.record.at(&[id]),
            self.update.at(&[id]),
            self.comments.at(&[id]),
            body,
            comment,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                let which = format!("{} '{id}'", self.noun);
                return upstream(e, &format!("updating the {}", self.noun), Some(&which));
            }
        };
        Ok(Outcome::success(format!("Updated {} {id}", self.noun))
            .with_summary(self.id_key, id)
            .with_summary("status", status_of(&record))
            .with_summary("total_comments", count_of(&record, "comments"))
            .with_data(record))
    }
}

/// PATCHes `body` (when not empty), then posts `comment` (when given); answers the record
/// with its comments.
async fn patch_and_comment(
    ctx: &ActionContext,
    record_call: crate::defender::endpoints::Call,
    patch_call: crate::defender::endpoints::Call,
    comments_call: crate::defender::endpoints::Call,
    body: Map<String, Value>,
    comment: Option<&str>,
) -> Result<Value, DefenderError> {
    let graph = &ctx.asset.graph;
    let mut record = if body.is_empty() {
        None
    } else {
        Some(graph.patch(&patch_call, &Value::Object(body)).await?)
    };
    if let Some(comment) = comment {
        let answer = graph
            .post(
                &comments_call,
                &json!({"@odata.type": "microsoft.graph.security.alertComment", "comment": comment}),
            )
            .await?;
        let mut current = match record.take() {
            Some(r) => r,
            None => graph.get(&record_call).await?,
        };
        if let (Some(obj), Some(list)) = (current.as_object_mut(), answer.get("value")) {
            obj.insert("comments".into(), list.clone());
        }
        record = Some(current);
    }
    Ok(without_context(record.unwrap_or(Value::Null)))
}

impl Action for UpdateGraphAlert {
    const ID: &'static str = "update_graph_alert";
    type Params = UpdateAlertParams;

    async fn run(ctx: ActionContext, p: UpdateAlertParams) -> Result<Outcome, ActionError> {
        let id = p.alert_id.trim().to_string();
        let body = patch_body(&[
            ("status", p.status.as_deref()),
            ("classification", p.classification.as_deref()),
            ("determination", p.determination.as_deref()),
            ("assignedTo", p.assigned_to.as_deref()),
        ]);
        let updated = Updated {
            record: &endpoints::GRAPH_ALERT,
            update: &endpoints::UPDATE_GRAPH_ALERT,
            comments: &endpoints::GRAPH_ALERT_COMMENTS,
            noun: "alert",
            id_key: "alert_id",
            fields: "status, classification, determination, assigned_to, comment",
        };
        updated.run(&ctx, &id, body, given(&p.comment)).await
    }
}

// --- Incidents ------------------------------------------------------------------------------

/// Lists incidents.
pub struct ListIncidents;

/// Parameters of `list_incidents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListIncidentsParams {
    /// Status.
    #[serde(default)]
    pub status: Option<String>,
    /// Severity.
    #[serde(default)]
    pub severity: Option<String>,
    /// Classification.
    #[serde(default)]
    pub classification: Option<String>,
    /// Determination.
    #[serde(default)]
    pub determination: Option<String>,
    /// Assigned user.
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// Created at or after.
    #[serde(default)]
    pub created_since: Option<String>,
    /// Updated at or after.
    #[serde(default)]
    pub updated_since: Option<String>,
    /// Embed the alerts.
    pub expand_alerts: bool,
    /// Maximum incidents returned.
    pub limit: u64,
}

impl Action for ListIncidents {
    const ID: &'static str = "list_incidents";
    type Params = ListIncidentsParams;

    async fn run(ctx: ActionContext, p: ListIncidentsParams) -> Result<Outcome, ActionError> {
        let triage_filters = &ctx.asset.config.triage;
        let filter = list_filter(
            &ListFilters {
                status: p.status.as_deref(),
                severity: p.severity.as_deref(),
                service_source: None,
                classification: p.classification.as_deref(),
                determination: p.determination.as_deref(),
                assigned_to: p.assigned_to.as_deref(),
                created_since: p.created_since.as_deref(),
                updated_since: p.updated_since.as_deref(),
            },
            triage_filters,
            OffsetDateTime::now_utc(),
        )?;
        let mut query = ListQuery::new();
        if let Some(f) = filter {
            query = query.filter(f);
        }
        if p.expand_alerts {
            query = query.expand("alerts");
        }
        let listing = Listing {
            endpoint: &endpoints::GRAPH_INCIDENTS,
            max_top: endpoints::GRAPH_INCIDENTS_MAX_TOP,
            one: "incident",
            many: "incidents",
            total_key: "total_incidents",
        };
        listing.run(&ctx, &query, p.limit).await
    }
}

/// Gets one incident with its alerts.
pub struct GetIncident;

/// Parameters of `get_incident`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetIncidentParams {
    /// The incident id (digits).
    pub incident_id: String,
}

impl Action for GetIncident {
    const ID: &'static str = "get_incident";
    type Params = GetIncidentParams;

    async fn run(ctx: ActionContext, p: GetIncidentParams) -> Result<Outcome, ActionError> {
        let id = incident_id(&p.incident_id)?;
        let call = endpoints::GRAPH_INCIDENT.at(&[&id]);
        let incident = match ctx.asset.graph.get_expanded(&call, Some("alerts")).await {
            Ok(i) => i,
            Err(e) => {
                return upstream(e, "reading the incident", Some(&format!("incident {id}")));
            }
        };
        Ok(Outcome::success(format!("Read incident {id}"))
            .with_summary("incident_id", id.as_str())
            .with_summary("status", status_of(&incident))
            .with_summary("total_alerts", count_of(&incident, "alerts"))
            .with_data(without_context(incident)))
    }
}

/// An incident id: digits only (the definition's pattern says so too; checked again here).
fn incident_id(text: &str) -> Result<String, ActionError> {
    let id = text.trim();
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ActionError::InvalidParameter(format!(
            "parameter 'incident_id': '{}' is not an incident id (digits only)",
            super::truncate(id, 64)
        )));
    }
    Ok(id.to_string())
}

/// `custom_tags`: a JSON list of strings or a comma-separated list; blanks dropped.
pub fn parse_tags(text: &str) -> Result<Vec<String>, ActionError> {
    let bad = |why: &str| ActionError::InvalidParameter(format!("parameter 'custom_tags': {why}"));
    let t = text.trim();
    let tags: Vec<String> = if t.starts_with('[') {
        serde_json::from_str::<Vec<String>>(t)
            .map_err(|_| bad("a list must be a JSON list of strings, such as [\"a\", \"b\"]"))?
    } else {
        t.split(',').map(str::to_string).collect()
    };
    if tags.iter().any(|s| s.chars().any(char::is_control)) {
        return Err(bad("a tag contains a control character"));
    }
    if tags.iter().any(|s| s.chars().count() > 200) {
        return Err(bad("a tag is longer than 200 characters"));
    }
    Ok(tags
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Updates an incident.
pub struct UpdateIncident;

/// Parameters of `update_incident`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateIncidentParams {
    /// The incident id.
    pub incident_id: String,
    /// New status.
    #[serde(default)]
    pub status: Option<String>,
    /// New assignee.
    #[serde(default)]
    pub assigned_to: Option<String>,
    /// New classification.
    #[serde(default)]
    pub classification: Option<String>,
    /// New determination.
    #[serde(default)]
    pub determination: Option<String>,
    /// Custom tags (comma-separated or a JSON list).
    #[serde(default)]
    pub custom_tags: Option<String>,
    /// Comment to add.
    #[serde(default)]
    pub comment: Option<String>,
}

impl Action for UpdateIncident {
    const ID: &'static str = "update_incident";
    type Params = UpdateIncidentParams;

    async fn run(ctx: ActionContext, p: UpdateIncidentParams) -> Result<Outcome, ActionError> {
        let id = incident_id(&p.incident_id)?;
        let mut body = patch_body(&[
            ("status", p.status.as_deref()),
            ("assignedTo", p.assigned_to.as_deref()),
            ("classification", p.classification.as_deref()),
            ("determination", p.determination.as_deref()),
        ]);
        if let Some(tags) = given(&p.custom_tags) {
            body.insert("customTags".into(), json!(parse_tags(tags)?));
        }
        let updated = Updated {
            record: &endpoints::GRAPH_INCIDENT,
            update: &endpoints::UPDATE_GRAPH_INCIDENT,
            comments: &endpoints::GRAPH_INCIDENT_COMMENTS,
            noun: "incident",
            id_key: "incident_id",
            fields: "status, assigned_to, classification, determination, custom_tags, comment",
        };
        updated.run(&ctx, &id, body, given(&p.comment)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TriageFilters;

    #[test]
    fn filters_quote_values_and_refuse_bad_times() {
        let now = OffsetDateTime::from_unix_timestamp(1_764_374_400).unwrap();
        let f = list_filter(
            &ListFilters {
                status: Some("new"),
                assigned_to: Some("x' or 1 eq 1 or assignedTo eq 'y"),
                created_since: Some("2025-11-01"),
                ..ListFilters::default()
            },
            &TriageFilters {
                lookback_days: Some(7),
                ..TriageFilters::default()
            },
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            f.as_str(),
            "status eq 'new' and assignedTo eq 'x'' or 1 eq 1 or assignedTo eq ''y' \
             and createdDateTime ge 2025-11-01T00:00:00Z \
             and createdDateTime ge 2025-11-22T00:00:00Z"
        );
        for bad in [
            "yesterday",
            "2025-11-01T00:00:00Z&$top=1",
            "2025-13-01",
            "' or 1 eq 1",
        ] {
            let e = list_filter(
                &ListFilters {
                    updated_since: Some(bad),
                    ..ListFilters::default()
                },
                &TriageFilters::default(),
                now,
            )
            .unwrap_err();
            assert!(e.to_string().contains("'updated_since'"), "{e}");
        }
        assert_eq!(
            list_filter(&ListFilters::default(), &TriageFilters::default(), now).unwrap(),
            None
        );
    }

    #[test]
    fn tags_and_incident_ids() {
        assert_eq!(parse_tags(" a, b ,,c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(parse_tags(r#"["x, y", "z"]"#).unwrap(), vec!["x, y", "z"]);
        assert!(parse_tags("[1, 2]").is_err());
        assert!(parse_tags("a\u{7}b").is_err());
        assert_eq!(incident_id(" 123 ").unwrap(), "123");
        for bad in ["12a", "", "1/2", "-1", "123456789012345678901"] {
            assert!(incident_id(bad).is_err(), "{bad}");
        }
    }
}
