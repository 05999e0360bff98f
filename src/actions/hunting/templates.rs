//! Hunting templates: one KQL file per template in `hunting/`, embedded at build time.
//!
//! A template starts with header comments, then the query:
//!
//! ```text
//! // title: Devices with this file
//! // description: Every device where a file with this hash was written, changed or run.
//! // entity: hash
//! // summary: DeviceName, FileName, LastSeen
//! let entity = {{entity}};
//! let lookback = {{lookback}};
//! DeviceFileEvents | where Timestamp > ago(lookback) | where SHA1 == entity …
//! ```
//!
//! `entity` lists the entity types the template takes ([`EntityType`] names); `summary` the
//! columns whose values the answer's summary shows. The query's placeholders are typed:
//! `{{entity}}` becomes the checked entity as a KQL string literal, `{{account}}` the account
//! name of a user entity (the part before `@` or after `\`; the entity itself for other
//! types) as a string literal, and `{{lookback}}` the period as a KQL timespan. Nothing else
//! is substituted, and a template with any other `{{…}}` is refused.

use std::sync::OnceLock;

use crate::defender::kql::{EntityType, Lookback, string_literal};

include!(concat!(env!("OUT_DIR"), "/hunting_templates.rs"));

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 3] = ["{{entity}}", "{{account}}", "{{lookback}}"];

/// One hunting template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The file name without `.kql`.
    pub name: String,
    /// One-line title.
    pub title: String,
    /// What it finds.
    pub description: String,
    /// The entity types it takes, in the file's order.
    pub entity_types: Vec<EntityType>,
    /// Columns whose values the summary shows by default.
    pub summary_fields: Vec<String>,
    /// The query with its placeholders (header comments removed).
    pub query: String,
}

/// Every template that parses, by name; a file that does not is logged and left out (a
/// test keeps every shipped file parsing).
pub fn templates() -> &'static [Template] {
    static TEMPLATES: OnceLock<Vec<Template>> = OnceLock::new();
    TEMPLATES.get_or_init(|| {
        HUNTING_TEMPLATE_FILES
            .iter()
            .filter_map(|(file, text)| match parse(file, text) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::error!(template = %file, error = %e, "hunting template left out");
                    None
                }
            })
            .collect()
    })
}

/// The template named `name`.
pub fn find(name: &str) -> Option<&'static Template> {
    templates().iter().find(|t| t.name == name.trim())
}

/// Reads a template file.
pub fn parse(file: &str, text: &str) -> Result<Template, String> {
    let name = file
        .strip_suffix(".kql")
        .ok_or_else(|| format!("{file}: a template file ends in .kql"))?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "{file}: a template name is lower-case letters, digits and _"
        ));
    }
    let mut title = None;
    let mut description = None;
    let mut entity_types = Vec::new();
    let mut summary_fields = Vec::new();
    let mut query_lines = Vec::new();
    let mut in_header = true;
    for line in text.lines() {
        let header = in_header
            .then(|| line.trim().strip_prefix("//"))
            .flatten()
            .and_then(|rest| rest.split_once(':'));
        match header {
            Some((key, value)) => {
                let value = value.trim();
                match key.trim() {
                    "title" => title = Some(value.to_string()),
                    "description" => description = Some(value.to_string()),
                    "entity" => {
                        for t in value.split(',') {
                            let ty = EntityType::from_name(t).ok_or_else(|| {
                                format!("{file}: unknown entity type {:?}", t.trim())
                            })?;
                            if !entity_types.contains(&ty) {
                                entity_types.push(ty);
                            }
                        }
                    }
                    "summary" => {
                        summary_fields = value
                            .split(',')
                            .map(|f| f.trim().to_string())
                            .filter(|f| !f.is_empty())
                            .collect();
                    }
                    other => return Err(format!("{file}: unknown header {other:?}")),
                }
            }
            None => {
                in_header = false;
                query_lines.push(line);
            }
        }
    }
    let query = query_lines.join("\n").trim().to_string();
    let title = title
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("{file}: no title"))?;
    let description = description
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("{file}: no description"))?;
    if entity_types.is_empty() {
        return Err(format!("{file}: no entity types"));
    }
    if !query.contains("{{entity}}") {
        return Err(format!("{file}: the query never uses {{{{entity}}}}"));
    }
    let mut rest = query.as_str();
    while let Some(open) = rest.find("{{") {
        let after = &rest[open..];
        let known = PLACEHOLDERS.iter().find(|p| after.starts_with(**p));
        match known {
            Some(p) => rest = &after[p.len()..],
            None => {
                let shown: String = after.chars().take(30).collect();
                return Err(format!("{file}: unknown placeholder at {shown:?}"));
            }
        }
    }
    Ok(Template {
        name: name.to_string(),
        title,
        description,
        entity_types,
        summary_fields,
        query,
    })
}

