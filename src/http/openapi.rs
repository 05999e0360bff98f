//! The OpenAPI 3.1 document, generated from the route annotations plus one path per action
//! built from the action definitions (so each action's parameters are described). The route
//! `POST /assets/{asset}/actions/{action}` appears only as these concrete paths: any other
//! action id answers 404.
//!
//! A parameter's schema describes what the host accepts, not only the definition's preferred
//! form: the generic validation (`src/actions/validate.rs`) lets integers and booleans arrive as
//! strings, matches value lists regardless of letter case and treats `null` and `""` as "not
//! given"; and a few handlers add rules of their own (a comment must not be blank, `event_id`
//! or the parameters of a new live response, ...), which [`action_rules`] restates so that a
//! request valid against the document is one the host takes.

use serde_json::{Map, Value, json};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::actions::definition::{Alias, ParamSpec, ParamType};
use crate::actions::{Definition, definitions};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "defender-soar",
        description = "SOAR actions for Microsoft Defender for Endpoint"
    ),
    paths(
        super::routes::healthz,
        super::routes::readyz,
        super::routes::metrics,
        super::routes::manifest,
        super::routes::openapi,
        super::routes::list_actions,
        super::oauth::request_consent,
        super::feed::feed,
        super::audit::audit,
        super::oauth::start_oauth,
        super::oauth::result,
        super::vault::file,
        super::vault::info,
    ),
    components(schemas(
        crate::envelope::Envelope,
        crate::envelope::Status,
        super::routes::InvokeBody,
        super::routes::ActionSummary,
        super::routes::Health,
        super::routes::Readiness,
        super::routes::DegradedPart,
        super::vault::VaultInfo,
        crate::audit::AuditPage,
    ))
)]
struct ApiDoc;

/// The name of the optional request header that makes a live response request repeat-safe.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The statuses every action operation documents (all with the envelope as body).
pub const ACTION_STATUSES: [u16; 10] = [200, 400, 401, 403, 404, 409, 413, 500, 502, 503];

/// The document as JSON.
pub fn spec() -> Value {
    let mut doc = ApiDoc::openapi();
    if let Some(components) = doc.components.as_mut() {
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
    let mut value = serde_json::to_value(&doc).unwrap_or(Value::Null);
    add_action_paths(&mut value);
    value
}

/// The `Idempotency-Key` header parameter and its rule.
fn idempotency_header() -> Value {
    json!({
        "name": IDEMPOTENCY_KEY,
        "in": "header",
        "required": false,
        "description": "Makes a request that starts a live response (get_file, put_file, \
            run_script) safe to repeat: 1 to 255 visible ASCII characters (0x21-0x7E), anything \
            else is refused with 400. The key is remembered per asset for 7 days together with \
            the action and a hash of its parameters (device, command, comment; not the timeout). \
            A repeat with the same key, action and parameters — even after the host restarted — \
            resumes the live response the first request started instead of starting another; \
            the same key with another action or other parameters is refused with 400. Other \
            actions check the header's form and otherwise ignore it.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "pattern": "^[\\x21-\\x7e]+$",
        },
    })
}

/// The envelope as a response body.
fn envelope_content() -> Value {
    json!({"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}})
}

/// The responses of an action operation: every status the host can answer, each an envelope.
fn action_responses() -> Value {
    let mut responses = Map::new();
    for status in ACTION_STATUSES {
        let description = match status {
            200 => "The action ran; `status` says whether it succeeded",
            400 => {
                "Invalid parameters (the message names the parameter and what is allowed), an \
                 unknown parameter, a body that is not JSON or not `{\"parameters\": {...}}`, or \
                 an invalid or reused Idempotency-Key"
            }
            401 => "Missing or wrong API key",
            403 => {
                "The action is in the asset's `disabled_actions`, or the API key lacks the action's scope (read, respond, live_response) or may not use the asset"
            }
            404 => "Unknown asset or action",
            409 => {
                "The asset needs interactive consent first; `summary.consent_url` is \
                 POST /assets/{asset}/consent (which answers a single-use consent link) or, \
                 from test_connectivity, such a link itself"
            }
            413 => "The request body is larger than `server.body_limit_bytes`",
            500 => "A fault of this host, e.g. an unreadable state file (logged)",
            502 => {
                "The upstream (Entra ID or Defender) failed in a way the action could not \
                 handle, or the action outlasted `server.request_timeout_secs`"
            }
            _ => "The upstream throttled past the action's deadline; retry after `Retry-After`",
        };
        let mut response = json!({"description": description, "content": envelope_content()});
        if status == 503 {
            response["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait before retrying",
                "required": true,
                "schema": {"type": "integer", "minimum": 0},
            }});
        }
        responses.insert(status.to_string(), response);
    }
    Value::Object(responses)
}

/// The path and header parameters of an action operation.
fn action_parameters() -> Value {
    json!([
        {
            "name": "asset", "in": "path", "required": true,
            "description": "Asset id (a key under [assets] in the configuration)",
            "schema": {"type": "string"},
        },
        idempotency_header(),
    ])
}

/// Regex (ECMA 262 and Python compatible) of text with at least one character that is not
/// white space as Rust's `str::trim` sees it: a blank value counts as not given.
const NONBLANK: &str =
    "[^\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// A domain name as `list_devices` checks it: dot-separated labels of letters, digits and '-'.
const DOMAIN: &str = "^[A-Za-z0-9-]{1,63}(\\.[A-Za-z0-9-]{1,63})*$";

/// White space as Rust's `str::trim` sees it (the host trims `device_id`).
const TRIMMED: &str =
    "[\\t-\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]*";

/// A device as `device_id` takes it: a 40-hex id, a host name (dot-separated labels of
/// letters, digits, '-' and '_') or an IPv4 address, which the host name form covers (an
/// IPv6 address is accepted too, but not described here).
fn device_schema() -> Value {
    json!({
        "maxLength": 253,
        "pattern": format!("^{TRIMMED}[0-9A-Za-z_-]{{1,63}}(\\.[0-9A-Za-z_-]{{1,63}})*{TRIMMED}$"),
    })
}

