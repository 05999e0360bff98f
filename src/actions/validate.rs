//! Generic parameter validation against an action's [`Definition`], before any handler runs.
//!
//! Rules: unknown parameters are refused; `null` and the empty string count as absent; absent
//! parameters take their default, and an absent required one without a default is an error;
//! each present value must have the declared type (integers and numbers may also arrive as
//! numeric strings, booleans as `"true"`/`"false"`, because SOAR platforms often send strings)
//! and satisfy its value list, range, length and pattern. String value lists match exactly or
//! case-insensitively, and the listed spelling is what the handler gets. The result keeps
//! definition order. Values are echoed in messages at most 64 characters long, and never for a
//! parameter marked `secret`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use regex::Regex;
use serde_json::{Map, Number, Value};

use super::definition::{Definition, ParamSpec, ParamType};
use crate::envelope::ActionError;

/// How many characters of a value an error message may echo.
const ECHO_LIMIT: usize = 64;

/// What a secret parameter's value is replaced with by [`redacted`].
pub const REDACTED: &str = "********";

/// The `contains` types of a parameter that names a device (id, DNS name or IP address).
const DEVICE_TYPES: [&str; 4] = [
    "defender device id",
    "defender atp device id",
    "host name",
    "ip",
];

/// Whether a parameter's `contains` says it names a device and nothing else.
fn names_only_devices(contains: &[String]) -> bool {
    contains.iter().any(|c| c == DEVICE_TYPES[0])
        && contains.iter().all(|c| DEVICE_TYPES.contains(&c.as_str()))
}

/// Validates `input` against `def`: returns the parameters with defaults applied and values
/// normalised (in definition order), or [`ActionError::InvalidParameter`] naming the parameter
/// and what it allows.
pub fn validate(
    def: &Definition,
    input: &Map<String, Value>,
) -> Result<Map<String, Value>, ActionError> {
    let unknown: Vec<String> = input
        .keys()
        .filter(|key| def.param(key).is_none())
        .map(|key| format!("'{}'", truncate(key)))
        .collect();
    if !unknown.is_empty() {
        let accepted = if def.parameters.is_empty() {
            "none".to_string()
        } else {
            def.param_names().collect::<Vec<_>>().join(", ")
        };
        let noun = if unknown.len() == 1 {
            "parameter"
        } else {
            "parameters"
        };
        return Err(ActionError::InvalidParameter(format!(
            "unknown {noun} {} (accepted: {accepted})",
            unknown.join(", ")
        )));
    }

    let mut output = Map::new();
    for param in &def.parameters {
        let given = input.get(&param.name).filter(|v| !is_absent(v));
        match given {
            Some(value) => {
                let checked = check_value(&param.name, &param.spec, value)
                    .map_err(ActionError::InvalidParameter)?;
                // A device is checked for shape even where a handler may not look it up
                // (a resumption by event id), so a malformed one is never silently ignored.
                // A list of devices (`device_ids`) is checked item by item by its handler.
                if names_only_devices(&param.spec.contains)
                    && !param.name.ends_with("_ids")
                    && let Some(raw) = checked.as_str()
                {
                    super::engine::device_shape(&param.name, raw)
                        .map_err(ActionError::InvalidParameter)?;
                }
                output.insert(param.name.clone(), checked);
            }
            None => {
                if let Some(default) = &param.spec.default {
                    output.insert(param.name.clone(), default.clone());
                } else if param.spec.required {
                    return Err(ActionError::InvalidParameter(format!(
                        "parameter '{}' is required",
                        param.name
                    )));
                }
            }
        }
    }
    Ok(output)
}

/// A copy of validated parameters with every `secret` parameter's value replaced by
/// [`REDACTED`], for echoing in envelopes and logs.
pub fn redacted(def: &Definition, params: &Map<String, Value>) -> Map<String, Value> {
    params
        .iter()
        .map(|(name, value)| {
            let secret = def.param(name).is_some_and(|spec| spec.secret);
            let shown = if secret {
                Value::String(REDACTED.to_string())
            } else {
                value.clone()
            };
            (name.clone(), shown)
        })
        .collect()
}

