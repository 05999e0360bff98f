//! Live response: `POST /api/machines/{id}/runliveresponse` (validates the command list, enforces
//! the one-session-per-device and per-tenant session limits, plans command failures and creates
//! a `LiveResponse` machine action) and `GET /api/machineactions/{id}/{function}` for
//! `GetLiveResponseResultDownloadLink(index=N)`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{Map, Value, json};

use crate::actions::{self, Command, MachineAction};
use crate::api::{base_url, download, odata_context};
use crate::error::ApiError;
use crate::jwt::Claims;
use crate::state::Sim;

/// The action type live response sessions are recorded as.
const LIVE_RESPONSE: &str = "LiveResponse";

/// The function name of the download link call, as it arrives (paths are lower-cased).
const DOWNLOAD_LINK_FUNCTION: &str = "getliveresponseresultdownloadlink";

/// Retry-After (seconds) for the tenant session limit when no session has a known end.
const SESSION_RETRY_AFTER_SECS: u64 = 60;

/// Live response routes (behind the API guard).
pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route(
            "/api/machines/{id}/runliveresponse",
            post(run_live_response),
        )
        .route("/api/machineactions/{id}/{function}", get(action_function))
}

/// A command type and the params it takes: (type, required params, optional params).
const COMMAND_TYPES: &[(&str, &[&str], &[&str])] = &[
    ("PutFile", &["FileName"], &[]),
    ("RunScript", &["ScriptName"], &["Args"]),
    ("GetFile", &["Path"], &[]),
];

fn invalid_body(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("InvalidRequestBody", message)
}

/// A validated live response request.
#[derive(Debug)]
struct LiveResponseRequest {
    comment: String,
    commands: Vec<Command>,
}

/// Parses and checks the request body (keys are case-sensitive, as Defender's are).
fn parse_request(body: &[u8]) -> Result<LiveResponseRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid_body("The request body is empty"));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid_body(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(invalid_body("The request body must be a JSON object"));
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "Commands" | "Comment"))
    {
        return Err(invalid_body(format!(
            "Unknown field '{unknown}' in the request body; expected 'Commands' and 'Comment'"
        )));
    }
    let comment = match obj.get("Comment") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) | Some(Value::Null) | None => {
            return Err(invalid_body("The field 'Comment' is required"));
        }
        Some(_) => return Err(invalid_body("The field 'Comment' must be a string")),
    };
    let list = match obj.get("Commands") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(invalid_body(
                "The field 'Commands' must hold at least one command",
            ));
        }
        Some(Value::Null) | None => {
            return Err(invalid_body("The field 'Commands' is required"));
        }
        Some(_) => return Err(invalid_body("The field 'Commands' must be an array")),
    };
    let mut commands = Vec::with_capacity(list.len());
    let mut last_rank = 0;
    for (i, item) in list.iter().enumerate() {
        let (rank, command) = parse_command(i, item)?;
        if rank < last_rank {
            return Err(invalid_body(format!(
                "Commands[{i}] ({}) is out of order: commands must be given in the order PutFile, RunScript, GetFile",
                command.command_type
            )));
        }
        last_rank = rank;
        commands.push(command);
    }
    Ok(LiveResponseRequest { comment, commands })
}

/// Parses `Commands[i]`; returns its position in the PutFile → RunScript → GetFile order.
fn parse_command(i: usize, item: &Value) -> Result<(usize, Command), ApiError> {
    let Value::Object(obj) = item else {
        return Err(invalid_body(format!("Commands[{i}] must be an object")));
    };
    if let Some(unknown) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "type" | "params"))
    {
        return Err(invalid_body(format!(
            "Unknown field '{unknown}' in Commands[{i}]; expected 'type' and 'params'"
        )));
    }
    let Some(Value::String(kind)) = obj.get("type") else {
        return Err(invalid_body(format!(
            "Commands[{i}].type is required and must be a string"
        )));
    };
    let Some((rank, (name, required, optional))) = COMMAND_TYPES
        .iter()
        .enumerate()
        .find(|(_, (t, _, _))| t == kind)
    else {
        return Err(invalid_body(format!(
            "Commands[{i}].type '{kind}' is not a supported command; use PutFile, RunScript or GetFile"
        )));
    };
    let raw_params = match obj.get("params") {
        Some(Value::Array(a)) => a.as_slice(),
        Some(Value::Null) | None => &[],
        Some(_) => {
            return Err(invalid_body(format!(
                "Commands[{i}].params must be an array"
            )));
        }
    };
    let mut params: Vec<(String, String)> = Vec::with_capacity(raw_params.len());
    for (j, p) in raw_params.iter().enumerate() {
        let (Some(Value::String(key)), Some(value)) = (p.get("key"), p.get("value")) else {
            return Err(invalid_body(format!(
                "Commands[{i}].params[{j}] must be an object with string 'key' and 'value'"
            )));
        };
        let Value::String(value) = value else {
            return Err(invalid_body(format!(
                "Commands[{i}].params[{j}].value must be a string"
            )));
        };
        if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
            return Err(invalid_body(format!(
                "Commands[{i}] ({name}) does not take the param '{key}'"
            )));
        }
        if params.iter().any(|(k, _)| k == key) {
            return Err(invalid_body(format!(
                "Commands[{i}] ({name}) gives the param '{key}' twice"
            )));
        }
        params.push((key.clone(), value.clone()));
    }
    for req in required.iter() {
        let given = params
            .iter()
            .find(|(k, _)| k == req)
            .is_some_and(|(_, v)| !v.trim().is_empty());
        if !given {
            return Err(invalid_body(format!(
                "Commands[{i}] ({name}) is missing the required param '{req}'"
            )));
        }
    }
    Ok((
        rank,
        Command {
            command_type: (*name).to_string(),
            params,
            fails_with: None,
        },
    ))
}

