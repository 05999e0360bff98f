//! What the read actions share: records as Defender answers them (objects, without `@odata.*`
//! annotations), how an upstream failure ends the action, and the message and outcome of a
//! list.

use serde_json::Value;

use crate::defender::{Call, DefenderClient, DefenderError, ListQuery, odata::Filter};
use crate::envelope::{ActionError, Outcome};

/// The record without `@odata.*` keys.
pub fn clean(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        map.retain(|k, _| !k.starts_with("@odata."));
    }
    v
}

/// The objects of a list, each without `@odata.*` keys.
pub fn records(items: Vec<Value>) -> Vec<Value> {
    items
        .into_iter()
        .filter(Value::is_object)
        .map(clean)
        .collect()
}

/// How a Defender failure ends a read or update: throttled past the deadline is a 503 (the
/// caller retries), a 404 about `subject` (when given) a failed envelope saying it is not in
/// this tenant, anything else a failed envelope naming `what`.
pub fn failure(
    e: DefenderError,
    what: &str,
    subject: Option<&str>,
) -> Result<Outcome, ActionError> {
    if e.retry_after().is_some() {
        return Err(e.into());
    }
    if e.is_not_found()
        && let Some(subject) = subject
    {
        return Ok(Outcome::failed(format!(
            "{subject} was not found in this tenant"
        )));
    }
    Ok(Outcome::failed(format!("{what} failed: {e}")))
}

/// `No {many} found`, `Found 1 {one}`, `Found {n} {many}`.
pub fn found(n: usize, one: &str, many: &str) -> String {
    match n {
        0 => format!("No {many} found"),
        1 => format!("Found 1 {one}"),
        n => format!("Found {n} {many}"),
    }
}

/// `No {many}`, `1 {one}`, `{n} {many}`.
pub fn counted(n: usize, one: &str, many: &str) -> String {
    match n {
        0 => format!("No {many}"),
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// A successful list: `message`, the count under `total_key`, the records as data.
pub fn listed(records: Vec<Value>, message: String, total_key: &str) -> Outcome {
    let mut outcome = Outcome::success(message).with_summary(total_key, records.len());
    outcome.data = records;
    outcome
}

/// What a list holds, for its message and summary.
pub struct Noun {
    /// One item (`investigation`).
    pub one: &'static str,
    /// Several (`investigations`).
    pub many: &'static str,
    /// The summary key of the count (`total_investigations`).
    pub total_key: &'static str,
}

/// The query of a list: `parts` joined with `and` as its filter, skipping `offset` items.
pub fn query(parts: Vec<Filter>, offset: u64) -> ListQuery {
    let mut query = ListQuery::new();
    if let Some(f) = parts.into_iter().reduce(Filter::and) {
        query = query.filter(f.as_str());
    }
    if offset > 0 {
        query = query.skip(offset);
    }
    query
}

/// Up to `limit` records of `call` with `query`, answered as `Found N {many}`.
pub async fn list(
    client: &DefenderClient,
    call: &Call,
    query: &ListQuery,
    limit: u64,
    noun: &Noun,
) -> Result<Outcome, ActionError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match client.list(call, query, limit).await {
        Ok(items) => {
            let items = records(items);
            let message = found(items.len(), noun.one, noun.many);
            Ok(listed(items, message, noun.total_key))
        }
        Err(e) => failure(e, &format!("listing {}", noun.many), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_drop_annotations_and_non_objects() {
        let got = records(vec![
            json!({"@odata.context": "x", "id": 1}),
            json!("stray"),
            json!({"id": 2, "@odata.type": "y"}),
        ]);
        assert_eq!(got, vec![json!({"id": 1}), json!({"id": 2})]);
    }

    #[test]
    fn counts_read_naturally() {
        assert_eq!(found(0, "device", "devices"), "No devices found");
        assert_eq!(found(1, "device", "devices"), "Found 1 device");
        assert_eq!(found(3, "device", "devices"), "Found 3 devices");
        assert_eq!(counted(0, "version", "versions"), "No versions");
        assert_eq!(counted(2, "version", "versions"), "2 versions");
        let o = listed(vec![json!({"a": 1})], "m".into(), "total_x");
        assert_eq!(o.summary["total_x"], 1);
        assert_eq!(o.data.len(), 1);
    }
}
