//! Actions: definitions (`actions/*.json`), generic validation, and the registry binding each
//! definition to its handler. [`invoke`] is the one code path used by the HTTP host and by
//! `defender-soar invoke`.

pub mod alerts;
pub mod choices;
pub mod connectivity;
pub mod consistency;
pub mod definition;
pub mod device_info;
pub mod devices;
pub mod engine;
pub mod enrichment;
pub mod graph;
pub mod hunting;
pub mod indicators;
pub mod ingestion;
pub mod library;
pub mod listing;
pub mod live_response;
pub mod machine;
pub mod manifest;
pub mod triage;
pub mod validate;
pub mod vulnerabilities;
pub mod waiting;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::app::{App, Asset};
use crate::envelope::{ActionError, Envelope, EnvelopeResponse, Outcome};
pub use definition::{Definition, definition, definitions};

/// Where progress lines go while an action waits (stderr for `invoke`, logs for HTTP).
pub type ProgressSink = Arc<dyn Fn(&str) + Send + Sync>;

/// What a handler gets besides its typed parameters.
#[derive(Clone)]
pub struct ActionContext {
    /// The application.
    pub app: Arc<App>,
    /// The asset the action runs against.
    pub asset: Arc<Asset>,
    /// The action's definition.
    pub definition: &'static Definition,
    /// The caller's `Idempotency-Key`, when given.
    pub idempotency_key: Option<String>,
    progress: Option<ProgressSink>,
}

impl ActionContext {
    /// A context for work the host does on its own (following an event for a callback):
    /// the definition of `action`, no caller, no progress.
    pub fn background(app: Arc<App>, asset: Arc<Asset>, action: &str) -> Option<ActionContext> {
        let (definition, _) = definition::resolve(action)?;
        Some(ActionContext {
            app,
            asset,
            definition,
            idempotency_key: None,
            progress: None,
        })
    }

    /// Reports progress (logged; also printed by `invoke`).
    pub fn progress(&self, line: &str) {
        tracing::info!(progress = line);
        self.progress_to_caller(line);
    }

    /// Reports progress to the caller's terminal only (`invoke`), never to the log: for lines
    /// that carry something only the caller may see, such as a consent link.
    pub fn progress_to_caller(&self, line: &str) {
        if let Some(sink) = &self.progress {
            sink(line);
        }
    }
}

/// An action handler: typed parameters in, outcome out.
pub trait Action {
    /// The definition id (`actions/<ID>.json`).
    const ID: &'static str;
    /// Typed parameters, deserialised from the validated map.
    type Params: DeserializeOwned + Send + 'static;
    /// Runs the action.
    fn run(
        ctx: ActionContext,
        params: Self::Params,
    ) -> impl Future<Output = Result<Outcome, ActionError>> + Send + 'static;
}

/// A type-erased run function.
pub type RunFn =
    fn(ActionContext, Map<String, Value>) -> BoxFuture<'static, Result<Outcome, ActionError>>;

/// A registered action: how to run it and how to check its Rust side against its definition.
#[derive(Clone, Copy)]
pub struct HandlerFn {
    /// Deserialises the validated parameters and runs the handler.
    pub run: RunFn,
    /// [`consistency::check_params`] over the handler's `Params` type.
    pub check: consistency::Checker,
}

/// Binds an [`Action`] to its id as a type-erased handler (with its consistency check).
pub fn erase<A: Action>() -> (&'static str, HandlerFn) {
    fn call<A: Action>(
        ctx: ActionContext,
        params: Map<String, Value>,
    ) -> BoxFuture<'static, Result<Outcome, ActionError>> {
        Box::pin(async move {
            let typed: A::Params = serde_json::from_value(Value::Object(params)).map_err(|e| {
                ActionError::InvalidParameter(format!("parameters do not fit the action: {e}"))
            })?;
            A::run(ctx, typed).await
        })
    }
    (
        A::ID,
        HandlerFn {
            run: call::<A>,
            check: consistency::check_params::<A::Params>,
        },
    )
}