/// Base64 in the standard alphabet, padding optional, ASCII white space anywhere, and the
/// unused bits of the last character zero (what `upload_library_file` decodes).
const BASE64: &str = "^[\\t\\n\\f\\r ]*(?:(?:[A-Za-z0-9+/][\\t\\n\\f\\r ]*){4})*\
    (?:[A-Za-z0-9+/][\\t\\n\\f\\r ]*[AQgw][\\t\\n\\f\\r ]*(?:=[\\t\\n\\f\\r ]*){0,2}\
    |(?:[A-Za-z0-9+/][\\t\\n\\f\\r ]*){2}[AEIMQUYcgkosw048][\\t\\n\\f\\r ]*(?:=[\\t\\n\\f\\r ]*)?)?$";

/// A value counts as given: a string that is not empty.
fn given() -> Value {
    json!({"type": "string", "minLength": 1})
}

/// A value counts as given to a handler that trims it: a string that is not blank.
fn nonblank() -> Value {
    json!({"type": "string", "pattern": NONBLANK})
}

/// `names` are all given (as `kind` says: [`given`] or [`nonblank`]).
fn all_given(names: &[&str], kind: fn() -> Value) -> Value {
    let properties: Map<String, Value> = names.iter().map(|n| (n.to_string(), kind())).collect();
    json!({"required": names, "properties": properties})
}

/// A string parameter equals `value` ignoring letter case (how value lists match).
fn equals_ci(name: &str, value: &str) -> Value {
    json!({
        "required": [name],
        "properties": {name: {"type": "string", "pattern": format!("^{}$", case_insensitive(value))}},
    })
}

/// A pattern accepting `body` between the white space the handler trims.
fn trimmed(body: &str) -> String {
    format!("^{TRIMMED}{body}{TRIMMED}$")
}

/// A Defender alert id as the alert actions check it.
const ALERT_ID_BODY: &str = "[A-Za-z0-9_-]{1,100}";

/// A SHA1 or SHA256.
const HASH_BODY: &str = "(?:[0-9a-fA-F]{40}|[0-9a-fA-F]{64})";

/// A domain name as the alert and device actions check it.
const DOMAIN_BODY: &str = "[A-Za-z0-9-]{1,63}(?:\\.[A-Za-z0-9-]{1,63})*";

/// A user account as the alert actions take it: an optional `DOMAIN\\` prefix, the account
/// name, an optional `@domain` suffix.
const USER_BODY: &str = "(?:[\\s\\S]*\\\\)?[A-Za-z0-9._$-]{1,104}(?:@[^\\\\]*)?";

/// A moment as `since`-like parameters take it: an RFC 3339 date-time or a date.
fn moment_schema() -> Value {
    json!({"anyOf": [{"format": "date-time"}, {"format": "date"}]})
}

/// Alert ids as `update_alerts` takes them: a JSON list of id strings or ids separated by
/// commas (blank items skipped), at most 500.
fn alert_ids_schema() -> Value {
    id_list_schema(ALERT_ID_BODY, 500, 1000, Some(60000))
}

/// A list of items matching `id` as the list parameters take it (the handler trims it): a JSON
/// list of at most `json_max` id strings, or ids separated by commas (blank items skipped), at
/// most `comma_max` of them.
fn id_list_schema(id: &str, json_max: usize, comma_max: usize, max_length: Option<usize>) -> Value {
    let ws = "[ \\t\\n\\r]*";
    let more_json = json_max - 1;
    let more_commas = comma_max - 1;
    let json_list = format!("\\[{ws}\"{id}\"(?:{ws},{ws}\"{id}\"){{0,{more_json}}}{ws}\\]");
    let item = format!("{TRIMMED}{id}{TRIMMED}");
    let blank = TRIMMED;
    let commas = format!("(?:{blank},)*{item}(?:,(?:{item}|{blank})){{0,{more_commas}}}");
    let mut schema = json!({"pattern": format!("^{TRIMMED}(?:{json_list}|{commas}){TRIMMED}$")});
    if let Some(n) = max_length {
        schema["maxLength"] = json!(n);
    }
    schema
}

/// `device_ids` as the bulk actions take it: device ids, host names or IPv4 addresses (an
/// IPv6 address is accepted too, but not described here), up to 500.
fn bulk_device_ids_schema() -> Value {
    id_list_schema(
        "[0-9A-Za-z_-]{1,63}(?:\\.[0-9A-Za-z_-]{1,63})*",
        500,
        1000,
        Some(60000),
    )
}

/// An OData `$filter` expression as a caller may pass one through: no character that ends or
/// adds a query option, no control character, string literals closed and parentheses balanced
/// (described to a nesting depth of three); blank counts as not given.
fn caller_filter_schema() -> Value {
    let atom = "[^'&$#?;()\\u0000-\\u001f\\u007f-\\u009f]";
    let literal = "'(?:[^'\\u0000-\\u001f\\u007f-\\u009f]|'')*'";
    let mut level = format!("(?:{atom}|{literal})*");
    for _ in 0..3 {
        level = format!("(?:{atom}|{literal}|\\({level}\\))*");
    }
    json!({"pattern": format!("^{TRIMMED}{level}{TRIMMED}$")})
}

/// `input` is given and has `schema`'s shape when `input_type` is `kind`.
fn input_when(kind: &str, schema: Value) -> Value {
    let mut input = json!({"type": "string"});
    if let (Some(obj), Value::Object(extra)) = (input.as_object_mut(), schema) {
        obj.extend(extra);
    }
    json!({
        "if": equals_ci("input_type", kind),
        "then": {"required": ["input"], "properties": {"input": input}},
    })
}

