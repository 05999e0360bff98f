//! The app manifest: app metadata, the asset configuration schema and every action definition,
//! in the Splunk SOAR app JSON layout (what `defender-soar manifest` prints and `manifest.json`
//! holds).

use serde_json::{Map, Value, json};

use super::definition::{Definition, definitions};

/// The app's fixed identifier in the manifest.
pub const APP_ID: &str = "4f0d6c1e-8b7a-4c52-9e3d-2a61b5f9c807";

/// The manifest of the embedded definitions: deterministic, keys in a stable order.
pub fn manifest() -> Value {
    build(definitions())
}

/// The manifest pretty-printed with a trailing newline.
pub fn manifest_pretty() -> String {
    format!("{:#}\n", manifest())
}

fn build(defs: &[Definition]) -> Value {
    json!({
        "appid": APP_ID,
        "name": "Microsoft Defender for Endpoint (defender-soar)",
        "description": "Investigate and respond with Microsoft Defender for Endpoint: device \
            isolation and scans, live response, alerts, indicators and advanced hunting, \
            through one REST host",
        "publisher": "defender-soar",
        "type": "endpoint",
        "product_vendor": "Microsoft",
        "product_name": "Defender for Endpoint",
        "product_version_regex": ".*",
        "app_version": env!("CARGO_PKG_VERSION"),
        "license": env!("CARGO_PKG_LICENSE"),
        "package_name": "defender_soar",
        "configuration": configuration(),
        "actions": defs
            .iter()
            .flat_map(|d| {
                std::iter::once(action(d))
                    .chain(d.aliases.iter().map(|a| action(&under_alias(d, a))))
            })
            .collect::<Vec<_>>(),
    })
}

/// `def` as its alias `alias` presents it (Splunk's identifier and parameter names), so a
/// migrated playbook finds the action it calls in the manifest.
fn under_alias(def: &Definition, alias: &super::definition::Alias) -> Definition {
    let mut shown = def.clone();
    shown.id = alias.id.clone();
    shown.name = alias.id.replace('_', " ");
    shown.aliases = Vec::new();
    for param in &mut shown.parameters {
        if let Some((theirs, _)) = alias.parameters.iter().find(|(_, own)| **own == param.name) {
            param.name = theirs.clone();
        }
    }
    shown
}

/// The asset configuration schema (the keys of an `[assets.<id>]` table).
fn configuration() -> Value {
    let entries = [
        (
            "tenant_id",
            json!({
                "description": "Directory (tenant) id of the Entra ID tenant",
                "data_type": "string",
                "required": true,
            }),
        ),
        (
            "client_id",
            json!({
                "description": "Application (client) id of the app registration",
                "data_type": "string",
                "required": true,
            }),
        ),
        (
            "client_secret",
            json!({
                "description": "Client secret of the app registration",
                "data_type": "password",
                "required": true,
            }),
        ),
        (
            "auth",
            json!({
                "description": "How tokens are obtained: client_credentials (no user involved), \
                    authorization_code (an administrator consents once through /start_oauth) or \
                    device_code (an administrator signs in once on another device: \
                    defender-soar consent ASSET)",
                "data_type": "string",
                "required": true,
                "default": "client_credentials",
                "value_list": ["client_credentials", "authorization_code", "device_code"],
            }),
        ),
        (
            "environment",
            json!({
                "description": "Microsoft cloud hosting the tenant",
                "data_type": "string",
                "required": true,
                "default": "Public",
                "value_list": ["Public", "GCC", "GCC High", "DoD"],
            }),
        ),
        (
            "token_endpoint",
            json!({
                "description": "Entra ID token endpoint version: v2 (scope) or v1 (resource)",
                "data_type": "string",
                "required": true,
                "default": "v2",
                "value_list": ["v2", "v1"],
            }),
        ),
        (
            "login_url",
            json!({
                "description": "Override of the login authority base, without the tenant",
                "data_type": "string",
                "required": false,
            }),
        ),
        (
            "api_url",
            json!({
                "description": "Override of the Defender API base, without /api",
                "data_type": "string",
                "required": false,
            }),
        ),
        (
            "disabled_actions",
            json!({
                "description": "Action ids this asset refuses (comma-separated)",
                "data_type": "string",
                "required": false,
            }),
        ),
    ];
    let mut config = Map::new();
    for (order, (key, mut entry)) in entries.into_iter().enumerate() {
        if let Value::Object(fields) = &mut entry {
            fields.insert("order".into(), Value::from(order));
        }
        config.insert(key.to_string(), entry);
    }
    Value::Object(config)
}

