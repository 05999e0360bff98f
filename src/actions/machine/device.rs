//! The device actions that create a MachineAction: submit once, resolve duplicates, wait.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::waiting::{self, MachineAction, WaitSpec, Waited};
use crate::actions::choices::{IsolationType, ScanType};
use crate::actions::{Action, ActionContext, truncate};
use crate::defender::{DefenderClient, DefenderError, ListQuery};
use crate::envelope::{ActionError, Outcome};

/// Defender's code for a second request of a kind already pending on the device.
pub const ACTIVE_REQUEST_EXISTS: &str = "ActiveRequestAlreadyExists";

/// What distinguishes one device action from another.
#[derive(Debug, Clone, Copy)]
pub struct DeviceKind {
    /// MachineAction `type` Defender gives these actions.
    pub defender_type: &'static str,
    /// Last segment of `POST /api/machines/{id}/<endpoint>`.
    pub endpoint: &'static str,
    /// Summary key carrying the action's status.
    pub status_key: &'static str,
}

/// `quarantine_device`.
pub const ISOLATE: DeviceKind = DeviceKind {
    defender_type: "Isolate",
    endpoint: "isolate",
    status_key: "quarantine_status",
};
/// `unquarantine_device`.
pub const UNISOLATE: DeviceKind = DeviceKind {
    defender_type: "Unisolate",
    endpoint: "unisolate",
    status_key: "unquarantine_status",
};
/// `quarantine_file`.
pub const STOP_AND_QUARANTINE: DeviceKind = DeviceKind {
    defender_type: "StopAndQuarantineFile",
    endpoint: "StopAndQuarantineFile",
    status_key: "quarantine_file_status",
};
/// `scan_device`.
pub const SCAN: DeviceKind = DeviceKind {
    defender_type: "RunAntiVirusScan",
    endpoint: "runAntiVirusScan",
    status_key: "scan_status",
};
/// `restrict_app_execution`.
pub const RESTRICT: DeviceKind = DeviceKind {
    defender_type: "RestrictCodeExecution",
    endpoint: "restrictCodeExecution",
    status_key: "restrict_app_execution_status",
};
/// `remove_app_restriction`.
pub const UNRESTRICT: DeviceKind = DeviceKind {
    defender_type: "UnrestrictCodeExecution",
    endpoint: "unrestrictCodeExecution",
    status_key: "remove_app_restriction_status",
};
/// `collect_investigation_package`.
pub const COLLECT_PACKAGE: DeviceKind = DeviceKind {
    defender_type: "CollectInvestigationPackage",
    endpoint: "collectInvestigationPackage",
    status_key: "collect_investigation_package_status",
};

/// A device action to submit.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Device id, lower case.
    pub device_id: String,
    /// The POST body (PascalCase keys, as Defender wants them).
    pub body: Value,
    /// Seconds to wait for a final status.
    pub timeout: u64,
}

/// How following an action ended.
#[derive(Debug, Clone)]
pub enum End {
    /// Final status reached.
    Final,
    /// Still running when time was up; `problem` says why status checks failed, if they did.
    Running {
        /// Last status-check failure.
        problem: Option<String>,
    },
    /// Its status cannot be read (for example the app lacks `Machine.Read.All`): the action
    /// was created and runs on, but following it is pointless.
    Unreadable {
        /// Why.
        problem: String,
    },
}

/// An action that was submitted (or found pending) and followed.
#[derive(Debug, Clone)]
pub struct Followed {
    /// The action as last seen.
    pub action: MachineAction,
    /// It was already pending (`ActiveRequestAlreadyExists`): no new request was made.
    pub existing: bool,
    /// How following it ended.
    pub end: End,
}

/// What [`submit_and_follow`] produced.
#[derive(Debug)]
pub enum Ran {
    /// An action was followed.
    Followed(Box<Followed>),
    /// Defender refused the request; the outcome says why.
    Refused(Outcome),
}

/// A device id as Defender writes it (validated by the definition: 40 hex characters).
pub fn device_id(raw: &str) -> String {
    raw.trim().to_ascii_lowercase()
}

/// A required free-text parameter, trimmed; blank is "missing".
pub fn required_text(name: &str, value: Option<&str>) -> Result<String, ActionError> {
    match value.map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(ActionError::InvalidParameter(format!(
            "parameter '{name}' is required"
        ))),
    }
}

