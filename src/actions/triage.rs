//! What alert and incident lists leave out, from the asset's `ignore_*` and `lookback_days`
//! options ([`TriageFilters`]): applied to every list of Defender alerts, Graph alerts and
//! incidents, with the count of what was left out reported in the envelope's summary.
//!
//! Defender spells values in PascalCase (`TruePositive`, `InProgress`) and Graph in camelCase
//! (`truePositive`, `inProgress`), so values compare ignoring ASCII case; field names are looked
//! up the same way.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::TriageFilters;
use crate::defender::field_text as text;

/// Summary key of the number of records the filters left out.
pub const IGNORED_SUMMARY_KEY: &str = "total_ignored";

/// Whether the filters leave `record` out. Records that are not objects are kept.
pub fn ignores(filters: &TriageFilters, record: &Value) -> bool {
    let Some(obj) = record.as_object() else {
        return false;
    };
    let listed = |list: &[String], keys: &[&str]| {
        !list.is_empty()
            && text(obj, keys)
                .is_some_and(|v| list.iter().any(|l| l.eq_ignore_ascii_case(v.as_str())))
    };
    listed(&filters.classifications, &["classification"])
        || listed(&filters.determinations, &["determination"])
        || listed(&filters.severities, &["severity"])
        || listed(&filters.statuses, &["status"])
        || listed(
            &filters.service_sources,
            &["serviceSource", "detectionSource"],
        )
}

/// `records` without those the filters leave out, and how many were left out.
pub fn apply(filters: &TriageFilters, records: Vec<Value>) -> (Vec<Value>, usize) {
    let before = records.len();
    let kept: Vec<Value> = records
        .into_iter()
        .filter(|r| !ignores(filters, r))
        .collect();
    let ignored = before - kept.len();
    (kept, ignored)
}

/// The earliest creation time `lookback_days` allows, as RFC 3339 UTC (for an OData
/// `ge` filter), `None` without a look-back window.
pub fn lookback_start(filters: &TriageFilters, now: OffsetDateTime) -> Option<String> {
    let days = filters.lookback_days?;
    let start = now - time::Duration::days(i64::from(days));
    start
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn filters() -> TriageFilters {
        TriageFilters {
            classifications: vec!["FalsePositive".into()],
            determinations: vec!["securityTesting".into()],
            severities: vec!["informational".into()],
            statuses: vec!["Resolved".into()],
            service_sources: vec!["microsoftDefenderForEndpoint".into()],
            lookback_days: Some(7),
        }
    }

    #[test]
    fn defender_and_graph_spellings_match_alike() {
        let f = filters();
        assert!(ignores(&f, &json!({"classification": "falsePositive"})));
        assert!(ignores(&f, &json!({"Classification": "FalsePositive"})));
        assert!(ignores(&f, &json!({"determination": "SecurityTesting"})));
        assert!(ignores(&f, &json!({"severity": "Informational"})));
        assert!(ignores(&f, &json!({"status": "resolved"})));
        assert!(ignores(
            &f,
            &json!({"serviceSource": "MicrosoftDefenderForEndpoint"})
        ));
        assert!(ignores(
            &f,
            &json!({"detectionSource": "microsoftdefenderforendpoint"})
        ));
        assert!(!ignores(
            &f,
            &json!({"classification": "TruePositive", "status": "New"})
        ));
        assert!(!ignores(&f, &json!({"classification": null})));
        assert!(!ignores(&f, &json!("not an object")));
        assert!(!ignores(
            &TriageFilters::default(),
            &json!({"status": "Resolved"})
        ));
    }

    #[test]
    fn apply_counts_what_it_leaves_out() {
        let records = vec![
            json!({"id": "a", "status": "New"}),
            json!({"id": "b", "status": "Resolved"}),
            json!({"id": "c", "severity": "Informational"}),
        ];
        let (kept, ignored) = apply(&filters(), records);
        assert_eq!(ignored, 2);
        assert_eq!(kept, vec![json!({"id": "a", "status": "New"})]);
    }

    #[test]
    fn lookback_is_whole_days_before_now() {
        let now = OffsetDateTime::from_unix_timestamp(1_764_374_400).unwrap(); // 2025-11-29
        assert_eq!(
            lookback_start(&filters(), now).as_deref(),
            Some("2025-11-22T00:00:00Z")
        );
        assert_eq!(lookback_start(&TriageFilters::default(), now), None);
    }
}
