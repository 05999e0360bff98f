//! Action definitions: the `actions/*.json` files, embedded at build time and parsed once.
//!
//! A definition says what an action is called, what kind of action it is, which Defender
//! permissions it needs, which parameters it takes (with their types and constraints, in file
//! order) and which output data paths it fills. [`parse_definition`] checks a definition for
//! internal consistency; [`definitions`] gives every embedded one, sorted by id.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

include!(concat!(env!("OUT_DIR"), "/action_definitions.rs"));

/// The action types a definition may declare (the Splunk SOAR action types).
pub const ACTION_TYPES: &[&str] = &[
    "test",
    "investigate",
    "contain",
    "correct",
    "generic",
    "ingest",
];

/// One action's definition, as written in `actions/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Identifier (`^[a-z][a-z0-9_]*$`), equal to the file name without `.json`.
    pub id: String,
    /// Human name, e.g. `quarantine device`.
    pub name: String,
    /// One of [`ACTION_TYPES`].
    #[serde(rename = "type")]
    pub action_type: String,
    /// One-line description.
    pub description: String,
    /// Whether the action only reads.
    pub read_only: bool,
    /// Defender permissions (token roles) the action needs.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// The action needs any one of `permissions`, not all: it calls the API whose token
    /// allows it and checks the token itself (advanced hunting on Graph or on Defender's API).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub any_permission: bool,
    /// Parameters, in the order the file lists them.
    #[serde(default, with = "params_map")]
    pub parameters: Vec<Param>,
    /// Output data paths (`{"data_path": "action_result....", "type": ..., "contains": [...]}`).
    #[serde(default)]
    pub output: Vec<Value>,
    /// Longer help text for the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbose: Option<String>,
    /// Other ids this action answers to (the Splunk app's identifiers, for migrated playbooks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<Alias>,
}

/// Another id an action answers to, with the parameters it names differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alias {
    /// The other id (`^[a-z][a-z0-9_]*$`).
    pub id: String,
    /// Parameter names of the alias → the action's own names (`action_id` → `event_id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

impl Alias {
    /// The parameters under the action's own names: renamed keys move, others stay.
    pub fn rename(&self, given: Map<String, Value>) -> Map<String, Value> {
        given
            .into_iter()
            .map(|(k, v)| match self.parameters.get(&k) {
                Some(own) => (own.clone(), v),
                None => (k, v),
            })
            .collect()
    }
}

impl Definition {
    /// The permissions every token must carry before the handler runs: all of
    /// `permissions`, or none when any one of them will do (the handler checks).
    pub fn required_permissions(&self) -> &[String] {
        if self.any_permission {
            &[]
        } else {
            &self.permissions
        }
    }

    /// The specification of parameter `name`, if the action has one.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.parameters
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.spec)
    }

    /// Parameter names in definition order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.parameters.iter().map(|p| p.name.as_str())
    }

    /// The summary keys the output paths declare (`action_result.summary.<key>`), sorted.
    pub fn summary_keys(&self) -> BTreeSet<&str> {
        self.output
            .iter()
            .filter_map(|entry| entry.get("data_path").and_then(Value::as_str))
            .filter_map(|path| path.strip_prefix("action_result.summary."))
            .filter_map(|rest| rest.split('.').next())
            .filter(|key| !key.is_empty())
            .collect()
    }
}

/// A named parameter of an action.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Parameter name (`^[a-z][a-z0-9_]*$`).
    pub name: String,
    /// What the parameter accepts.
    pub spec: ParamSpec,
}

/// The JSON type of a parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// A string.
    String,
    /// A whole number (also given as a string such as `"30"`).
    Integer,
    /// Any number (also given as a numeric string).
    Number,
    /// `true`/`false` (also given as the strings `"true"`/`"false"`).
    Boolean,
}

