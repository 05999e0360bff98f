//! Every documented answer through the typed models the host reads it with.

use defender_soar::auth::entra::{EntraError, EntraTokenResponse};
use defender_soar::defender::endpoints as ep;
use defender_soar::defender::hunting::HuntingAnswer;
use defender_soar::defender::{ActionStatus, Endpoint, Machine, MachineAction, presigned_link};
use serde_json::Value;

use super::corpus::{self, Fixture};

/// Endpoints answered with one MachineAction.
const MACHINE_ACTION_ENTITY: &[&Endpoint] = &[
    &ep::ISOLATE,
    &ep::UNISOLATE,
    &ep::STOP_AND_QUARANTINE_FILE,
    &ep::RUN_ANTIVIRUS_SCAN,
    &ep::RESTRICT_CODE_EXECUTION,
    &ep::UNRESTRICT_CODE_EXECUTION,
    &ep::COLLECT_INVESTIGATION_PACKAGE,
    &ep::RUN_LIVE_RESPONSE,
    &ep::MACHINE_ACTION,
    &ep::CANCEL_MACHINE_ACTION,
    &ep::OFFBOARD,
];
/// Endpoints answered with one Machine.
const MACHINE_ENTITY: &[&Endpoint] = &[&ep::MACHINE, &ep::MACHINE_TAGS];
/// Endpoints answered with a list of Machines (or machine references).
const MACHINE_LIST: &[&Endpoint] = &[
    &ep::MACHINES,
    &ep::DOMAIN_MACHINES,
    &ep::FILE_MACHINES,
    &ep::USER_MACHINES,
    &ep::FIND_MACHINES_BY_IP,
    &ep::SOFTWARE_MACHINES,
    &ep::VULNERABILITY_MACHINES,
];
/// Endpoints answered with an `Edm.String` link.
const LINKS: &[&Endpoint] = &[&ep::PACKAGE_URI, &ep::LIVE_RESPONSE_RESULT_LINK];

fn is(f: &Fixture, list: &[&Endpoint]) -> bool {
    f.catalogue_endpoint()
        .is_some_and(|e| list.iter().any(|x| std::ptr::eq(*x, e)))
}

fn check_machine_action(name: &str, v: &Value) -> Result<(), String> {
    let a = MachineAction::parse(v)?;
    let sent = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    if Some(a.id.clone()) != sent("id") {
        return Err(format!("{name}: id {} is not the one sent", a.id));
    }
    if matches!(a.status, ActionStatus::Other(_)) {
        return Err(format!(
            "{name}: status {:?} not understood",
            sent("status")
        ));
    }
    if a.action_type != sent("type") || a.action_type.is_none() {
        return Err(format!("{name}: type lost"));
    }
    if a.machine_id != sent("machineId") || a.computer_dns_name != sent("computerDnsName") {
        return Err(format!("{name}: device lost"));
    }
    if a.creation_time.is_none() || a.last_update_time.is_none() {
        return Err(format!(
            "{name}: creation or last update time lost (lastUpdateDateTimeUtc/lastUpdateTimeUtc)"
        ));
    }
    if a.requestor != sent("requestor") || a.requestor_comment != sent("requestorComment") {
        return Err(format!("{name}: requestor or comment lost"));
    }
    if a.scope != sent("scope") {
        return Err(format!("{name}: scope lost"));
    }
    if !a.command_errors.is_empty() {
        return Err(format!("{name}: command errors where none were sent"));
    }
    if a.raw.keys().any(|k| k.starts_with("@odata.")) {
        return Err(format!("{name}: annotations kept in raw"));
    }
    Ok(())
}

fn check_machine(name: &str, v: &Value) -> Result<(), String> {
    let m = Machine::parse(v)?;
    let id = v["id"].as_str().unwrap_or("");
    if m.id != id.to_ascii_lowercase() || m.id.len() != 40 {
        return Err(format!("{name}: device id {} read wrongly", m.id));
    }
    if m.computer_dns_name.as_deref() != v["computerDnsName"].as_str()
        || m.os_platform.as_deref() != v["osPlatform"].as_str()
    {
        return Err(format!("{name}: name or platform lost"));
    }
    if m.last_ip_address.as_deref() != v["lastIpAddress"].as_str()
        || m.health_status.as_deref() != v["healthStatus"].as_str()
    {
        return Err(format!("{name}: address or health lost"));
    }
    Ok(())
}

