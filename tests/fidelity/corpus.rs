//! The fixture corpus: Microsoft's documented requests and responses, one JSON file each.

use std::path::{Path, PathBuf};

use defender_soar::defender::Endpoint;
use defender_soar::defender::endpoints::ALL;
use serde_json::Value;

/// Endpoints a fixture may name besides the catalogue: Entra's token endpoints.
pub const TOKEN_ENDPOINTS: &[&str] = &[
    "POST /{tenant}/oauth2/v2.0/token",
    "POST /{tenant}/oauth2/token",
];

/// One fixture file.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// Path under the corpus root (`mde/isolate.json`).
    pub name: String,
    /// The whole file.
    pub json: Value,
}

impl Fixture {
    /// `METHOD /template` as written.
    pub fn endpoint(&self) -> &str {
        self.json["endpoint"].as_str().unwrap_or("")
    }
    /// The documented status.
    pub fn status(&self) -> u16 {
        self.json["response"]["status"].as_u64().unwrap_or(0) as u16
    }
    /// The documented response body (`Null` for none).
    pub fn body(&self) -> &Value {
        &self.json["response"]["body"]
    }
    /// Whether the fixture is marked synthetic.
    pub fn synthetic(&self) -> bool {
        self.json["synthetic"] == Value::Bool(true)
    }
    /// The catalogue endpoint it answers, if any.
    pub fn catalogue_endpoint(&self) -> Option<&'static Endpoint> {
        ALL.iter().copied().find(|e| key(e) == self.endpoint())
    }
}

/// `METHOD /template` of a catalogue endpoint.
pub fn key(e: &Endpoint) -> String {
    format!("{} {}", e.method, e.path)
}

/// The corpus root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/microsoft")
}

/// Every fixture, sorted by name.
pub fn all() -> Vec<Fixture> {
    let mut out = Vec::new();
    walk(&root(), &mut out);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no fixtures under {}", root().display());
    out
}

fn walk(dir: &Path, out: &mut Vec<Fixture>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            let name = path
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push(Fixture { name, json });
        }
    }
}

/// One fixture by name (`mde/isolate.json`).
pub fn load(name: &str) -> Fixture {
    all()
        .into_iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

/// Whether `path` (query ignored, any case) fits the endpoint's path template, where a
/// `{…}` placeholder stands for any text without a `/`.
pub fn path_fits(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or("");
    let mut pattern = String::from("(?i)^");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        pattern.push_str("[^/]*");
        match rest[open..].find('}') {
            Some(close) => rest = &rest[open + close + 1..],
            None => rest = "",
        }
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    regex::Regex::new(&pattern).unwrap().is_match(path)
}

/// The catalogue endpoint a request is for: the template that fits, the most specific (most
/// literal text) first, so `/api/alerts/batchUpdate` is not `/api/alerts/{id}`.
pub fn endpoint_of(method: &str, path: &str) -> Option<&'static Endpoint> {
    let mut fits: Vec<&'static Endpoint> = ALL
        .iter()
        .copied()
        .filter(|e| e.method.as_str().eq_ignore_ascii_case(method) && path_fits(e.path, path))
        .collect();
    fits.sort_by_key(|e| std::cmp::Reverse(literal_len(e.path)));
    fits.first().copied()
}

/// Characters of a template outside its placeholders.
fn literal_len(template: &str) -> usize {
    let mut n = 0;
    let mut inside = false;
    for c in template.chars() {
        match c {
            '{' => inside = true,
            '}' => inside = false,
            _ if !inside => n += 1,
            _ => {}
        }
    }
    n
}