impl Template {
    /// The entity type of `entity` for this template: `given` when the template takes it,
    /// else the only type the entity fits. The error names the parameter at fault.
    pub fn entity_type(
        &self,
        entity: &str,
        given: Option<EntityType>,
    ) -> Result<EntityType, String> {
        let names = || {
            self.entity_types
                .iter()
                .map(|t| t.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(t) = given {
            return if self.entity_types.contains(&t) {
                Ok(t)
            } else {
                Err(format!(
                    "entity_type: template {} takes {}, not {t}",
                    self.name,
                    names()
                ))
            };
        }
        let mut fits: Vec<EntityType> = self
            .entity_types
            .iter()
            .copied()
            .filter(|t| t.check(entity).is_ok())
            .collect();
        // A value of a precise shape (hex digits, an address, a URL) is what that shape says,
        // even though it is also a well-formed account or host name; a dotted name is a
        // domain before it is a device or account name.
        let precise = |t: &EntityType| {
            matches!(
                t,
                EntityType::Hash | EntityType::DeviceId | EntityType::Ip | EntityType::Url
            )
        };
        if fits.iter().any(precise) {
            fits.retain(precise);
        } else if entity.contains('.') && fits.contains(&EntityType::Domain) {
            fits.retain(|t| *t == EntityType::Domain);
        }
        match fits.as_slice() {
            [one] => Ok(*one),
            [] => {
                let shapes: Vec<&str> = self.entity_types.iter().map(|t| t.shape()).collect();
                Err(format!(
                    "entity: {:?} is not {} (template {} takes {})",
                    crate::actions::truncate(entity.trim(), 80),
                    shapes.join(", or "),
                    self.name,
                    names()
                ))
            }
            several => Err(format!(
                "entity: {:?} could be {}; set entity_type to say which",
                crate::actions::truncate(entity.trim(), 80),
                several
                    .iter()
                    .map(|t| t.name())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )),
        }
    }

    /// The query for `entity` of type `ty` over `lookback`: every placeholder replaced by
    /// a value this module wrote. The error names the parameter at fault.
    pub fn render(
        &self,
        entity: &str,
        ty: EntityType,
        lookback: Lookback,
    ) -> Result<String, String> {
        let value = ty.check(entity).map_err(|e| format!("entity: {e}"))?;
        let account = match ty {
            EntityType::User => value
                .split_once('@')
                .map(|(local, _)| local)
                .or_else(|| value.split_once('\\').map(|(_, name)| name))
                .unwrap_or(&value)
                .to_string(),
            _ => value.clone(),
        };
        let quote = |v: &str| string_literal(v).map_err(|e| format!("entity: {e}"));
        let entity_literal = quote(&value)?;
        let account_literal = quote(&account)?;
        Ok(self
            .query
            .replace("{{entity}}", &entity_literal)
            .replace("{{account}}", &account_literal)
            .replace("{{lookback}}", &lookback.kql()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_template_parses_and_is_listed() {
        assert_eq!(templates().len(), HUNTING_TEMPLATE_FILES.len());
        for (file, text) in HUNTING_TEMPLATE_FILES {
            parse(file, text).unwrap();
        }
        for name in [
            "lateral_movement",
            "persistence",
            "file_origin",
            "process_details",
            "network_connections",
            "privilege_escalation",
            "tampering",
            "cover_up",
            "devices_with_file",
            "devices_reached_domain",
            "devices_reached_ip",
            "user_logons",
            "alert_search",
        ] {
            assert!(find(name).is_some(), "{name}");
        }
    }

    #[test]
    fn every_rendered_template_is_kql_the_simulator_parses() {
        let samples = [
            (
                EntityType::Hash,
                "3f79bb7b435b05321651daefd374cdc681dc06faa65e374e38337b88ca046dea",
            ),
            (EntityType::Ip, "203.0.113.7"),
            (EntityType::Domain, "contoso.com"),
            (EntityType::Url, "https://contoso.com/a"),
            (EntityType::User, "admin@contoso.onmicrosoft.com"),
            (
                EntityType::DeviceId,
                "f1eb97a430ca4c315e219960cd146874419fbefc",
            ),
            (EntityType::DeviceName, "ws-finance-01"),
        ];
        for t in templates() {
            for ty in &t.entity_types {
                let (_, sample) = samples.iter().find(|(s, _)| s == ty).unwrap();
                let query = t.render(sample, *ty, Lookback::MAX).unwrap();
                assert!(!query.contains("{{"), "{}", t.name);
                defender_sim::kql::parse(&query)
                    .unwrap_or_else(|e| panic!("{} ({ty}): {e}\n{query}", t.name));
            }
        }
    }

    /// The simulator's hunting tables for the default scenario, and their "now" in ticks.
    fn tables() -> &'static (defender_sim::kql::Tables, i64) {
        static TABLES: OnceLock<(defender_sim::kql::Tables, i64)> = OnceLock::new();
        TABLES.get_or_init(|| {
            let now_ms = i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap();
            let scenario = defender_sim::Scenario::default_scenario();
            (
                defender_sim::hunting_data::hunting_tables(&scenario, now_ms),
                defender_sim::kql::ticks_from_ms(now_ms),
            )
        })
    }

    fn run(query: &str) -> defender_sim::kql::ResultSet {
        let (tables, now) = tables();
        defender_sim::kql::run(tables, query, *now, None).unwrap_or_else(|e| panic!("{e}\n{query}"))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the entity says, a template either refuses it or keeps it one literal:
        /// the query parses, answers the columns it answers for a harmless entity, and finds
        /// nothing (no scenario value contains `zqx`, which every entity here starts with, so
        /// even what is left after trimming white space matches nothing).
        #[test]
        fn hostile_entities_never_change_a_templates_answer(
            core in "zqx[a-z0-9]{0,6}",
            hostile in proptest::collection::vec(
                proptest::sample::select(vec![
                    "\"", "'", "\\", "|", "//", " or 1==1", "\n", ")", "(", ";", " union DeviceInfo",
                    "@contoso.com", "\\x", "$", "*", "{{entity}}", "\u{0}",
                ]),
                1..5,
            ),
        ) {
            let entity: String = std::iter::once(core.as_str())
                .chain(hostile.iter().copied())
                .collect();
            for t in templates() {
                for ty in &t.entity_types {
                    let Ok(query) = t.render(&entity, *ty, Lookback::MAX) else {
                        continue;
                    };
                    let harmless = t.render(sample(*ty), *ty, Lookback::MAX).unwrap();
                    let got = run(&query);
                    let expected = run(&harmless);
                    let names = |r: &defender_sim::kql::ResultSet| {
                        r.columns.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
                    };
                    proptest::prop_assert_eq!(names(&got), names(&expected));
                    proptest::prop_assert!(got.rows.is_empty(), "{} {:?}: {:?}", t.name, entity, got.rows_json());
                }
            }
        }

        /// Any string the builder quotes reads back unchanged through the simulator's KQL
        /// reader, and never matches more than the equal value.
        #[test]
        fn any_quoted_string_is_one_literal(s in ".{0,40}") {
            let Ok(literal) = string_literal(&s) else {
                return Ok(());
            };
            let query = format!("DeviceInfo | where DeviceName == {literal} | project DeviceName");
            let got = run(&query);
            proptest::prop_assert!(got.rows_json().iter().all(|r| r["DeviceName"] == s.as_str()));
            let echo = run(&format!("DeviceInfo | take 1 | project Echo = {literal}"));
            let echoed = echo.rows_json();
            proptest::prop_assert_eq!(echoed[0]["Echo"].as_str(), Some(s.as_str()));
        }
    }

    /// A value of each type that the scenario's tables do not hold.
    fn sample(ty: EntityType) -> &'static str {
        match ty {
            EntityType::Hash => "0000000000000000000000000000000000000000",
            EntityType::Ip => "192.0.2.99",
            EntityType::Domain => "nothing.example",
            EntityType::Url => "https://nothing.example/x",
            EntityType::User => "nobody@nothing.example",
            EntityType::DeviceId => "0000000000000000000000000000000000000001",
            EntityType::DeviceName => "no-such-device",
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        let ok = "// title: T\n// description: D\n// entity: hash\nT | where A == {{entity}}";
        assert!(parse("t.kql", ok).is_ok());
        assert!(parse("t.txt", ok).is_err());
        assert!(parse("T.kql", ok).is_err());
        assert!(parse("t.kql", &ok.replace("// title: T\n", "")).is_err());
        assert!(parse("t.kql", &ok.replace("hash", "sha1")).is_err());
        assert!(parse("t.kql", &ok.replace("{{entity}}", "{{other}}")).is_err());
        assert!(parse("t.kql", &format!("{ok} or B == {{{{entity }}}}")).is_err());
        assert!(
            parse(
                "t.kql",
                &ok.replace("// entity", "// color: red\n// entity")
            )
            .is_err()
        );
    }

    #[test]
    fn entity_types_are_chosen_or_refused() {
        let t = parse(
            "t.kql",
            "// title: T\n// description: D\n// entity: hash, device_id, user\nT | where A == {{entity}}",
        )
        .unwrap();
        let sha1 = "5b7e2c0f6a1d9e8b4c3a2f1e0d9c8b7a6f5e4d3c";
        assert!(
            t.entity_type(sha1, None)
                .unwrap_err()
                .contains("hash or device_id")
        );
        assert_eq!(
            t.entity_type(sha1, Some(EntityType::DeviceId)),
            Ok(EntityType::DeviceId)
        );
        assert_eq!(t.entity_type(&"a".repeat(64), None), Ok(EntityType::Hash));
        assert!(
            t.entity_type("1.2.3.4", Some(EntityType::Ip))
                .unwrap_err()
                .starts_with("entity_type:")
        );
        assert!(
            t.entity_type("not a thing!", None)
                .unwrap_err()
                .starts_with("entity:")
        );
        assert_eq!(t.entity_type("alice", None), Ok(EntityType::User));
        let all = parse(
            "t.kql",
            "// title: T\n// description: D\n// entity: hash, ip, domain, url, user, device_name\nT | where A == {{entity}}",
        )
        .unwrap();
        assert_eq!(all.entity_type(sha1, None), Ok(EntityType::Hash));
        assert_eq!(all.entity_type("10.0.0.1", None), Ok(EntityType::Ip));
        assert_eq!(all.entity_type("contoso.com", None), Ok(EntityType::Domain));
        assert_eq!(
            all.entity_type("https://contoso.com/x", None),
            Ok(EntityType::Url)
        );
        assert_eq!(all.entity_type("a@contoso.com", None), Ok(EntityType::User));
        assert!(
            all.entity_type("ws-01", None)
                .unwrap_err()
                .contains("user or device_name")
        );
    }

    #[test]
    fn rendering_quotes_the_entity_and_derives_the_account() {
        let t = parse(
            "t.kql",
            "// title: T\n// description: D\n// entity: user\nlet e = {{entity}}; let a = {{account}}; T | where Timestamp > ago({{lookback}})",
        )
        .unwrap();
        let q = t
            .render(
                "admin@contoso.com",
                EntityType::User,
                Lookback::parse("P7D").unwrap().lookback,
            )
            .unwrap();
        assert_eq!(
            q,
            "let e = \"admin@contoso.com\"; let a = \"admin\"; T | where Timestamp > ago(7d)"
        );
        let q = t
            .render("CONTOSO\\alice", EntityType::User, Lookback::MAX)
            .unwrap();
        assert!(q.contains("let e = \"CONTOSO\\\\alice\"; let a = \"alice\""));
        assert!(
            t.render("x\" | union DeviceInfo //", EntityType::User, Lookback::MAX)
                .is_err()
        );
    }
}