/// One action in the Splunk SOAR layout.
fn action(def: &Definition) -> Value {
    let mut parameters = Map::new();
    for (order, param) in def.parameters.iter().enumerate() {
        let spec = &param.spec;
        let data_type = if spec.secret {
            "password"
        } else {
            spec.param_type.splunk_data_type()
        };
        let mut entry = Map::new();
        entry.insert("description".into(), Value::from(spec.description.clone()));
        entry.insert("data_type".into(), Value::from(data_type));
        entry.insert("required".into(), Value::Bool(spec.required));
        entry.insert("primary".into(), Value::Bool(spec.primary));
        if !spec.contains.is_empty() {
            entry.insert("contains".into(), Value::from(spec.contains.clone()));
        }
        if let Some(list) = &spec.value_list {
            entry.insert("value_list".into(), Value::Array(list.clone()));
        }
        if let Some(default) = &spec.default {
            entry.insert("default".into(), default.clone());
        }
        entry.insert("order".into(), Value::from(order));
        parameters.insert(param.name.clone(), Value::Object(entry));
    }

    json!({
        "action": def.name,
        "identifier": def.id,
        "description": def.description,
        "verbose": def.verbose.clone().unwrap_or_default(),
        "type": def.action_type,
        "read_only": def.read_only,
        "permissions": def.permissions,
        "parameters": parameters,
        "output": output(def),
        "versions": "EQ(*)",
    })
}

/// The output data paths: the status, each parameter, the definition's own paths, the message.
fn output(def: &Definition) -> Vec<Value> {
    let declared: Vec<&str> = def
        .output
        .iter()
        .filter_map(|o| o.get("data_path").and_then(Value::as_str))
        .collect();
    let mut out = Vec::new();
    let push_standard = |out: &mut Vec<Value>, entry: Value| {
        let path = entry.get("data_path").and_then(Value::as_str).unwrap_or("");
        if !declared.contains(&path) {
            out.push(entry);
        }
    };

    push_standard(
        &mut out,
        json!({
            "data_path": "action_result.status",
            "data_type": "string",
            "example_values": ["success", "failed"],
        }),
    );
    for param in &def.parameters {
        let mut entry = Map::new();
        entry.insert(
            "data_path".into(),
            Value::from(format!("action_result.parameter.{}", param.name)),
        );
        entry.insert(
            "data_type".into(),
            Value::from(param.spec.param_type.splunk_data_type()),
        );
        if !param.spec.contains.is_empty() {
            entry.insert("contains".into(), Value::from(param.spec.contains.clone()));
        }
        push_standard(&mut out, Value::Object(entry));
    }
    for declared_entry in &def.output {
        out.push(splunk_output(declared_entry));
    }
    push_standard(
        &mut out,
        json!({"data_path": "action_result.message", "data_type": "string"}),
    );
    out
}

