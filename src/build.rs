//! Embeds every `actions/*.json` action definition into the crate.
//!
//! Writes `$OUT_DIR/action_definitions.rs` with one `(file name, include_str!(...))` pair per
//! file, sorted by file name, so adding an action needs only a new JSON file (and its handler).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::{env, fs, io};

fn main() -> io::Result<()> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let actions_dir = manifest_dir.join("actions");
    println!("cargo:rerun-if-changed={}", actions_dir.display());

    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if actions_dir.is_dir() {
        for entry in fs::read_dir(&actions_dir)? {
            let path = entry?.path();
            let is_json = path.extension().is_some_and(|ext| ext == "json");
            if !is_json || !path.is_file() {
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("action file name is not UTF-8: {}", path.display()),
                ));
            };
            files.push((name.to_string(), path.clone()));
        }
    }
    files.sort();

    let mut code = String::new();
    code.push_str(
        "/// The embedded action definition files: (file name, JSON text), sorted by file name.\n",
    );
    code.push_str("pub const ACTION_DEFINITION_FILES: &[(&str, &str)] = &[\n");
    for (name, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let Some(abs) = path.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("action file path is not UTF-8: {}", path.display()),
            ));
        };
        // `{:?}` renders a valid Rust string literal (quotes and escapes included).
        let _ = writeln!(code, "    ({name:?}, include_str!({abs:?})),");
    }
    code.push_str("];\n");

    fs::write(out_dir.join("action_definitions.rs"), code)
}

fn env_var(name: &str) -> io::Result<String> {
    env::var(name).map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{name}: {e}")))
}
