//! Typed models of Defender API answers, read tolerantly.
//!
//! [`MachineAction`] reads the answers of the machine action endpoints: missing fields,
//! `lastUpdateTimeUtc` or `lastUpdateDateTimeUtc`, numbers as strings, PascalCase keys,
//! unknown fields, ids that are not GUIDs, and the status spellings seen in the wild. The
//! lenient field helpers ([`get_ci`], [`text`], [`integer`]) are the one place such variants
//! are handled.

use std::fmt;

use serde_json::{Map, Value};
use url::Url;

/// The status of a machine action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionStatus {
    /// Waiting for the device.
    Pending,
    /// The device is working on it.
    InProgress,
    /// Done.
    Succeeded,
    /// The device reported an error.
    Failed,
    /// The device did not answer in time.
    TimeOut,
    /// Cancelled by someone.
    Cancelled,
    /// A status this host does not know (kept as sent), or none at all (empty).
    Other(String),
}

impl ActionStatus {
    /// Reads a status, accepting other spellings (`Canceled`, `Timeout`, `In Progress`, any case).
    pub fn parse(text: &str) -> ActionStatus {
        let folded: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        match folded.as_str() {
            "pending" | "created" | "queued" => ActionStatus::Pending,
            "inprogress" | "running" => ActionStatus::InProgress,
            "succeeded" | "success" | "completed" => ActionStatus::Succeeded,
            "failed" | "failure" => ActionStatus::Failed,
            "timeout" | "timedout" => ActionStatus::TimeOut,
            "cancelled" | "canceled" => ActionStatus::Cancelled,
            _ => ActionStatus::Other(text.trim().to_string()),
        }
    }

    /// The canonical spelling (`Unknown` when the answer had none).
    pub fn as_str(&self) -> &str {
        match self {
            ActionStatus::Pending => "Pending",
            ActionStatus::InProgress => "InProgress",
            ActionStatus::Succeeded => "Succeeded",
            ActionStatus::Failed => "Failed",
            ActionStatus::TimeOut => "TimeOut",
            ActionStatus::Cancelled => "Cancelled",
            ActionStatus::Other(s) if s.is_empty() => "Unknown",
            ActionStatus::Other(s) => s,
        }
    }

    /// Succeeded, Failed, TimeOut or Cancelled.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ActionStatus::Succeeded
                | ActionStatus::Failed
                | ActionStatus::TimeOut
                | ActionStatus::Cancelled
        )
    }

    /// How far along: 0 not started (or unknown), 1 in progress, 2 final.
    pub fn rank(&self) -> u8 {
        match self {
            ActionStatus::InProgress => 1,
            s if s.is_final() => 2,
            _ => 0,
        }
    }
}

impl fmt::Display for ActionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed live response command of a machine action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// Position of the command.
    pub index: Option<i64>,
    /// Command type (`GetFile`, `RunScript`, ...).
    pub command_type: Option<String>,
    /// `commandStatus`.
    pub status: Option<String>,
    /// The error texts.
    pub errors: Vec<String>,
}

/// A MachineAction as read from the API, tolerant of the variants the API answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineAction {
    /// The action id: the event id playbooks pass around.
    pub id: String,
    /// `Isolate`, `RunAntiVirusScan`, `LiveResponse`, ...
    pub action_type: Option<String>,
    /// Current status.
    pub status: ActionStatus,
    /// Target device id.
    pub machine_id: Option<String>,
    /// Target device name.
    pub computer_dns_name: Option<String>,
    /// Who asked.
    pub requestor: Option<String>,
    /// The request's comment.
    pub requestor_comment: Option<String>,
    /// Full/Selective, Quick/Full, or none.
    pub scope: Option<String>,
    /// Creation time as sent.
    pub creation_time: Option<String>,
    /// Last update time as sent (`lastUpdateDateTimeUtc` or `lastUpdateTimeUtc`).
    pub last_update_time: Option<String>,
    /// Who cancelled it.
    pub cancellation_requestor: Option<String>,
    /// Why it was cancelled.
    pub cancellation_comment: Option<String>,
    /// When it was cancelled.
    pub cancellation_time: Option<String>,
    /// `errorHResult` (0 when all is well).
    pub error_hresult: Option<i64>,
    /// Live response commands that failed or reported errors.
    pub command_errors: Vec<CommandError>,
    /// The object as the API sent it, without `@odata.*` annotations.
    pub raw: Map<String, Value>,
}

