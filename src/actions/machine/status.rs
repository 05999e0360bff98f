//! `get_status` (optionally holding until the status is final) and `cancel_action`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;

use super::waiting::{self, FRESH, MachineAction, WaitSpec, Waited};
pub use crate::actions::engine::ANSWER_GRACE;
use crate::actions::engine::required_text;
use crate::actions::{Action, ActionContext};
use crate::defender::{DefenderError, endpoints};
use crate::envelope::{ActionError, Outcome};

/// `get_status`: the status of a machine action, optionally held until it is final.
pub struct GetStatus;

/// Parameters of `get_status`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetStatusParams {
    /// The machine action id.
    pub event_id: String,
    /// Seconds to hold the call until the status is final (0 answers at once).
    pub wait: u64,
}

/// `<Type> action <id> on device <name>` for messages.
fn describe(a: &MachineAction) -> String {
    let device = a
        .computer_dns_name
        .as_deref()
        .or(a.machine_id.as_deref())
        .map(|d| format!(" on device {d}"))
        .unwrap_or_default();
    format!("{} action {}{device}", a.type_name(), a.id)
}

/// The envelope of a status read: success whatever the action's status (the status is the
/// answer), with Defender's details when it ended badly.
fn status_outcome(a: &MachineAction, waited: u64, problem: Option<&DefenderError>) -> Outcome {
    let what = describe(a);
    let message = if a.status == waiting::ActionStatus::Succeeded {
        format!("{what} Succeeded")
    } else if a.is_final() {
        format!("{what} ended {}: {}", a.status, a.failure_details())
    } else if waited > 0 {
        let note = problem
            .map(|p| format!(" (the last status check failed: {p})"))
            .unwrap_or_default();
        format!(
            "{what} is still {} after waiting {waited} s{note}",
            a.status
        )
    } else {
        format!("{what} is {}", a.status)
    };
    Outcome::success(message)
        .with_summary("event_id", a.id.as_str())
        .with_summary("event_status", a.status.as_str())
        .with_summary("action_type", a.type_name())
        .with_data(a.data_row())
}

/// The envelope of a status read that got no status.
fn status_error(event_id: &str, e: DefenderError) -> Result<Outcome, ActionError> {
    match e {
        DefenderError::Throttled { .. } => Err(e.into()),
        DefenderError::NotFound { .. } => Ok(Outcome::failed(format!(
            "No machine action {event_id} was found in this tenant ({e})"
        ))
        .with_summary("event_id", event_id)),
        other => Ok(Outcome::failed(format!(
            "The status of machine action {event_id} could not be read: {other}"
        ))
        .with_summary("event_id", event_id)),
    }
}

impl Action for GetStatus {
    const ID: &'static str = "get_status";
    type Params = GetStatusParams;

    async fn run(ctx: ActionContext, p: GetStatusParams) -> Result<Outcome, ActionError> {
        let event_id = p.event_id.trim().to_ascii_lowercase();
        tracing::Span::current().record("event_id", event_id.as_str());
        let now = Instant::now();
        let hold_until = now + Duration::from_secs(p.wait);
        let spec = WaitSpec {
            event_id: event_id.clone(),
            known: None,
            hold_until,
            answer_by: hold_until.max(now + ANSWER_GRACE),
            fresh_since: Some(now.checked_sub(FRESH).unwrap_or(now)),
            eager: p.wait > 0,
        };
        let answer = match waiting::wait(&ctx, spec).await {
            Ok(Waited::Final(a)) => Ok(status_outcome(&a, p.wait, None)),
            Ok(Waited::Running { last, problem }) => {
                Ok(status_outcome(&last, p.wait, problem.as_ref()))
            }
            Err(e) => status_error(&event_id, e),
        };
        // Whether a completion callback is owed for this event, and how it stands.
        let callback = ctx.app.callbacks.status(&ctx.asset.config.id, &event_id);
        answer.map(|o| match callback {
            Some(c) => o.with_summary("callback", c),
            None => o,
        })
    }
}

/// `cancel_action`: cancel a machine action that is not final yet.
pub struct CancelAction;

/// Parameters of `cancel_action`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelParams {
    /// The machine action id.
    pub event_id: String,
    /// Why it is cancelled.
    pub comment: Option<String>,
}

impl Action for CancelAction {
    const ID: &'static str = "cancel_action";
    type Params = CancelParams;

    async fn run(ctx: ActionContext, p: CancelParams) -> Result<Outcome, ActionError> {
        let comment = required_text("comment", p.comment.as_deref())?;
        let event_id = p.event_id.trim().to_ascii_lowercase();
        tracing::Span::current().record("event_id", event_id.as_str());
        let client = ctx
            .asset
            .defender
            .with_deadline(Instant::now() + ANSWER_GRACE);
        let call = endpoints::CANCEL_MACHINE_ACTION.at(&[&event_id]);
        ctx.progress(&format!("cancelling machine action {event_id}"));
        let answer = match client.post(&call, &json!({ "Comment": comment })).await {
            Ok(v) => v,
            Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
            Err(e) => {
                return Ok(Outcome::failed(format!(
                    "Defender did not cancel machine action {event_id}: {e}"
                ))
                .with_summary("event_id", event_id.as_str()));
            }
        };
        let a = match MachineAction::parse(&answer) {
            Ok(a) => a,
            Err(e) => {
                return Ok(Outcome::success(format!(
                    "Defender accepted the cancellation of machine action {event_id}, but its \
                     answer could not be read ({e}); check it with get_status"
                ))
                .with_summary("event_id", event_id.as_str()));
            }
        };
        waiting::observe(&ctx.asset, &a);
        let what = describe(&a);
        let message = if a.status == waiting::ActionStatus::Cancelled {
            format!("{what} cancelled")
        } else {
            format!(
                "Cancellation of {what} requested; its status is {} for now: follow it with \
                 get_status",
                a.status
            )
        };
        Ok(Outcome::success(message)
            .with_summary("event_id", a.id.as_str())
            .with_summary("event_status", a.status.as_str())
            .with_summary("action_type", a.type_name())
            .with_data(a.data_row()))
    }
}