/// `custom_tags` as `update_incident` takes it: a JSON list of strings (without escapes or
/// control characters, each at most 200 characters), or tags separated by commas, each at most
/// 200 characters and without control characters.
fn custom_tags_schema() -> Value {
    let plain = "[^,\\u0000-\\u001f\\u007f-\\u009f]";
    let first = "[^,\\[\\s\\u0000-\\u001f\\u007f-\\u009f]";
    let commas = format!("^(?:{first}{plain}{{0,199}})?(?:,{plain}{{0,200}})*$");
    let item = "\"[^\"\\\\\\u0000-\\u001f\\u007f-\\u009f]{0,200}\"";
    let ws = "[ \\t\\n\\r]*";
    let list = format!("^{TRIMMED}\\[{ws}(?:{item}(?:{ws},{ws}{item})*)?{ws}\\]{TRIMMED}$");
    json!({"anyOf": [{"pattern": commas}, {"pattern": list}]})
}

/// At least one of `names` is given (not blank).
fn some_given(names: &[&str]) -> Value {
    json!({"anyOf": names.iter().map(|n| all_given(&[n], nonblank)).collect::<Vec<_>>()})
}

/// What an action's handler checks beyond each parameter's definition.
#[derive(Default)]
struct Rules {
    /// Parameters the handler trims: blank counts as not given.
    nonblank: &'static [&'static str],
    /// Keywords replacing or added to a parameter's own schema.
    narrow: Vec<(&'static str, Value)>,
    /// Conditions on the parameters object as a whole (joined with `allOf`).
    all_of: Vec<Value>,
    /// Some parameter must be given although none is required on its own.
    needs_some: bool,
}