impl MachineAction {
    /// Reads a MachineAction object; fails only when it is not an object or has no id.
    pub fn parse(value: &Value) -> Result<MachineAction, String> {
        let Value::Object(obj) = value else {
            return Err("the answer is not a MachineAction object".into());
        };
        let id = field_text(obj, &["id"])
            .ok_or_else(|| "the MachineAction in the answer carries no id".to_string())?;
        let status = field_text(obj, &["status"])
            .map(|s| ActionStatus::parse(&s))
            .unwrap_or_else(|| ActionStatus::Other(String::new()));
        let raw: Map<String, Value> = obj
            .iter()
            .filter(|(k, _)| !k.starts_with("@odata."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(MachineAction {
            id,
            action_type: field_text(obj, &["type"]),
            status,
            machine_id: field_text(obj, &["machineId"]),
            computer_dns_name: field_text(obj, &["computerDnsName"]),
            requestor: field_text(obj, &["requestor"]),
            requestor_comment: field_text(obj, &["requestorComment"]),
            scope: field_text(obj, &["scope"]),
            creation_time: field_text(obj, &["creationDateTimeUtc", "creationTimeUtc"]),
            last_update_time: field_text(obj, &["lastUpdateDateTimeUtc", "lastUpdateTimeUtc"]),
            cancellation_requestor: field_text(obj, &["cancellationRequestor"]),
            cancellation_comment: field_text(obj, &["cancellationComment"]),
            cancellation_time: field_text(obj, &["cancellationDateTimeUtc"]),
            error_hresult: get_ci(obj, "errorHResult").and_then(integer),
            command_errors: command_errors(obj),
            raw,
        })
    }

    /// Whether the status is final.
    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }

    /// The action type, or `machine` when the answer had none (for messages).
    pub fn type_name(&self) -> &str {
        self.action_type.as_deref().unwrap_or("machine")
    }

    /// What Defender says about a Failed, TimeOut or Cancelled action: the status, the
    /// HRESULT, the cancellation and the command errors, as one sentence.
    pub fn failure_details(&self) -> String {
        let mut parts = vec![format!("status {}", self.status)];
        if let Some(h) = self.error_hresult.filter(|h| *h != 0) {
            // HRESULTs are 32-bit; show the usual hexadecimal form too.
            parts.push(format!("errorHResult {h} (0x{:08X})", h as u32));
        }
        if self.status == ActionStatus::Cancelled
            || self.cancellation_requestor.is_some()
            || self.cancellation_comment.is_some()
        {
            let mut c = String::from("cancelled");
            if let Some(who) = &self.cancellation_requestor {
                c.push_str(&format!(" by {who}"));
            }
            if let Some(when) = &self.cancellation_time {
                c.push_str(&format!(" at {when}"));
            }
            if let Some(why) = &self.cancellation_comment {
                c.push_str(&format!(" ({why})"));
            }
            parts.push(c);
        }
        for e in &self.command_errors {
            let mut c = String::from("command");
            if let Some(i) = e.index {
                c.push_str(&format!(" {i}"));
            }
            if let Some(t) = &e.command_type {
                c.push_str(&format!(" {t}"));
            }
            if let Some(s) = &e.status {
                c.push_str(&format!(" {s}"));
            }
            if !e.errors.is_empty() {
                c.push_str(&format!(": {}", e.errors.join("; ")));
            }
            parts.push(c);
        }
        parts.join(", ")
    }

    /// The object as Defender sent it, for an envelope's `data`.
    pub fn data_row(&self) -> Value {
        Value::Object(self.raw.clone())
    }
}

/// A device (Defender's `Machine`), read tolerantly: the fields the host works with; the
/// rest stays in `raw`.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// The 40-hex device id, lower case.
    pub id: String,
    /// Its computer DNS name.
    pub computer_dns_name: Option<String>,
    /// The last IP address it reported.
    pub last_ip_address: Option<String>,
    /// Active, Inactive, ImpairedCommunication, ...
    pub health_status: Option<String>,
    /// Windows10, macOS, Linux, ...
    pub os_platform: Option<String>,
    /// The object as Defender sent it, without `@odata.*` keys.
    pub raw: Map<String, Value>,
}

