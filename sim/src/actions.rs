//! The machine action store and lifecycle: Pending → InProgress → final, derived from the
//! simulated clock, the action's timings, manual advances and forced outcomes.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::scenario::{OutcomeRule, StageTimings};
use crate::state::Clock;

/// The final statuses.
pub const FINAL_STATUSES: [&str; 4] = ["Succeeded", "Failed", "TimeOut", "Cancelled"];

/// Whether `status` is final.
pub fn is_final(status: &str) -> bool {
    FINAL_STATUSES.contains(&status)
}

/// All machine actions, by id, in creation order.
#[derive(Debug, Default)]
pub struct ActionStore {
    by_id: HashMap<String, MachineAction>,
    order: Vec<String>,
}

impl ActionStore {
    /// Adds an action.
    pub fn insert(&mut self, action: MachineAction) {
        self.order.push(action.id.clone());
        self.by_id.insert(action.id.clone(), action);
    }

    /// An action by id (case-insensitive).
    pub fn get(&self, id: &str) -> Option<&MachineAction> {
        self.by_id
            .get(id)
            .or_else(|| self.by_id.get(&id.to_ascii_lowercase()))
    }

    /// An action by id, mutable (case-insensitive).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut MachineAction> {
        if self.by_id.contains_key(id) {
            self.by_id.get_mut(id)
        } else {
            self.by_id.get_mut(&id.to_ascii_lowercase())
        }
    }

    /// All actions in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &MachineAction> {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    /// The not-yet-final action of `action_type` on `machine_id`, if any.
    pub fn active_on(
        &self,
        machine_id: &str,
        action_type: &str,
        now_ms: i64,
    ) -> Option<&MachineAction> {
        self.iter().find(|a| {
            a.machine_id.eq_ignore_ascii_case(machine_id)
                && a.action_type == action_type
                && !is_final(a.status(now_ms))
        })
    }

    /// Live response sessions not yet final in a tenant.
    pub fn live_sessions(&self, tenant_id: &str, now_ms: i64) -> usize {
        self.iter()
            .filter(|a| {
                a.action_type == "LiveResponse"
                    && a.tenant_id.eq_ignore_ascii_case(tenant_id)
                    && !is_final(a.status(now_ms))
            })
            .count()
    }

    /// Live response sessions not yet final, all tenants.
    pub fn live_sessions_total(&self, now_ms: i64) -> usize {
        self.iter()
            .filter(|a| a.action_type == "LiveResponse" && !is_final(a.status(now_ms)))
            .count()
    }
}

/// One live response command inside a LiveResponse action.
#[derive(Debug, Clone)]
pub struct Command {
    /// `PutFile`, `RunScript` or `GetFile`.
    pub command_type: String,
    /// Params as key/value pairs, in request order.
    pub params: Vec<(String, String)>,
    /// When the command is planned to fail: the error text it reports.
    pub fails_with: Option<String>,
}

/// Who cancelled an action and why.
#[derive(Debug, Clone)]
pub struct Cancellation {
    /// Requestor of the cancel.
    pub requestor: String,
    /// Comment of the cancel.
    pub comment: String,
    /// When (ms, sim time).
    pub at_ms: i64,
}

/// A machine action.
#[derive(Debug, Clone)]
pub struct MachineAction {
    /// Id (a GUID, lower case).
    pub id: String,
    /// Tenant it belongs to.
    pub tenant_id: String,
    /// Type (`Isolate`, `LiveResponse`, ...).
    pub action_type: String,
    /// Title shown in the portal.
    pub title: String,
    /// Who asked (the app's name or client id).
    pub requestor: String,
    /// The request comment.
    pub comment: String,
    /// Target machine id.
    pub machine_id: String,
    /// Target machine's DNS name.
    pub computer_dns_name: Option<String>,
    /// Full/Selective for isolation, Quick/Full for scans.
    pub scope: Option<String>,
    /// External id given by the caller, if any.
    pub external_id: Option<String>,
    /// `{fileIdentifier, fileIdentifierType}` for StopAndQuarantineFile.
    pub related_file_info: Option<Value>,
    /// Created at (ms, sim time).
    pub created_ms: i64,
    /// Timings snapshot at creation.
    pub timings: StageTimings,
    /// Whether only control calls move this action.
    pub manual: bool,
    /// Stage reached through control calls: 0 Pending, 1 InProgress, 2 final.
    pub stage_floor: u8,
    /// When the stage floor last changed (ms, sim time).
    pub floor_changed_ms: i64,
    /// The final status it will reach.
    pub outcome: String,
    /// Error text for a Failed outcome.
    pub error: Option<String>,
    /// Set when cancelled.
    pub cancellation: Option<Cancellation>,
    /// Live response commands.
    pub commands: Vec<Command>,
}