/// The handler rules of each action (see the module documentation).
fn action_rules(id: &str) -> Rules {
    let live_response = |what: &'static str| Rules {
        all_of: vec![json!({"anyOf": [
            all_given(&["event_id"], given),
            all_given(&["device_id", what, "comment"], nonblank),
        ]})],
        needs_some: true,
        ..Rules::default()
    };
    match id {
        "cancel_action"
        | "quarantine_device"
        | "unquarantine_device"
        | "restrict_app_execution"
        | "remove_app_restriction"
        | "scan_device" => Rules {
            nonblank: &["comment"],
            ..Rules::default()
        },
        "quarantine_file" => Rules {
            nonblank: &["comment"],
            // StopAndQuarantineFile takes the SHA1 only; an MD5 or SHA256 is refused by name.
            narrow: vec![("file_hash", json!({"pattern": "^[0-9a-fA-F]{40}$"}))],
            ..Rules::default()
        },
        "quarantine_devices"
        | "unquarantine_devices"
        | "scan_devices"
        | "restrict_app_executions" => Rules {
            nonblank: &["comment"],
            narrow: vec![("device_ids", bulk_device_ids_schema())],
            ..Rules::default()
        },
        "quarantine_files" => Rules {
            nonblank: &["comment"],
            narrow: vec![
                ("device_ids", bulk_device_ids_schema()),
                ("file_hash", json!({"pattern": "^[0-9a-fA-F]{40}$"})),
            ],
            ..Rules::default()
        },
        "update_device_tag" => Rules {
            nonblank: &["tag"],
            ..Rules::default()
        },
        "collect_investigation_package" => Rules {
            all_of: vec![
                json!({"anyOf": [all_given(&["event_id"], given), all_given(&["device_id"], given)]}),
                json!({"if": all_given(&["device_id"], given), "then": all_given(&["comment"], nonblank)}),
            ],
            needs_some: true,
            ..Rules::default()
        },
        "get_file" => live_response("file_path"),
        "put_file" => live_response("file_name"),
        "run_script" => live_response("script_name"),
        "list_devices" => Rules {
            narrow: vec![("query", caller_filter_schema())],
            all_of: vec![
                json!({
                    "if": equals_ci("input_type", "Domain"),
                    "then": {"required": ["input"], "properties": {"input": {
                        "type": "string", "maxLength": 253, "pattern": DOMAIN}}},
                }),
                json!({
                    "if": equals_ci("input_type", "File Hash"),
                    "then": {"required": ["input"], "properties": {"input": {
                        "type": "string", "pattern": "^([0-9a-fA-F]{40}|[0-9a-fA-F]{64})$"}}},
                }),
            ],
            ..Rules::default()
        },
        "get_alert" | "get_alert_user" | "get_alert_files" | "get_alert_ips"
        | "get_alert_domains" => Rules {
            narrow: vec![("alert_id", json!({"pattern": trimmed(ALERT_ID_BODY)}))],
            ..Rules::default()
        },
        "update_alert" => Rules {
            narrow: vec![("alert_id", json!({"pattern": trimmed(ALERT_ID_BODY)}))],
            all_of: vec![some_given(&[
                "status",
                "assigned_to",
                "classification",
                "determination",
                "comment",
            ])],
            ..Rules::default()
        },
        "update_alerts" => Rules {
            narrow: vec![("alert_ids", alert_ids_schema())],
            all_of: vec![some_given(&[
                "status",
                "assigned_to",
                "classification",
                "determination",
                "comment",
            ])],
            ..Rules::default()
        },
        "create_alert" => Rules {
            nonblank: &["report_id", "title", "description", "recommended_action"],
            narrow: vec![("event_time", moment_schema())],
            ..Rules::default()
        },
        "get_domain_alerts" => Rules {
            narrow: vec![("domain", json!({"pattern": trimmed(DOMAIN_BODY)}))],
            ..Rules::default()
        },
        "get_file_alerts" => Rules {
            narrow: vec![("file_hash", json!({"pattern": trimmed(HASH_BODY)}))],
            ..Rules::default()
        },
        "get_user_alerts" => Rules {
            narrow: vec![("user", json!({"pattern": trimmed(USER_BODY)}))],
            ..Rules::default()
        },
        "list_alerts" => Rules {
            narrow: vec![
                ("since", moment_schema()),
                ("filter", caller_filter_schema()),
            ],
            all_of: vec![
                input_when("Domain", json!({"pattern": trimmed(DOMAIN_BODY)})),
                input_when("File Hash", json!({"pattern": trimmed(HASH_BODY)})),
                input_when(
                    "IP",
                    json!({"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
                ),
                input_when("User", json!({"pattern": trimmed(USER_BODY)})),
                input_when("Device", device_schema()),
            ],
            ..Rules::default()
        },
        // Counts and their ranges are in the definition; ingestion_status takes nothing.
        "on_poll" => Rules {
            narrow: vec![("start_time", moment_schema())],
            ..Rules::default()
        },
        "list_graph_alerts" | "list_incidents" => Rules {
            narrow: vec![
                ("created_since", moment_schema()),
                ("updated_since", moment_schema()),
            ],
            ..Rules::default()
        },
        "update_graph_alert" => Rules {
            all_of: vec![some_given(&[
                "status",
                "classification",
                "determination",
                "assigned_to",
                "comment",
            ])],
            ..Rules::default()
        },
        "update_incident" => Rules {
            narrow: vec![("custom_tags", custom_tags_schema())],
            all_of: vec![some_given(&[
                "status",
                "assigned_to",
                "classification",
                "determination",
                "custom_tags",
                "comment",
            ])],
            ..Rules::default()
        },
        "upload_library_file" => Rules {
            narrow: vec![
                ("content", json!({"pattern": BASE64})),
                ("file_name", json!({"not": {"pattern": "^\\.+$"}})),
            ],
            all_of: vec![json!({"oneOf": [
                all_given(&["vault_id"], given),
                all_given(&["content"], given),
            ]})],
            needs_some: true,
            ..Rules::default()
        },
        "delete_library_file" => Rules {
            narrow: vec![("file_name", json!({"not": {"pattern": "^\\.+$"}}))],
            ..Rules::default()
        },
        "run_query" => Rules {
            nonblank: &["query"],
            narrow: vec![("timespan", timespan_schema())],
            // Defender's API takes no period.
            all_of: vec![json!({"not": {"allOf": [
                equals_ci("api", "mde"),
                all_given(&["timespan"], nonblank),
            ]}})],
            ..Rules::default()
        },
        "run_hunting_template" => Rules {
            narrow: vec![
                ("timespan", timespan_schema()),
                (
                    "template",
                    json!({"enum": crate::actions::hunting::templates::templates()
                        .iter()
                        .map(|t| t.name.clone())
                        .collect::<Vec<_>>()}),
                ),
            ],
            ..Rules::default()
        },
        "list_indicators" => Rules {
            narrow: vec![("filter", caller_filter_schema())],
            ..Rules::default()
        },
        "submit_indicator" => indicator_rules(&["title", "description"]),
        "update_indicator" => indicator_rules(&["indicator_title", "indicator_description"]),
        "update_indicator_batch" => Rules {
            narrow: vec![("indicator_batch", json_object_list_schema())],
            ..Rules::default()
        },
        "delete_indicators" => Rules {
            narrow: vec![("indicator_ids", indicator_ids_schema())],
            ..Rules::default()
        },
        // Enrichment and device information.
        "get_file_info" | "file_prevalence" | "get_file_devices" => Rules {
            narrow: vec![("file_hash", json!({"pattern": trimmed(HASH_BODY)}))],
            ..Rules::default()
        },
        "domain_prevalence" | "get_domain_devices" => Rules {
            narrow: vec![("domain", json!({"pattern": trimmed(DOMAIN_BODY)}))],
            ..Rules::default()
        },
        "ip_prevalence" => Rules {
            narrow: vec![("ip", ip_schema())],
            ..Rules::default()
        },
        "find_devices_by_ip" => Rules {
            // The timestamp must also fall within the last 30 days, which no schema can say.
            narrow: vec![("ip", ip_schema()), ("timestamp", moment_schema())],
            ..Rules::default()
        },
        "get_user_devices" => Rules {
            narrow: vec![("user_id", json!({"pattern": trimmed(USER_BODY)}))],
            ..Rules::default()
        },
        "get_device_details" => Rules {
            narrow: vec![("device_ids", device_ids_schema())],
            ..Rules::default()
        },
        "list_sessions" => Rules {
            narrow: vec![("device_id", device_schema())],
            ..Rules::default()
        },
        "offboard_device" | "start_investigation" => Rules {
            nonblank: &["comment"],
            narrow: vec![("device_id", device_schema())],
            ..Rules::default()
        },
        "get_investigation" => Rules {
            narrow: vec![(
                "investigation_id",
                json!({"pattern": trimmed(INVESTIGATION_ID_BODY)}),
            )],
            ..Rules::default()
        },
        "list_investigations" => Rules {
            narrow: vec![
                (
                    "id",
                    json!({"pattern": format!("^{TRIMMED}(?:{INVESTIGATION_ID_BODY})?{TRIMMED}$")}),
                ),
                ("device_id", device_schema()),
            ],
            ..Rules::default()
        },
        "list_machine_actions" => Rules {
            narrow: vec![("since", moment_schema()), ("device_id", device_schema())],
            ..Rules::default()
        },
        // Threat and vulnerability management (ids, severities, scores and ranges are in the
        // definitions).
        "list_vulnerabilities" => Rules {
            narrow: vec![
                ("published_on", moment_schema()),
                ("updated_on", moment_schema()),
            ],
            ..Rules::default()
        },
        _ => Rules::default(),
    }
}

/// An investigation id as the investigation actions check it.
const INVESTIGATION_ID_BODY: &str = "[A-Za-z0-9_-]{1,100}";

/// An IPv4 or IPv6 address, as the address parameters take it.
fn ip_schema() -> Value {
    json!({"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
}

/// Device ids as `get_device_details` takes them: a JSON list of 40-hex id strings or ids
/// separated by commas (blank items skipped), at most 100 different ones.
fn device_ids_schema() -> Value {
    id_list_schema("[0-9a-fA-F]{40}", 100, 100, None)
}

/// `timespan` as the hunting actions take it: an ISO 8601 duration
/// ([`crate::defender::kql::duration_pattern`]), or blank for the default.
fn timespan_schema() -> Value {
    json!({"pattern": format!(
        "^{TRIMMED}(?:{}){{0,1}}{TRIMMED}$",
        crate::defender::kql::duration_pattern()
    )})
}

/// The rules of `submit_indicator` and `update_indicator` (whose title and description are
/// named `nonblank`): the value matches the type, Audit needs generate_alert, the expiration
/// lies ahead, group names as the handler splits them. Written as two `anyOf` lists (one branch
/// per type, and Audit or not) rather than one `if` per type, which fuzzers handle better.
fn indicator_rules(nonblank: &'static [&'static str]) -> Rules {
    let one_of_ci = |names: &[&str]| {
        let alternatives: Vec<String> = names.iter().map(|n| case_insensitive(n)).collect();
        format!("^(?:{})$", alternatives.join("|"))
    };
    let hex = |n: usize| json!({"pattern": trimmed(&format!("[0-9a-fA-F]{{{n}}}"))});
    let branch = |kinds: &[&str], schema: Value| {
        let mut value = json!({"type": "string"});
        if let (Some(obj), Value::Object(extra)) = (value.as_object_mut(), schema) {
            obj.extend(extra);
        }
        json!({
            "required": ["indicator_type", "indicator_value"],
            "properties": {
                "indicator_type": {"type": "string", "pattern": one_of_ci(kinds)},
                "indicator_value": value,
            },
        })
    };
    let not_audit = [
        "Warn",
        "Block",
        "Alert",
        "AlertAndBlock",
        "BlockAndRemediate",
        "Allowed",
    ];
    Rules {
        nonblank,
        narrow: vec![
            ("expiration_time", future_moment_schema()),
            ("rbac_group_names", custom_tags_schema()),
        ],
        all_of: vec![
            json!({"anyOf": [
                branch(&["FileSha1", "CertificateThumbprint"], hex(40)),
                branch(&["FileSha256"], hex(64)),
                branch(&["FileMd5"], hex(32)),
                branch(
                    &["IpAddress"],
                    json!({"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}),
                ),
                branch(
                    &["DomainName"],
                    json!({"maxLength": 253, "pattern": trimmed(DOMAIN_BODY)}),
                ),
                branch(
                    &["Url"],
                    json!({"pattern": crate::actions::indicators::URL_PATTERN}),
                ),
            ]}),
            json!({"anyOf": [
                {
                    "required": ["action"],
                    "properties": {"action": {"type": "string", "pattern": one_of_ci(&not_audit)}},
                },
                {
                    "required": ["action", "generate_alert"],
                    "properties": {
                        "action": {"type": "string", "pattern": one_of_ci(&["Audit"])},
                        "generate_alert": {"anyOf": [
                            {"const": true},
                            {"type": "string", "pattern": "^[tT][rR][uU][eE]$"},
                        ]},
                    },
                },
            ]}),
        ],
        ..Rules::default()
    }
}

/// An expiration as the indicator actions take it, described as RFC 3339 date-times in the
/// years 2100 to 8999 (always in the future; nearer future moments are accepted too).
fn future_moment_schema() -> Value {
    json!({
        "format": "date-time",
        "pattern": "^(?:2[1-9]|[3-8][0-9])[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])\
            T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?\
            (?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$",
    })
}

/// `indicator_batch`: a non-empty JSON list of flat JSON objects (string values without
/// `\\u` escapes, booleans, null, integers). Each object is checked on its own and, when
/// wrong, reported failed in the result rather than refusing the request.
fn json_object_list_schema() -> Value {
    let ws = "[ \\t\\n\\r]*";
    let string = "\"(?:[^\"\\\\\\u0000-\\u001f]|\\\\[\"\\\\/bfnrt])*\"";
    let value = format!("(?:{string}|true|false|null|-?(?:0|[1-9][0-9]{{0,14}}))");
    let pair = format!("{string}{ws}:{ws}{value}");
    let object = format!("\\{{{ws}(?:{pair}(?:{ws},{ws}{pair})*)?{ws}\\}}");
    json!({"pattern": format!("^{TRIMMED}\\[{ws}{object}(?:{ws},{ws}{object})*{ws}\\]{TRIMMED}$")})
}

/// Indicator ids as `delete_indicators` takes them: a JSON list of id strings or integers, or
/// ids separated by commas (blank items skipped), at most 500.
fn indicator_ids_schema() -> Value {
    let ws = "[ \\t\\n\\r]*";
    let json_item = "(?:\"[0-9]{1,20}\"|0|[1-9][0-9]{0,17})";
    let json_list = format!("\\[{ws}{json_item}(?:{ws},{ws}{json_item}){{0,499}}{ws}\\]");
    let item = format!("{TRIMMED}[0-9]{{1,20}}{TRIMMED}");
    let blank = TRIMMED;
    let commas = format!("(?:{blank},)*{item}(?:,{blank})*(?:,{item}(?:,{blank})*){{0,499}}");
    json!({"pattern": format!("^{TRIMMED}(?:{json_list}|{commas}){TRIMMED}$")})
}

/// `text` as a regex matching it regardless of ASCII letter case.
fn case_insensitive(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase())
            } else {
                regex::escape(&c.to_string())
            }
        })
        .collect()
}