/// `null` and `""` mean "not given".
fn is_absent(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// The compiled form of a definition pattern, compiled once per distinct pattern. Shared
/// through an `Arc`: a cloned `Regex` would start with an empty match cache every time.
pub(crate) fn compiled_pattern(pattern: &str) -> Result<Arc<Regex>, String> {
    static CACHE: OnceLock<RwLock<HashMap<String, Arc<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| RwLock::new(HashMap::new()));
    if let Ok(map) = cache.read()
        && let Some(regex) = map.get(pattern)
    {
        return Ok(regex.clone());
    }
    let regex = Arc::new(Regex::new(pattern).map_err(|e| e.to_string())?);
    if let Ok(mut map) = cache.write() {
        map.insert(pattern.to_string(), regex.clone());
    }
    Ok(regex)
}

/// Checks one present value against its specification and returns it normalised; the error
/// is the complete message (`parameter 'x': ...`).
pub(crate) fn check_value(name: &str, spec: &ParamSpec, value: &Value) -> Result<Value, String> {
    let fail = |what: String| {
        let got = if spec.secret {
            String::new()
        } else {
            format!(" (got {})", echo(value))
        };
        format!("parameter '{name}': {what}{got}")
    };

    let coerced = match spec.param_type {
        ParamType::String => value.as_str().map(|s| Value::String(s.to_string())),
        ParamType::Integer => as_integer(value),
        ParamType::Number => as_number(value),
        ParamType::Boolean => as_boolean(value),
    };

    if let Some(list) = &spec.value_list {
        let allowed = || format!("must be one of {}", list_text(list));
        let Some(coerced) = coerced else {
            return Err(fail(allowed()));
        };
        return match find_in_list(list, &coerced) {
            Some(listed) => Ok(listed.clone()),
            None => Err(fail(allowed())),
        };
    }

    match spec.param_type {
        ParamType::String => {
            let Some(Value::String(s)) = coerced else {
                return Err(fail("must be a string".into()));
            };
            let len = s.chars().count();
            let too_short = spec.min_length.is_some_and(|min| len < min);
            let too_long = spec.max_length.is_some_and(|max| len > max);
            if too_short || too_long {
                return Err(format!(
                    "parameter '{name}': must be {} long (got {len} {})",
                    length_text(spec.min_length, spec.max_length),
                    plural(len, "character")
                ));
            }
            if let Some(pattern) = &spec.pattern {
                let regex = compiled_pattern(pattern)
                    .map_err(|e| format!("parameter '{name}': invalid pattern: {e}"))?;
                if !regex.is_match(&s) {
                    return Err(fail(format!("must match {pattern}")));
                }
            }
            Ok(Value::String(s))
        }
        ParamType::Integer | ParamType::Number => {
            let kind = if spec.param_type == ParamType::Integer {
                "an integer"
            } else {
                "a number"
            };
            let allowed = || format!("must be {kind}{}", range_text(spec.min, spec.max));
            let Some(number) = coerced else {
                return Err(fail(allowed()));
            };
            let n = number.as_f64().unwrap_or(f64::NAN);
            let in_range = !n.is_nan()
                && spec.min.is_none_or(|min| n >= min)
                && spec.max.is_none_or(|max| n <= max);
            if !in_range {
                return Err(fail(allowed()));
            }
            Ok(number)
        }
        ParamType::Boolean => coerced.ok_or_else(|| fail("must be true or false".into())),
    }
}

/// JSON integers, integral floats and integer strings (`"30"`, no surrounding spaces).
fn as_integer(value: &Value) -> Option<Value> {
    match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(value.clone()),
        Value::Number(n) => {
            let f = n.as_f64()?;
            // 2^63: the first float outside i64.
            let fits = f.is_finite()
                && f.fract() == 0.0
                && (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f);
            fits.then(|| Value::from(f as i64))
        }
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::from)
            .ok()
            .or_else(|| s.parse::<u64>().ok().map(Value::from)),
        _ => None,
    }
}

/// JSON numbers and finite numeric strings (integers stay integers).
fn as_number(value: &Value) -> Option<Value> {
    match value {
        Value::Number(_) => Some(value.clone()),
        Value::String(s) => {
            if let Ok(i) = s.parse::<i64>() {
                return Some(Value::from(i));
            }
            let f = s.parse::<f64>().ok().filter(|f| f.is_finite())?;
            Number::from_f64(f).map(Value::Number)
        }
        _ => None,
    }
}