impl ParamType {
    /// The name used in definition files.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
        }
    }

    /// The Splunk SOAR `data_type` (`string`, `numeric` or `boolean`).
    pub fn splunk_data_type(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer | ParamType::Number => "numeric",
            ParamType::Boolean => "boolean",
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one parameter accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// JSON type.
    #[serde(rename = "type")]
    pub param_type: ParamType,
    /// Must be given (unless it has a default).
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    /// Value used when the parameter is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// The only values allowed (strings also match case-insensitively).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_list: Option<Vec<Value>>,
    /// Smallest allowed number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest allowed number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Regular expression a string must match (anchor it with `^...$` to match the whole value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// Fewest characters of a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<usize>,
    /// Most characters of a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Splunk SOAR contains types (e.g. `defender device id`, `ip`, `sha1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains: Vec<String>,
    /// What the parameter is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Primary parameter in the Splunk SOAR sense (offered for contextual actions).
    #[serde(default, skip_serializing_if = "is_false")]
    pub primary: bool,
    /// Never echoed in error messages or responses.
    #[serde(default, skip_serializing_if = "is_false")]
    pub secret: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// (De)serializes the parameter list as a JSON object, keeping its order and refusing
/// duplicate names.
mod params_map {
    use std::fmt;

    use serde::de::{self, MapAccess, Visitor};
    use serde::ser::SerializeMap;
    use serde::{Deserializer, Serializer};

    use super::{Param, ParamSpec};

    /// Writes the parameters as one JSON object, in order.
    pub fn serialize<S: Serializer>(params: &[Param], serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(params.len()))?;
        for param in params {
            map.serialize_entry(&param.name, &param.spec)?;
        }
        map.end()
    }

    /// Reads a JSON object of parameters, keeping its order.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Param>, D::Error> {
        struct ParamsVisitor;

        impl<'de> Visitor<'de> for ParamsVisitor {
            type Value = Vec<Param>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping parameter names to their specifications")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Vec<Param>, A::Error> {
                let mut params: Vec<Param> = Vec::new();
                while let Some(name) = access.next_key::<String>()? {
                    if params.iter().any(|p| p.name == name) {
                        return Err(de::Error::custom(format!("duplicate parameter '{name}'")));
                    }
                    let spec = access.next_value::<ParamSpec>()?;
                    params.push(Param { name, spec });
                }
                Ok(params)
            }
        }

        deserializer.deserialize_map(ParamsVisitor)
    }
}