/// Regex alternatives matching the decimal integers from `lo` to `hi` (without leading zeros,
/// except that a range from 0 matches short numbers with them).
fn integer_range_alternatives(lo: u64, hi: u64) -> Vec<String> {
    // Blocks [x, x + 10^k - 1] with x a multiple of 10^k, taken greedily from lo upwards; a
    // block is the digits of x with its last k digits free.
    let mut alternatives = Vec::new();
    // (digits before the last fixed one, first and last value of that digit, free digits)
    let mut merged: Vec<(String, u8, u8, usize)> = Vec::new();
    let mut x = lo;
    while x <= hi {
        let mut k = 0u32;
        while k < 18 {
            let size = 10u64.pow(k + 1);
            if !x.is_multiple_of(size) || x + (size - 1) > hi {
                break;
            }
            k += 1;
        }
        let free = k as usize;
        if x == 0 {
            // 0 ..= 10^k - 1: any number of at most k digits.
            alternatives.push(if free == 0 {
                "0".to_string()
            } else {
                format!("[0-9]{{1,{free}}}")
            });
        } else {
            let digits = x.to_string();
            let fixed = &digits[..digits.len() - free];
            let (head, last) = fixed.split_at(fixed.len() - 1);
            let last = last.bytes().next().unwrap_or(b'0');
            match merged.last_mut() {
                // Neighbours differing only in their last fixed digit: "1".."9" -> "[1-9]".
                Some((h, _, to, f)) if h == head && *f == free && *to + 1 == last => *to = last,
                _ => merged.push((head.to_string(), last, last, free)),
            }
        }
        x += 10u64.pow(k);
    }
    alternatives.extend(merged.into_iter().map(|(head, from, to, free)| {
        let digit = if from == to {
            char::from(from).to_string()
        } else {
            format!("[{}-{}]", char::from(from), char::from(to))
        };
        format!("{head}{digit}{}", "[0-9]".repeat(free))
    }));
    alternatives
}