/// `true`/`false`, also as strings (any letter case).
fn as_boolean(value: &Value) -> Option<Value> {
    match value {
        Value::Bool(_) => Some(value.clone()),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(Value::Bool(true)),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(Value::Bool(false)),
        _ => None,
    }
}

/// The listed entry equal to `value`: exact first, then (strings) case-insensitive, then
/// (numbers) numerically equal.
fn find_in_list<'a>(list: &'a [Value], value: &Value) -> Option<&'a Value> {
    if let Some(exact) = list.iter().find(|entry| *entry == value) {
        return Some(exact);
    }
    match value {
        Value::String(s) => {
            let lower = s.to_lowercase();
            list.iter()
                .find(|entry| entry.as_str().is_some_and(|e| e.to_lowercase() == lower))
        }
        Value::Number(n) => {
            let f = n.as_f64()?;
            list.iter().find(|entry| entry.as_f64() == Some(f))
        }
        _ => None,
    }
}

/// `Full, Selective, UnManagedDevice` (strings unquoted, other values as JSON).
fn list_text(list: &[Value]) -> String {
    list.iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn range_text(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!(" between {} and {}", num_text(min), num_text(max)),
        (Some(min), None) => format!(" of at least {}", num_text(min)),
        (None, Some(max)) => format!(" of at most {}", num_text(max)),
        (None, None) => String::new(),
    }
}

