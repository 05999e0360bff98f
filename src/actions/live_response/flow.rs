//! The event-id resumption workflow shared by the live response actions: the four cases,
//! the submission (once, with busy devices resolved), idempotency keys, resumption of an
//! earlier event, and the common parts of the envelope.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::command::{self, CommandInfo, LiveCommand};
use super::{Kind, get_file, idempotency, run_script};
use crate::actions::ActionContext;
use crate::actions::engine::{self, ANSWER_GRACE, End, Submitted};
use crate::actions::waiting::{self, ActionStatus, FRESH, MachineAction, WaitSpec, Waited};
use crate::defender::{DefenderError, Endpoint, endpoints};
use crate::envelope::{ActionError, Outcome};

/// The MachineAction type of live response sessions.
pub const LIVE_RESPONSE: &str = "LiveResponse";

/// The parameters of a new live response, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Device id, lower case.
    pub device_id: String,
    /// The command to run.
    pub command: LiveCommand,
    /// Comment recorded with the live response.
    pub comment: String,
}

impl Session {
    /// The body of `POST /api/machines/{id}/runliveresponse`.
    pub fn body(&self) -> Value {
        json!({"Commands": [self.command.to_json()], "Comment": self.comment})
    }
}

/// The parameters of a new live response that were not given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// Names of the missing parameters.
    pub names: Vec<&'static str>,
    /// Some parameter of a new live response was given.
    pub given: bool,
}

impl Missing {
    /// What is missing, as a sentence for `kind`.
    pub fn describe(&self, kind: Kind) -> String {
        let names: Vec<String> = self.names.iter().map(|n| format!("'{n}'")).collect();
        match names.len() {
            0 => format!("a new live response needs {}", kind.needs()),
            1 => format!(
                "parameter {} is required to start a new live response ({})",
                names[0],
                kind.needs()
            ),
            _ => format!(
                "parameters {} are required to start a new live response ({})",
                names.join(", "),
                kind.needs()
            ),
        }
    }

    /// The 400 of a request without `event_id`.
    pub fn error(&self, kind: Kind) -> ActionError {
        if self.given {
            ActionError::InvalidParameter(format!(
                "{}; or give event_id to resume an earlier {}",
                self.describe(kind),
                kind.action_id()
            ))
        } else {
            ActionError::InvalidParameter(format!(
                "nothing to do: give event_id, or {} (event_id resumes an earlier {}; the \
                 parameters start a new live response)",
                kind.needs(),
                kind.action_id()
            ))
        }
    }
}

/// Collects the parameters of a new live response: trimmed, blank counting as absent.
#[derive(Debug, Default)]
pub struct Fields {
    missing: Vec<&'static str>,
    given: bool,
}

impl Fields {
    /// A required parameter of a new live response.
    pub fn required(&mut self, name: &'static str, value: Option<&str>) -> Option<String> {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => {
                self.given = true;
                Some(v.to_string())
            }
            None => {
                self.missing.push(name);
                None
            }
        }
    }

    /// An optional parameter of a new live response.
    pub fn optional(&mut self, value: Option<&str>) -> Option<String> {
        let v = value.map(str::trim).filter(|v| !v.is_empty())?;
        self.given = true;
        Some(v.to_string())
    }

    /// The session, when every required parameter was given.
    pub fn session(self, make: impl FnOnce() -> Option<Session>) -> Result<Session, Missing> {
        let missing = Missing {
            names: self.missing,
            given: self.given,
        };
        if !missing.names.is_empty() {
            return Err(missing);
        }
        make().ok_or(missing)
    }
}

/// An `event_id` parameter in lower case, blank counting as absent.
pub fn event_id_param(raw: Option<&str>) -> Option<String> {
    raw.map(|e| e.trim().to_ascii_lowercase())
        .filter(|e| !e.is_empty())
}

/// One invocation of a live response action.
#[derive(Debug)]
pub struct Request {
    /// Which action.
    pub kind: Kind,
    /// The event to resume (lower case).
    pub event_id: Option<String>,
    /// The new live response, or what it lacks.
    pub session: Result<Session, Missing>,
    /// Seconds to wait.
    pub timeout: u64,
}