impl Machine {
    /// Reads a Machine object (any key case, numbers as strings); fails only when it is not
    /// an object or has no id.
    pub fn parse(value: &Value) -> Result<Machine, String> {
        let Value::Object(obj) = value else {
            return Err("the answer is not a Machine object".into());
        };
        let id = field_text(obj, &["id", "machineId"])
            .ok_or_else(|| "the Machine in the answer carries no id".to_string())?
            .to_ascii_lowercase();
        Ok(Machine {
            id,
            computer_dns_name: field_text(obj, &["computerDnsName"]),
            last_ip_address: field_text(obj, &["lastIpAddress"]),
            health_status: field_text(obj, &["healthStatus"]),
            os_platform: field_text(obj, &["osPlatform"]),
            raw: obj
                .iter()
                .filter(|(k, _)| !k.starts_with("@odata."))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// `name (id)`, or the id alone, for messages.
    pub fn label(&self) -> String {
        match &self.computer_dns_name {
            Some(name) => format!("{name} ({})", self.id),
            None => self.id.clone(),
        }
    }
}

/// A key looked up as given, then without regard to ASCII case.
fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// The first of `keys` present as text (numbers and booleans printed; keys looked up as given,
/// then ignoring ASCII case); empty is `None`.
pub fn field_text(obj: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match get_ci(obj, k)? {
        Value::String(s) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// An integer from a number or a decimal or `0x` hexadecimal string.
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_u64().map(|u| u as i64))
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim();
            if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                u32::from_str_radix(hex, 16)
                    .ok()
                    .map(|u| i64::from(u as i32))
            } else {
                s.parse::<i64>().ok()
            }
        }
        _ => None,
    }
}

/// Commands whose status is Failed or that carry errors.
fn command_errors(obj: &Map<String, Value>) -> Vec<CommandError> {
    let Some(Value::Array(commands)) = get_ci(obj, "commands") else {
        return Vec::new();
    };
    commands
        .iter()
        .filter_map(|c| {
            let c = c.as_object()?;
            let errors: Vec<String> = match get_ci(c, "errors") {
                Some(Value::Array(list)) => list
                    .iter()
                    .filter_map(|e| match e {
                        Value::String(s) => Some(s.trim().to_string()),
                        Value::Object(o) => field_text(o, &["message", "error", "description"]),
                        Value::Null => None,
                        other => Some(other.to_string()),
                    })
                    .filter(|s| !s.is_empty())
                    .collect(),
                Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_string()],
                _ => Vec::new(),
            };
            let status = field_text(c, &["commandStatus"]);
            let failed = status
                .as_deref()
                .is_some_and(|s| ActionStatus::parse(s) == ActionStatus::Failed);
            if errors.is_empty() && !failed {
                return None;
            }
            let command_type = match get_ci(c, "command") {
                Some(Value::Object(cmd)) => field_text(cmd, &["type"]),
                _ => None,
            };
            Some(CommandError {
                index: get_ci(c, "index").and_then(integer),
                command_type,
                status,
                errors,
            })
        })
        .collect()
}

/// The pre-signed link in an `Edm.String` answer (`{"value": "<url>"}`, any key case, or a
/// bare string); the error says what was wrong, never the link.
pub fn presigned_link(answer: &Value) -> Result<Url, &'static str> {
    let link = match answer {
        Value::String(s) => Some(s.as_str()),
        Value::Object(o) => o
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("value"))
            .and_then(|(_, v)| v.as_str()),
        _ => None,
    }
    // Microsoft's getPackageUri example wraps the link in literal double quotes.
    .map(|s| s.trim().trim_matches('"').trim())
    .filter(|s| !s.is_empty())
    .ok_or("without a download link")?;
    Url::parse(link)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http"))
        .ok_or("with an unusable download link")
}