impl MachineAction {
    /// The stage now: 0 Pending, 1 InProgress, 2 final.
    fn stage(&self, now_ms: i64) -> u8 {
        let elapsed = now_ms.saturating_sub(self.created_ms).max(0) as u64;
        let timed = if self.manual {
            0
        } else if elapsed >= self.timings.pending_ms + self.timings.in_progress_ms {
            2
        } else if elapsed >= self.timings.pending_ms {
            1
        } else {
            0
        };
        timed.max(self.stage_floor)
    }

    /// Status at `now_ms`.
    pub fn status(&self, now_ms: i64) -> &str {
        if self.cancellation.is_some() {
            return "Cancelled";
        }
        match self.stage(now_ms) {
            0 => "Pending",
            1 => "InProgress",
            _ => &self.outcome,
        }
    }

    /// When the status last changed, at `now_ms`.
    pub fn last_update_ms(&self, now_ms: i64) -> i64 {
        if let Some(c) = &self.cancellation {
            return c.at_ms;
        }
        let mut last = self.created_ms;
        if !self.manual {
            let t1 = self.created_ms + self.timings.pending_ms as i64;
            let t2 = t1 + self.timings.in_progress_ms as i64;
            for t in [t1, t2] {
                if now_ms >= t {
                    last = last.max(t);
                }
            }
        }
        if self.stage_floor > 0 {
            last = last.max(self.floor_changed_ms);
        }
        last.min(now_ms.max(self.created_ms))
    }

    /// Moves the action one stage along (control API).
    pub fn advance(&mut self, now_ms: i64) {
        let stage = self.stage(now_ms);
        if stage < 2 {
            self.stage_floor = stage + 1;
            self.floor_changed_ms = now_ms;
        }
    }

    /// Forces the final status (control API).
    pub fn complete(&mut self, status: &str, error: Option<String>, now_ms: i64) {
        self.outcome = status.to_string();
        if error.is_some() {
            self.error = error;
        }
        self.stage_floor = 2;
        self.floor_changed_ms = now_ms;
    }

    /// The MachineAction JSON (without `@odata.context`).
    pub fn to_json(&self, now_ms: i64) -> Map<String, Value> {
        let status = self.status(now_ms).to_string();
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("type".into(), json!(self.action_type));
        m.insert("title".into(), json!(self.title));
        m.insert("requestor".into(), json!(self.requestor));
        m.insert("requestorComment".into(), json!(self.comment));
        m.insert("status".into(), json!(status));
        m.insert("machineId".into(), json!(self.machine_id));
        m.insert("computerDnsName".into(), json!(self.computer_dns_name));
        m.insert(
            "creationDateTimeUtc".into(),
            json!(Clock::format_ms(self.created_ms)),
        );
        m.insert(
            "lastUpdateDateTimeUtc".into(),
            json!(Clock::format_ms(self.last_update_ms(now_ms))),
        );
        let (creq, ccomment, ctime) = match &self.cancellation {
            Some(c) => (
                json!(c.requestor),
                json!(c.comment),
                json!(Clock::format_ms(c.at_ms)),
            ),
            None => (Value::Null, Value::Null, Value::Null),
        };
        m.insert("cancellationRequestor".into(), creq);
        m.insert("cancellationComment".into(), ccomment);
        m.insert("cancellationDateTimeUtc".into(), ctime);
        let hresult = if status == "Failed" || status == "TimeOut" {
            -2147467259i64
        } else {
            0
        };
        m.insert("errorHResult".into(), json!(hresult));
        m.insert("scope".into(), json!(self.scope));
        m.insert("externalId".into(), json!(self.external_id));
        m.insert("requestSource".into(), json!("PublicApi"));
        m.insert(
            "relatedFileInfo".into(),
            self.related_file_info.clone().unwrap_or(Value::Null),
        );
        m.insert("commands".into(), Value::Array(self.commands_json(now_ms)));
        m.insert("troubleshootInfo".into(), Value::Null);
        m
    }