/// A definition output entry with `type` renamed to Splunk's `data_type` (numbers → numeric).
fn splunk_output(entry: &Value) -> Value {
    let Value::Object(fields) = entry else {
        return entry.clone();
    };
    let mut out = Map::new();
    for (key, value) in fields {
        if key == "type" || key == "data_type" {
            let mapped = match value.as_str() {
                Some("integer" | "number" | "numeric") => Value::from("numeric"),
                _ => value.clone(),
            };
            out.insert("data_type".into(), mapped);
        } else {
            out.insert(key.clone(), value.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_definition() {
        let m = manifest();
        let actions = m["actions"].as_array().unwrap();
        let ids: Vec<&str> = actions
            .iter()
            .map(|a| a["identifier"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = definitions()
            .iter()
            .flat_map(|d| {
                std::iter::once(d.id.as_str()).chain(d.aliases.iter().map(|a| a.id.as_str()))
            })
            .collect();
        assert_eq!(ids, want);
        // An alias is listed under its own identifier and parameter names.
        let cancel = actions
            .iter()
            .find(|a| a["identifier"] == "cancel_live_response")
            .unwrap();
        assert_eq!(cancel["action"], "cancel live response");
        assert!(cancel["parameters"].get("action_id").is_some(), "{cancel}");
        assert!(cancel["parameters"].get("event_id").is_none(), "{cancel}");
        assert!(ids.contains(&"test_connectivity"));
        assert!(ids.contains(&"list_devices"));
        for a in actions {
            assert_eq!(a["versions"], "EQ(*)");
            assert!(a["action"].is_string());
            assert!(a["output"].is_array());
        }
    }

    #[test]
    fn stable_across_calls() {
        assert_eq!(manifest(), manifest());
        let pretty = manifest_pretty();
        assert_eq!(pretty, manifest_pretty());
        assert!(pretty.ends_with("}\n"));
        let parsed: Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(parsed, manifest());
        assert_eq!(
            pretty,
            format!("{}\n", serde_json::to_string_pretty(&manifest()).unwrap())
        );
    }

    #[test]
    fn app_metadata_and_configuration() {
        let m = manifest();
        assert_eq!(m["appid"], APP_ID);
        assert_eq!(m["name"], "Microsoft Defender for Endpoint (defender-soar)");
        assert_eq!(m["publisher"], "defender-soar");
        assert_eq!(m["type"], "endpoint");
        assert_eq!(m["product_vendor"], "Microsoft");
        assert_eq!(m["product_name"], "Defender for Endpoint");
        assert_eq!(m["package_name"], "defender_soar");
        assert_eq!(m["app_version"], env!("CARGO_PKG_VERSION"));
        let config = m["configuration"].as_object().unwrap();
        let keys: Vec<&str> = config.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "tenant_id",
                "client_id",
                "client_secret",
                "auth",
                "environment",
                "token_endpoint",
                "login_url",
                "api_url",
                "disabled_actions"
            ]
        );
        assert_eq!(config["client_secret"]["data_type"], "password");
        assert_eq!(
            config["environment"]["value_list"],
            serde_json::json!(["Public", "GCC", "GCC High", "DoD"])
        );
        for (i, (_, entry)) in config.iter().enumerate() {
            assert_eq!(entry["order"], i);
            assert!(entry["data_type"].is_string());
            assert!(entry["description"].is_string());
            assert!(entry["required"].is_boolean());
        }
    }

    #[test]
    fn list_devices_in_splunk_layout() {
        let m = manifest();
        let action = m["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["identifier"] == "list_devices")
            .unwrap();
        assert_eq!(action["action"], "list devices");
        assert_eq!(action["type"], "investigate");
        assert_eq!(action["read_only"], true);
        let params = action["parameters"].as_object().unwrap();
        let names: Vec<&str> = params.keys().map(String::as_str).collect();
        assert_eq!(names, ["input_type", "input", "query", "limit"]);
        assert_eq!(params["limit"]["data_type"], "numeric");
        assert_eq!(params["limit"]["default"], 100);
        assert_eq!(params["input_type"]["order"], 0);
        assert_eq!(
            params["input_type"]["value_list"],
            serde_json::json!(["All", "Domain", "File Hash"])
        );
        let paths: Vec<&str> = action["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["data_path"].as_str().unwrap())
            .collect();
        for want in [
            "action_result.status",
            "action_result.parameter.limit",
            "action_result.data.*.id",
            "action_result.summary.total_devices",
            "action_result.message",
        ] {
            assert!(paths.contains(&want), "missing {want}");
        }
        let total = action["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["data_path"] == "action_result.summary.total_devices")
            .unwrap();
        assert_eq!(total["data_type"], "numeric");
        assert!(total.get("type").is_none());
    }

    #[test]
    fn secret_parameters_are_passwords() {
        let def = crate::actions::definition::parse_definition(
            r#"{"id":"x","name":"x","type":"generic","description":"d","read_only":true,
                "parameters":{"key":{"type":"string","secret":true}}}"#,
        )
        .unwrap();
        let a = action(&def);
        assert_eq!(a["parameters"]["key"]["data_type"], "password");
    }
}
