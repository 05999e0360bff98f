//! One source of truth for parameters and outputs: checks that an action's definition
//! (`actions/<id>.json`) and its Rust side agree.
//!
//! - [`check_params`] compares a definition's parameters with the fields serde expects for the
//!   handler's `Params` type (captured by a deserializer that records them, so
//!   `#[serde(rename)]` is seen as serde sees it): the same names on both sides; a sample of
//!   valid values (every `value_list` entry, the default, the bounds of a range) deserialises;
//!   a parameter that may be absent (not required, no default) may be absent on the Rust side
//!   too; and a value of the wrong JSON type is refused rather than silently accepted.
//! - [`checks`] lists the check of every registered action; a unit test runs them all.
//! - [`undeclared_summary_keys`] lists the summary keys an outcome carries that its
//!   definition's output paths do not declare; [`crate::actions::invoke`] records them (debug
//!   builds) in the application's [`SummaryDrift`].

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Mutex;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::{Map, Value};

use super::definition::{Definition, ParamSpec, ParamType};

/// A check of one action's Rust side against its definition: the discrepancies, one readable
/// line each (empty when they agree).
pub type Checker = fn(&Definition) -> Vec<String>;

/// The check of every registered action, by action id (from [`crate::actions::handlers`]).
pub fn checks() -> Vec<(&'static str, Checker)> {
    super::handlers()
        .iter()
        .map(|(id, h)| (*id, h.check))
        .collect()
}

/// The field names serde expects for `P`, or why they cannot be known (`P` is not a plain
/// struct: a flattened struct or a map deserialises through `deserialize_map`, an untagged
/// enum through `deserialize_any`, ...).
pub fn struct_fields<P: DeserializeOwned>() -> Result<&'static [&'static str], String> {
    let mut capture = Capture::default();
    let _ = P::deserialize(&mut capture);
    match (capture.fields, capture.other) {
        (Some(fields), _) => Ok(fields),
        (None, Some(how)) => Err(how),
        (None, None) => Err("it did not ask for anything".into()),
    }
}

/// Everything in which `def` and the parameters type `P` disagree, one line each, naming the
/// action and the parameter.
pub fn check_params<P: DeserializeOwned>(def: &Definition) -> Vec<String> {
    let mut problems = Vec::new();
    let type_name = std::any::type_name::<P>();
    let fields = match struct_fields::<P>() {
        Ok(fields) => fields,
        Err(how) => {
            return vec![format!(
                "{}: {type_name} cannot be checked: not a plain struct ({how})",
                def.id
            )];
        }
    };
    let say = |param: &str, what: String| format!("{}: parameter '{param}': {what}", def.id);

    for param in &def.parameters {
        // The host's own parameters, taken out before the handler sees the rest.
        let host_param = [crate::callbacks::URL_PARAM, crate::callbacks::SECRET_PARAM]
            .contains(&param.name.as_str())
            && crate::callbacks::accepts(&def.id);
        if host_param {
            continue;
        }
        if !fields.contains(&param.name.as_str()) {
            problems.push(say(
                &param.name,
                format!("in the definition but not a field of {type_name}"),
            ));
        }
    }
    for field in fields {
        if def.param(field).is_none() {
            problems.push(say(
                field,
                format!("a field of {type_name} but not in the definition"),
            ));
        }
    }

    // Only the parameters both sides know take part in the value checks.
    let shared: Vec<_> = def
        .parameters
        .iter()
        .filter(|p| fields.contains(&p.name.as_str()))
        .collect();
    let mut base: Map<String, Value> = shared
        .iter()
        .map(|p| (p.name.clone(), sample(&p.spec)))
        .collect();
    let parse = |map: Map<String, Value>| parse_tracked::<P>(map);

    // A complete sample must deserialise. When it does not, the parameter at fault is
    // reported and given a value the Rust side takes instead, so the others are still checked.
    let mut broken: BTreeSet<String> = BTreeSet::new();
    loop {
        let Err((at, e)) = parse(base.clone()) else {
            break;
        };
        let culprit = at.filter(|name| !broken.contains(name));
        let Some(name) = culprit else {
            problems.push(format!(
                "{}: a complete sample of valid parameters {} does not deserialise into {type_name}: {e}",
                def.id,
                Value::Object(base.clone())
            ));
            return problems;
        };
        let given = base.get(&name).cloned().unwrap_or(Value::Null);
        problems.push(say(
            &name,
            format!("the valid value {given} does not deserialise into {type_name}: {e}"),
        ));
        let replacement = stand_ins(&given).into_iter().find(|candidate| {
            let mut map = base.clone();
            map.insert(name.clone(), candidate.clone());
            !matches!(parse(map), Err((Some(at), _)) if at == name)
        });
        match replacement {
            Some(value) => {
                base.insert(name.clone(), value);
            }
            None => {
                base.remove(&name);
            }
        }
        broken.insert(name);
    }
    let shared: Vec<_> = shared
        .into_iter()
        .filter(|p| !broken.contains(&p.name))
        .collect();
    let with = |name: &str, value: Value| {
        let mut map = base.clone();
        map.insert(name.to_string(), value);
        map
    };

    for param in &shared {
        let spec = &param.spec;
        let name = param.name.as_str();
        for value in valid_values(spec) {
            if let Err((_, e)) = parse(with(name, value.clone())) {
                problems.push(say(
                    name,
                    format!("the valid value {value} does not deserialise: {e}"),
                ));
            }
        }
        if !spec.required && spec.default.is_none() {
            let mut map = base.clone();
            map.remove(name);
            if let Err((_, e)) = parse(map) {
                problems.push(say(
                    name,
                    format!(
                        "optional without a default in the definition, but required by {type_name}: {e}"
                    ),
                ));
            }
        }
        let wrong = wrong_type(spec.param_type);
        if parse(with(name, wrong.clone())).is_ok() {
            problems.push(say(
                name,
                format!(
                    "{} in the definition, but {type_name} also accepts {wrong}",
                    article(spec.param_type)
                ),
            ));
        }
    }
    problems
}