/// Submits `sub` as a `kind` action (one POST, never repeated), resolves a duplicate to the
/// pending action, and follows it until final or `sub.timeout`.
pub async fn submit_and_follow(
    ctx: &ActionContext,
    kind: &DeviceKind,
    sub: &Submission,
) -> Result<Ran, ActionError> {
    let deadline = Instant::now() + Duration::from_secs(sub.timeout);
    let client = ctx.asset.defender.with_deadline(deadline);
    let path = format!(
        "/api/machines/{}/{}",
        waiting::encode_segment(&sub.device_id),
        kind.endpoint
    );
    ctx.progress(&format!(
        "submitting {} for device {}",
        kind.defender_type, sub.device_id
    ));
    let (action, existing) = match client.post(&path, &sub.body).await {
        Ok(answer) => match MachineAction::parse(&answer) {
            Ok(a) => (a, false),
            Err(e) => {
                return Ok(Ran::Refused(
                    Outcome::failed(format!(
                        "Defender accepted the {} request for device {} but its answer could not \
                         be read ({e}); check the device's action center before repeating it",
                        kind.defender_type, sub.device_id
                    ))
                    .with_summary("existing_action", false),
                ));
            }
        },
        Err(e)
            if e.code()
                .is_some_and(|c| c.eq_ignore_ascii_case(ACTIVE_REQUEST_EXISTS)) =>
        {
            match find_pending(&client, &sub.device_id, kind).await {
                Ok(Some(a)) => {
                    ctx.progress(&format!(
                        "a {} action ({}) is already pending on the device; following it",
                        kind.defender_type, a.id
                    ));
                    (a, true)
                }
                Ok(None) => {
                    return Ok(Ran::Refused(
                        conflict_outcome(&client, kind, &sub.device_id, &e).await?,
                    ));
                }
                Err(lookup @ DefenderError::Throttled { .. }) => return Err(lookup.into()),
                Err(lookup) => {
                    return Ok(Ran::Refused(
                        Outcome::failed(format!(
                            "Defender refused the {} request for device {}: {e}; looking up the \
                             pending action failed: {lookup}",
                            kind.defender_type, sub.device_id
                        ))
                        .with_summary("existing_action", false),
                    ));
                }
            }
        }
        Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
        Err(e) => {
            return Ok(Ran::Refused(
                Outcome::failed(format!(
                    "Defender did not accept the {} request for device {}: {e}",
                    kind.defender_type, sub.device_id
                ))
                .with_summary("existing_action", false),
            ));
        }
    };
    tracing::Span::current().record("event_id", action.id.as_str());
    let followed = follow(ctx, action, deadline).await;
    Ok(Ran::Followed(Box::new(Followed {
        existing,
        ..followed
    })))
}

/// Follows a known action until it is final or `deadline`.
pub async fn follow(ctx: &ActionContext, action: MachineAction, deadline: Instant) -> Followed {
    if action.is_final() {
        return Followed {
            action,
            existing: false,
            end: End::Final,
        };
    }
    let spec = WaitSpec {
        event_id: action.id.clone(),
        known: Some(action.clone()),
        hold_until: deadline,
        answer_by: deadline,
        fresh_since: None,
        eager: false,
    };
    match waiting::wait(ctx, spec).await {
        Ok(Waited::Final(a)) => Followed {
            action: a,
            existing: false,
            end: End::Final,
        },
        Ok(Waited::Running { last, problem }) => Followed {
            action: last,
            existing: false,
            end: End::Running {
                problem: problem.map(|p| p.to_string()),
            },
        },
        Err(e) => Followed {
            action,
            existing: false,
            end: End::Unreadable {
                problem: e.to_string(),
            },
        },
    }
}

/// The pending (or in progress) action of `kind` on the device, newest first.
async fn find_pending(
    client: &DefenderClient,
    device: &str,
    kind: &DeviceKind,
) -> Result<Option<MachineAction>, DefenderError> {
    let filter = format!(
        "machineId eq '{device}' and type eq '{}' and (status eq 'Pending' or status eq 'InProgress')",
        kind.defender_type
    );
    let items = client
        .list("/api/machineactions", &ListQuery::new().filter(filter), 50)
        .await?;
    Ok(newest_active(items, device, Some(kind.defender_type)))
}