fn length_text(min: Option<usize>, max: Option<usize>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("between {min} and {max} characters"),
        (Some(min), None) => format!("at least {min} {}", plural(min, "character")),
        (None, Some(max)) => format!("at most {max} {}", plural(max, "character")),
        (None, None) => "any length".into(),
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

/// `1` rather than `1.0` for whole bounds.
fn num_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// A value as it appears in a message: JSON, at most [`ECHO_LIMIT`] characters of it.
fn echo(value: &Value) -> String {
    match value {
        Value::String(s) => {
            let shown = truncate(s);
            Value::String(shown).to_string()
        }
        other => truncate(&other.to_string()),
    }
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= ECHO_LIMIT {
        s.to_string()
    } else {
        let mut shown: String = s.chars().take(ECHO_LIMIT).collect();
        shown.push('…');
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::definition::parse_definition;
    use proptest::prelude::*;
    use serde_json::json;

    fn quarantine() -> Definition {
        parse_definition(
            &json!({
                "id": "quarantine_device",
                "name": "quarantine device",
                "type": "contain",
                "description": "Isolate a device",
                "read_only": false,
                "permissions": ["Machine.Isolate"],
                "parameters": {
                    "device_id": {"type": "string", "required": true, "pattern": "^[0-9a-fA-F]{40}$"},
                    "type": {"type": "string", "required": true, "value_list": ["Full", "Selective", "UnManagedDevice"], "default": "Full"},
                    "comment": {"type": "string", "required": true, "max_length": 1000},
                    "timeout": {"type": "integer", "default": 30, "min": 1, "max": 60}
                }
            })
            .to_string(),
        )
        .unwrap()
    }

    fn sample() -> Definition {
        parse_definition(
            &json!({
                "id": "sample",
                "name": "sample",
                "type": "generic",
                "description": "Every kind of parameter",
                "read_only": true,
                "parameters": {
                    "name": {"type": "string", "min_length": 2, "max_length": 5},
                    "limit": {"type": "integer", "min": 1, "max": 10000},
                    "above": {"type": "integer", "min": 0},
                    "below": {"type": "integer", "max": 60},
                    "ratio": {"type": "number", "min": 0, "max": 1.5},
                    "flag": {"type": "boolean"},
                    "level": {"type": "integer", "value_list": [1, 2, 3]},
                    "password": {"type": "string", "secret": true, "pattern": "^[a-z]+$"},
                    "code": {"type": "string", "pattern": "^[A-Z]{3}$"}
                }
            })
            .to_string(),
        )
        .unwrap()
    }

    const DEVICE: &str = "0123456789abcdef0123456789abcdef01234567";

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn message(def: &Definition, input: Value) -> String {
        match validate(def, &obj(input)) {
            Err(ActionError::InvalidParameter(msg)) => msg,
            other => panic!("expected InvalidParameter, got {other:?}"),
        }
    }

    #[test]
    fn rule_messages() {
        let q = quarantine();
        let s = sample();
        let long = "x".repeat(1001);
        let cases: Vec<(&Definition, Value, &str)> = vec![
            (
                &q,
                json!({"device_id": DEVICE, "type": "Foo", "comment": "c"}),
                r#"parameter 'type': must be one of Full, Selective, UnManagedDevice (got "Foo")"#,
            ),
            (
                &q,
                json!({"device_id": DEVICE, "type": 5, "comment": "c"}),
                "parameter 'type': must be one of Full, Selective, UnManagedDevice (got 5)",
            ),
            (
                &q,
                json!({"device_id": "abc", "comment": "c"}),
                r#"parameter 'device_id': must match ^[0-9a-fA-F]{40}$ (got "abc")"#,
            ),
            (
                &q,
                json!({"device_id": DEVICE}),
                "parameter 'comment' is required",
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": ""}),
                "parameter 'comment' is required",
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": null}),
                "parameter 'comment' is required",
            ),
            (
                &q,
                json!({"comment": "c"}),
                "parameter 'device_id' is required",
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": long}),
                "parameter 'comment': must be at most 1000 characters long (got 1001 characters)",
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": "c", "foo": 1}),
                "unknown parameter 'foo' (accepted: device_id, type, comment, timeout)",
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": "c", "foo": 1, "bar": 2}),
                "unknown parameters 'foo', 'bar' (accepted: device_id, type, comment, timeout)",
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": "c", "timeout": 0}),
                "parameter 'timeout': must be an integer between 1 and 60 (got 0)",
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": "c", "timeout": 1.5}),
                "parameter 'timeout': must be an integer between 1 and 60 (got 1.5)",
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": "c", "timeout": "abc"}),
                r#"parameter 'timeout': must be an integer between 1 and 60 (got "abc")"#,
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": "c", "timeout": true}),
                "parameter 'timeout': must be an integer between 1 and 60 (got true)",
            ),
            (
                &q,
                json!({"device_id": DEVICE, "comment": "c", "timeout": " 30"}),
                r#"parameter 'timeout': must be an integer between 1 and 60 (got " 30")"#,
            ),
            (
                &q,
                json!({"device_id": 42, "comment": "c"}),
                "parameter 'device_id': must be a string (got 42)",
            ),
            (
                &s,
                json!({"limit": 0}),
                "parameter 'limit': must be an integer between 1 and 10000 (got 0)",
            ),
            (
                &s,
                json!({"limit": "10001"}),
                r#"parameter 'limit': must be an integer between 1 and 10000 (got "10001")"#,
            ),
            (
                &s,
                json!({"above": -1}),
                "parameter 'above': must be an integer of at least 0 (got -1)",
            ),
            (
                &s,
                json!({"below": 61}),
                "parameter 'below': must be an integer of at most 60 (got 61)",
            ),
            (
                &s,
                json!({"ratio": 2}),
                "parameter 'ratio': must be a number between 0 and 1.5 (got 2)",
            ),
            (
                &s,
                json!({"ratio": "NaN"}),
                r#"parameter 'ratio': must be a number between 0 and 1.5 (got "NaN")"#,
            ),
            (
                &s,
                json!({"flag": "yes"}),
                r#"parameter 'flag': must be true or false (got "yes")"#,
            ),
            (
                &s,
                json!({"flag": 1}),
                "parameter 'flag': must be true or false (got 1)",
            ),
            (
                &s,
                json!({"level": 4}),
                "parameter 'level': must be one of 1, 2, 3 (got 4)",
            ),
            (
                &s,
                json!({"name": "a"}),
                "parameter 'name': must be between 2 and 5 characters long (got 1 character)",
            ),
            (
                &s,
                json!({"code": "abc"}),
                r#"parameter 'code': must match ^[A-Z]{3}$ (got "abc")"#,
            ),
            (
                &s,
                json!({"code": ["ABC"]}),
                r#"parameter 'code': must be a string (got ["ABC"])"#,
            ),
            (
                &s,
                json!({"password": "Hunter2-Secret"}),
                "parameter 'password': must match ^[a-z]+$",
            ),
        ];
        for (def, input, want) in cases {
            let got = message(def, input.clone());
            assert_eq!(got, want, "input {input}");
        }
    }

    #[test]
    fn defaults_applied_in_definition_order() {
        let q = quarantine();
        let out = validate(&q, &obj(json!({"comment": "why", "device_id": DEVICE}))).unwrap();
        assert_eq!(
            Value::Object(out.clone()),
            json!({"device_id": DEVICE, "type": "Full", "comment": "why", "timeout": 30})
        );
        let keys: Vec<&String> = out.keys().collect();
        assert_eq!(keys, ["device_id", "type", "comment", "timeout"]);
        // An empty string for an optional parameter with a default takes the default too.
        let out = validate(
            &q,
            &obj(json!({"comment": "why", "device_id": DEVICE, "type": "", "timeout": null})),
        )
        .unwrap();
        assert_eq!(out["type"], "Full");
        assert_eq!(out["timeout"], 30);
    }

    #[test]
    fn absent_optional_without_default_is_omitted() {
        let s = sample();
        let out = validate(&s, &Map::new()).unwrap();
        assert!(out.is_empty());
        let out = validate(&s, &obj(json!({"name": ""}))).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn value_list_is_case_insensitive_and_normalised() {
        let q = quarantine();
        for given in ["selective", "SELECTIVE", "Selective"] {
            let out = validate(
                &q,
                &obj(json!({"device_id": DEVICE, "comment": "c", "type": given})),
            )
            .unwrap();
            assert_eq!(out["type"], "Selective");
        }
        let s = sample();
        let out = validate(&s, &obj(json!({"level": "2"}))).unwrap();
        assert_eq!(out["level"], 2);
    }

    #[test]
    fn coercions() {
        let q = quarantine();
        let base = json!({"device_id": DEVICE, "comment": "c"});
        for (given, want) in [
            (json!("30"), json!(30)),
            (json!(30), json!(30)),
            (json!(30.0), json!(30)),
            (json!("+7"), json!(7)),
        ] {
            let mut input = base.clone();
            input["timeout"] = given;
            let out = validate(&q, &obj(input)).unwrap();
            assert_eq!(out["timeout"], want);
        }
        let s = sample();
        for (given, want) in [
            (json!("true"), json!(true)),
            (json!("FALSE"), json!(false)),
            (json!(false), json!(false)),
        ] {
            let out = validate(&s, &obj(json!({"flag": given}))).unwrap();
            assert_eq!(out["flag"], want);
        }
        let out = validate(&s, &obj(json!({"ratio": "0.25"}))).unwrap();
        assert_eq!(out["ratio"], json!(0.25));
        let out = validate(&s, &obj(json!({"ratio": "1"}))).unwrap();
        assert_eq!(out["ratio"], json!(1));
        // Strings are taken as given: no trimming.
        let out = validate(&s, &obj(json!({"name": " ab "}))).unwrap();
        assert_eq!(out["name"], " ab ");
    }

    #[test]
    fn secrets_and_long_values_are_not_echoed() {
        let s = sample();
        let msg = message(&s, json!({"password": "Hunter2-Secret"}));
        assert!(!msg.contains("Hunter2"), "{msg}");
        let msg = message(&s, json!({"password": 12345}));
        assert!(!msg.contains("12345"), "{msg}");
        assert_eq!(msg, "parameter 'password': must be a string");

        let long = format!("{}TAIL", "A".repeat(200));
        let msg = message(&s, json!({"code": long}));
        assert!(!msg.contains("TAIL"), "{msg}");
        assert!(msg.contains(&format!("\"{}…\"", "A".repeat(64))), "{msg}");

        let long_key = format!("{}END", "k".repeat(100));
        let msg = message(&s, json!({ long_key: 1 }));
        assert!(!msg.contains("END"), "{msg}");

        let out = validate(&s, &obj(json!({"password": "abc", "code": "ABC"}))).unwrap();
        let shown = redacted(&s, &out);
        assert_eq!(shown["password"], REDACTED);
        assert_eq!(shown["code"], "ABC");
        assert_eq!(out["password"], "abc");
    }

    #[test]
    fn no_parameters_means_none_accepted() {
        let def = parse_definition(
            r#"{"id":"x","name":"x","type":"generic","description":"d","read_only":true}"#,
        )
        .unwrap();
        assert_eq!(
            message(&def, json!({"a": 1})),
            "unknown parameter 'a' (accepted: none)"
        );
        assert!(validate(&def, &Map::new()).unwrap().is_empty());
    }

    #[test]
    fn embedded_definitions_accept_their_defaults() {
        for def in crate::actions::definition::definitions() {
            let required_without_default = def
                .parameters
                .iter()
                .any(|p| p.spec.required && p.spec.default.is_none());
            if !required_without_default {
                validate(def, &Map::new()).unwrap_or_else(|e| panic!("{}: {e}", def.id));
            }
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::String),
            "-?[0-9]{1,25}(\\.[0-9]{0,3})?".prop_map(Value::String),
            prop_oneof![
                Just("true"),
                Just("False"),
                Just("Full"),
                Just("selective"),
                Just(""),
                Just("NaN"),
                Just("inf"),
                Just("1e400")
            ]
            .prop_map(|s| Value::String(s.to_string())),
            "\\PC{0,80}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{1,6}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_input() -> impl Strategy<Value = Map<String, Value>> {
        let key = prop_oneof![
            Just("device_id".to_string()),
            Just("type".to_string()),
            Just("comment".to_string()),
            Just("timeout".to_string()),
            Just("name".to_string()),
            Just("limit".to_string()),
            Just("above".to_string()),
            Just("below".to_string()),
            Just("ratio".to_string()),
            Just("flag".to_string()),
            Just("level".to_string()),
            Just("password".to_string()),
            Just("code".to_string()),
            "\\PC{0,10}",
        ];
        prop::collection::vec((key, arb_json()), 0..8).prop_map(|kv| kv.into_iter().collect())
    }

    proptest! {
        #[test]
        fn never_panics(input in arb_input()) {
            let _ = validate(&quarantine(), &input);
            let _ = validate(&sample(), &input);
            for def in crate::actions::definition::definitions() {
                let _ = validate(def, &input);
            }
        }

        #[test]
        fn accepted_integers_are_in_range(value in arb_json(), int in any::<i64>(), text in "-?[0-9]{1,6}") {
            let s = sample();
            for given in [value, Value::from(int), Value::String(text)] {
                let input = obj(json!({"limit": given}));
                if let Ok(out) = validate(&s, &input)
                    && let Some(limit) = out.get("limit")
                {
                    let n = limit.as_i64();
                    prop_assert!(n.is_some(), "not an integer: {limit}");
                    let n = n.unwrap_or_default();
                    prop_assert!((1..=10000).contains(&n), "out of range: {n}");
                }
            }
        }

        #[test]
        fn valid_inputs_round_trip(
            device in "[0-9a-fA-F]{40}",
            kind in prop_oneof![Just("Full"), Just("Selective"), Just("UnManagedDevice")],
            comment in "\\PC{1,100}",
            timeout in proptest::option::of(1i64..=60),
        ) {
            let q = quarantine();
            let mut input = obj(json!({"device_id": device, "type": kind, "comment": comment}));
            if let Some(t) = timeout {
                input.insert("timeout".into(), json!(t));
            }
            let out = validate(&q, &input).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (k, v) in &input {
                prop_assert_eq!(out.get(k), Some(v));
            }
            prop_assert_eq!(&out["timeout"], &json!(timeout.unwrap_or(30)));
            // Validating the output again changes nothing.
            let again = validate(&q, &out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again, out);
        }

        #[test]
        fn validation_is_idempotent(input in arb_input()) {
            for def in [quarantine(), sample()] {
                if let Ok(out) = validate(&def, &input) {
                    let again = validate(&def, &out);
                    prop_assert!(again.is_ok(), "{:?}", again);
                    prop_assert_eq!(again.unwrap_or_default(), out);
                }
            }
        }
    }
}
