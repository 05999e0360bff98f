//! `get_live_response_result`: the result of one command of a finished live response, by its
//! event id and command index, for callers that started the live response elsewhere or want a
//! result again: a GetFile's file goes to the vault, a RunScript's output comes back in the
//! envelope, exactly as `get_file` and `run_script` answer them.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::Kind;
use super::command::{self, CommandInfo};
use super::flow::{self, Finished, Tracked};
use super::{get_file, run_script};
use crate::actions::engine::End;
use crate::actions::{Action, ActionContext};
use crate::defender::{ActionStatus, MachineAction, endpoints};
use crate::envelope::{ActionError, Outcome};

/// How long the result may take to fetch (a GetFile download streams on past it; see
/// [`super::download::DOWNLOAD_TIMEOUT`]).
const DEADLINE: Duration = Duration::from_secs(60);

/// `get_live_response_result`.
pub struct GetLiveResponseResult;

/// Parameters of `get_live_response_result`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultParams {
    /// The live response's event id.
    pub event_id: String,
    /// The command's index in the live response (0 for the first).
    #[serde(default)]
    pub command_index: Option<u64>,
}

impl Action for GetLiveResponseResult {
    const ID: &'static str = "get_live_response_result";
    type Params = ResultParams;

    async fn run(ctx: ActionContext, p: ResultParams) -> Result<Outcome, ActionError> {
        let event_id = flow::event_id_param(Some(&p.event_id)).ok_or_else(|| {
            ActionError::InvalidParameter(
                "parameter 'event_id': give the live response's event id".into(),
            )
        })?;
        let index = p.command_index.unwrap_or(0);
        let deadline = Instant::now() + DEADLINE;
        let client = ctx.asset.defender.with_deadline(deadline);
        let answer = match client
            .get(&endpoints::MACHINE_ACTION.at(&[&event_id]))
            .await
        {
            Ok(v) => v,
            Err(e) if e.is_not_found() => {
                return Ok(Outcome::failed(format!(
                    "Defender has no machine action {event_id} in this tenant"
                ))
                .with_summary("event_id", event_id.as_str()));
            }
            Err(e) if e.retry_after().is_some() => return Err(e.into()),
            Err(e) => {
                return Ok(Outcome::failed(format!(
                    "reading machine action {event_id} failed: {e}"
                )));
            }
        };
        let action = MachineAction::parse(&answer)
            .map_err(|e| ActionError::Upstream(format!("machine action {event_id}: {e}")))?;
        let kind_name = action.type_name().to_string();
        if !kind_name.eq_ignore_ascii_case("LiveResponse") {
            return Err(ActionError::InvalidParameter(format!(
                "parameter 'event_id': event {event_id} is a {kind_name} action, not a live response"
            )));
        }
        let all = command::commands(&action);
        let Some(cmd) = all.iter().find(|c| c.index == index).cloned() else {
            let listed: Vec<String> = all
                .iter()
                .map(|c| format!("{} ({})", c.index, c.command.command_type))
                .collect();
            return Err(ActionError::InvalidParameter(format!(
                "parameter 'command_index': live response {event_id} has no command {index}; its \
                 commands are {}",
                if listed.is_empty() {
                    "none".to_string()
                } else {
                    listed.join(", ")
                }
            )));
        };
        let kind = match cmd.command.command_type.to_ascii_lowercase().as_str() {
            "getfile" => Kind::GetFile,
            "runscript" => Kind::RunScript,
            other => {
                return Ok(Outcome::failed(format!(
                    "command {index} of live response {event_id} is a {} command, which has no \
                     result to fetch",
                    if other.is_empty() {
                        "typeless"
                    } else {
                        &cmd.command.command_type
                    }
                ))
                .with_summary("event_id", event_id.as_str())
                .with_summary("command_index", index));
            }
        };
        let tracked = Tracked {
            device_id: action.machine_id.clone().unwrap_or_default(),
            wanted: Some(cmd.command.clone()),
            end: End::Final,
            existing: true,
            action,
        };
        let outcome = match unfinished(&tracked, kind, &cmd) {
            Some(o) => o,
            None => {
                let finished = match kind {
                    Kind::GetFile => get_file::collect(&ctx, &tracked, &cmd, deadline).await?,
                    _ => run_script::collect(&ctx, &tracked, &cmd, deadline).await?,
                };
                match finished {
                    Finished::Done(o) | Finished::Unusable { outcome: o, .. } => o,
                }
            }
        };
        Ok(outcome
            .with_summary("command_index", index)
            .with_summary("command_type", kind.command_type()))
    }
}

/// The answer when the command has no result yet, or never will.
fn unfinished(t: &Tracked, kind: Kind, cmd: &CommandInfo) -> Option<Outcome> {
    let status = &t.action.status;
    if !status.is_final() {
        return Some(t.outcome(
            kind,
            true,
            format!(
                "The {} is still {}; its result can be fetched once it has succeeded (get_status \
                 with wait follows it)",
                t.label(kind),
                status.as_str()
            ),
        ));
    }
    let command_failed = cmd
        .status
        .as_deref()
        .is_some_and(|s| ActionStatus::parse(s) == ActionStatus::Failed);
    if *status != ActionStatus::Succeeded || command_failed {
        let errors = if cmd.errors.is_empty() {
            String::new()
        } else {
            format!(": {}", cmd.errors.join("; "))
        };
        return Some(t.outcome(
            kind,
            true,
            format!(
                "The {} ended {} and command {} has no result{errors}",
                t.label(kind),
                status.as_str(),
                cmd.index
            ),
        ));
    }
    None
}