/// The keys of `summary` that `def` does not declare, sorted.
pub fn undeclared_summary_keys(def: &Definition, summary: &Map<String, Value>) -> Vec<String> {
    let declared = def.summary_keys();
    let mut keys: Vec<String> = summary
        .keys()
        .filter(|key| !declared.contains(key.as_str()))
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// Summary keys handlers set without declaring them, as `action: key, key` lines (recorded in
/// debug builds; the integration tests assert it stays empty).
#[derive(Debug, Default)]
pub struct SummaryDrift(Mutex<Vec<String>>);

impl SummaryDrift {
    /// Records the undeclared keys of one outcome of `def`, if any (logged as an error).
    pub fn record(&self, def: &Definition, summary: &Map<String, Value>) {
        let undeclared = undeclared_summary_keys(def, summary);
        if undeclared.is_empty() {
            return;
        }
        let line = format!(
            "{}: summary keys not declared in actions/{}.json: {}",
            def.id,
            def.id,
            undeclared.join(", ")
        );
        tracing::error!(action = %def.id, keys = %undeclared.join(","), "{line}");
        if let Ok(mut list) = self.0.lock() {
            list.push(line);
        }
    }

    /// Everything recorded so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().map(|list| list.clone()).unwrap_or_default()
    }
}

/// A valid value of the parameter, used to build the complete sample.
fn sample(spec: &ParamSpec) -> Value {
    if let Some(first) = spec.value_list.as_ref().and_then(|list| list.first()) {
        return first.clone();
    }
    if let Some(default) = &spec.default {
        return default.clone();
    }
    match spec.param_type {
        ParamType::String => Value::String("sample".into()),
        ParamType::Integer => Value::from(spec.min.map_or(1, |min| min as i64)),
        ParamType::Number => spec.min.map_or(Value::from(1.5), Value::from),
        ParamType::Boolean => Value::Bool(true),
    }
}

/// Every value the validator may hand the handler that the checks try: the listed values, the
/// default, and for numbers the ends of the range (the whole `i64` range when unbounded, and a
/// fraction for a `number`).
fn valid_values(spec: &ParamSpec) -> Vec<Value> {
    let mut values: Vec<Value> = spec.value_list.clone().unwrap_or_default();
    values.extend(spec.default.clone());
    if spec.value_list.is_none() {
        match spec.param_type {
            ParamType::Integer => {
                values.push(Value::from(spec.min.map_or(i64::MIN, |min| min as i64)));
                values.push(Value::from(spec.max.map_or(i64::MAX, |max| max as i64)));
            }
            ParamType::Number => {
                values.push(spec.min.map_or(Value::from(f64::MIN), Value::from));
                values.push(spec.max.map_or(Value::from(f64::MAX), Value::from));
                let lo = spec.min.unwrap_or(0.0);
                let hi = spec.max.unwrap_or(lo + 1.0);
                if hi - lo > 0.5 {
                    values.push(Value::from(lo + 0.5));
                }
            }
            ParamType::String => values.push(Value::String("sample".into())),
            ParamType::Boolean => {
                values.push(Value::Bool(true));
                values.push(Value::Bool(false));
            }
        }
    }
    let mut unique = Vec::new();
    for value in values {
        if !unique.contains(&value) {
            unique.push(value);
        }
    }
    unique
}

