//! Advanced hunting: `run_query` (KQL on Microsoft Graph or on Defender's older API),
//! `run_hunting_template` (a shipped template with a checked entity substituted) and
//! `list_hunting_templates`.
//!
//! Graph is used when its token carries `ThreatHunting.Read.All`, else Defender's API when
//! its token carries `AdvancedQuery.Read.All`; `api` picks one explicitly. Both draw on the
//! asset's hunting budget (45 queries a minute, 1,500 an hour). The answer is read keeping
//! only the rows the caller asked for ([`HuntingAnswer::parse`]); the asset's
//! `hunting_ignore_fields` are dropped from the rows and its `hunting_summary_fields` (or a
//! template's own) highlighted in the summary.

pub mod templates;

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Action, ActionContext, HandlerFn, erase};
use crate::auth::{AuthError, satisfies};
use crate::defender::hunting::{self, HuntingAnswer, HuntingApi};
use crate::defender::kql::{EntityType, Lookback, Parsed};
use crate::defender::{DefenderClient, DefenderError, endpoints};
use crate::envelope::{ActionError, Outcome};

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<RunQuery>(),
        erase::<RunHuntingTemplate>(),
        erase::<ListHuntingTemplates>(),
    ]
}

/// `api` of the hunting actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiChoice {
    /// Microsoft Graph `runHuntingQuery`.
    Graph,
    /// Defender for Endpoint `advancedqueries/run`.
    Mde,
}

/// Values of the summary-highlighted columns shown per column.
const HIGHLIGHTS_PER_FIELD: usize = 5;
/// Default rows returned in `data`.
const DEFAULT_LIMIT: u64 = 1_000;
/// Default seconds a query may take.
const DEFAULT_TIMEOUT: u64 = 200;

/// What one query needs besides its text.
struct QueryRun<'a> {
    api: Option<ApiChoice>,
    timespan: Option<Lookback>,
    limit: usize,
    timeout_secs: u64,
    summary_fields: &'a [String],
    /// The query's own period (templates): applied on both APIs, so never "not applied".
    period_in_query: bool,
    /// Said after the result (a clamped period).
    note: Option<String>,
}

/// The API a query runs on: the caller's choice, else Graph when its token allows hunting,
/// else Defender's. A token that lacks the permission fails naming it (no API call).
async fn choose_api(
    ctx: &ActionContext,
    choice: Option<ApiChoice>,
) -> Result<Result<HuntingApi, Outcome>, ActionError> {
    let graph_permission = endpoints::RUN_HUNTING_QUERY.permission;
    let mde_permission = endpoints::ADVANCED_QUERIES.permission;
    let check = async |api: HuntingApi| -> Result<Option<Outcome>, ActionError> {
        let (tokens, permission) = match api {
            HuntingApi::Graph => (&ctx.asset.graph_tokens, graph_permission),
            HuntingApi::Mde => (&ctx.asset.tokens, mde_permission),
        };
        let token = tokens.token().await.map_err(auth_failure)?;
        Ok(tokens
            .check_permissions(&ctx.definition.id, &[permission.to_string()], &token)
            .map(|denied| denied.outcome()))
    };
    match choice {
        Some(ApiChoice::Graph) => Ok(match check(HuntingApi::Graph).await? {
            Some(denied) => Err(denied),
            None => Ok(HuntingApi::Graph),
        }),
        Some(ApiChoice::Mde) => Ok(match check(HuntingApi::Mde).await? {
            Some(denied) => Err(denied),
            None => Ok(HuntingApi::Mde),
        }),
        None => {
            // Graph first: it is Microsoft's current hunting API.
            let graph = match ctx.asset.graph_tokens.token().await {
                Ok(token) => {
                    let grants = token.grants();
                    !grants.decoded || satisfies(&grants.permissions, graph_permission)
                }
                Err(e) if e.action_error().is_some() => return Err(auth_failure(e)),
                Err(e) => {
                    tracing::debug!(error = %e, "no Graph token for hunting; trying Defender's API");
                    false
                }
            };
            if graph {
                return Ok(Ok(HuntingApi::Graph));
            }
            Ok(match check(HuntingApi::Mde).await? {
                Some(_) => Err(Outcome::failed(format!(
                    "neither token allows advanced hunting: grant {graph_permission} (Microsoft \
                     Graph, preferred) or {mde_permission} (Defender for Endpoint API) to the \
                     app registration, then run the action again"
                ))
                .with_summary(
                    "missing_permissions",
                    json!([graph_permission, mde_permission]),
                )),
                None => Ok(HuntingApi::Mde),
            })
        }
    }
}