/// A live response followed until final or the deadline.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The action as last seen.
    pub action: MachineAction,
    /// How following it ended.
    pub end: End,
    /// It was already pending on the device (or started earlier with the same key).
    pub existing: bool,
    /// The command the caller asked for, when it gave one.
    pub wanted: Option<LiveCommand>,
    /// The device.
    pub device_id: String,
}

impl Tracked {
    /// This action's command of `kind`.
    pub fn command(&self, kind: Kind) -> Option<CommandInfo> {
        command::locate(&self.action, kind.command_type(), self.wanted.as_ref())
    }

    /// `live response <id> (GetFile C:\x) on device <name> (<id>)`, for messages.
    pub fn label(&self, kind: Kind) -> String {
        let what = self
            .command(kind)
            .map(|c| c.command.describe())
            .or_else(|| self.wanted.as_ref().map(LiveCommand::describe))
            .unwrap_or_else(|| kind.command_type().to_string());
        let device = match (&self.action.computer_dns_name, self.device_id.is_empty()) {
            (Some(name), false) => format!("{name} ({})", self.device_id),
            (Some(name), true) => name.clone(),
            (None, false) => self.device_id.clone(),
            (None, true) => "an unknown device".into(),
        };
        format!(
            "live response {} ({what}) on device {device}",
            self.action.id
        )
    }

    /// The common envelope: summary event_id, event_id_status, the action's status key,
    /// live_response_result (the command's status) and existing_action.
    pub fn outcome(&self, kind: Kind, failed: bool, message: String) -> Outcome {
        let status = self.action.status.as_str().to_string();
        let result = self
            .command(kind)
            .and_then(|c| c.status)
            .unwrap_or_else(|| "Unknown".into());
        Outcome {
            failed,
            message,
            ..Outcome::default()
        }
        .with_summary("event_id", self.action.id.as_str())
        .with_summary("event_id_status", status.as_str())
        .with_summary(kind.status_key(), status.as_str())
        .with_summary("live_response_result", result)
        .with_summary("existing_action", self.existing)
    }
}

/// What following an event produced.
#[derive(Debug)]
pub enum Finished {
    /// The answer: the result, a live response still running, or a failure to fetch a result
    /// that exists.
    Done(Outcome),
    /// The event cannot produce a result; a new live response may.
    Unusable {
        /// The answer when no new live response is started.
        outcome: Outcome,
        /// The event is not a live response with the action's command.
        wrong_kind: bool,
    },
}

impl Finished {
    /// The answer either way.
    pub fn into_outcome(self) -> Outcome {
        match self {
            Finished::Done(o) | Finished::Unusable { outcome: o, .. } => o,
        }
    }
}

/// Runs a live response action: the four cases of `event_id` and parameters.
pub async fn run(ctx: &ActionContext, req: Request) -> Result<Outcome, ActionError> {
    let deadline = Instant::now() + Duration::from_secs(req.timeout);
    let kind = req.kind;
    let Some(event_id) = req.event_id.as_deref() else {
        let session = req.session.map_err(|m| m.error(kind))?;
        return start(ctx, kind, &session, deadline, req.timeout).await;
    };
    tracing::Span::current().record("event_id", event_id);
    let wanted = req.session.as_ref().ok().map(|s| s.command.clone());
    let (unusable, wrong_kind) =
        match resume(ctx, kind, event_id, wanted, deadline, req.timeout).await? {
            Finished::Done(o) => return Ok(o),
            Finished::Unusable {
                outcome,
                wrong_kind,
            } => (outcome, wrong_kind),
        };
    match req.session {
        Ok(session) => {
            ctx.progress(&format!(
                "event {event_id} cannot produce the {}; starting a new live response",
                kind.result_noun()
            ));
            let previous_status = unusable.summary.get("event_id_status").cloned();
            let mut o = start(ctx, kind, &session, deadline, req.timeout).await?;
            o.message = format!(
                "{} A new live response was started from the parameters instead: {}",
                unusable.message, o.message
            );
            o = o.with_summary("previous_event_id", event_id);
            if let Some(s) = previous_status {
                o = o.with_summary("previous_event_id_status", s);
            }
            Ok(o)
        }
        Err(missing) => {
            let note = if missing.given {
                format!(
                    " No new live response was started: {}.",
                    missing.describe(kind)
                )
            } else {
                String::new()
            };
            if wrong_kind {
                return Err(ActionError::InvalidParameter(format!(
                    "parameter 'event_id': {}{note}",
                    unusable.message
                )));
            }
            Ok(Outcome {
                message: format!("{}{note}", unusable.message),
                ..unusable
            })
        }
    }
}