/// Of a list of MachineActions, the newest one not final, on `device`, of `action_type`.
fn newest_active(
    items: Vec<Value>,
    device: &str,
    action_type: Option<&str>,
) -> Option<MachineAction> {
    items
        .iter()
        .filter_map(|v| MachineAction::parse(v).ok())
        .filter(|a| !a.is_final())
        .filter(|a| {
            a.machine_id
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(device))
        })
        .filter(|a| {
            action_type.is_none_or(|t| {
                a.action_type
                    .as_deref()
                    .is_some_and(|at| at.eq_ignore_ascii_case(t))
            })
        })
        .max_by(|a, b| a.creation_time.cmp(&b.creation_time))
}

/// `ActiveRequestAlreadyExists` without a pending action of the same type: name the action
/// that blocks, if it can be found.
async fn conflict_outcome(
    client: &DefenderClient,
    kind: &DeviceKind,
    device: &str,
    refusal: &DefenderError,
) -> Result<Outcome, ActionError> {
    let filter =
        format!("machineId eq '{device}' and (status eq 'Pending' or status eq 'InProgress')");
    let blocking = match client
        .list("/api/machineactions", &ListQuery::new().filter(filter), 50)
        .await
    {
        Ok(items) => newest_active(items, device, None),
        Err(e @ DefenderError::Throttled { .. }) => return Err(e.into()),
        Err(_) => None,
    };
    let mut outcome = match &blocking {
        Some(b) => Outcome::failed(format!(
            "Defender refused the {} request for device {device}: {refusal}. The device has a \
             pending {} action ({}, {}); follow it with get_status or cancel it with \
             cancel_action, then try again",
            kind.defender_type,
            b.type_name(),
            b.id,
            b.status
        ))
        .with_data(b.data_row()),
        None => Outcome::failed(format!(
            "Defender refused the {} request for device {device}: {refusal}. No pending action \
             was found on the device any more (it may just have finished); try again",
            kind.defender_type
        )),
    };
    outcome = outcome.with_summary("existing_action", false);
    Ok(outcome)
}

/// The envelope of a followed action: success when Succeeded or still running, failed with
/// Defender's details when Failed, TimeOut or Cancelled.
pub fn outcome(kind: &DeviceKind, device: &str, timeout: u64, f: &Followed) -> Outcome {
    let a = &f.action;
    let device_label = match &a.computer_dns_name {
        Some(name) => format!("{name} ({device})"),
        None => device.to_string(),
    };
    let what = format!("{} action {} on device {device_label}", a.type_name(), a.id);
    let prefix = if f.existing {
        format!(
            "Defender already had a pending {} action on device {device_label}; it was \
             followed instead of submitting another. ",
            kind.defender_type
        )
    } else {
        String::new()
    };
    let base = match &f.end {
        End::Final if a.status == waiting::ActionStatus::Succeeded => {
            Outcome::success(format!("{prefix}{what} Succeeded"))
        }
        End::Final => Outcome::failed(format!(
            "{prefix}{what} ended {}: {}",
            a.status,
            a.failure_details()
        )),
        End::Running { problem } => {
            let note = problem
                .as_ref()
                .map(|p| format!(" (the last status check failed: {p})"))
                .unwrap_or_default();
            Outcome::success(format!(
                "{prefix}{what} is still {} after {timeout} s{note}; Defender keeps working on \
                 it: follow it with get_status and event_id {}",
                a.status, a.id
            ))
        }
        End::Unreadable { problem } => Outcome::success(format!(
            "{prefix}{what} was accepted ({}), but its status cannot be read: {problem}; \
             follow it with get_status and event_id {}",
            a.status, a.id
        )),
    };
    base.with_summary("event_id", a.id.as_str())
        .with_summary(kind.status_key, a.status.as_str())
        .with_summary("existing_action", f.existing)
        .with_data(a.data_row())
}

/// Submits, follows and answers: the whole of a device action without extra steps.
async fn run_simple(
    ctx: ActionContext,
    kind: &DeviceKind,
    sub: Submission,
) -> Result<Outcome, ActionError> {
    match submit_and_follow(&ctx, kind, &sub).await? {
        Ran::Followed(f) => Ok(outcome(kind, &sub.device_id, sub.timeout, &f)),
        Ran::Refused(o) => Ok(o),
    }
}

/// Parameters of the actions taking a device, a comment and a timeout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceParams {
    /// Device id.
    pub device_id: String,
    /// Comment recorded with the action.
    pub comment: Option<String>,
    /// Seconds to wait for a final status.
    pub timeout: u64,
}

