//! `run_script`: a library script run on a device, its output returned.
//!
//! The RunScript result is a small JSON document
//! (`{"script_name","exit_code","script_output","script_errors"}`) read into memory up to
//! [`MAX_RESULT_BYTES`]. Invalid UTF-8 is replaced, NUL bytes are dropped, and output and
//! errors are cut at [`MAX_TEXT_BYTES`] each, with a note saying so. A result that is not
//! that JSON is returned as the script's output text.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::Kind;
use super::command::{CommandInfo, LiveCommand};
use super::download::{self, Fetch};
use super::flow::{self, Fields, Finished, Request, Session, Tracked};
use crate::actions::{Action, ActionContext};
use crate::envelope::{ActionError, Outcome};

/// Largest RunScript result read.
pub const MAX_RESULT_BYTES: usize = 32 << 20;
/// Longest script output (and error text) returned.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// `run_script`.
pub struct RunScript;

/// Parameters of `run_script`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunScriptParams {
    /// An earlier run_script to resume.
    #[serde(default)]
    pub event_id: Option<String>,
    /// Device id.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Library script name.
    #[serde(default)]
    pub script_name: Option<String>,
    /// Script arguments.
    #[serde(default)]
    pub script_args: Option<String>,
    /// Comment recorded with the live response.
    #[serde(default)]
    pub comment: Option<String>,
    /// Seconds to wait.
    pub timeout: u64,
}

impl Action for RunScript {
    const ID: &'static str = "run_script";
    type Params = RunScriptParams;

    async fn run(ctx: ActionContext, p: RunScriptParams) -> Result<Outcome, ActionError> {
        let mut f = Fields::default();
        let device = f.required("device_id", p.device_id.as_deref());
        let script = f.required("script_name", p.script_name.as_deref());
        let args = f.optional(p.script_args.as_deref());
        let comment = f.required("comment", p.comment.as_deref());
        let session = f.session(|| {
            Some(Session {
                device_id: device?,
                command: LiveCommand::run_script(&script?, args.as_deref()),
                comment: comment?,
            })
        });
        let req = Request {
            kind: Kind::RunScript,
            event_id: flow::event_id_param(p.event_id.as_deref()),
            session,
            timeout: p.timeout,
        };
        flow::run(&ctx, req).await
    }
}

/// A script's result, cleaned up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptResult {
    /// The script's name.
    pub script_name: String,
    /// Its exit code, when the result gave one.
    pub exit_code: Option<i64>,
    /// What it printed.
    pub script_output: String,
    /// What it printed on its error stream.
    pub script_errors: String,
    /// `script_output` was cut at [`MAX_TEXT_BYTES`].
    pub output_truncated: bool,
    /// `script_errors` was cut at [`MAX_TEXT_BYTES`].
    pub errors_truncated: bool,
    /// The result was not the expected JSON; `script_output` is its text.
    pub unstructured: bool,
}

/// Text without NUL characters, cut at `max` bytes on a character boundary; answers whether
/// it was cut.
pub fn clean_text(text: &str, max: usize) -> (String, bool) {
    let without_nul: String = text.chars().filter(|c| *c != '\0').collect();
    if without_nul.len() <= max {
        return (without_nul, false);
    }
    let mut end = max;
    while !without_nul.is_char_boundary(end) {
        end -= 1;
    }
    (without_nul[..end].to_string(), true)
}