    /// The `commands` array: statuses follow the action's stage and outcome.
    pub fn commands_json(&self, now_ms: i64) -> Vec<Value> {
        let status = self.status(now_ms).to_string();
        let start = Clock::format_ms(self.created_ms + self.timings.pending_ms as i64);
        let end = Clock::format_ms(self.last_update_ms(now_ms));
        // Index of the command that fails, when the action ends Failed or TimeOut.
        let failing = match status.as_str() {
            "Failed" => Some(
                self.commands
                    .iter()
                    .position(|c| c.fails_with.is_some())
                    .unwrap_or(0),
            ),
            "TimeOut" => Some(0),
            _ => None,
        };
        self.commands
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (cstatus, errors, started, ended) = match (status.as_str(), failing) {
                    ("Succeeded", _) => ("Completed", vec![], json!(start), json!(end)),
                    (_, Some(f)) if i < f => ("Completed", vec![], json!(start), json!(end)),
                    (_, Some(f)) if i == f => {
                        let msg = if status == "TimeOut" {
                            "The command timed out before the device answered".to_string()
                        } else {
                            c.fails_with
                                .clone()
                                .or_else(|| self.error.clone())
                                .unwrap_or_else(|| {
                                    "An error occurred while running the command".into()
                                })
                        };
                        ("Failed", vec![json!(msg)], json!(start), json!(end))
                    }
                    ("InProgress", _) if i == 0 => {
                        ("InProgress", vec![], json!(start), Value::Null)
                    }
                    _ => ("Created", vec![], Value::Null, Value::Null),
                };
                let params: Vec<Value> = c
                    .params
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect();
                json!({
                    "index": i,
                    "startTime": started,
                    "endTime": ended,
                    "commandStatus": cstatus,
                    "errors": errors,
                    "command": {"type": c.command_type, "params": params},
                })
            })
            .collect()
    }

    /// Whether command `index` completed (its result can be downloaded).
    pub fn command_completed(&self, index: usize, now_ms: i64) -> bool {
        self.commands_json(now_ms)
            .get(index)
            .and_then(|c| c.get("commandStatus"))
            .and_then(Value::as_str)
            == Some("Completed")
    }
}

/// Picks the planned outcome for a new action from the scenario's rules (consuming one use of
/// a limited rule). Returns (status, error).
pub fn pick_outcome(
    rules: &mut [OutcomeRule],
    action_type: &str,
    machine_id: &str,
) -> (String, Option<String>) {
    for r in rules.iter_mut() {
        let type_ok = r
            .action_type
            .as_deref()
            .is_none_or(|t| t.eq_ignore_ascii_case(action_type));
        let machine_ok = r
            .machine_id
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(machine_id));
        let left = r.remaining.is_none_or(|n| n > 0);
        if type_ok && machine_ok && left {
            if let Some(n) = r.remaining.as_mut() {
                *n -= 1;
            }
            return (r.status.clone(), r.error.clone());
        }
    }
    ("Succeeded".to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(manual: bool) -> MachineAction {
        MachineAction {
            id: "a".into(),
            tenant_id: "t".into(),
            action_type: "Isolate".into(),
            title: String::new(),
            requestor: String::new(),
            comment: String::new(),
            machine_id: "m".into(),
            computer_dns_name: None,
            scope: None,
            external_id: None,
            related_file_info: None,
            created_ms: 1000,
            timings: StageTimings {
                pending_ms: 100,
                in_progress_ms: 200,
            },
            manual,
            stage_floor: 0,
            floor_changed_ms: 0,
            outcome: "Succeeded".into(),
            error: None,
            cancellation: None,
            commands: vec![],
        }
    }

    #[test]
    fn lifecycle_follows_timings() {
        let a = action(false);
        assert_eq!(a.status(1000), "Pending");
        assert_eq!(a.status(1100), "InProgress");
        assert_eq!(a.status(1299), "InProgress");
        assert_eq!(a.status(1300), "Succeeded");
    }

    #[test]
    fn manual_actions_move_only_when_told() {
        let mut a = action(true);
        assert_eq!(a.status(10_000_000), "Pending");
        a.advance(2000);
        assert_eq!(a.status(2000), "InProgress");
        a.complete("Failed", Some("boom".into()), 3000);
        assert_eq!(a.status(3000), "Failed");
        assert_eq!(a.last_update_ms(4000), 3000);
    }
}
