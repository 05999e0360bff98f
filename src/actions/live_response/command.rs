//! Live response commands: building them for a request and reading them back from a
//! MachineAction's `commands` array.

use serde_json::{Map, Value, json};

use crate::actions::waiting::MachineAction;

/// Parameters whose values name files or paths on Windows or in the library, compared without
/// regard to case.
const CASE_INSENSITIVE_PARAMS: &[&str] = &["Path", "ScriptName", "FileName"];

/// One live response command: its type and its parameters in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCommand {
    /// `GetFile`, `RunScript` or `PutFile`.
    pub command_type: String,
    /// `(key, value)` pairs.
    pub params: Vec<(String, String)>,
}

impl LiveCommand {
    /// `GetFile` of `path`.
    pub fn get_file(path: &str) -> LiveCommand {
        LiveCommand {
            command_type: "GetFile".into(),
            params: vec![("Path".into(), path.to_string())],
        }
    }

    /// `RunScript` of library script `name`, with `args` when there are any.
    pub fn run_script(name: &str, args: Option<&str>) -> LiveCommand {
        let mut params = vec![("ScriptName".to_string(), name.to_string())];
        if let Some(a) = args.filter(|a| !a.trim().is_empty()) {
            params.push(("Args".into(), a.to_string()));
        }
        LiveCommand {
            command_type: "RunScript".into(),
            params,
        }
    }

    /// `PutFile` of library file `name`.
    pub fn put_file(name: &str) -> LiveCommand {
        LiveCommand {
            command_type: "PutFile".into(),
            params: vec![("FileName".into(), name.to_string())],
        }
    }

    /// The command as Defender's request body wants it: `{"type", "params": [{"key","value"}]}`.
    pub fn to_json(&self) -> Value {
        let params: Vec<Value> = self
            .params
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        json!({"type": self.command_type, "params": params})
    }

    /// The value of parameter `key` (keys compared without regard to ASCII case).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// `GetFile C:\x`, `RunScript a.ps1 -v`: the command for messages.
    pub fn describe(&self) -> String {
        let values: Vec<&str> = self
            .params
            .iter()
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
            .collect();
        let text = if values.is_empty() {
            self.command_type.clone()
        } else {
            format!("{} {}", self.command_type, values.join(" "))
        };
        crate::actions::truncate(&text, 300)
    }

    /// Whether `other` is the same command with the same parameters: types and keys compared
    /// without regard to ASCII case, paths and library names too, other values exactly
    /// (surrounding blanks ignored); an absent parameter equals an empty one.
    pub fn same_as(&self, other: &LiveCommand) -> bool {
        if !self.command_type.eq_ignore_ascii_case(&other.command_type) {
            return false;
        }
        let covers = |a: &LiveCommand, b: &LiveCommand| {
            a.params.iter().all(|(k, v)| {
                let theirs = b.param(k).unwrap_or("").trim();
                let mine = v.trim();
                if CASE_INSENSITIVE_PARAMS
                    .iter()
                    .any(|p| p.eq_ignore_ascii_case(k))
                {
                    mine.to_lowercase() == theirs.to_lowercase()
                } else {
                    mine == theirs
                }
            })
        };
        covers(self, other) && covers(other, self)
    }
}

/// A command of a live response action as Defender reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    /// Its `index` (the argument of `GetLiveResponseResultDownloadLink`).
    pub index: u64,
    /// The command.
    pub command: LiveCommand,
    /// `commandStatus` (Created, InProgress, Completed, Failed), when reported.
    pub status: Option<String>,
    /// Its errors.
    pub errors: Vec<String>,
}