fn param<'a>(command: &'a Command, key: &str) -> &'a str {
    command
        .params
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// `POST /api/machines/{id}/runliveresponse`.
async fn run_live_response(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path(machine_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request = parse_request(&body)?;
    let now = sim.clock.now_ms();
    let mut w = sim.world();
    let machine = w
        .scenario
        .machine(&machine_id)
        .ok_or_else(|| ApiError::not_found(format!("Machine {machine_id} was not found")))?;
    let machine_id = machine
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or(&machine_id)
        .to_string();
    let dns_name = machine
        .get("computerDnsName")
        .and_then(Value::as_str)
        .map(str::to_string);
    if w.actions
        .active_on(&machine_id, LIVE_RESPONSE, now)
        .is_some()
    {
        return Err(ApiError::bad_request(
            "ActiveRequestAlreadyExists",
            "Action is already in progress",
        ));
    }
    let limit = w.scenario.max_live_sessions_per_tenant;
    if w.actions.live_sessions(&claims.tid, now) >= limit {
        let retry = session_retry_after(&w.actions, &claims.tid, now);
        let mut e = ApiError::too_many(retry);
        e.message = format!(
            "The tenant already has {limit} active live response sessions, the most allowed at once. Try again later."
        );
        return Err(e);
    }
    // Plan the first failing command: later ones never run.
    let mut commands = request.commands;
    let mut planned_error = None;
    for c in commands.iter_mut() {
        let failure = match c.command_type.as_str() {
            "PutFile" | "RunScript" => {
                let key = if c.command_type == "PutFile" {
                    "FileName"
                } else {
                    "ScriptName"
                };
                let name = param(c, key);
                w.scenario
                    .library_file(name)
                    .is_none()
                    .then(|| format!("File {name} was not found in the library"))
            }
            _ => {
                let path = param(c, "Path");
                download::device_file(&w.scenario, &machine_id, path)
                    .is_none()
                    .then(|| format!("File not found: {path}"))
            }
        };
        if let Some(msg) = failure {
            c.fails_with = Some(msg.clone());
            planned_error = Some(msg);
            break;
        }
    }
    let (outcome, error) = match planned_error {
        Some(msg) => ("Failed".to_string(), Some(msg)),
        None => actions::pick_outcome(&mut w.scenario.outcomes, LIVE_RESPONSE, &machine_id),
    };
    let timings = w.scenario.timings.for_type(LIVE_RESPONSE);
    let manual = w.scenario.timings.manual;
    let action = MachineAction {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: claims.tid.clone(),
        action_type: LIVE_RESPONSE.to_string(),
        title: format!(
            "Live response on {}",
            dns_name.as_deref().unwrap_or(&machine_id)
        ),
        requestor: super::requestor(&w.scenario, &claims),
        comment: request.comment,
        machine_id: machine_id.clone(),
        computer_dns_name: dns_name,
        scope: None,
        external_id: None,
        related_file_info: None,
        created_ms: now,
        timings,
        manual,
        stage_floor: 0,
        floor_changed_ms: now,
        outcome,
        error,
        cancellation: None,
        commands,
    };
    let mut out = Map::new();
    out.insert(
        "@odata.context".into(),
        json!(odata_context(&headers, "MachineActions/$entity")),
    );
    out.extend(action.to_json(now));
    w.actions.insert(action);
    Ok((StatusCode::CREATED, Json(Value::Object(out))))
}

/// Seconds until the first open session of the tenant is due to end (timed actions only).
fn session_retry_after(store: &actions::ActionStore, tenant_id: &str, now: i64) -> u64 {
    store
        .iter()
        .filter(|a| {
            a.action_type == LIVE_RESPONSE
                && a.tenant_id.eq_ignore_ascii_case(tenant_id)
                && !a.manual
                && !actions::is_final(a.status(now))
        })
        .map(|a| {
            let end = a.created_ms + (a.timings.pending_ms + a.timings.in_progress_ms) as i64;
            (end - now).max(0)
        })
        .min()
        .map_or(SESSION_RETRY_AFTER_SECS, |ms| ((ms + 999) / 1000) as u64)
        .max(1)
}

/// Parses `getliveresponseresultdownloadlink(index=N)`: None when it is another function,
/// Some(Err) when the function is right but its argument is not.
fn parse_function(function: &str) -> Option<Result<usize, ApiError>> {
    let rest = function.strip_prefix(DOWNLOAD_LINK_FUNCTION)?;
    let args = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')'));
    let parsed = args.and_then(|a| {
        let (k, v) = a.split_once('=')?;
        if k.trim() != "index" {
            return None;
        }
        v.trim().parse::<usize>().ok()
    });
    Some(parsed.ok_or_else(|| {
        ApiError::bad_request(
            "InvalidInput",
            "GetLiveResponseResultDownloadLink takes one argument: (index=N) with N the command index",
        )
    }))
}