fn check_hunting(name: &str, body: &Value) -> Result<(), String> {
    let bytes = serde_json::to_vec(body).unwrap();
    let answer = HuntingAnswer::parse(&bytes, 1000)?;
    let schema = body
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("schema")))
        .and_then(|(_, v)| v.as_array())
        .ok_or(format!("{name}: no schema"))?;
    let results = body
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("results")))
        .and_then(|(_, v)| v.as_array())
        .ok_or(format!("{name}: no results"))?;
    let names: Vec<&str> = schema
        .iter()
        .map(|c| {
            c.as_object()
                .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("name")))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or("")
        })
        .collect();
    let read: Vec<&str> = answer.columns.iter().map(|c| c.name.as_str()).collect();
    if names != read {
        return Err(format!("{name}: columns {read:?}, sent {names:?}"));
    }
    if answer.columns.iter().any(|c| c.column_type.is_empty()) {
        return Err(format!("{name}: a column lost its type"));
    }
    if answer.rows.len() != results.len() || answer.total_rows != results.len() {
        return Err(format!(
            "{name}: {} rows read of {}",
            answer.rows.len(),
            results.len()
        ));
    }
    if answer.rows.first() != results.first().and_then(Value::as_object) {
        return Err(format!("{name}: first row changed"));
    }
    Ok(())
}

fn check(f: &Fixture) -> Result<(), String> {
    let name = &f.name;
    let body = f.body();
    if f.endpoint().contains("/oauth2/") {
        return if f.status() == 200 {
            let t: EntraTokenResponse = serde_json::from_value(body.clone())
                .map_err(|e| format!("{name}: token answer not read: {e}"))?;
            if t.expires_in != Some(3599) {
                return Err(format!("{name}: expires_in read as {:?}", t.expires_in));
            }
            if body.get("expires_on").is_some() && t.expires_on.is_none() {
                return Err(format!("{name}: expires_on lost"));
            }
            Ok(())
        } else {
            let e: EntraError = serde_json::from_value(body.clone())
                .map_err(|e| format!("{name}: Entra error not read: {e}"))?;
            let sent = body["error_codes"][0].as_u64();
            if e.code() != sent || e.error.is_empty() || e.correlation_id.is_none() {
                return Err(format!("{name}: AADSTS code or correlation id lost"));
            }
            Ok(())
        };
    }
    if f.status() == 404 && body.is_null() {
        // The pages say "404 Not Found" and show no body.
        return Ok(());
    }
    if f.status() >= 400 {
        // MDE and Graph error bodies: read by the client (see the replay tests).
        let err = &body["error"];
        return if err["code"].is_string() && err["message"].is_string() {
            Ok(())
        } else {
            Err(format!("{name}: error body without code and message"))
        };
    }
    if matches!(f.status(), 204) || body.is_null() {
        return if body.is_null() {
            Ok(())
        } else {
            Err(format!("{name}: 204 with a body"))
        };
    }
    if is(f, MACHINE_ACTION_ENTITY) {
        return check_machine_action(name, body);
    }
    if f.catalogue_endpoint() == Some(&ep::MACHINE_ACTIONS) {
        for v in body["value"]
            .as_array()
            .ok_or(format!("{name}: no value"))?
        {
            check_machine_action(name, v)?;
        }
        return Ok(());
    }
    if is(f, MACHINE_ENTITY) {
        return check_machine(name, body);
    }
    if is(f, MACHINE_LIST) {
        for v in body["value"]
            .as_array()
            .ok_or(format!("{name}: no value"))?
        {
            // Machine references carry id, name, platform and group only.
            let m = Machine::parse(v)?;
            // Text is read trimmed (one documented name ends with a space).
            if m.id.len() != 40
                || m.computer_dns_name.as_deref() != v["computerDnsName"].as_str().map(str::trim)
            {
                return Err(format!("{name}: machine reference read wrongly"));
            }
            if v.get("lastIpAddress").is_some() {
                check_machine(name, v)?;
            }
        }
        return Ok(());
    }
    if is(f, LINKS) {
        if body.get("script_name").is_some() {
            // The transcript a live response link serves.
            return match (body["exit_code"].as_i64(), body["script_output"].as_str()) {
                (Some(0), Some(out)) if out.contains("OfficeClickToRun") => Ok(()),
                _ => Err(format!("{name}: transcript fields lost")),
            };
        }
        let link = presigned_link(body).map_err(|e| format!("{name}: link {e}"))?;
        return if link.scheme() == "https" {
            Ok(())
        } else {
            Err(format!("{name}: link scheme {}", link.scheme()))
        };
    }
    if f.catalogue_endpoint().is_some_and(|e| {
        std::ptr::eq(e, &ep::ADVANCED_QUERIES) || std::ptr::eq(e, &ep::RUN_HUNTING_QUERY)
    }) {
        return check_hunting(name, body);
    }
    // Everything else is read as JSON objects by the handlers: a list under `value`, or one
    // entity.
    match body {
        Value::Object(o) if o.contains_key("value") => {
            if o["value"]
                .as_array()
                .is_some_and(|v| v.iter().all(Value::is_object))
            {
                Ok(())
            } else {
                Err(format!("{name}: value is not a list of objects"))
            }
        }
        Value::Object(_) => Ok(()),
        _ => Err(format!("{name}: the answer is not a JSON object")),
    }
}