/// The type with its article, for messages.
fn article(param_type: ParamType) -> &'static str {
    match param_type {
        ParamType::String => "a string",
        ParamType::Integer => "an integer",
        ParamType::Number => "a number",
        ParamType::Boolean => "a boolean",
    }
}

/// Values of other shapes to put in place of a valid value the Rust side refuses.
fn stand_ins(given: &Value) -> Vec<Value> {
    let text = match given {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    vec![
        Value::String(text),
        Value::from(1),
        Value::Bool(true),
        Value::from(1.5),
        Value::Null,
        Value::Array(Vec::new()),
        Value::Object(Map::new()),
    ]
}

/// Deserialises `map` into `P`, naming the entry being read when it failed (`None` when the
/// failure came after every entry, e.g. a missing field).
fn parse_tracked<P: DeserializeOwned>(
    map: Map<String, Value>,
) -> Result<P, (Option<String>, String)> {
    let mut at = None;
    let result = P::deserialize(Tracked {
        entries: map.into_iter(),
        pending: None,
        at: &mut at,
    });
    result.map_err(|e| (at, e.to_string()))
}

/// A JSON object as a deserializer that remembers which entry it is reading.
struct Tracked<'a> {
    entries: serde_json::map::IntoIter,
    pending: Option<Value>,
    at: &'a mut Option<String>,
}

impl<'de> Deserializer<'de> for Tracked<'_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de> de::MapAccess<'de> for Tracked<'_> {
    type Error = serde_json::Error;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        match self.entries.next() {
            Some((key, value)) => {
                *self.at = Some(key.clone());
                self.pending = Some(value);
                seed.deserialize(de::value::StringDeserializer::<serde_json::Error>::new(key))
                    .map(Some)
            }
            None => {
                *self.at = None;
                Ok(None)
            }
        }
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        seed.deserialize(self.pending.take().unwrap_or(Value::Null))
    }
}

/// A value the validator never hands a parameter of this type.
fn wrong_type(param_type: ParamType) -> Value {
    match param_type {
        ParamType::String => Value::from(7),
        ParamType::Integer | ParamType::Number => Value::String("not a number".into()),
        ParamType::Boolean => Value::from(1),
    }
}

/// A deserializer that asks nothing of any input: it records what the type requests and fails.
#[derive(Default)]
struct Capture {
    fields: Option<&'static [&'static str]>,
    other: Option<String>,
}

/// The error [`Capture`] always ends with.
#[derive(Debug)]
struct Captured(String);

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Captured(msg.to_string())
    }
}

impl<'de> Deserializer<'de> for &mut Capture {
    type Error = Captured;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Captured> {
        self.fields = Some(fields);
        Err(Captured("captured".into()))
    }

