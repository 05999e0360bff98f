//! Embeds the files the binary carries: every `actions/*.json` action definition and every
//! `hunting/*.kql` hunting template.
//!
//! Writes `$OUT_DIR/action_definitions.rs` and `$OUT_DIR/hunting_templates.rs`, each with one
//! `(file name, include_str!(...))` pair per file, sorted by file name, so adding an action
//! needs only a new JSON file (and its handler) and adding a template only a new KQL file.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs, io};

fn main() -> io::Result<()> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    embed(
        &manifest_dir.join("actions"),
        "json",
        "The embedded action definition files: (file name, JSON text), sorted by file name.",
        "ACTION_DEFINITION_FILES",
        &out_dir.join("action_definitions.rs"),
    )?;
    embed(
        &manifest_dir.join("hunting"),
        "kql",
        "The embedded hunting templates: (file name, KQL text), sorted by file name.",
        "HUNTING_TEMPLATE_FILES",
        &out_dir.join("hunting_templates.rs"),
    )
}

/// Writes `out` declaring `constant` as the `(file name, contents)` pairs of the files of
/// `dir` ending in `.extension`.
fn embed(dir: &Path, extension: &str, doc: &str, constant: &str, out: &Path) -> io::Result<()> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if dir.is_dir() {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let matches = path.extension().is_some_and(|ext| ext == extension);
            if !matches || !path.is_file() {
                continue;
            }
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("file name is not UTF-8: {}", path.display()),
                ));
            };
            files.push((name.to_string(), path.clone()));
        }
    }
    files.sort();

    let mut code = String::new();
    let _ = writeln!(code, "/// {doc}");
    let _ = writeln!(code, "pub const {constant}: &[(&str, &str)] = &[");
    for (name, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let Some(abs) = path.to_str() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file path is not UTF-8: {}", path.display()),
            ));
        };
        // `{:?}` renders a valid Rust string literal (quotes and escapes included).
        let _ = writeln!(code, "    ({name:?}, include_str!({abs:?})),");
    }
    code.push_str("];\n");
    fs::write(out, code)
}

fn env_var(name: &str) -> io::Result<String> {
    env::var(name).map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("{name}: {e}")))
}