/// The string form of an integer parameter the validator accepts (Rust's `i64` parsing: an
/// optional `+`, leading zeros, `-0`), within the parameter's range.
fn integer_string_pattern(min: Option<f64>, max: Option<f64>) -> String {
    let bound = |b: Option<f64>| {
        b.filter(|v| v.fract() == 0.0 && *v >= 0.0 && *v < 1e18)
            .map(|v| v as u64)
    };
    match (bound(min), bound(max)) {
        (Some(lo), Some(hi)) if lo <= hi => {
            let alternatives = integer_range_alternatives(lo, hi).join("|");
            let zero = if lo == 0 { "|-0+" } else { "" };
            format!("^(\\+?0*({alternatives}){zero})$")
        }
        _ => "^[+-]?[0-9]{1,18}$".to_string(),
    }
}

/// A bound as JSON: integral values as integers (`300`, not `300.0`).
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 9e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

/// The schema of one parameter: the definition's form, the string forms the validator also
/// accepts, and `null`/`""` when the parameter may be left out.
fn param_schema(
    spec: &ParamSpec,
    must_give: bool,
    nonblank: bool,
    narrow: Option<&Value>,
) -> Value {
    let mut strict = Map::new();
    let mut alternatives = Vec::new();
    if let Some(list) = &spec.value_list {
        strict.insert("enum".into(), json!(list));
        let texts: Vec<String> = list
            .iter()
            .filter_map(Value::as_str)
            .map(case_insensitive)
            .collect();
        if !texts.is_empty() {
            alternatives.push(json!({
                "type": "string",
                "pattern": format!("^({})$", texts.join("|")),
                "description": "The same values in any letter case",
            }));
        }
    } else {
        match spec.param_type {
            ParamType::String => {
                strict.insert("type".into(), json!("string"));
                if let Some(v) = &spec.pattern {
                    strict.insert("pattern".into(), json!(v));
                }
                if let Some(v) = spec.max_length {
                    strict.insert("maxLength".into(), json!(v));
                }
                let min = spec.min_length.unwrap_or(0).max(usize::from(must_give));
                if min > 0 {
                    strict.insert("minLength".into(), json!(min));
                }
                if nonblank {
                    if strict.contains_key("pattern") {
                        strict.insert("allOf".into(), json!([{"pattern": NONBLANK}]));
                    } else {
                        strict.insert("pattern".into(), json!(NONBLANK));
                    }
                }
            }
            ParamType::Integer | ParamType::Number => {
                let integer = spec.param_type == ParamType::Integer;
                strict.insert(
                    "type".into(),
                    json!(if integer { "integer" } else { "number" }),
                );
                if let Some(v) = spec.min {
                    strict.insert("minimum".into(), number(v));
                }
                if let Some(v) = spec.max {
                    strict.insert("maximum".into(), number(v));
                }
                if integer {
                    alternatives.push(json!({
                        "type": "string",
                        "pattern": integer_string_pattern(spec.min, spec.max),
                        "description": "The same integer as a decimal string",
                    }));
                }
            }
            ParamType::Boolean => {
                strict.insert("type".into(), json!("boolean"));
                alternatives.push(json!({
                    "type": "string",
                    "pattern": "^([Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])$",
                    "description": "true or false as a string, in any letter case",
                }));
            }
        }
    }
    if let Some(Value::Object(extra)) = narrow {
        for (k, v) in extra {
            strict.insert(k.clone(), v.clone());
        }
    }
    let mut schema = Map::new();
    if !spec.description.is_empty() {
        schema.insert("description".into(), json!(spec.description));
    }
    if let Some(v) = &spec.default {
        schema.insert("default".into(), v.clone());
    }
    if !must_give {
        alternatives.push(json!({"type": "null", "description": "Not given"}));
        alternatives.push(json!({"const": "", "description": "Not given"}));
    }
    if alternatives.is_empty() {
        schema.extend(strict);
    } else {
        let mut any_of = vec![Value::Object(strict)];
        any_of.extend(alternatives);
        schema.insert("anyOf".into(), Value::Array(any_of));
    }
    Value::Object(schema)
}

/// The schema of an action's `parameters` object.
fn parameters_schema(d: &Definition) -> (Value, bool) {
    let rules = action_rules(&d.id);
    let device = device_schema();
    // Blank counts as not given; otherwise the shapes the host checks (which hosts plain http
    // may reach, and the secret, depend on the configuration).
    let callback_url = json!({"pattern": format!(
        "^{TRIMMED}(?:{})?{TRIMMED}$",
        crate::callbacks::url_pattern()
    )});
    let mut props = Map::new();
    let mut required = Vec::new();
    for p in &d.parameters {
        let spec = &p.spec;
        let must_give = spec.required && spec.default.is_none();
        let nonblank = rules.nonblank.contains(&p.name.as_str());
        let narrow = rules
            .narrow
            .iter()
            .find(|(name, _)| *name == p.name)
            .map(|(_, v)| v)
            // A `device_id` takes ids, names and addresses unless its definition narrows it.
            .or((p.name == "device_id" && spec.pattern.is_none()).then_some(&device))
            .or((p.name == crate::callbacks::URL_PARAM).then_some(&callback_url));
        if must_give {
            required.push(p.name.clone());
        }
        props.insert(
            p.name.clone(),
            param_schema(spec, must_give, nonblank, narrow),
        );
    }
    let needs_some = !required.is_empty() || rules.needs_some;
    let mut schema = json!({
        "type": "object",
        "description": "The action's parameters; a parameter set to null or \"\" counts as not given",
        "properties": props,
        "required": required,
        "additionalProperties": false,
    });
    if !rules.all_of.is_empty() {
        schema["allOf"] = Value::Array(rules.all_of);
    }
    (schema, needs_some)
}