/// A token failure as the action answers it: consent needed (409) and broken state files
/// (500) as themselves, anything else as a failure of the action.
fn auth_failure(e: AuthError) -> ActionError {
    e.action_error()
        .unwrap_or_else(|| ActionError::Failed(format!("no access token: {e}")))
}

/// Runs `query` and answers the envelope's outcome.
async fn run(ctx: &ActionContext, query: &str, how: QueryRun<'_>) -> Result<Outcome, ActionError> {
    let api = match choose_api(ctx, how.api).await? {
        Ok(api) => api,
        Err(denied) => return Ok(denied),
    };
    let timeout = Duration::from_secs(how.timeout_secs);
    let (client, call, body, timespan_applied): (&DefenderClient, _, _, _) = match api {
        HuntingApi::Graph => {
            let span = how.timespan.unwrap_or(Lookback::MAX);
            (
                &ctx.asset.graph,
                endpoints::RUN_HUNTING_QUERY.at(&[]),
                json!({"Query": query, "Timespan": span.iso8601()}),
                Some(span),
            )
        }
        HuntingApi::Mde => (
            &ctx.asset.defender,
            endpoints::ADVANCED_QUERIES.at(&[]),
            json!({"Query": query}),
            None,
        ),
    };
    // Budget waits are bounded by the asset's longest wait (a burst past 45 queries a minute
    // answers 503 with Retry-After instead of holding the caller); the query by `timeout`.
    let client = client.with_request_timeout(timeout);
    ctx.progress(&format!("running the query on {}", describe(api)));
    let limit = how.limit;
    let answer = match client
        .post_parsed(&call, &body, move |r| HuntingAnswer::read(r, limit))
        .await
    {
        Ok(a) => a,
        Err(DefenderError::Decode(e)) => {
            return Err(ActionError::Upstream(format!(
                "{} answered the query with something that is not a hunting result: {e}",
                describe(api)
            )));
        }
        Err(e) => {
            if e.retry_after().is_some() {
                return Err(e.into());
            }
            let message = hunting::explain(&e, api, how.timeout_secs)
                .unwrap_or_else(|| format!("running the query on {} failed: {e}", describe(api)));
            return Ok(Outcome::failed(message).with_summary("api", api.name()));
        }
    };
    let execution_time = answer.execution_time();
    let cpu_time = answer.cpu_time();
    let ignore = &ctx.asset.config.hunting.ignore_fields;
    let ignored = |name: &str| ignore.iter().any(|f| f.eq_ignore_ascii_case(name));
    let columns: Vec<Value> = answer
        .columns
        .iter()
        .filter(|c| !ignored(&c.name))
        .map(|c| json!({"name": c.name, "type": c.column_type}))
        .collect();
    let rows: Vec<Value> = answer
        .rows
        .into_iter()
        .map(|mut row| {
            row.retain(|k, _| !ignored(k));
            Value::Object(row)
        })
        .collect();
    let highlights = highlights(&rows, how.summary_fields);
    let returned = rows.len();
    let truncated = answer.total_rows > returned;
    let mut message = match answer.total_rows {
        0 => format!("The query on {} returned no rows", describe(api)),
        1 => format!("The query on {} returned 1 row", describe(api)),
        n => format!("The query on {} returned {n} rows", describe(api)),
    };
    if truncated {
        message.push_str(&format!(
            "; the first {returned} are in data (raise limit, up to {}, for more)",
            hunting::MAX_ROWS
        ));
    }
    if let Some(note) = &how.note {
        message.push_str(note);
    }
    if how.timespan.is_some() && timespan_applied.is_none() && !how.period_in_query {
        message.push_str(
            "; timespan was not applied: Defender's API always searches the last 30 days",
        );
    }
    let mut outcome = Outcome::success(message)
        .with_summary("total_results", answer.total_rows)
        .with_summary("rows_returned", returned)
        .with_summary("truncated", truncated)
        .with_summary("api", api.name())
        .with_summary("columns", columns);
    if let Some(span) = timespan_applied {
        outcome = outcome.with_summary("timespan", span.iso8601());
    }
    if !highlights.is_empty() {
        outcome = outcome.with_summary("highlights", highlights);
    }
    if let Some(secs) = execution_time {
        outcome = outcome.with_summary("execution_time_secs", secs);
    }
    if let Some(cpu) = cpu_time {
        outcome = outcome.with_summary("cpu_time", cpu);
    }
    outcome.data = rows;
    Ok(outcome)
}