/// Every handler, by action id. Adding an action: a definition file, its endpoint in
/// [`crate::defender::endpoints`], and one line here (or in its area's `handlers()`).
pub fn handlers() -> &'static BTreeMap<&'static str, HandlerFn> {
    static HANDLERS: OnceLock<BTreeMap<&'static str, HandlerFn>> = OnceLock::new();
    HANDLERS.get_or_init(|| {
        [
            erase::<connectivity::TestConnectivity>(),
            erase::<devices::ListDevices>(),
        ]
        .into_iter()
        .chain(machine::handlers())
        .chain(live_response::handlers())
        .chain(library::handlers())
        .chain(alerts::handlers())
        .chain(graph::handlers())
        .chain(hunting::handlers())
        .chain(indicators::handlers())
        .chain(enrichment::handlers())
        .chain(device_info::handlers())
        .chain(vulnerabilities::handlers())
        .chain(ingestion::handlers())
        .collect()
    })
}

/// One invocation request.
pub struct Invocation<'a> {
    /// Asset id.
    pub asset_id: &'a str,
    /// Action id.
    pub action_id: &'a str,
    /// Raw parameters.
    pub parameters: Map<String, Value>,
    /// `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// Progress sink (for `invoke`).
    pub progress: Option<ProgressSink>,
}

/// Runs an action: asset and action lookup, disabled check, validation, permission preflight,
/// handler, envelope.
///
/// The preflight (every action except `test_connectivity`, which reports instead): an asset
/// that needs consent answers 409 with the consent URL and one whose state file is broken 500
/// with the recovery advice; a token lacking a permission the definition lists fails the
/// action naming it, before any API call. A token at hand is checked before the handler runs;
/// otherwise the check runs when the handler's first API call obtains the token (see
/// [`crate::auth::preflight`]), so the handler's own parameter checks still come first.
pub async fn invoke(app: Arc<App>, inv: Invocation<'_>) -> EnvelopeResponse {
    let action_id = inv.action_id;
    let asset_id = inv.asset_id;
    let fail = |params: Map<String, Value>, e: ActionError| {
        EnvelopeResponse::error(action_id, asset_id, params, &e)
    };
    let Some((definition, alias)) = definition::resolve(action_id) else {
        return fail(
            Map::new(),
            ActionError::NotFound(format!(
                "unknown action '{action_id}' (GET /actions lists them)"
            )),
        );
    };
    let Some(handler) = handlers().get(definition.id.as_str()).copied() else {
        return fail(
            Map::new(),
            ActionError::Internal(format!("action '{action_id}' has no handler")),
        );
    };
    let Some(asset) = app.asset(asset_id) else {
        return fail(
            Map::new(),
            ActionError::NotFound(format!("unknown asset '{}'", truncate(asset_id, 64))),
        );
    };
    if asset.is_disabled(action_id) || asset.is_disabled(&definition.id) {
        return fail(
            Map::new(),
            ActionError::Disabled(format!(
                "action '{action_id}' is disabled for asset '{asset_id}' (assets.{asset_id}.disabled_actions)"
            )),
        );
    }
    let given = match alias {
        Some(a) => a.rename(inv.parameters),
        None => inv.parameters,
    };
    let mut params = match validate::validate(definition, &given) {
        Ok(p) => p,
        Err(e) => return fail(Map::new(), e),
    };
    // The callback parameters are the host's, not the handler's (and never echoed: a URL may
    // carry a token).
    let callback = match crate::callbacks::take(&app.config.server, &definition.id, &mut params) {
        Ok(c) => c,
        Err(e) => return fail(Map::new(), e),
    };
    let echoed = shorten_blobs(validate::redacted(definition, &params));
    let count = |status: &'static str| {
        metrics::counter!("defender_actions_total", "action" => action_id.to_string(), "status" => status)
            .increment(1);
    };
    // test_connectivity reports on tokens and permissions instead of being stopped by them.
    let scope = (definition.id != connectivity::TestConnectivity::ID)
        .then(|| crate::auth::ActionScope::new(action_id, definition.required_permissions()));
    if scope.is_some() && !definition.required_permissions().is_empty() {
        // Only what is at hand without asking Entra: a token fetch waits for the handler's
        // first API call, after its own parameter checks. Each audience whose permissions
        // the action needs is checked with its own token.
        for tokens in asset.token_managers() {
            let audience = tokens.audience();
            if !definition
                .permissions
                .iter()
                .any(|p| crate::auth::Audience::of_permission(p) == audience)
            {
                continue;
            }
            match tokens.peek().await {
                Ok(Some(token)) => {
                    if let Some(denied) = tokens.check_permissions(
                        action_id,
                        definition.required_permissions(),
                        &token,
                    ) {
                        count("failed");
                        return EnvelopeResponse::ok(Envelope::from_outcome(
                            action_id,
                            asset_id,
                            echoed,
                            denied.outcome(),
                        ));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(asset = %asset_id, action = %action_id, error = %e, "no access token");
                    count("error");
                    let err = e
                        .action_error()
                        .unwrap_or_else(|| ActionError::Internal(e.to_string()));
                    return fail(echoed, err);
                }
            }
        }
    }
    let ctx = ActionContext {
        app: app.clone(),
        asset,
        definition,
        idempotency_key: inv.idempotency_key,
        progress: inv.progress,
    };
    let span = tracing::info_span!("action", asset = %asset_id, action = %action_id, event_id = tracing::field::Empty);
    let started = Instant::now();
    let running = (handler.run)(ctx, params).instrument(span);
    let mut result = match &scope {
        Some(scope) => scope.run(running).await,
        None => running.await,
    };
    // Summary keys the definition does not declare are drift between handler and definition.
    #[cfg(debug_assertions)]
    if let Ok(outcome) = &result {
        app.summary_drift.record(definition, &outcome.summary);
    }
    // What went wrong getting tokens explains a failure better than the handler can: consent
    // needed (409), a broken state file (500), or a missing permission (no API call was made).
    let failed = matches!(&result, Ok(o) if o.failed) || result.is_err();
    if failed && let Some(scope) = &scope {
        if let Some(err) = scope.auth_error().and_then(|e| e.action_error()) {
            result = Err(err);
        } else if let Some(denied) = scope.denied() {
            result = Ok(denied.outcome());
        }
    }
    let status = match &result {
        Ok(o) if o.failed => "failed",
        Ok(_) => "success",
        Err(_) => "error",
    };
    count(status);
    metrics::histogram!("defender_action_duration_seconds", "action" => action_id.to_string())
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(mut outcome) => {
            if let Some(spec) = callback {
                let event_id = outcome
                    .summary
                    .get("event_id")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                let status = crate::callbacks::register(
                    &app,
                    asset_id,
                    &definition.id,
                    spec,
                    event_id.as_deref(),
                )
                .await;
                outcome = outcome.with_summary("callback", status);
            }
            EnvelopeResponse::ok(Envelope::from_outcome(action_id, asset_id, echoed, outcome))
        }
        Err(e) => {
            tracing::warn!(asset = %asset_id, action = %action_id, error = %e, "action error");
            fail(echoed, e)
        }
    }
}

