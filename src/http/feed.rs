//! `GET /assets/{asset}/alerts/feed?cursor=<seq>&limit=<1..1000>`: the asset's ingestion
//! events after `cursor`, read from its durable journal, with the cursor to ask for next.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::actions;
use crate::app::App;
use crate::envelope::{ActionError, EnvelopeResponse};

/// Default `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit`.
pub const MAX_LIMIT: usize = 1000;
/// The pseudo-action named in the feed's error envelopes.
const FEED: &str = "alerts_feed";

fn error(asset: &str, e: ActionError) -> Response {
    EnvelopeResponse::error(FEED, asset, Map::new(), &e).into_response()
}

/// `(cursor, limit)` from the raw query, or what is wrong.
fn parse_query(raw: Option<&str>) -> Result<(u64, usize), String> {
    let mut cursor = 0u64;
    let mut limit = DEFAULT_LIMIT;
    for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "cursor" => {
                cursor = v.trim().parse().ok().filter(|c| *c <= MAX_CURSOR).ok_or_else(|| {
                    format!(
                        "cursor {:?} is not a sequence number (a whole number from 0 to {MAX_CURSOR})",
                        actions::truncate(&v, 40)
                    )
                })?;
            }
            "limit" => {
                limit = v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "limit {:?} is not a whole number from 1 to {MAX_LIMIT}",
                            actions::truncate(&v, 40)
                        )
                    })?;
            }
            _ => {}
        }
    }
    Ok((cursor, limit))
}

/// Largest `cursor` (2^53 - 1, so every JSON number parser reads it exactly).
pub const MAX_CURSOR: u64 = 9_007_199_254_740_991;

/// The feed handler.
#[utoipa::path(get, path = "/assets/{asset}/alerts/feed",
    params(
        ("asset" = String, Path, description = "Asset id (an asset with `[assets.<id>.ingestion] enabled = true`)"),
        ("cursor" = Option<u64>, Query, minimum = 0, maximum = 9_007_199_254_740_991_f64,
            description = "Answer the events after this sequence number (default 0: from the start); pass the previous answer's `next_cursor`"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Most events answered (default 100)")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "`{\"events\": [{\"seq\", \"event_key\", \"kind\", \"asset\", \"source\", \"alert\"}], \"next_cursor\": \"<seq>\"}`, and `\"missed\": n` when the bounded journal dropped events after `cursor` before they were read", body = Object),
        (status = 400, description = "Envelope: cursor or limit out of range", body = crate::envelope::Envelope),
        (status = 401, description = "Envelope: missing or wrong API key", body = crate::envelope::Envelope),
        (status = 404, description = "Envelope: no asset with this id, or the asset does not ingest alerts", body = crate::envelope::Envelope),
        (status = 500, description = "Envelope: the journal cannot be read", body = crate::envelope::Envelope)))]
pub async fn feed(
    State(app): State<Arc<App>>,
    Path(asset): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if app.asset(&asset).is_none() {
        return error(
            "",
            ActionError::NotFound(format!(
                "no asset {:?} is configured",
                actions::truncate(&asset, 64)
            )),
        );
    }
    let Some(ingestor) = app.ingestors.get(&asset) else {
        return error(
            &asset,
            ActionError::NotFound(format!(
                "asset {asset} does not ingest alerts: set [assets.{asset}.ingestion] enabled = true"
            )),
        );
    };
    let (cursor, limit) = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return error(&asset, ActionError::InvalidParameter(e)),
    };
    let records = ingestor.journal().read_from(cursor, limit).await;
    match records {
        Ok(records) => {
            let next = records.last().map_or(cursor, |r| r.seq);
            // Events the bounded journal dropped before this consumer read them.
            let missed = records
                .first()
                .map_or(0, |r| r.seq.saturating_sub(cursor.saturating_add(1)));
            let events: Vec<Value> = records
                .into_iter()
                .map(|r| {
                    let mut e = serde_json::to_value(&r.event).unwrap_or(Value::Null);
                    if let Some(obj) = e.as_object_mut() {
                        obj.insert("seq".into(), json!(r.seq));
                    }
                    e
                })
                .collect();
            let mut body = json!({"events": events, "next_cursor": next.to_string()});
            if missed > 0 {
                body["missed"] = json!(missed);
            }
            Json(body).into_response()
        }
        Err(e) => {
            tracing::error!(asset = %asset, "reading the alert journal: {e}");
            error(
                &asset,
                ActionError::Failed("the alert journal could not be read".into()),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_defaults_and_bounds() {
        assert_eq!(parse_query(None), Ok((0, DEFAULT_LIMIT)));
        assert_eq!(parse_query(Some("cursor=12&limit=1000")), Ok((12, 1000)));
        for bad in [
            "cursor=-1",
            "cursor=x",
            "limit=0",
            "limit=1001",
            "limit=ten",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