impl DeviceParams {
    fn submission(&self, extra: &[(&str, &str)]) -> Result<Submission, ActionError> {
        let comment = required_text("comment", self.comment.as_deref())?;
        let mut body = json!({ "Comment": comment });
        for (k, v) in extra {
            body[*k] = json!(v);
        }
        Ok(Submission {
            device_id: device_id(&self.device_id),
            body,
            timeout: self.timeout,
        })
    }
}

/// `quarantine_device`: isolate a device from the network.
pub struct QuarantineDevice;

/// Parameters of `quarantine_device`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineParams {
    /// Device id.
    pub device_id: String,
    /// Full, Selective or UnManagedDevice.
    #[serde(rename = "type")]
    pub isolation_type: IsolationType,
    /// Comment recorded with the action.
    pub comment: Option<String>,
    /// Seconds to wait for a final status.
    pub timeout: u64,
}

impl Action for QuarantineDevice {
    const ID: &'static str = "quarantine_device";
    type Params = QuarantineParams;

    async fn run(ctx: ActionContext, p: QuarantineParams) -> Result<Outcome, ActionError> {
        let params = DeviceParams {
            device_id: p.device_id,
            comment: p.comment,
            timeout: p.timeout,
        };
        let sub = params.submission(&[("IsolationType", p.isolation_type.as_str())])?;
        run_simple(ctx, &ISOLATE, sub).await
    }
}

/// `unquarantine_device`: release a device from isolation.
pub struct UnquarantineDevice;

impl Action for UnquarantineDevice {
    const ID: &'static str = "unquarantine_device";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let sub = p.submission(&[])?;
        run_simple(ctx, &UNISOLATE, sub).await
    }
}

/// `restrict_app_execution`: only Microsoft-signed code may run on the device.
pub struct RestrictAppExecution;

impl Action for RestrictAppExecution {
    const ID: &'static str = "restrict_app_execution";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let sub = p.submission(&[])?;
        run_simple(ctx, &RESTRICT, sub).await
    }
}

/// `remove_app_restriction`: lift the code execution restriction.
pub struct RemoveAppRestriction;

impl Action for RemoveAppRestriction {
    const ID: &'static str = "remove_app_restriction";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let sub = p.submission(&[])?;
        run_simple(ctx, &UNRESTRICT, sub).await
    }
}

/// `scan_device`: run a Microsoft Defender Antivirus scan.
pub struct ScanDevice;

/// Parameters of `scan_device`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanParams {
    /// Device id.
    pub device_id: String,
    /// Quick or Full.
    pub scan_type: ScanType,
    /// Comment recorded with the action.
    pub comment: Option<String>,
    /// Seconds to wait for a final status.
    pub timeout: u64,
}

impl Action for ScanDevice {
    const ID: &'static str = "scan_device";
    type Params = ScanParams;

    async fn run(ctx: ActionContext, p: ScanParams) -> Result<Outcome, ActionError> {
        let params = DeviceParams {
            device_id: p.device_id,
            comment: p.comment,
            timeout: p.timeout,
        };
        let sub = params.submission(&[("ScanType", p.scan_type.as_str())])?;
        run_simple(ctx, &SCAN, sub).await
    }
}

/// `quarantine_file`: stop a file's processes and quarantine it on a device.
pub struct QuarantineFile;

/// Parameters of `quarantine_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineFileParams {
    /// Device id.
    pub device_id: String,
    /// The file's SHA1.
    pub file_hash: String,
    /// Comment recorded with the action.
    pub comment: Option<String>,
    /// Seconds to wait for a final status.
    pub timeout: u64,
}

/// The SHA1 Defender's StopAndQuarantineFile needs, lower case; other hashes are refused with
/// a message saying so.
pub fn sha1_param(raw: &str) -> Result<String, ActionError> {
    let h = raw.trim();
    let hex = !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit());
    match (hex, h.len()) {
        (true, 40) => Ok(h.to_ascii_lowercase()),
        (true, 64) => Err(ActionError::InvalidParameter(
            "parameter 'file_hash': a SHA256 was given, but Defender's StopAndQuarantineFile \
             needs the file's SHA1 (40 hex characters)"
                .into(),
        )),
        (true, 32) => Err(ActionError::InvalidParameter(
            "parameter 'file_hash': an MD5 was given, but Defender's StopAndQuarantineFile \
             needs the file's SHA1 (40 hex characters)"
                .into(),
        )),
        _ => Err(ActionError::InvalidParameter(format!(
            "parameter 'file_hash': '{}' is not a SHA1 (40 hex characters), which Defender's \
             StopAndQuarantineFile needs",
            truncate(h, 64)
        ))),
    }
}