/// One concrete path per action with its parameter schema.
fn add_action_paths(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for d in definitions() {
        let (parameters, needs_some) = parameters_schema(d);
        let mut body = json!({
            "type": "object",
            "properties": {"parameters": parameters},
            "additionalProperties": false,
        });
        if needs_some {
            body["required"] = json!(["parameters"]);
        }
        let description = match &d.verbose {
            Some(v) if !v.is_empty() => format!("{}\n\n{v}", d.description),
            _ => d.description.clone(),
        };
        let op = json!({
            "summary": d.name,
            "description": description,
            "tags": [d.action_type],
            "operationId": d.id,
            "requestBody": {
                "description": "`{\"parameters\": {...}}`; an empty body means no parameters",
                "required": needs_some,
                "content": {"application/json": {"schema": body}},
            },
            "parameters": action_parameters(),
            "security": [{"api_key": []}],
            "responses": action_responses(),
        });
        for alias in &d.aliases {
            paths.insert(
                format!("/assets/{{asset}}/actions/{}", alias.id),
                json!({"post": alias_operation(&op, d, alias)}),
            );
        }
        paths.insert(
            format!("/assets/{{asset}}/actions/{}", d.id),
            json!({"post": op}),
        );
    }
}

/// The operation of an alias: the action's own, under the alias's id, with the parameters
/// the alias names differently renamed.
fn alias_operation(op: &Value, d: &Definition, alias: &Alias) -> Value {
    let mut op = op.clone();
    op["operationId"] = json!(alias.id);
    op["summary"] = json!(format!("{} (as {})", d.name, alias.id));
    let schema =
        &mut op["requestBody"]["content"]["application/json"]["schema"]["properties"]["parameters"];
    for (theirs, own) in &alias.parameters {
        if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut)
            && let Some(p) = props.remove(own)
        {
            props.insert(theirs.clone(), p);
        }
        if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
            for r in required.iter_mut() {
                if r == own {
                    *r = json!(theirs);
                }
            }
        }
    }
    op
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(text)
    }

    #[test]
    fn indicator_schemas_describe_what_the_handlers_take() {
        use crate::actions::indicators::{expiration, indicator_ids};
        let now = time::OffsetDateTime::now_utc();
        let future = future_moment_schema()["pattern"]
            .as_str()
            .unwrap()
            .to_string();
        for t in [
            "2100-01-01T00:00:00Z",
            "8999-12-31T23:59:59.123456789-23:59",
        ] {
            assert!(matches(&future, t), "{t}");
            assert!(expiration("e", t, now).is_ok(), "{t}");
        }
        assert!(!matches(&future, "2025-01-01T00:00:00Z"));
        let ids = indicator_ids_schema()["pattern"]
            .as_str()
            .unwrap()
            .to_string();
        for (text, n) in [("1, 2 ,,3", 3), ("[\"1\", 2]", 2), (" 42 ", 1)] {
            assert!(matches(&ids, text), "{text}");
            assert_eq!(indicator_ids("i", text).unwrap().len(), n, "{text}");
        }
        let many: Vec<String> = (0..501).map(|i| i.to_string()).collect();
        assert!(!matches(&ids, &many.join(",")));
        assert!(matches(&ids, &many[..500].join(",")));
        let batch = json_object_list_schema()["pattern"]
            .as_str()
            .unwrap()
            .to_string();
        let list = r#"[{"indicatorValue": "10.0.0.1", "generateAlert": true, "n": -3}, {}]"#;
        assert!(matches(&batch, list));
        assert!(serde_json::from_str::<Vec<Value>>(list).is_ok());
        assert!(!matches(&batch, "[]"));
        assert!(!matches(&batch, "[1]"));
    }

    #[test]
    fn the_device_pattern_takes_what_the_host_resolves() {
        let schema = device_schema();
        let pattern = schema["pattern"].as_str().unwrap();
        for ok in [
            "f1eb97a430ca4c315e219960cd146874419fbefc",
            "ws-finance-01.contoso.com",
            "WS_7",
            "10.1.4.21",
            " pc-1 ",
        ] {
            assert!(matches(pattern, ok), "{ok}");
        }
        for refused in [
            "",
            " ",
            "x' or 1 eq 1",
            "a..b",
            ".a",
            "a/b",
            "name with space",
        ] {
            assert!(!matches(pattern, refused), "{refused}");
        }
    }

    #[test]
    fn a_device_id_narrowed_by_its_definition_keeps_its_pattern() {
        let schema = |action: &str| {
            let d = crate::actions::definition(action).unwrap();
            parameters_schema(d).0["properties"]["device_id"].to_string()
        };
        // Takes 40-hex ids only: described so, not as names and addresses.
        let narrow = schema("get_installed_software");
        assert!(narrow.contains("^[0-9a-fA-F]{40}$"), "{narrow}");
        assert!(
            !narrow.contains("resolved to exactly one device"),
            "{narrow}"
        );
        // Resolves names and addresses: described with the device pattern.
        let wide = schema("quarantine_device");
        assert!(wide.contains("resolved to exactly one device"), "{wide}");
    }

    #[test]
    fn aliases_have_operations_with_their_parameter_names() {
        let doc = spec();
        let op = &doc["paths"]["/assets/{asset}/actions/cancel_live_response"]["post"];
        assert_eq!(op["operationId"], "cancel_live_response");
        let params =
            &op["requestBody"]["content"]["application/json"]["schema"]["properties"]["parameters"];
        assert!(params["properties"]["action_id"].is_object(), "{params}");
        assert!(params["properties"]["event_id"].is_null(), "{params}");
        assert!(
            params["required"]
                .as_array()
                .unwrap()
                .contains(&json!("action_id")),
            "{params}"
        );
        assert!(doc["paths"]["/assets/{asset}/actions/get_file_live_response"].is_object());
    }

    #[test]
    fn handler_patterns_take_what_the_handlers_take() {
        let re = |p: &str| {
            regex::RegexBuilder::new(p)
                .size_limit(1 << 30)
                .build()
                .unwrap()
        };
        let alert = re(&trimmed(ALERT_ID_BODY));
        assert!(alert.is_match("da637_1-2") && alert.is_match(" ed637 "));
        assert!(!alert.is_match("a b") && !alert.is_match("") && !alert.is_match(&"a".repeat(101)));
        let user = re(&trimmed(USER_BODY));
        for ok in [
            "jdoe",
            "CONTOSO\\jdoe",
            "jdoe@contoso.com",
            "a@b\\c",
            " x$ ",
        ] {
            assert!(user.is_match(ok), "{ok}");
        }
        for bad in ["", "CONTOSO\\", "j doe", "@contoso.com"] {
            assert!(!user.is_match(bad), "{bad}");
        }
        let filter = re(caller_filter_schema()["pattern"].as_str().unwrap());
        for ok in [
            "",
            " ",
            "severity eq 'High'",
            "(a eq 'x''y') and (b eq 1)",
            "((x))",
        ] {
            assert!(filter.is_match(ok), "{ok}");
        }
        for bad in ["a eq 'x", "(a", "a)", "x&y", "$top=1", "a\u{1}b", "a; b"] {
            assert!(!filter.is_match(bad), "{bad}");
        }
        let ids = re(alert_ids_schema()["pattern"].as_str().unwrap());
        for ok in [
            "da1",
            "da1, da2",
            ",da1,,",
            "[\"da1\", \"da2\"]",
            " [ \"x\" ] ",
        ] {
            assert!(ids.is_match(ok), "{ok}");
        }
        for bad in ["", ",", "da 1", "[da1]", "[\"a b\"]"] {
            assert!(!ids.is_match(bad), "{bad}");
        }
        let tags = custom_tags_schema();
        let tags: Vec<regex::Regex> = tags["anyOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| re(t["pattern"].as_str().unwrap()))
            .collect();
        let any = |t: &str| tags.iter().any(|r| r.is_match(t));
        for ok in ["a,b", "", ",x", "[\"a\", \"b\"]", "[]", "x y"] {
            assert!(any(ok), "{ok}");
        }
        for bad in ["[a]", "a\tb", " [x", &"a".repeat(201)] {
            assert!(!any(bad), "{bad}");
        }
    }

    #[test]
    fn ingestion_actions_are_described_as_their_handlers_take_them() {
        let def = |id: &str| {
            definitions()
                .iter()
                .find(|d| d.id == id)
                .unwrap_or_else(|| panic!("{id}"))
        };
        let (status, needs) = parameters_schema(def("ingestion_status"));
        assert!(!needs);
        assert_eq!(status["properties"], json!({}));
        assert_eq!(status["additionalProperties"], false);
        let (poll, needs) = parameters_schema(def("on_poll"));
        assert!(!needs);
        assert_eq!(poll["additionalProperties"], false);
        assert_eq!(poll["required"], json!([]));
        let start = poll["properties"]["start_time"].to_string();
        assert!(
            start.contains("date-time") && start.contains("\"date\""),
            "{start}"
        );
        for (name, lo, hi) in [("container_count", 1, 10000), ("artifact_count", 1, 1000)] {
            let strict = &poll["properties"][name]["anyOf"][0];
            assert_eq!(strict["type"], "integer", "{name}");
            assert_eq!(strict["minimum"], lo, "{name}");
            assert_eq!(strict["maximum"], hi, "{name}");
        }
    }

    #[test]
    fn integer_ranges() {
        assert_eq!(
            integer_range_alternatives(1, 3600),
            [
                "[1-9]",
                "[1-9][0-9]",
                "[1-9][0-9][0-9]",
                "[1-2][0-9][0-9][0-9]",
                "3[0-5][0-9][0-9]",
                "3600"
            ]
        );
        for (lo, hi) in [(0, 0), (0, 300), (1, 60), (1, 600), (1, 10000), (7, 123)] {
            let p = integer_string_pattern(Some(lo as f64), Some(hi as f64));
            let re = regex::Regex::new(&p).unwrap();
            for n in 0..=10050u64 {
                assert_eq!(
                    re.is_match(&n.to_string()),
                    (lo..=hi).contains(&n),
                    "{p} {n}"
                );
                assert_eq!(
                    re.is_match(&format!("+00{n}")),
                    (lo..=hi).contains(&n),
                    "{p} {n}"
                );
            }
            assert_eq!(re.is_match("-0"), lo == 0, "{p}");
            assert!(!re.is_match("1.0") && !re.is_match("") && !re.is_match(" 1"));
        }
    }

    #[test]
    fn base64_pattern() {
        for ok in [
            "", "QQ", "QQ==", "QQ=", "QUI", "QUI=", "QUJD", "QU JD\n", "QUJDRA==",
        ] {
            assert!(matches(BASE64, ok), "{ok:?}");
        }
        for bad in ["Q", "QR", "QUJ", "QUJD=", "QQ===", "Q\u{b}Q", "!!!!"] {
            assert!(!matches(BASE64, bad), "{bad:?}");
        }
    }

    #[test]
    fn blank_is_not_given() {
        assert!(matches(NONBLANK, " x "));
        for blank in ["", " ", "\t\n\r", "\u{a0}\u{3000}"] {
            assert!(!matches(NONBLANK, blank), "{blank:?}");
            assert!(blank.trim().is_empty());
        }
    }
}