fn describe(api: HuntingApi) -> &'static str {
    match api {
        HuntingApi::Graph => "Microsoft Graph",
        HuntingApi::Mde => "the Defender for Endpoint API",
    }
}

/// For each of `fields` present in the rows (compared ignoring case): its first distinct
/// non-empty values, in row order.
fn highlights(rows: &[Value], fields: &[String]) -> Map<String, Value> {
    let mut out = Map::new();
    for field in fields {
        let mut values: Vec<Value> = Vec::new();
        let mut name = None;
        for row in rows {
            let Some((key, value)) = row
                .as_object()
                .and_then(|r| r.iter().find(|(k, _)| k.eq_ignore_ascii_case(field)))
            else {
                continue;
            };
            name.get_or_insert_with(|| key.clone());
            let empty = value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty());
            if !empty && !values.contains(value) {
                values.push(value.clone());
                if values.len() == HIGHLIGHTS_PER_FIELD {
                    break;
                }
            }
        }
        if let Some(name) = name {
            out.insert(name, Value::Array(values));
        }
    }
    out
}

/// The `timespan` parameter: `None` when not given.
fn timespan_of(text: Option<&str>) -> Result<Option<Parsed>, ActionError> {
    text.map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            Lookback::parse(t).map_err(|e| ActionError::InvalidParameter(format!("timespan: {e}")))
        })
        .transpose()
}

/// What the message says about a period that was brought into range.
fn clamp_note(parsed: Option<Parsed>) -> Option<String> {
    let parsed = parsed?;
    let given = parsed.clamped_from?;
    Some(format!(
        "; timespan {} s was brought to {} ({})",
        given,
        parsed.lookback.iso8601(),
        if given > parsed.lookback.seconds() {
            "advanced hunting keeps 30 days of data"
        } else {
            "the shortest period is one minute"
        }
    ))
}

fn limit_of(limit: Option<u64>) -> usize {
    usize::try_from(limit.unwrap_or(DEFAULT_LIMIT)).unwrap_or(usize::MAX)
}

// --- run_query --------------------------------------------------------------------------------

/// Runs a KQL query.
pub struct RunQuery;

/// Parameters of `run_query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunQueryParams {
    /// The KQL query.
    pub query: String,
    /// `graph` or `mde`; default Graph when its token allows hunting.
    #[serde(default)]
    pub api: Option<ApiChoice>,
    /// ISO 8601 period for Graph (default P30D).
    #[serde(default)]
    pub timespan: Option<String>,
    /// Rows returned in `data`.
    #[serde(default)]
    pub limit: Option<u64>,
    /// Seconds the query may take.
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl Action for RunQuery {
    const ID: &'static str = "run_query";
    type Params = RunQueryParams;

    async fn run(ctx: ActionContext, p: RunQueryParams) -> Result<Outcome, ActionError> {
        let query = p.query.trim();
        if query.is_empty() {
            return Err(ActionError::InvalidParameter(
                "query: the KQL query is empty".into(),
            ));
        }
        let parsed = timespan_of(p.timespan.as_deref())?;
        if parsed.is_some() && p.api == Some(ApiChoice::Mde) {
            return Err(ActionError::InvalidParameter(
                "timespan: only api=graph takes a timespan; Defender's API always searches the \
                 last 30 days (filter with `| where Timestamp > ago(7d)` in the query instead)"
                    .into(),
            ));
        }
        let summary_fields = ctx.asset.config.hunting.summary_fields.clone();
        run(
            &ctx,
            query,
            QueryRun {
                api: p.api,
                timespan: parsed.map(|p| p.lookback),
                limit: limit_of(p.limit),
                timeout_secs: p.timeout.unwrap_or(DEFAULT_TIMEOUT),
                summary_fields: &summary_fields,
                period_in_query: false,
                note: clamp_note(parsed),
            },
        )
        .await
    }
}