/// Longest parameter string echoed in full in the envelope.
const MAX_ECHOED_CHARS: usize = 4096;

/// Replaces very long string parameters (inline file content) by a short note in the echo.
fn shorten_blobs(mut params: Map<String, Value>) -> Map<String, Value> {
    for value in params.values_mut() {
        if let Value::String(s) = value
            && s.len() > MAX_ECHOED_CHARS
        {
            *value = Value::String(format!("<{} characters, not echoed>", s.chars().count()));
        }
    }
    params
}

/// Cuts a caller-controlled string for echoing in messages.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_not_echoed() {
        let mut m = Map::new();
        m.insert("content".into(), Value::String("a".repeat(5000)));
        m.insert("comment".into(), Value::String("short".into()));
        let out = shorten_blobs(m);
        assert_eq!(out["content"], "<5000 characters, not echoed>");
        assert_eq!(out["comment"], "short");
    }

    #[test]
    fn every_definition_has_a_handler_and_every_handler_a_definition() {
        let defs: Vec<&str> = definitions().iter().map(|d| d.id.as_str()).collect();
        let hands: Vec<&str> = handlers().keys().copied().collect();
        for d in &defs {
            assert!(hands.contains(d), "definition {d} has no handler");
        }
        for h in &hands {
            assert!(defs.contains(h), "handler {h} has no definition");
        }
    }
}