/// A new live response: the idempotency key first, then one POST, then the wait and the result.
async fn start(
    ctx: &ActionContext,
    kind: Kind,
    session: &Session,
    deadline: Instant,
    timeout: u64,
) -> Result<Outcome, ActionError> {
    // A computer name or an address becomes the one device id it names, before the
    // idempotency key is looked up (the key's parameters hold the id).
    let device = engine::resolve_device(ctx, "device_id", &session.device_id).await?;
    let session = &Session {
        device_id: device.id,
        ..session.clone()
    };
    let mut note = String::new();
    let submitted = match ctx.idempotency_key.as_deref() {
        None => submit(ctx, session, deadline).await?,
        Some(key) => {
            let hash = idempotency::params_hash(
                kind.action_id(),
                &session.device_id,
                &session.command,
                &session.comment,
            );
            let lock = idempotency::key_lock(ctx, key);
            let guard = lock.lock().await;
            let claim = idempotency::claim(ctx, key).await?;
            if let Some(event_id) = idempotency::lookup(ctx, key, kind.action_id(), &hash).await? {
                drop(claim);
                drop(guard);
                return replay(ctx, kind, &event_id, session, deadline, timeout).await;
            }
            let submitted = submit(ctx, session, deadline).await?;
            if let Submitted::Action { action, .. } = &submitted {
                // Durable before the wait: a repeat after a crash resumes this event.
                if let Err(e) =
                    idempotency::remember(ctx, key, kind.action_id(), &hash, &action.id).await
                {
                    tracing::warn!(error = %e, event_id = %action.id, "the Idempotency-Key could not be recorded");
                    note = format!(
                        " (the Idempotency-Key could not be recorded in the asset's state: {e})"
                    );
                }
            }
            drop(claim);
            drop(guard);
            submitted
        }
    };
    match submitted {
        Submitted::Refused(o) => Ok(o),
        Submitted::Action { action, existing } => {
            tracing::Span::current().record("event_id", action.id.as_str());
            let followed = engine::follow(ctx, *action, deadline).await;
            let tracked = Tracked {
                action: followed.action,
                end: followed.end,
                existing,
                wanted: Some(session.command.clone()),
                device_id: session.device_id.clone(),
            };
            let mut o = finish(ctx, kind, &tracked, deadline, timeout)
                .await?
                .into_outcome();
            o.message.push_str(&note);
            Ok(o)
        }
    }
}

/// A request repeated with its `Idempotency-Key`: the event the first one started, resumed.
async fn replay(
    ctx: &ActionContext,
    kind: Kind,
    event_id: &str,
    session: &Session,
    deadline: Instant,
    timeout: u64,
) -> Result<Outcome, ActionError> {
    ctx.progress(&format!(
        "Idempotency-Key seen before: resuming live response {event_id}"
    ));
    tracing::Span::current().record("event_id", event_id);
    let finished = resume(
        ctx,
        kind,
        event_id,
        Some(session.command.clone()),
        deadline,
        timeout,
    )
    .await?;
    let o = finished.into_outcome();
    Ok(Outcome {
        message: format!(
            "Idempotency-Key seen before: resumed live response {event_id} instead of starting \
             another. {}",
            o.message
        ),
        ..o
    }
    .with_summary("existing_action", true)
    .with_summary("idempotent_replay", true))
}