/// The host of a link, for messages (never the whole link: its query is the signature).
pub fn link_host(link: &Url) -> String {
    link.host_str().unwrap_or("the storage host").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn presigned_link_takes_a_link_wrapped_in_quotes() {
        // get-package-sas-uri.md shows the value as "\"https://...\"".
        let quoted = json!({"value": "\"https://userrequests-us.securitycenter.windows.com:443/safedownload/WDATP_Investigation_Package.zip?token=abc%3d\""});
        let link = presigned_link(&quoted).unwrap();
        assert_eq!(
            link.host_str(),
            Some("userrequests-us.securitycenter.windows.com")
        );
        assert_eq!(link.path(), "/safedownload/WDATP_Investigation_Package.zip");
        assert_eq!(
            presigned_link(&json!({"value": "\"\""})),
            Err("without a download link")
        );
        assert_eq!(
            presigned_link(&json!({"value": "\"ftp://x/y\""})),
            Err("with an unusable download link")
        );
    }

    #[test]
    fn documented_shape() {
        let v = json!({
            "@odata.context": "https://api.securitycenter.microsoft.com/api/$metadata#MachineActions/$entity",
            "id": "7a6f6e8c-1b2d-4c3e-8f90-0123456789ab",
            "type": "Isolate",
            "title": "Isolate device",
            "requestor": "app",
            "requestorComment": "contain",
            "status": "Succeeded",
            "machineId": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07",
            "computerDnsName": "pc1",
            "creationDateTimeUtc": "2026-01-01T10:00:00.0000000Z",
            "lastUpdateDateTimeUtc": "2026-01-01T10:01:00.0000000Z",
            "cancellationRequestor": null,
            "cancellationComment": null,
            "cancellationDateTimeUtc": null,
            "errorHResult": 0,
            "scope": "Full",
            "externalId": null,
            "requestSource": "PublicApi",
            "relatedFileInfo": null,
            "commands": [],
            "troubleshootInfo": null
        });
        let a = MachineAction::parse(&v).unwrap();
        assert_eq!(a.id, "7a6f6e8c-1b2d-4c3e-8f90-0123456789ab");
        assert_eq!(a.action_type.as_deref(), Some("Isolate"));
        assert_eq!(a.status, ActionStatus::Succeeded);
        assert!(a.is_final());
        assert_eq!(a.scope.as_deref(), Some("Full"));
        assert_eq!(
            a.last_update_time.as_deref(),
            Some("2026-01-01T10:01:00.0000000Z")
        );
        assert_eq!(a.error_hresult, Some(0));
        assert!(a.command_errors.is_empty());
        assert!(!a.raw.contains_key("@odata.context"));
        assert_eq!(a.raw.len(), 20);
        assert_eq!(a.data_row()["requestSource"], "PublicApi");
    }

    #[test]
    fn last_update_time_utc_spelling() {
        let a = MachineAction::parse(&json!({
            "id": "x1", "status": "Pending", "lastUpdateTimeUtc": "2026-01-01T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(a.last_update_time.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(a.status, ActionStatus::Pending);
    }

    #[test]
    fn missing_fields_are_tolerated() {
        let a = MachineAction::parse(&json!({"id": "abc"})).unwrap();
        assert_eq!(a.status, ActionStatus::Other(String::new()));
        assert_eq!(a.status.as_str(), "Unknown");
        assert!(!a.is_final());
        assert_eq!(a.action_type, None);
        assert_eq!(a.type_name(), "machine");
        assert_eq!(a.error_hresult, None);
        assert!(MachineAction::parse(&json!({"status": "Pending"})).is_err());
        assert!(MachineAction::parse(&json!({"id": ""})).is_err());
        assert!(MachineAction::parse(&json!([1])).is_err());
        assert!(MachineAction::parse(&Value::Null).is_err());
    }

    #[test]
    fn numbers_as_strings_and_numeric_ids() {
        let a = MachineAction::parse(&json!({
            "id": 12345,
            "status": "Failed",
            "errorHResult": "-2147467259"
        }))
        .unwrap();
        assert_eq!(a.id, "12345");
        assert_eq!(a.error_hresult, Some(-2147467259));
        let b = MachineAction::parse(&json!({"id": "n", "errorHResult": "0x80004005"})).unwrap();
        assert_eq!(b.error_hresult, Some(-2147467259));
        let c = MachineAction::parse(&json!({"id": "n", "errorHResult": 2147500037u64})).unwrap();
        assert_eq!(c.error_hresult, Some(2147500037));
        let d = MachineAction::parse(&json!({"id": "n", "errorHResult": 5.0})).unwrap();
        assert_eq!(d.error_hresult, Some(5));
        let e = MachineAction::parse(&json!({"id": "n", "errorHResult": "n/a"})).unwrap();
        assert_eq!(e.error_hresult, None);
    }

    #[test]
    fn pascal_case_keys_and_unknown_fields() {
        let a = MachineAction::parse(&json!({
            "Id": "not-a-guid:42",
            "Type": "RunAntiVirusScan",
            "Status": "InProgress",
            "MachineId": "m",
            "SomethingNew": {"nested": [1, 2]}
        }))
        .unwrap();
        assert_eq!(a.id, "not-a-guid:42");
        assert_eq!(a.action_type.as_deref(), Some("RunAntiVirusScan"));
        assert_eq!(a.status, ActionStatus::InProgress);
        assert_eq!(a.machine_id.as_deref(), Some("m"));
        assert_eq!(a.raw["SomethingNew"]["nested"][1], 2);
    }

    #[test]
    fn status_spellings() {
        for (s, want) in [
            ("Canceled", ActionStatus::Cancelled),
            ("CANCELLED", ActionStatus::Cancelled),
            ("Timeout", ActionStatus::TimeOut),
            ("TimedOut", ActionStatus::TimeOut),
            ("In Progress", ActionStatus::InProgress),
            ("succeeded", ActionStatus::Succeeded),
            ("Pending", ActionStatus::Pending),
        ] {
            assert_eq!(ActionStatus::parse(s), want, "{s}");
        }
        let other = ActionStatus::parse("Scheduled");
        assert_eq!(other, ActionStatus::Other("Scheduled".into()));
        assert_eq!(other.as_str(), "Scheduled");
        assert!(!other.is_final());
        assert_eq!(
            ActionStatus::parse("Canceled").to_string(),
            "Cancelled",
            "canonical spelling"
        );
    }

    #[test]
    fn failure_details_name_everything_defender_said() {
        let a = MachineAction::parse(&json!({
            "id": "e",
            "type": "LiveResponse",
            "status": "Failed",
            "errorHResult": -2147467259,
            "commands": [
                {"index": 0, "commandStatus": "Completed", "errors": [], "command": {"type": "PutFile"}},
                {"index": 1, "commandStatus": "Failed", "errors": ["File not found", {"message": "second"}], "command": {"type": "GetFile", "params": []}}
            ]
        }))
        .unwrap();
        assert_eq!(a.command_errors.len(), 1);
        let d = a.failure_details();
        assert_eq!(
            d,
            "status Failed, errorHResult -2147467259 (0x80004005), command 1 GetFile Failed: File not found; second"
        );
        let c = MachineAction::parse(&json!({
            "id": "e", "status": "Cancelled", "cancellationRequestor": "soc@contoso.com",
            "cancellationComment": "wrong device", "cancellationDateTimeUtc": "2026-01-01T00:00:00Z",
            "errorHResult": 0
        }))
        .unwrap();
        assert_eq!(
            c.failure_details(),
            "status Cancelled, cancelled by soc@contoso.com at 2026-01-01T00:00:00Z (wrong device)"
        );
        let t = MachineAction::parse(&json!({"id": "e", "status": "TimeOut"})).unwrap();
        assert_eq!(t.failure_details(), "status TimeOut");
    }

    #[test]
    fn machines_are_read_tolerantly() {
        let m = Machine::parse(&json!({
            "@odata.context": "x",
            "ID": "F1EB97A430CA4C315E219960CD146874419FBEFC",
            "ComputerDnsName": "ws-1.contoso.com",
            "lastIpAddress": "10.0.0.1",
            "unknownField": 1
        }))
        .unwrap();
        assert_eq!(m.id, "f1eb97a430ca4c315e219960cd146874419fbefc");
        assert_eq!(m.computer_dns_name.as_deref(), Some("ws-1.contoso.com"));
        assert_eq!(
            m.label(),
            "ws-1.contoso.com (f1eb97a430ca4c315e219960cd146874419fbefc)"
        );
        assert!(!m.raw.contains_key("@odata.context"));
        assert!(Machine::parse(&json!({"computerDnsName": "x"})).is_err());
        assert!(Machine::parse(&json!("x")).is_err());
        let bare = Machine::parse(&json!({"id": 123})).unwrap();
        assert_eq!(bare.id, "123");
        assert_eq!(bare.label(), "123");
    }
}