    fn deserialize_map<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Captured> {
        self.other = Some("it deserialises as a map: flattened fields or a map type".into());
        Err(Captured("map".into()))
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Captured> {
        self.other = Some("it deserialises from any input: untagged or self-describing".into());
        Err(Captured("any".into()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::definition::parse_definition;

    use serde::Deserialize;
    use serde_json::json;

    #[test]
    fn every_action_agrees_with_its_definition() {
        let mut problems = Vec::new();
        for (id, check) in checks() {
            match crate::actions::definition(id) {
                Some(def) => problems.extend(check(def)),
                None => problems.push(format!("{id}: a check but no definition")),
            }
        }
        assert!(
            problems.is_empty(),
            "parameters disagree with actions/*.json:\n  {}",
            problems.join("\n  ")
        );
    }

    /// A definition the broken fixture below drifts from in every way the check knows.
    fn fixture() -> Definition {
        parse_definition(
            &json!({
                "id": "drifting",
                "name": "drifting",
                "type": "generic",
                "description": "A fixture",
                "read_only": true,
                "parameters": {
                    "device_id": {"type": "string", "required": true},
                    "only_in_json": {"type": "string"},
                    "limit": {"type": "integer", "default": 10, "min": 1, "max": 100},
                    "comment": {"type": "string"},
                    "timeout": {"type": "integer", "default": 30, "min": 1, "max": 1000},
                    "verbose": {"type": "boolean", "default": false},
                    "mode": {"type": "string", "value_list": ["Fast", "Slow"], "default": "Fast"}
                },
                "output": [
                    {"data_path": "action_result.summary.event_id", "type": "string"},
                    {"data_path": "action_result.data.*.id", "type": "string"}
                ]
            })
            .to_string(),
        )
        .unwrap()
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    enum Mode {
        Fast,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Drifted {
        device_id: String,
        only_in_rust: Option<String>,
        limit: String,
        comment: String,
        timeout: u8,
        #[serde(rename = "verbose")]
        chatty: u8,
        mode: Mode,
    }

    #[test]
    fn reports_every_kind_of_drift() {
        let problems = check_params::<Drifted>(&fixture());
        let text = problems.join("\n");
        let expect = [
            "drifting: parameter 'only_in_json': in the definition but not a field of",
            "drifting: parameter 'only_in_rust': a field of",
            "drifting: parameter 'limit': the valid value 10 does not deserialise into",
            "drifting: parameter 'verbose': the valid value false does not deserialise into",
            "drifting: parameter 'comment': optional without a default in the definition, but required by",
            "drifting: parameter 'timeout': the valid value 1000 does not deserialise",
            "drifting: parameter 'mode': the valid value \"Slow\" does not deserialise",
        ];
        for want in expect {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(problems.len(), expect.len(), "{text}");
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct DriftedValues {
        device_id: String,
        only_in_json: Option<String>,
        limit: Option<u64>,
        comment: String,
        timeout: u8,
        verbose: Option<bool>,
        mode: Mode,
    }

    #[test]
    fn reports_value_drift() {
        let problems = check_params::<DriftedValues>(&fixture());
        let text = problems.join("\n");
        let expect = [
            "drifting: parameter 'comment': optional without a default in the definition, but required by",
            "drifting: parameter 'timeout': the valid value 1000 does not deserialise",
            "drifting: parameter 'mode': the valid value \"Slow\" does not deserialise",
        ];
        for want in expect {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(problems.len(), expect.len(), "{text}");
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Lenient {
        device_id: serde_json::Value,
        only_in_json: Option<String>,
        limit: serde_json::Value,
        comment: Option<String>,
        timeout: u64,
        verbose: serde_json::Value,
        mode: String,
    }

    #[test]
    fn reports_types_accepting_wrong_values() {
        let problems = check_params::<Lenient>(&fixture());
        let text = problems.join("\n");
        let expect = [
            "drifting: parameter 'device_id': a string in the definition, but",
            "drifting: parameter 'limit': an integer in the definition, but",
            "drifting: parameter 'verbose': a boolean in the definition, but",
        ];
        for want in expect {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert_eq!(problems.len(), expect.len(), "{text}");
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Agreeing {
        device_id: String,
        only_in_json: Option<String>,
        limit: u32,
        comment: Option<String>,
        timeout: u16,
        verbose: bool,
        mode: String,
    }

    #[test]
    fn a_matching_struct_passes() {
        assert_eq!(check_params::<Agreeing>(&fixture()), Vec::<String>::new());
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Flattened {
        device_id: String,
        #[serde(flatten)]
        rest: Map<String, Value>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    #[allow(dead_code)]
    enum Untagged {
        A { device_id: String },
    }

    #[test]
    fn shapes_it_cannot_see_are_reported() {
        for problems in [
            check_params::<Flattened>(&fixture()),
            check_params::<Untagged>(&fixture()),
            check_params::<Map<String, Value>>(&fixture()),
        ] {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].contains("cannot be checked"), "{problems:?}");
        }
        assert_eq!(
            struct_fields::<Drifted>().unwrap(),
            [
                "device_id",
                "only_in_rust",
                "limit",
                "comment",
                "timeout",
                "verbose",
                "mode"
            ]
        );
    }

    #[test]
    fn undeclared_summary_keys_are_listed() {
        let def = fixture();
        assert_eq!(
            def.summary_keys().into_iter().collect::<Vec<_>>(),
            ["event_id"]
        );
        let outcome = crate::envelope::Outcome::success("done")
            .with_summary("event_id", "e1")
            .with_summary("status", "Pending")
            .with_summary("attempts", 2);
        assert_eq!(
            undeclared_summary_keys(&def, &outcome.summary),
            ["attempts", "status"]
        );
        let drift = SummaryDrift::default();
        drift.record(&def, &outcome.summary);
        drift.record(&def, &Map::new());
        assert_eq!(
            drift.lines(),
            ["drifting: summary keys not declared in actions/drifting.json: attempts, status"]
        );
    }
}