impl engine::Kind for Session {
    fn defender_type(&self) -> &'static str {
        LIVE_RESPONSE
    }

    fn endpoint(&self) -> &'static Endpoint {
        &endpoints::RUN_LIVE_RESPONSE
    }

    fn request(&self) -> String {
        format!("live response ({})", self.command.describe())
    }

    /// A pending live response is the same request when it runs the same command with the
    /// same parameters.
    fn is_same(&self, pending: &MachineAction) -> bool {
        command::commands(pending)
            .iter()
            .any(|c| c.command.same_as(&self.command))
    }

    /// Defender runs one live response per device: only a live response blocks another.
    fn names_other_blockers(&self) -> bool {
        false
    }

    fn busy(
        &self,
        device: &str,
        refusal: &DefenderError,
        blocking: Option<&MachineAction>,
    ) -> Outcome {
        let Some(pending) = blocking else {
            return Outcome::failed(format!(
                "Defender refused the live response for device {device}: {refusal}. No pending \
                 live response was found on the device any more (it may just have finished); \
                 try again"
            ));
        };
        Outcome::failed(format!(
            "Device {device} is busy: live response {} ({}) is {} on it, and Defender runs one \
             live response per device at a time. Follow it with get_status or cancel it with \
             cancel_action (event_id {}), then try again",
            pending.id,
            command::describe_all(pending),
            pending.status,
            pending.id
        ))
        .with_summary("blocking_event_id", pending.id.as_str())
        .with_summary("blocking_event_status", pending.status.as_str())
        .with_data(pending.data_row())
    }
}

/// `POST /api/machines/{id}/runliveresponse`, once; a busy device resolved.
async fn submit(
    ctx: &ActionContext,
    session: &Session,
    deadline: Instant,
) -> Result<Submitted, ActionError> {
    engine::submit(ctx, session, &session.device_id, &session.body(), deadline).await
}

/// The command types of an action, for messages (`RunScript`, `PutFile + GetFile`).
fn command_types(action: &MachineAction) -> String {
    let mut types: Vec<String> = Vec::new();
    for c in command::commands(action) {
        if !types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&c.command.command_type))
        {
            types.push(c.command.command_type);
        }
    }
    if types.is_empty() {
        "command-less".into()
    } else {
        types.join(" + ")
    }
}

/// Case 1: reads `event_id`, checks that it is a live response with the action's command,
/// follows it until final or the deadline, and fetches its result.
async fn resume(
    ctx: &ActionContext,
    kind: Kind,
    event_id: &str,
    wanted: Option<LiveCommand>,
    deadline: Instant,
    timeout: u64,
) -> Result<Finished, ActionError> {
    let now = Instant::now();
    let spec = WaitSpec {
        event_id: event_id.to_string(),
        known: None,
        hold_until: now,
        answer_by: deadline.max(now + ANSWER_GRACE),
        fresh_since: Some(now.checked_sub(FRESH).unwrap_or(now)),
        eager: false,
    };
    let unusable = |message: String, wrong_kind: bool| {
        Ok(Finished::Unusable {
            outcome: Outcome::failed(message).with_summary("event_id", event_id),
            wrong_kind,
        })
    };
    let current = match waiting::wait(ctx, spec).await {
        Ok(Waited::Final(a)) | Ok(Waited::Running { last: a, .. }) => a,
        Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
        Err(e @ DefenderError::NotFound { .. }) => {
            return unusable(
                format!("No machine action {event_id} was found in this tenant ({e})."),
                false,
            );
        }
        // Not knowing whether the event has a result is no reason to start another live
        // response on the device: the caller tries again.
        Err(e) => {
            return Ok(Finished::Done(
                Outcome::failed(format!(
                    "Machine action {event_id} could not be read: {e}. Try again with the same \
                     event_id"
                ))
                .with_summary("event_id", event_id),
            ));
        }
    };
    let is_live = current
        .action_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case(LIVE_RESPONSE));
    if !is_live {
        return unusable(
            format!(
                "Event {event_id} is a {} action, not a {} live response.",
                current.type_name(),
                kind.command_type()
            ),
            true,
        );
    }
    if command::locate(&current, kind.command_type(), None).is_none() {
        return unusable(
            format!(
                "Event {event_id} is a {} live response, not {}.",
                command_types(&current),
                kind.command_type()
            ),
            true,
        );
    }
    let device_id = current.machine_id.clone().unwrap_or_default();
    let followed = engine::follow(ctx, current, deadline).await;
    let tracked = Tracked {
        action: followed.action,
        end: followed.end,
        existing: false,
        wanted,
        device_id,
    };
    finish(ctx, kind, &tracked, deadline, timeout).await
}