// --- run_hunting_template ----------------------------------------------------------------------

/// Runs a hunting template for one entity.
pub struct RunHuntingTemplate;

/// Parameters of `run_hunting_template`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunHuntingTemplateParams {
    /// The template's name (`list_hunting_templates`).
    pub template: String,
    /// The entity looked for.
    pub entity: String,
    /// Its type, when the template takes several and the value could be more than one.
    #[serde(default)]
    pub entity_type: Option<EntityType>,
    /// ISO 8601 period (default P30D).
    #[serde(default)]
    pub timespan: Option<String>,
    /// Rows returned in `data`.
    #[serde(default)]
    pub limit: Option<u64>,
    /// `graph` or `mde`.
    #[serde(default)]
    pub api: Option<ApiChoice>,
    /// Seconds the query may take.
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl Action for RunHuntingTemplate {
    const ID: &'static str = "run_hunting_template";
    type Params = RunHuntingTemplateParams;

    async fn run(ctx: ActionContext, p: RunHuntingTemplateParams) -> Result<Outcome, ActionError> {
        let Some(template) = templates::find(&p.template) else {
            let names: Vec<&str> = templates::templates()
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            return Err(ActionError::InvalidParameter(format!(
                "template: no template named {:?}; one of {}",
                super::truncate(p.template.trim(), 64),
                names.join(", ")
            )));
        };
        let ty = template
            .entity_type(&p.entity, p.entity_type)
            .map_err(ActionError::InvalidParameter)?;
        let parsed = timespan_of(p.timespan.as_deref())?;
        let lookback = parsed.map_or(Lookback::MAX, |p| p.lookback);
        let query = template
            .render(&p.entity, ty, lookback)
            .map_err(ActionError::InvalidParameter)?;
        let configured = &ctx.asset.config.hunting.summary_fields;
        let summary_fields = if configured.is_empty() {
            template.summary_fields.clone()
        } else {
            configured.clone()
        };
        let outcome = run(
            &ctx,
            &query,
            QueryRun {
                api: p.api,
                timespan: Some(lookback),
                limit: limit_of(p.limit),
                timeout_secs: p.timeout.unwrap_or(DEFAULT_TIMEOUT),
                summary_fields: &summary_fields,
                period_in_query: true,
                note: clamp_note(parsed),
            },
        )
        .await?;
        Ok(outcome
            .with_summary("template", template.name.clone())
            .with_summary("entity_type", ty.name()))
    }
}

// --- list_hunting_templates --------------------------------------------------------------------

/// Lists the hunting templates.
pub struct ListHuntingTemplates;

/// Parameters of `list_hunting_templates` (none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

impl Action for ListHuntingTemplates {
    const ID: &'static str = "list_hunting_templates";
    type Params = NoParams;

    async fn run(_ctx: ActionContext, _p: NoParams) -> Result<Outcome, ActionError> {
        let all = templates::templates();
        let mut outcome = Outcome::success(format!("{} hunting templates", all.len()))
            .with_summary("total_templates", all.len());
        for t in all {
            let types: Vec<&str> = t.entity_types.iter().map(|t| t.name()).collect();
            outcome = outcome.with_data(json!({
                "name": t.name,
                "title": t.title,
                "description": t.description,
                "entity_types": types,
                "summary_fields": t.summary_fields,
                "parameters": {
                    "template": t.name,
                    "entity": format!("the entity: {}", t.entity_types.iter().map(|t| t.shape()).collect::<Vec<_>>().join(", or ")),
                    "entity_type": types,
                    "timespan": "ISO 8601 period, default P30D",
                },
                "query": t.query,
            }));
        }
        Ok(outcome)
    }
}
