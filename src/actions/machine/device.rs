//! The device actions that create a MachineAction (isolate, release, stop and quarantine,
//! scan, restrict, unrestrict, collect package): each is a [`DeviceKind`] run by the
//! machine-action engine.

use serde::Deserialize;
use serde_json::{Value, json};

use super::waiting::{self, MachineAction};
use crate::actions::choices::{IsolationType, ScanType};
use crate::actions::engine::{self, Device, End, Followed, Kind, Ran, required_text};
use crate::actions::{Action, ActionContext, truncate};
use crate::defender::{DefenderError, Endpoint, endpoints};
use crate::envelope::{ActionError, Outcome};

/// What distinguishes one device action from another.
#[derive(Debug, Clone, Copy)]
pub struct DeviceKind {
    /// MachineAction `type` Defender gives these actions.
    pub defender_type: &'static str,
    /// The endpoint that submits it.
    pub endpoint: &'static Endpoint,
    /// Summary key carrying the action's status.
    pub status_key: &'static str,
}

/// `quarantine_device`.
pub const ISOLATE: DeviceKind = DeviceKind {
    defender_type: "Isolate",
    endpoint: &endpoints::ISOLATE,
    status_key: "quarantine_status",
};
/// `unquarantine_device`.
pub const UNISOLATE: DeviceKind = DeviceKind {
    defender_type: "Unisolate",
    endpoint: &endpoints::UNISOLATE,
    status_key: "unquarantine_status",
};
/// `quarantine_file`.
pub const STOP_AND_QUARANTINE: DeviceKind = DeviceKind {
    defender_type: "StopAndQuarantineFile",
    endpoint: &endpoints::STOP_AND_QUARANTINE_FILE,
    status_key: "quarantine_file_status",
};
/// `scan_device`.
pub const SCAN: DeviceKind = DeviceKind {
    defender_type: "RunAntiVirusScan",
    endpoint: &endpoints::RUN_ANTIVIRUS_SCAN,
    status_key: "scan_status",
};
/// `restrict_app_execution`.
pub const RESTRICT: DeviceKind = DeviceKind {
    defender_type: "RestrictCodeExecution",
    endpoint: &endpoints::RESTRICT_CODE_EXECUTION,
    status_key: "restrict_app_execution_status",
};
/// `remove_app_restriction`.
pub const UNRESTRICT: DeviceKind = DeviceKind {
    defender_type: "UnrestrictCodeExecution",
    endpoint: &endpoints::UNRESTRICT_CODE_EXECUTION,
    status_key: "remove_app_restriction_status",
};
/// `collect_investigation_package`.
pub const COLLECT_PACKAGE: DeviceKind = DeviceKind {
    defender_type: "CollectInvestigationPackage",
    endpoint: &endpoints::COLLECT_INVESTIGATION_PACKAGE,
    status_key: "collect_investigation_package_status",
};

impl Kind for DeviceKind {
    fn defender_type(&self) -> &'static str {
        self.defender_type
    }

    fn endpoint(&self) -> &'static Endpoint {
        self.endpoint
    }

    fn request(&self) -> String {
        format!("{} request", self.defender_type)
    }

    /// A pending action of the same type is the same request.
    fn is_same(&self, _pending: &MachineAction) -> bool {
        true
    }

    fn busy(
        &self,
        device: &str,
        refusal: &DefenderError,
        blocking: Option<&MachineAction>,
    ) -> Outcome {
        match blocking {
            Some(b) => Outcome::failed(format!(
                "Defender refused the {} request for device {device}: {refusal}. The device has \
                 a pending {} action ({}, {}); follow it with get_status or cancel it with \
                 cancel_action, then try again",
                self.defender_type,
                b.type_name(),
                b.id,
                b.status
            ))
            .with_data(b.data_row()),
            None => Outcome::failed(format!(
                "Defender refused the {} request for device {device}: {refusal}. No pending \
                 action was found on the device any more (it may just have finished); try again",
                self.defender_type
            )),
        }
    }
}

/// A device action to submit.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The device, resolved.
    pub device: Device,
    /// The POST body (PascalCase keys, as Defender wants them).
    pub body: Value,
    /// Seconds to wait for a final status.
    pub timeout: u64,
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
        .with_summary("device_id", device)
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
    let device = &sub.device.id;
    match engine::submit_and_follow(&ctx, kind, device, &sub.body, sub.timeout).await? {
        Ran::Followed(f) => Ok(outcome(kind, device, sub.timeout, &f)),
        Ran::Refused(o) => Ok(o.with_summary("device_id", device.as_str())),
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
    /// The submission: the comment checked, then the device resolved (a name or an address
    /// costs one lookup).
    pub async fn submission(
        &self,
        ctx: &ActionContext,
        extra: &[(&str, &str)],
    ) -> Result<Submission, ActionError> {
        let comment = required_text("comment", self.comment.as_deref())?;
        let mut body = json!({ "Comment": comment });
        for (k, v) in extra {
            body[*k] = json!(v);
        }
        let device = engine::resolve_device(ctx, "device_id", &self.device_id).await?;
        Ok(Submission {
            device,
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
        let sub = params
            .submission(&ctx, &[("IsolationType", p.isolation_type.as_str())])
            .await?;
        run_simple(ctx, &ISOLATE, sub).await
    }
}

/// `unquarantine_device`: release a device from isolation.
pub struct UnquarantineDevice;

impl Action for UnquarantineDevice {
    const ID: &'static str = "unquarantine_device";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let sub = p.submission(&ctx, &[]).await?;
        run_simple(ctx, &UNISOLATE, sub).await
    }
}

/// `restrict_app_execution`: only Microsoft-signed code may run on the device.
pub struct RestrictAppExecution;

impl Action for RestrictAppExecution {
    const ID: &'static str = "restrict_app_execution";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let sub = p.submission(&ctx, &[]).await?;
        run_simple(ctx, &RESTRICT, sub).await
    }
}

/// `remove_app_restriction`: lift the code execution restriction.
pub struct RemoveAppRestriction;

impl Action for RemoveAppRestriction {
    const ID: &'static str = "remove_app_restriction";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let sub = p.submission(&ctx, &[]).await?;
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
        let sub = params
            .submission(&ctx, &[("ScanType", p.scan_type.as_str())])
            .await?;
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
        let sub = params.submission(&ctx, &[("Sha1", sha1.as_str())]).await?;
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