/// `GET /api/machineactions/{id}/{function}`: `GetLiveResponseResultDownloadLink(index=N)`.
async fn action_function(
    State(sim): State<Arc<Sim>>,
    Extension(claims): Extension<Claims>,
    Path((action_id, function)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let index = match parse_function(&function) {
        Some(r) => r?,
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("No function '{function}' on machine actions"),
            ));
        }
    };
    let now = sim.clock.now_ms();
    let id = {
        let w = sim.world();
        let action = w
            .actions
            .get(&action_id)
            .filter(|a| a.tenant_id.eq_ignore_ascii_case(&claims.tid))
            .ok_or_else(|| {
                ApiError::not_found(format!("Machine action {action_id} was not found"))
            })?;
        if action.action_type != LIVE_RESPONSE {
            return Err(ApiError::bad_request(
                "BadRequest",
                format!(
                    "Machine action {action_id} is a {} action, not a live response",
                    action.action_type
                ),
            ));
        }
        if index >= action.commands.len() {
            return Err(ApiError::bad_request(
                "InvalidInput",
                format!(
                    "Command index {index} is out of range: the action has {} command(s)",
                    action.commands.len()
                ),
            ));
        }
        if !action.command_completed(index, now) {
            let status = action
                .commands_json(now)
                .get(index)
                .and_then(|c| c.get("commandStatus"))
                .and_then(Value::as_str)
                .unwrap_or("Created")
                .to_string();
            return Err(ApiError::bad_request(
                "BadRequest",
                format!(
                    "Command {index} of machine action {action_id} has not completed (status {status}); its result is not available"
                ),
            ));
        }
        action.id.clone()
    };
    let link = download::result_link(&sim, &base_url(&headers), &id, index);
    Ok(Json(json!({
        "@odata.context": odata_context(&headers, "Edm.String"),
        "value": link,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn accepts_a_full_request() {
        let r = parse_request(&body(json!({
            "Comment": "c",
            "Commands": [
                {"type": "PutFile", "params": [{"key": "FileName", "value": "a.ps1"}]},
                {"type": "RunScript", "params": [{"key": "ScriptName", "value": "a.ps1"}, {"key": "Args", "value": "-x"}]},
                {"type": "GetFile", "params": [{"key": "Path", "value": "C:\\x"}]},
            ]
        })))
        .unwrap();
        assert_eq!(r.commands.len(), 3);
        assert_eq!(param(&r.commands[1], "Args"), "-x");
    }

    #[test]
    fn rejects_wrong_case_keys_and_order() {
        let e = parse_request(&body(json!({"comment": "c", "Commands": []}))).unwrap_err();
        assert!(e.message.contains("'comment'"));
        let e = parse_request(&body(json!({
            "Comment": "c",
            "Commands": [
                {"type": "GetFile", "params": [{"key": "Path", "value": "C:\\x"}]},
                {"type": "PutFile", "params": [{"key": "FileName", "value": "a"}]},
            ]
        })))
        .unwrap_err();
        assert!(e.message.contains("order"));
    }

    #[test]
    fn parses_the_download_function() {
        assert_eq!(
            parse_function("getliveresponseresultdownloadlink(index=2)")
                .unwrap()
                .unwrap(),
            2
        );
        assert!(
            parse_function("getliveresponseresultdownloadlink(idx=2)")
                .unwrap()
                .is_err()
        );
        assert!(
            parse_function("getliveresponseresultdownloadlink")
                .unwrap()
                .is_err()
        );
        assert!(parse_function("somethingelse").is_none());
    }
}