/// A key looked up as given, then without regard to ASCII case.
fn get_ci<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A scalar as text (numbers and booleans printed).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The commands of a live response action, read tolerantly (missing fields, PascalCase keys,
/// indexes as strings); entries that are not objects or carry no command type are skipped.
pub fn commands(action: &MachineAction) -> Vec<CommandInfo> {
    let Some(Value::Array(list)) = get_ci(&action.raw, "commands") else {
        return Vec::new();
    };
    list.iter()
        .enumerate()
        .filter_map(|(position, entry)| {
            let entry = entry.as_object()?;
            let command = get_ci(entry, "command")?.as_object()?;
            let command_type = get_ci(command, "type")
                .and_then(scalar)
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())?;
            let params = match get_ci(command, "params") {
                Some(Value::Array(ps)) => ps
                    .iter()
                    .filter_map(|p| {
                        let p = p.as_object()?;
                        let key = get_ci(p, "key").and_then(scalar)?;
                        let value = get_ci(p, "value").and_then(scalar).unwrap_or_default();
                        Some((key, value))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let index = get_ci(entry, "index")
                .and_then(|v| match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                })
                .unwrap_or(position as u64);
            let status = get_ci(entry, "commandStatus")
                .and_then(scalar)
                .filter(|s| !s.trim().is_empty());
            let errors = match get_ci(entry, "errors") {
                Some(Value::Array(es)) => es
                    .iter()
                    .filter_map(|e| match e {
                        Value::Object(o) => get_ci(o, "message").and_then(scalar),
                        other => scalar(other),
                    })
                    .map(|e| e.trim().to_string())
                    .filter(|e| !e.is_empty())
                    .collect(),
                Some(Value::String(s)) if !s.trim().is_empty() => vec![s.trim().to_string()],
                _ => Vec::new(),
            };
            Some(CommandInfo {
                index,
                command: LiveCommand {
                    command_type,
                    params,
                },
                status,
                errors,
            })
        })
        .collect()
}

/// The command of `command_type` in `action`: the one equal to `wanted` when there is one,
/// else the first of that type.
pub fn locate(
    action: &MachineAction,
    command_type: &str,
    wanted: Option<&LiveCommand>,
) -> Option<CommandInfo> {
    let of_type: Vec<CommandInfo> = commands(action)
        .into_iter()
        .filter(|c| c.command.command_type.eq_ignore_ascii_case(command_type))
        .collect();
    let exact = wanted.and_then(|w| of_type.iter().position(|c| c.command.same_as(w)));
    match exact {
        Some(i) => of_type.into_iter().nth(i),
        None => of_type.into_iter().next(),
    }
}

/// `RunScript collect.ps1, GetFile C:\x`: every command of an action, for messages.
pub fn describe_all(action: &MachineAction) -> String {
    let all: Vec<String> = commands(action)
        .iter()
        .map(|c| c.command.describe())
        .collect();
    if all.is_empty() {
        "no commands".into()
    } else {
        all.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(commands: Value) -> MachineAction {
        MachineAction::parse(&json!({
            "id": "e", "type": "LiveResponse", "status": "Pending", "commands": commands
        }))
        .unwrap()
    }

    #[test]
    fn bodies_as_defender_wants_them() {
        assert_eq!(
            LiveCommand::get_file("C:\\x.txt").to_json(),
            json!({"type": "GetFile", "params": [{"key": "Path", "value": "C:\\x.txt"}]})
        );
        assert_eq!(
            LiveCommand::run_script("a.ps1", Some("-v")).to_json(),
            json!({"type": "RunScript", "params": [
                {"key": "ScriptName", "value": "a.ps1"}, {"key": "Args", "value": "-v"}
            ]})
        );
        assert_eq!(LiveCommand::run_script("a.ps1", Some("  ")).params.len(), 1);
        assert_eq!(
            LiveCommand::put_file("tool.exe").to_json(),
            json!({"type": "PutFile", "params": [{"key": "FileName", "value": "tool.exe"}]})
        );
    }

    #[test]
    fn sameness() {
        let a = LiveCommand::get_file("C:\\Temp\\X.bin");
        assert!(a.same_as(&LiveCommand::get_file("c:\\temp\\x.bin")));
        assert!(!a.same_as(&LiveCommand::get_file("C:\\Temp\\Y.bin")));
        assert!(!a.same_as(&LiveCommand::put_file("C:\\Temp\\X.bin")));
        let s = LiveCommand::run_script("a.ps1", None);
        assert!(s.same_as(&LiveCommand::run_script("A.PS1", Some(""))));
        assert!(!s.same_as(&LiveCommand::run_script("a.ps1", Some("-x"))));
        assert!(
            !LiveCommand::run_script("a.ps1", Some("-X"))
                .same_as(&LiveCommand::run_script("a.ps1", Some("-x"))),
            "arguments are compared exactly"
        );
    }

    #[test]
    fn reads_commands_tolerantly() {
        let a = action(json!([
            {"index": 0, "commandStatus": "Completed", "errors": [], "command": {"type": "PutFile", "params": [{"key": "FileName", "value": "t.exe"}]}},
            {"Index": "1", "CommandStatus": "Failed", "Errors": ["File not found", {"message": "second"}], "Command": {"Type": "GetFile", "Params": [{"Key": "Path", "Value": "C:\\x"}]}},
            {"command": {"type": "RunScript"}},
            "garbage",
            {"index": 9}
        ]));
        let cs = commands(&a);
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[0].index, 0);
        assert_eq!(cs[0].status.as_deref(), Some("Completed"));
        assert_eq!(cs[1].index, 1);
        assert_eq!(cs[1].command, LiveCommand::get_file("C:\\x"));
        assert_eq!(cs[1].errors, vec!["File not found", "second"]);
        assert_eq!(cs[2].index, 2, "position when no index is given");
        assert!(cs[2].command.params.is_empty());
        assert_eq!(describe_all(&a), "PutFile t.exe, GetFile C:\\x, RunScript");
    }

    #[test]
    fn locates_the_wanted_command() {
        let a = action(json!([
            {"index": 0, "command": {"type": "GetFile", "params": [{"key": "Path", "value": "C:\\a"}]}},
            {"index": 1, "command": {"type": "GetFile", "params": [{"key": "Path", "value": "C:\\b"}]}}
        ]));
        assert_eq!(locate(&a, "GetFile", None).unwrap().index, 0);
        let b = LiveCommand::get_file("c:\\B");
        assert_eq!(locate(&a, "getfile", Some(&b)).unwrap().index, 1);
        let c = LiveCommand::get_file("C:\\c");
        assert_eq!(locate(&a, "GetFile", Some(&c)).unwrap().index, 0);
        assert!(locate(&a, "RunScript", None).is_none());
        assert!(locate(&action(Value::Null), "GetFile", None).is_none());
    }
}