/// The envelope of a followed live response; its result fetched when it succeeded.
async fn finish(
    ctx: &ActionContext,
    kind: Kind,
    t: &Tracked,
    deadline: Instant,
    timeout: u64,
) -> Result<Finished, ActionError> {
    let a = &t.action;
    let label = t.label(kind);
    let prefix = if t.existing {
        "The device already ran a live response with the same command; it was followed \
         instead of starting another. "
            .to_string()
    } else {
        String::new()
    };
    let resume_hint = format!(
        "call {} again with event_id {} to collect the {} when it is done (get_status shows \
         its progress)",
        kind.action_id(),
        a.id,
        kind.result_noun()
    );
    let finished = match &t.end {
        End::Final if a.status == ActionStatus::Succeeded => {
            let Some(cmd) = t.command(kind) else {
                return Ok(Finished::Unusable {
                    outcome: t
                        .outcome(
                            kind,
                            true,
                            format!(
                                "{prefix}The {label} succeeded but reports no {} command.",
                                kind.command_type()
                            ),
                        )
                        .with_data(a.data_row()),
                    wrong_kind: true,
                });
            };
            match kind {
                Kind::GetFile => get_file::collect(ctx, t, &cmd, deadline).await?,
                Kind::RunScript => run_script::collect(ctx, t, &cmd, deadline).await?,
                Kind::PutFile => Finished::Done(super::put_file::done(t, &cmd)),
            }
        }
        End::Final => Finished::Unusable {
            outcome: t
                .outcome(
                    kind,
                    true,
                    format!("The {label} ended {}: {}.", a.status, a.failure_details()),
                )
                .with_data(a.data_row()),
            wrong_kind: false,
        },
        End::Running { problem } => {
            let note = problem
                .as_ref()
                .map(|p| format!(" (the last status check failed: {p})"))
                .unwrap_or_default();
            Finished::Done(
                t.outcome(
                    kind,
                    false,
                    format!(
                        "The {label} is still {} after {timeout} s{note}; Defender keeps \
                         working on it: {resume_hint}.",
                        a.status
                    ),
                )
                .with_data(a.data_row()),
            )
        }
        End::Unreadable { problem } => Finished::Done(
            t.outcome(
                kind,
                false,
                format!(
                    "The {label} was accepted ({}), but its status cannot be read: {problem}; \
                     {resume_hint}.",
                    a.status
                ),
            )
            .with_data(a.data_row()),
        ),
    };
    Ok(match finished {
        Finished::Done(o) => Finished::Done(Outcome {
            message: format!("{prefix}{}", o.message),
            ..o
        }),
        Finished::Unusable {
            outcome,
            wrong_kind,
        } => Finished::Unusable {
            outcome: Outcome {
                message: format!("{prefix}{}", outcome.message),
                ..outcome
            },
            wrong_kind,
        },
    })
}

/// The failure of a succeeded live response whose result could not be fetched this time.
pub fn fetch_failed(kind: Kind, t: &Tracked, why: &str) -> Outcome {
    t.outcome(
        kind,
        true,
        format!(
            "The {} succeeded, but its {} could not be fetched: {why}. Run {} with event_id {} \
             to try again",
            t.label(kind),
            kind.result_noun(),
            kind.action_id(),
            t.action.id
        ),
    )
}