impl Action for QuarantineFile {
    const ID: &'static str = "quarantine_file";
    type Params = QuarantineFileParams;

    async fn run(ctx: ActionContext, p: QuarantineFileParams) -> Result<Outcome, ActionError> {
        let sha1 = sha1_param(&p.file_hash)?;
        let params = DeviceParams {
            device_id: p.device_id,
            comment: p.comment,
            timeout: p.timeout,
        };
        let sub = params.submission(&[("Sha1", sha1.as_str())])?;
        run_simple(ctx, &STOP_AND_QUARANTINE, sub).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_only() {
        assert_eq!(sha1_param(&"A".repeat(40)).unwrap(), "a".repeat(40));
        let e = sha1_param(&"a".repeat(64)).unwrap_err().to_string();
        assert!(e.contains("SHA256") && e.contains("SHA1"), "{e}");
        let e = sha1_param(&"a".repeat(32)).unwrap_err().to_string();
        assert!(e.contains("MD5") && e.contains("SHA1"), "{e}");
        let e = sha1_param("xyz").unwrap_err().to_string();
        assert!(e.contains("file_hash"), "{e}");
    }

    #[test]
    fn blank_comment_is_missing() {
        assert!(required_text("comment", Some("  ")).is_err());
        assert!(required_text("comment", None).is_err());
        assert_eq!(required_text("comment", Some(" x ")).unwrap(), "x");
    }

    #[test]
    fn newest_active_picks_the_pending_one_of_the_type() {
        let dev = "a".repeat(40);
        let items = vec![
            json!({"id": "1", "type": "Isolate", "status": "Succeeded", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:03Z"}),
            json!({"id": "2", "type": "Isolate", "status": "Pending", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:01Z"}),
            json!({"id": "3", "type": "Isolate", "status": "InProgress", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:02Z"}),
            json!({"id": "4", "type": "Unisolate", "status": "Pending", "machineId": dev, "creationDateTimeUtc": "2026-01-01T00:00:04Z"}),
            json!({"id": "5", "type": "Isolate", "status": "Pending", "machineId": "b".repeat(40), "creationDateTimeUtc": "2026-01-01T00:00:05Z"}),
            json!("garbage"),
        ];
        let a = newest_active(items.clone(), &dev, Some("Isolate")).unwrap();
        assert_eq!(a.id, "3");
        let any = newest_active(items, &dev, None).unwrap();
        assert_eq!(any.id, "4");
    }

    #[test]
    fn outcomes_per_end() {
        let a =
            MachineAction::parse(&json!({"id": "e1", "type": "Isolate", "status": "Succeeded"}))
                .unwrap();
        let f = Followed {
            action: a,
            existing: true,
            end: End::Final,
        };
        let o = outcome(&ISOLATE, "dev", 30, &f);
        assert!(!o.failed);
        assert_eq!(o.summary["event_id"], "e1");
        assert_eq!(o.summary["quarantine_status"], "Succeeded");
        assert_eq!(o.summary["existing_action"], true);
        assert!(o.message.contains("already had a pending"), "{}", o.message);

        let a = MachineAction::parse(
            &json!({"id": "e2", "type": "Isolate", "status": "Failed", "errorHResult": -2147467259}),
        )
        .unwrap();
        let f = Followed {
            action: a,
            existing: false,
            end: End::Final,
        };
        let o = outcome(&ISOLATE, "dev", 30, &f);
        assert!(o.failed);
        assert!(o.message.contains("0x80004005"), "{}", o.message);

        let a = MachineAction::parse(&json!({"id": "e3", "type": "Isolate", "status": "Pending"}))
            .unwrap();
        let f = Followed {
            action: a,
            existing: false,
            end: End::Running { problem: None },
        };
        let o = outcome(&ISOLATE, "dev", 30, &f);
        assert!(!o.failed);
        assert_eq!(o.summary["quarantine_status"], "Pending");
        assert!(o.message.contains("get_status"), "{}", o.message);
    }
}