/// A key looked up as given, then without regard to ASCII case.
fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A text field of the result: strings as they are, other values as JSON, null as empty.
fn text_field(obj: &Map<String, Value>, key: &str) -> String {
    match get_ci(obj, key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Reads a RunScript result; `fallback_name` names the script when the result does not.
pub fn parse_result(bytes: &[u8], fallback_name: &str) -> ScriptResult {
    let text = String::from_utf8_lossy(bytes);
    let parsed: Option<Map<String, Value>> =
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| match v {
                Value::Object(o) => Some(o),
                _ => None,
            });
    let Some(obj) = parsed else {
        let (script_output, output_truncated) = clean_text(&text, MAX_TEXT_BYTES);
        return ScriptResult {
            script_name: fallback_name.to_string(),
            exit_code: None,
            script_output,
            script_errors: String::new(),
            output_truncated,
            errors_truncated: false,
            unstructured: true,
        };
    };
    let exit_code = get_ci(&obj, "exit_code").and_then(|v| match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let name = clean_text(&text_field(&obj, "script_name"), 1000).0;
    let (script_output, output_truncated) =
        clean_text(&text_field(&obj, "script_output"), MAX_TEXT_BYTES);
    let (script_errors, errors_truncated) =
        clean_text(&text_field(&obj, "script_errors"), MAX_TEXT_BYTES);
    ScriptResult {
        script_name: if name.trim().is_empty() {
            fallback_name.to_string()
        } else {
            name
        },
        exit_code,
        script_output,
        script_errors,
        output_truncated,
        errors_truncated,
        unstructured: false,
    }
}

/// Fetches the output of a succeeded RunScript and builds the envelope.
pub async fn collect(
    ctx: &ActionContext,
    t: &Tracked,
    cmd: &CommandInfo,
    deadline: Instant,
) -> Result<Finished, ActionError> {
    let kind = Kind::RunScript;
    let fallback = cmd
        .command
        .param("ScriptName")
        .unwrap_or("script")
        .to_string();
    let bytes = match fetch(ctx, t, cmd, deadline).await {
        Ok(b) => b,
        Err(Fetch::Throttled(e)) => return Err(e.into()),
        Err(Fetch::Gone(why)) => return Ok(flow::result_gone(kind, t, &why)),
        Err(Fetch::Failed(why)) => return Ok(Finished::Done(flow::fetch_failed(kind, t, &why))),
    };
    let r = parse_result(&bytes, &fallback);
    let mut notes = Vec::new();
    if r.output_truncated {
        notes.push(format!(
            "the output was cut at {} MiB",
            MAX_TEXT_BYTES >> 20
        ));
    }
    if r.errors_truncated {
        notes.push(format!(
            "the error text was cut at {} MiB",
            MAX_TEXT_BYTES >> 20
        ));
    }
    if r.unstructured {
        notes.push("the result was not the usual JSON; script_output holds its text".into());
    }
    let exit = r
        .exit_code
        .map_or_else(|| "no exit code".to_string(), |c| format!("exit code {c}"));
    let note = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join("; "))
    };
    let mut o = t
        .outcome(
            kind,
            false,
            format!(
                "Script {} ran by {}: {exit}, {} bytes of output{note}",
                r.script_name,
                t.label(kind),
                r.script_output.len()
            ),
        )
        .with_data(json!({
            "script_name": r.script_name,
            "exit_code": r.exit_code,
            "script_output": r.script_output,
            "script_errors": r.script_errors,
            "script_output_truncated": r.output_truncated,
            "script_errors_truncated": r.errors_truncated,
            "device_id": t.device_id,
            "event_id": t.action.id,
        }));
    if let Some(code) = r.exit_code {
        o = o.with_summary("exit_code", code);
    }
    Ok(Finished::Done(o))
}

/// Downloads the RunScript result (at most [`MAX_RESULT_BYTES`]).
async fn fetch(
    ctx: &ActionContext,
    t: &Tracked,
    cmd: &CommandInfo,
    deadline: Instant,
) -> Result<Vec<u8>, Fetch> {
    ctx.progress(&format!(
        "live response {} succeeded; asking for the download link of command {}",
        t.action.id, cmd.index
    ));
    let link = download::result_link(ctx, &t.action.id, cmd.index, deadline).await?;
    let host = download::link_host(&link);
    let mut response = download::open(ctx, link).await?;
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESULT_BYTES {
                    return Err(Fetch::Failed(format!(
                        "the script result from {host} is larger than {} MiB",
                        MAX_RESULT_BYTES >> 20
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Fetch::Failed(format!(
                    "the download from {host} broke off after {} bytes: {}",
                    body.len(),
                    e.without_url()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_result() {
        let r = parse_result(
            br#"{"script_name":"x.ps1","exit_code":0,"script_output":"ok\n","script_errors":""}"#,
            "fallback",
        );
        assert_eq!(r.script_name, "x.ps1");
        assert_eq!(r.exit_code, Some(0));
        assert_eq!(r.script_output, "ok\n");
        assert!(!r.output_truncated && !r.unstructured);
    }

    #[test]
    fn nul_bytes_and_invalid_utf8() {
        let mut raw =
            br#"{"script_name":"x.ps1","exit_code":"3","script_output":"a\u0000b"#.to_vec();
        raw.extend_from_slice(&[0xff, 0xfe]);
        raw.extend_from_slice(br#"c","script_errors":null,"Extra":1}"#);
        let r = parse_result(&raw, "f");
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.script_output, "ab\u{fffd}\u{fffd}c");
        assert_eq!(r.script_errors, "");
        let raw_nul = [b'o', b'k', 0, b'!'];
        let r = parse_result(&raw_nul, "f.ps1");
        assert!(r.unstructured);
        assert_eq!(r.script_output, "ok!");
        assert_eq!(r.script_name, "f.ps1");
        assert_eq!(r.exit_code, None);
    }

    #[test]
    fn long_output_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT_BYTES);
        let doc =
            json!({"script_name": "", "exit_code": 1, "script_output": long, "script_errors": "e"});
        let r = parse_result(doc.to_string().as_bytes(), "fallback.ps1");
        assert!(r.output_truncated);
        assert!(r.script_output.len() <= MAX_TEXT_BYTES);
        assert!(r.script_output.len() > MAX_TEXT_BYTES - 4);
        assert_eq!(r.script_name, "fallback.ps1");
        assert_eq!(r.exit_code, Some(1));
        assert!(!r.errors_truncated);
    }

    #[test]
    fn other_json_is_tolerated() {
        let r = parse_result(b"[1,2]", "s");
        assert!(r.unstructured);
        assert_eq!(r.script_output, "[1,2]");
        let r = parse_result(br#"{"Script_Output": 42, "exit_code": 2.0}"#, "s");
        assert_eq!(r.script_output, "42");
        assert_eq!(r.exit_code, Some(2));
    }
}