/// The answer when a succeeded live response's result is gone.
pub fn result_gone(kind: Kind, t: &Tracked, why: &str) -> Finished {
    Finished::Unusable {
        outcome: t.outcome(
            kind,
            true,
            format!(
                "The {} succeeded, but its {} is not available: {why}.",
                t.label(kind),
                kind.result_noun()
            ),
        ),
        wrong_kind: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_parameters_are_named() {
        let none = Missing {
            names: vec!["device_id", "file_path", "comment"],
            given: false,
        };
        let e = none.error(Kind::GetFile).to_string();
        assert!(
            e.contains("give event_id, or device_id + file_path + comment"),
            "{e}"
        );
        let some = Missing {
            names: vec!["comment"],
            given: true,
        };
        let e = some.error(Kind::RunScript).to_string();
        assert!(e.contains("parameter 'comment' is required"), "{e}");
        assert!(e.contains("device_id + script_name + comment"), "{e}");
        let two = Missing {
            names: vec!["device_id", "comment"],
            given: true,
        };
        assert!(
            two.describe(Kind::PutFile)
                .contains("parameters 'device_id', 'comment' are required")
        );
    }

    #[test]
    fn fields_collect_what_is_missing() {
        let mut f = Fields::default();
        let d = f.required("device_id", Some(" abc "));
        let c = f.required("comment", Some("  "));
        assert_eq!(d.as_deref(), Some("abc"));
        assert_eq!(c, None);
        let m = f.session(|| None).unwrap_err();
        assert_eq!(m.names, vec!["comment"]);
        assert!(m.given);
        let mut f = Fields::default();
        assert_eq!(f.optional(Some("")), None);
        let m = f.session(|| None).unwrap_err();
        assert!(!m.given);
    }

    #[test]
    fn session_body() {
        let s = Session {
            device_id: "a".repeat(40),
            command: LiveCommand::get_file("C:\\x"),
            comment: "why".into(),
        };
        assert_eq!(
            s.body(),
            json!({"Commands": [{"type": "GetFile", "params": [{"key": "Path", "value": "C:\\x"}]}], "Comment": "why"})
        );
    }

    #[test]
    fn newest_pending_session_of_the_device() {
        let dev = "a".repeat(40);
        let items = vec![
            json!({"id": "1", "type": "LiveResponse", "status": "Succeeded", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:09Z"}),
            json!({"id": "2", "type": "LiveResponse", "status": "Pending", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:01Z"}),
            json!({"id": "3", "type": "LiveResponse", "status": "InProgress", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:02Z"}),
            json!({"id": "4", "type": "Isolate", "status": "Pending", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:05Z"}),
            json!({"id": "5", "type": "LiveResponse", "status": "Pending", "machineId": "b".repeat(40), "creationDateTimeUtc": "2026-01-01T00:00:06Z"}),
            json!(null),
        ];
        let newest = |items: &[Value]| engine::newest_active(items, &dev, Some(LIVE_RESPONSE));
        assert_eq!(newest(&items).unwrap().id, "3");
        assert!(newest(&items[..1]).is_none());
    }

    #[test]
    fn tracked_envelope_keys() {
        let a = MachineAction::parse(&json!({
            "id": "e1", "type": "LiveResponse", "status": "InProgress", "computerDnsName": "pc1",
            "machineId": "d",
            "commands": [{"index": 0, "commandStatus": "InProgress", "command": {"type": "GetFile", "params": [{"key": "Path", "value": "C:\\x"}]}}]
        }))
        .unwrap();
        let t = Tracked {
            action: a,
            end: End::Running { problem: None },
            existing: false,
            wanted: None,
            device_id: "d".into(),
        };
        assert_eq!(
            t.label(Kind::GetFile),
            "live response e1 (GetFile C:\\x) on device pc1 (d)"
        );
        let o = t.outcome(Kind::GetFile, false, "m".into());
        assert_eq!(o.summary["event_id"], "e1");
        assert_eq!(o.summary["event_id_status"], "InProgress");
        assert_eq!(o.summary["file_status"], "InProgress");
        assert_eq!(o.summary["live_response_result"], "InProgress");
        assert_eq!(o.summary["existing_action"], false);
        let o = t.outcome(Kind::RunScript, false, "m".into());
        assert_eq!(o.summary["script_status"], "InProgress");
        assert_eq!(o.summary["live_response_result"], "Unknown");
    }
}