#[test]
fn every_documented_answer_reads_through_the_models() {
    let fixtures = corpus::all();
    let problems: Vec<String> = fixtures.iter().filter_map(|f| check(f).err()).collect();
    assert!(
        problems.is_empty(),
        "{} of {} fixtures are misread:\n  {}",
        problems.len(),
        fixtures.len(),
        problems.join("\n  ")
    );
}

#[test]
fn list_answers_naming_last_update_time_utc_keep_the_time() {
    let f = corpus::load("mde/machineactions_list.json");
    for v in f.body()["value"].as_array().unwrap() {
        let a = MachineAction::parse(v).unwrap();
        assert_eq!(
            a.last_update_time.as_deref(),
            v["lastUpdateTimeUtc"].as_str()
        );
    }
    let entity = corpus::load("mde/machineaction_get.json");
    let a = MachineAction::parse(entity.body()).unwrap();
    assert_eq!(
        a.last_update_time.as_deref(),
        Some("2019-01-02T14:40:44.6596267Z")
    );
}

#[test]
fn the_quoted_package_link_is_read() {
    let f = corpus::load("mde/get_package_uri.json");
    let link = presigned_link(f.body()).unwrap();
    assert_eq!(
        link.host_str(),
        Some("userrequests-us.securitycenter.windows.com")
    );
    assert!(link.query().unwrap().starts_with("token="));
}

#[test]
fn hunting_schema_keys_in_either_casing_give_the_same_columns() {
    let pascal = corpus::load("graph/run_hunting_query_pascal_schema.json");
    let camel = corpus::load("graph/run_hunting_query.json");
    let mde = corpus::load("mde/advanced_queries.json");
    let cols = |f: &Fixture| -> Vec<(String, String)> {
        let bytes = serde_json::to_vec(f.body()).unwrap();
        HuntingAnswer::parse(&bytes, 10)
            .unwrap()
            .columns
            .into_iter()
            .map(|c| (c.name, c.column_type))
            .collect()
    };
    assert_eq!(cols(&pascal), cols(&camel));
    assert_eq!(cols(&mde).len(), 4);
    assert!(
        HuntingAnswer::parse(&serde_json::to_vec(mde.body()).unwrap(), 10)
            .unwrap()
            .stats
            .is_none()
    );
}