/// Parses one definition file and checks it for consistency: the id and parameter names match
/// `^[a-z][a-z0-9_]*$`, the type is one of [`ACTION_TYPES`], patterns compile, constraints fit
/// the parameter type, `min <= max`, value lists hold values of the right type, defaults satisfy
/// their own specification, and output entries carry an `action_result.` data path.
pub fn parse_definition(json: &str) -> Result<Definition, String> {
    let def: Definition = serde_json::from_str(json).map_err(|e| e.to_string())?;
    check_definition(&def)?;
    Ok(def)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn check_definition(def: &Definition) -> Result<(), String> {
    if !is_identifier(&def.id) {
        return Err(format!(
            "id {:?} must match ^[a-z][a-z0-9_]*$",
            def.id.chars().take(64).collect::<String>()
        ));
    }
    if def.name.trim().is_empty() {
        return Err("name must not be empty".into());
    }
    if def.description.trim().is_empty() {
        return Err("description must not be empty".into());
    }
    if !ACTION_TYPES.contains(&def.action_type.as_str()) {
        return Err(format!(
            "type {:?} must be one of {}",
            def.action_type,
            ACTION_TYPES.join(", ")
        ));
    }
    let mut seen = HashSet::new();
    for permission in &def.permissions {
        if permission.trim().is_empty() {
            return Err("permissions must not contain an empty name".into());
        }
        if !seen.insert(permission.as_str()) {
            return Err(format!("permission {permission:?} is listed twice"));
        }
    }
    for param in &def.parameters {
        check_param(param).map_err(|e| format!("parameter '{}': {e}", param.name))?;
    }
    let mut paths = HashSet::new();
    for (i, entry) in def.output.iter().enumerate() {
        let path = entry
            .get("data_path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("output[{i}] needs a string data_path"))?;
        if !path.starts_with("action_result.") {
            return Err(format!(
                "output[{i}]: data_path {path:?} must start with action_result."
            ));
        }
        if !paths.insert(path) {
            return Err(format!("output data_path {path:?} is listed twice"));
        }
        if let Some(t) = entry.get("type")
            && !t.is_string()
        {
            return Err(format!("output[{i}]: type must be a string"));
        }
    }
    Ok(())
}

fn check_param(param: &Param) -> Result<(), String> {
    let spec = &param.spec;
    if !is_identifier(&param.name) {
        return Err("name must match ^[a-z][a-z0-9_]*$".into());
    }
    let numeric = matches!(spec.param_type, ParamType::Integer | ParamType::Number);
    let string = spec.param_type == ParamType::String;
    if !numeric && (spec.min.is_some() || spec.max.is_some()) {
        return Err(format!("min/max do not apply to a {}", spec.param_type));
    }
    if !string && (spec.pattern.is_some() || spec.min_length.is_some() || spec.max_length.is_some())
    {
        return Err(format!(
            "pattern/min_length/max_length do not apply to a {}",
            spec.param_type
        ));
    }
    for bound in [spec.min, spec.max].into_iter().flatten() {
        if !bound.is_finite() {
            return Err("min/max must be finite".into());
        }
    }
    if let (Some(min), Some(max)) = (spec.min, spec.max)
        && min > max
    {
        return Err(format!("min {min} is greater than max {max}"));
    }
    if let (Some(min), Some(max)) = (spec.min_length, spec.max_length)
        && min > max
    {
        return Err(format!("min_length {min} is greater than max_length {max}"));
    }
    if let Some(pattern) = &spec.pattern {
        super::validate::compiled_pattern(pattern)
            .map_err(|e| format!("pattern does not compile: {e}"))?;
    }
    if let Some(list) = &spec.value_list {
        if list.is_empty() {
            return Err("value_list must not be empty".into());
        }
        let mut seen = HashSet::new();
        for entry in list {
            let checked = super::validate::check_value(&param.name, spec, entry)
                .map_err(|e| format!("value_list entry {entry}: {e}"))?;
            if &checked != entry {
                return Err(format!(
                    "value_list entry {entry} is not a {}",
                    spec.param_type
                ));
            }
            let key = match entry {
                Value::String(s) => s.to_lowercase(),
                other => other.to_string(),
            };
            if !seen.insert(key) {
                return Err(format!("value_list entry {entry} is listed twice"));
            }
        }
    }
    if let Some(default) = &spec.default {
        if default.is_null() {
            return Err("default must not be null (leave it out instead)".into());
        }
        let checked = super::validate::check_value(&param.name, spec, default)
            .map_err(|e| format!("default {default} is invalid: {e}"))?;
        if &checked != default {
            return Err(format!(
                "default {default} must be written as {checked} (a {} as listed)",
                spec.param_type
            ));
        }
    }
    Ok(())
}

/// Parses a set of definition files (name, JSON text), checks each file is named after its id,
/// and returns the definitions sorted by id.
pub(crate) fn load_files(files: &[(&str, &str)]) -> Result<Vec<Definition>, String> {
    let mut defs = Vec::with_capacity(files.len());
    for (file, json) in files {
        let def = parse_definition(json).map_err(|e| format!("actions/{file}: {e}"))?;
        let stem = file.strip_suffix(".json").unwrap_or(file);
        if def.id != stem {
            return Err(format!(
                "actions/{file}: id {:?} must equal the file name without .json",
                def.id
            ));
        }
        defs.push(def);
    }
    defs.sort_by(|a, b| a.id.cmp(&b.id));
    check_aliases(&defs)?;
    Ok(defs)
}

/// Alias ids are well formed, unique, and no action's id; their renamed parameters exist.
fn check_aliases(defs: &[Definition]) -> Result<(), String> {
    let mut ids: BTreeSet<&str> = defs.iter().map(|d| d.id.as_str()).collect();
    for def in defs {
        for alias in &def.aliases {
            let well_formed = alias.id.starts_with(|c: char| c.is_ascii_lowercase())
                && alias
                    .id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !well_formed {
                return Err(format!(
                    "actions/{}.json: alias {:?} must match ^[a-z][a-z0-9_]*$",
                    def.id, alias.id
                ));
            }
            if !ids.insert(alias.id.as_str()) {
                return Err(format!(
                    "actions/{}.json: alias {:?} is already an action id or alias",
                    def.id, alias.id
                ));
            }
            for own in alias.parameters.values() {
                if def.param(own).is_none() {
                    return Err(format!(
                        "actions/{}.json: alias {:?} renames a parameter to {own:?}, which the \
                         action does not have",
                        def.id, alias.id
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The definition answering to `id`, and the alias it was called by, if any.
pub fn resolve(id: &str) -> Option<(&'static Definition, Option<&'static Alias>)> {
    if let Some(def) = definition(id) {
        return Some((def, None));
    }
    definitions()
        .iter()
        .find_map(|d| d.aliases.iter().find(|a| a.id == id).map(|a| (d, Some(a))))
}

/// Every embedded action definition, sorted by id.
///
/// The files are this crate's own data (embedded by `src/build.rs`); a broken one panics here with
/// the file name and the parse error, and the unit tests parse every file so CI catches it.
pub fn definitions() -> &'static [Definition] {
    static DEFINITIONS: OnceLock<Vec<Definition>> = OnceLock::new();
    DEFINITIONS.get_or_init(|| match load_files(ACTION_DEFINITION_FILES) {
        Ok(defs) => defs,
        Err(e) => panic!("invalid embedded action definition: {e}"),
    })
}

/// The embedded definition with this id.
pub fn definition(id: &str) -> Option<&'static Definition> {
    let defs = definitions();
    defs.binary_search_by(|d| d.id.as_str().cmp(id))
        .ok()
        .and_then(|i| defs.get(i))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn minimal(params: Value) -> String {
        json!({
            "id": "sample_action",
            "name": "sample action",
            "type": "investigate",
            "description": "A sample",
            "read_only": true,
            "parameters": params,
        })
        .to_string()
    }

    #[test]
    fn every_embedded_file_parses() {
        assert!(!ACTION_DEFINITION_FILES.is_empty());
        for (file, json) in ACTION_DEFINITION_FILES {
            let def = parse_definition(json).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(format!("{}.json", def.id), *file);
        }
        let defs = load_files(ACTION_DEFINITION_FILES).unwrap();
        assert_eq!(defs.len(), ACTION_DEFINITION_FILES.len());
        assert_eq!(definitions().len(), ACTION_DEFINITION_FILES.len());
    }

    #[test]
    fn definitions_are_sorted_and_found_by_id() {
        let defs = definitions();
        assert!(defs.windows(2).all(|w| w[0].id < w[1].id));
        for def in defs {
            assert_eq!(definition(&def.id).map(|d| &d.id), Some(&def.id));
        }
        assert!(definition("no_such_action").is_none());
        assert!(definition("test_connectivity").is_some());
        assert!(definition("list_devices").is_some());
    }

    #[test]
    fn list_devices_keeps_parameter_order() {
        let def = definition("list_devices").unwrap();
        let names: Vec<&str> = def.param_names().collect();
        assert_eq!(names, ["input_type", "input", "query", "limit"]);
        assert_eq!(def.permissions, ["Machine.Read.All"]);
        let limit = def.param("limit").unwrap();
        assert_eq!(limit.param_type, ParamType::Integer);
        assert_eq!(limit.default, Some(json!(100)));
    }

    #[test]
    fn parameter_order_survives_a_round_trip() {
        let json = minimal(json!({
            "zeta": {"type": "string"},
            "alpha": {"type": "integer", "default": 3},
            "mid": {"type": "boolean"}
        }));
        let def = parse_definition(&json).unwrap();
        let names: Vec<&str> = def.param_names().collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
        let again = parse_definition(&serde_json::to_string(&def).unwrap()).unwrap();
        assert_eq!(again, def);
    }

    #[test]
    fn rejects_inconsistent_definitions() {
        let cases: Vec<(String, &str)> = vec![
            (
                minimal(json!({})).replace("sample_action", "Sample"),
                "must match ^[a-z][a-z0-9_]*$",
            ),
            (
                minimal(json!({})).replace("sample_action", "9lives"),
                "must match",
            ),
            (
                minimal(json!({})).replace("sample_action", "bad-id"),
                "must match",
            ),
            (
                minimal(json!({})).replace("sample_action", ""),
                "must match",
            ),
            (
                minimal(json!({})).replace("investigate", "destroy"),
                "type \"destroy\" must be one of",
            ),
            (
                minimal(json!({"p": {"type": "string", "pattern": "^[a-"}})),
                "pattern does not compile",
            ),
            (
                minimal(json!({"p": {"type": "string", "value_list": ["A", "B"], "default": "C"}})),
                "default \"C\" is invalid",
            ),
            (
                minimal(json!({"p": {"type": "integer", "min": 10, "max": 1}})),
                "min 10 is greater than max 1",
            ),
            (
                minimal(json!({"p": {"type": "string", "min_length": 5, "max_length": 1}})),
                "min_length 5 is greater than max_length 1",
            ),
            (
                minimal(json!({"p": {"type": "integer", "value_list": [1, "two"]}})),
                "value_list entry \"two\"",
            ),
            (
                minimal(json!({"p": {"type": "string", "value_list": ["a", "A"]}})),
                "listed twice",
            ),
            (
                minimal(json!({"p": {"type": "integer", "default": "30"}})),
                "must be written as 30",
            ),
            (
                minimal(json!({"p": {"type": "integer", "default": 0, "min": 1}})),
                "default 0 is invalid",
            ),
            (
                minimal(json!({"p": {"type": "string", "min": 1}})),
                "min/max do not apply",
            ),
            (
                minimal(json!({"p": {"type": "integer", "pattern": "^1$"}})),
                "do not apply to a integer",
            ),
            (
                minimal(json!({"Bad": {"type": "string"}})),
                "parameter 'Bad': name must match",
            ),
            (
                minimal(json!({"p": {"type": "string", "colour": "red"}})),
                "unknown field `colour`",
            ),
            (
                minimal(json!({"p": {"type": "text"}})),
                "unknown variant `text`",
            ),
            (
                minimal(json!({})).replace("\"read_only\"", "\"readonly\""),
                "unknown field `readonly`",
            ),
        ];
        for (json, want) in cases {
            let err = parse_definition(&json).expect_err(&json);
            assert!(
                err.contains(want),
                "{json}\n  error: {err}\n  wanted: {want}"
            );
        }
    }

    #[test]
    fn rejects_duplicate_parameters() {
        let json = r#"{"id":"x","name":"x","type":"generic","description":"d","read_only":true,
            "parameters":{"a":{"type":"string"},"a":{"type":"integer"}}}"#;
        let err = parse_definition(json).unwrap_err();
        assert!(err.contains("duplicate parameter 'a'"), "{err}");
    }

    #[test]
    fn rejects_bad_output_entries() {
        let base = json!({"id":"x","name":"x","type":"generic","description":"d","read_only":true});
        let mut with_output = base.clone();
        with_output["output"] = json!([{"data_path": "summary.x", "type": "string"}]);
        let err = parse_definition(&with_output.to_string()).unwrap_err();
        assert!(err.contains("must start with action_result."), "{err}");
        with_output["output"] = json!([{"type": "string"}]);
        let err = parse_definition(&with_output.to_string()).unwrap_err();
        assert!(err.contains("needs a string data_path"), "{err}");
    }

    #[test]
    fn file_name_must_match_id() {
        let json = minimal(json!({}));
        let err = load_files(&[("other.json", json.as_str())]).unwrap_err();
        assert!(err.contains("actions/other.json"), "{err}");
        let defs = load_files(&[("sample_action.json", json.as_str())]).unwrap();
        assert_eq!(defs[0].id, "sample_action");
    }
}
