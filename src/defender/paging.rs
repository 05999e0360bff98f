//! OData lists: `$top`/`$filter`, following `@odata.nextLink` on the configured host, and
//! `$skip` paging for endpoints that send no nextLink, up to the caller's limit.

use std::collections::HashSet;

use serde_json::Value;
use url::Url;

use super::error::DefenderError;
use super::urls;
use super::{DefenderClient, Route};

/// Largest `$top` the API accepts.
pub const MAX_TOP: usize = 10_000;

/// Query options of a list call besides `$top`/`$skip`, which [`DefenderClient::list`] sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// OData `$filter` expression, unencoded (`computerDnsName eq 'pc1'`).
    pub filter: Option<String>,
    /// Other parameters, unencoded (`$expand`, `$orderby`, `lookBackHours`, ...). A `$skip`
    /// here is the offset of the first item; a `$top` here is ignored (the limit decides).
    pub extra: Vec<(String, String)>,
}

impl ListQuery {
    /// No filter, no parameters.
    pub fn new() -> ListQuery {
        ListQuery::default()
    }

    /// Sets the `$filter` expression.
    pub fn filter(mut self, filter: impl Into<String>) -> ListQuery {
        self.filter = Some(filter.into());
        self
    }

    /// Embeds the related `relation` in each record (`$expand`).
    pub fn expand(self, relation: &str) -> ListQuery {
        self.param("$expand", relation)
    }

    /// Orders the list by `field`, ascending (`$orderby=<field> asc`).
    pub fn order_by_asc(self, field: &'static str) -> ListQuery {
        self.param("$orderby", format!("{field} asc"))
    }

    /// Starts `n` records in (`$skip`); the pages that follow continue from there.
    pub fn skip(self, n: u64) -> ListQuery {
        self.param("$skip", n.to_string())
    }

    /// Adds a parameter.
    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> ListQuery {
        self.extra.push((key.into(), value.into()));
        self
    }

    /// Offset given in `extra` as `$skip`, if any.
    fn base_skip(&self) -> usize {
        self.extra
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("$skip"))
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `$top`, `$skip` (when not 0), `$filter`, then the other parameters, encoded.
    fn encode(&self, top: usize, skip: usize) -> String {
        let mut pairs: Vec<(String, String)> = vec![("$top".into(), top.to_string())];
        if skip > 0 {
            pairs.push(("$skip".into(), skip.to_string()));
        }
        if let Some(filter) = self.filter.as_deref().map(str::trim)
            && !filter.is_empty()
        {
            pairs.push(("$filter".into(), filter.to_string()));
        }
        pairs.extend(
            self.extra
                .iter()
                .filter(|(k, _)| {
                    !k.eq_ignore_ascii_case("$top") && !k.eq_ignore_ascii_case("$skip")
                })
                .cloned(),
        );
        urls::encode_query(pairs)
    }
}

/// One page to fetch: its URL and, for pages this client built, the `$top` it asked for.
struct PageRequest {
    url: Url,
    requested_top: Option<usize>,
}

/// See [`DefenderClient::list`].
pub(crate) async fn list(
    client: &DefenderClient,
    path: &str,
    route: &Route,
    query: &ListQuery,
    limit: usize,
) -> Result<Vec<Value>, DefenderError> {
    list_paged(client, path, route, query, limit, MAX_TOP).await
}

/// See [`DefenderClient::list_with_page_size`]: like [`list`], asking for at most `max_top`
/// items a page (lists whose `$top` limit is below Defender's 10,000, such as Graph's).
pub(crate) async fn list_paged(
    client: &DefenderClient,
    path: &str,
    route: &Route,
    query: &ListQuery,
    limit: usize,
    max_top: usize,
) -> Result<Vec<Value>, DefenderError> {
    let max_top = max_top.clamp(1, MAX_TOP);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let base = client.base()?;
    let base_skip = query.base_skip();
    let page_url = |top: usize, skip: usize| -> Result<Url, DefenderError> {
        let mut url = urls::join(base, client.api_url(), path)?;
        let ours = query.encode(top, skip);
        let combined = match url.query() {
            Some(existing) if !existing.is_empty() => format!("{existing}&{ours}"),
            _ => ours,
        };
        url.set_query(Some(&combined));
        Ok(url)
    };

    let first_top = limit.min(max_top);
    let first = page_url(first_top, base_skip)?;
    let mut seen = HashSet::from([first.as_str().to_owned()]);
    let mut next = Some(PageRequest {
        url: first,
        requested_top: Some(first_top),
    });
    let max_pages = limit.saturating_add(1000);
    let mut pages = 0usize;
    let mut items: Vec<Value> = Vec::new();

    while let Some(page) = next.take() {
        if pages >= max_pages {
            tracing::warn!(
                endpoint = %route.label,
                pages,
                "list stopped after too many pages"
            );
            break;
        }
        pages += 1;
        let body = client.get_url(page.url.clone(), route).await?;
        let (values, next_link) = split_page(body)?;
        let received = values.len();
        let room = limit - items.len();
        items.extend(values.into_iter().take(room));
        if items.len() >= limit {
            break;
        }
        if let Some(link) = next_link {
            let url = urls::rebase_next_link(base, &page.url, &link)?;
            if !seen.insert(url.as_str().to_owned()) {
                tracing::warn!(
                    endpoint = %route.label,
                    "list stopped: @odata.nextLink repeats an earlier page"
                );
                break;
            }
            next = Some(PageRequest {
                url,
                requested_top: None,
            });
        } else if let Some(top) = page.requested_top
            && received > 0
            && received == top
        {
            let top = (limit - items.len()).min(max_top);
            let url = page_url(top, base_skip + items.len())?;
            if seen.insert(url.as_str().to_owned()) {
                next = Some(PageRequest {
                    url,
                    requested_top: Some(top),
                });
            }
        }
    }
    Ok(items)
}

/// The items and the nextLink of one list answer: an object with `value` (missing or null is
/// an empty page), a bare array, or nothing.
fn split_page(body: Value) -> Result<(Vec<Value>, Option<String>), DefenderError> {
    match body {
        Value::Null => Ok((Vec::new(), None)),
        Value::Array(items) => Ok((items, None)),
        Value::Object(mut obj) => {
            let next_link = obj
                .iter()
                .find(|(k, _)| {
                    k.eq_ignore_ascii_case("@odata.nextLink")
                        || k.eq_ignore_ascii_case("odata.nextLink")
                })
                .and_then(|(_, v)| v.as_str())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            let key = obj
                .keys()
                .find(|k| k.eq_ignore_ascii_case("value"))
                .cloned();
            let items = match key.and_then(|k| obj.remove(&k)) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(items)) => items,
                Some(_) => {
                    return Err(DefenderError::Decode(
                        "a list page whose `value` is not an array".into(),
                    ));
                }
            };
            Ok((items, next_link))
        }
        _ => Err(DefenderError::Decode(
            "a list answer that is neither an object nor an array".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use serde_json::json;

    use super::*;
    use crate::defender::testing::{FakeTokens, Recorded, TestServer, client_for};

    fn q(r: &Recorded, key: &str) -> Option<String> {
        r.query_pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn items(range: std::ops::Range<usize>) -> Vec<Value> {
        range.map(|i| json!({"id": i})).collect()
    }

    /// A server with `total` items, pages of at most `page` items, nextLinks built by `link`.
    fn paged(
        total: usize,
        page: usize,
        link: impl Fn(usize) -> Option<String> + Send + Sync + 'static,
    ) -> impl Fn(usize, &Recorded) -> Response + Send + Sync + 'static {
        move |_, r| {
            let skip: usize = q(r, "$skip").and_then(|s| s.parse().ok()).unwrap_or(0);
            let top: usize = q(r, "$top").and_then(|s| s.parse().ok()).unwrap_or(page);
            let end = (skip + top.min(page)).min(total);
            let mut body = json!({
                "@odata.context": "http://x/api/$metadata#Machines",
                "value": items(skip.min(end)..end),
            });
            if end < total
                && let Some(l) = link(end)
            {
                body["@odata.nextLink"] = json!(l);
            }
            axum::Json(body).into_response()
        }
    }

    #[tokio::test]
    async fn next_link_pages_until_the_limit() {
        let server = TestServer::start_with(|addr| {
            paged(7, 3, move |skip| {
                Some(format!("http://{addr}/api/machines?$skip={skip}&$top=3"))
            })
        })
        .await;
        let tokens = Arc::new(FakeTokens::default());
        let client = client_for(&server, tokens.clone());

        let all = client
            .list_path("/api/machines", &ListQuery::new(), 100)
            .await
            .unwrap();
        assert_eq!(all, items(0..7));
        assert_eq!(server.count(), 3);

        let five = client
            .list_path("/api/machines", &ListQuery::new(), 5)
            .await
            .unwrap();
        assert_eq!(five, items(0..5));
        assert_eq!(server.count(), 5, "limit 5 needs two pages of 3");
        let reqs = server.requests();
        assert_eq!(q(&reqs[3], "$top").as_deref(), Some("5"));
        assert_eq!(reqs[3].path, "/api/machines");
        assert_eq!(q(&reqs[4], "$skip").as_deref(), Some("3"));
    }

    #[tokio::test]
    async fn limit_within_the_first_page_is_one_request() {
        let server = TestServer::start_with(|addr| {
            paged(7, 10, move |skip| {
                Some(format!("http://{addr}/api/machines?$skip={skip}"))
            })
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let two = client
            .list_path("/api/machines", &ListQuery::new(), 2)
            .await
            .unwrap();
        assert_eq!(two, items(0..2));
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn next_link_on_another_host_or_upper_case_is_rebased() {
        let other = TestServer::start(|_, _| StatusCode::OK.into_response()).await;
        let other_addr = other.addr;
        let server = TestServer::start_with(move |_| {
            paged(5, 2, move |skip| {
                Some(if skip == 2 {
                    format!("http://{other_addr}/API/machines?$skip={skip}&$top=2")
                } else {
                    format!("https://api.security.microsoft.com/api/machines?$skip={skip}&$top=2")
                })
            })
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let all = client
            .list_path("/api/machines", &ListQuery::new(), 50)
            .await
            .unwrap();
        assert_eq!(all, items(0..5));
        assert_eq!(other.count(), 0, "the token must never reach another host");
        let reqs = server.requests();
        assert_eq!(reqs.len(), 3);
        assert!(reqs.iter().all(|r| r.path == "/api/machines"));
        assert!(
            reqs.iter()
                .all(|r| r.authorization.as_deref() == Some("Bearer token-0"))
        );
    }

    #[tokio::test]
    async fn next_link_outside_api_is_an_error() {
        let server = TestServer::start(|_, _| {
            axum::Json(json!({"value": [1], "@odata.nextLink": "http://elsewhere/other/x"}))
                .into_response()
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let err = client
            .list_path("/api/machines", &ListQuery::new(), 5)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DefenderError::Decode(m) if m.contains("outside /api")),
            "{err}"
        );
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn repeating_next_link_stops() {
        let server = TestServer::start_with(|addr| {
            move |_, _: &Recorded| {
                axum::Json(json!({
                    "value": [{"id": 1}],
                    "@odata.nextLink": format!("http://{addr}/api/machines?$skip=1"),
                }))
                .into_response()
            }
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let got = client
            .list_path("/api/machines", &ListQuery::new(), 10)
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn skip_fallback_without_next_link() {
        // Serves `$top` items per request (max 10,000) and never sends a nextLink.
        let server = TestServer::start(paged(12_000, MAX_TOP, |_| None)).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let query = ListQuery::new().filter("status eq 'New'");

        // A full page of $top=10,000 below the limit: $skip=10,000 fetches the rest (2,000 < 10,000).
        let got = client
            .list_path("/api/alerts", &query, 25_000)
            .await
            .unwrap();
        assert_eq!(got, items(0..12_000));
        let reqs = server.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(q(&reqs[0], "$skip"), None);
        assert_eq!(q(&reqs[1], "$skip").as_deref(), Some("10000"));
        assert_eq!(q(&reqs[1], "$top").as_deref(), Some("10000"));
        assert_eq!(q(&reqs[1], "$filter").as_deref(), Some("status eq 'New'"));

        // The second page only asks for what the limit still needs.
        let got = client
            .list_path("/api/alerts", &query, 11_000)
            .await
            .unwrap();
        assert_eq!(got.len(), 11_000);
        let reqs = server.requests();
        assert_eq!(reqs.len(), 4);
        assert_eq!(q(&reqs[3], "$top").as_deref(), Some("1000"));

        // Within one page: one request.
        let got = client.list_path("/api/alerts", &query, 3).await.unwrap();
        assert_eq!(got, items(0..3));
        assert_eq!(server.count(), 5);

        // Exactly 10,000 items: the $skip page answers none and paging stops.
        let server = TestServer::start(paged(MAX_TOP, MAX_TOP, |_| None)).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let got = client
            .list_path("/api/alerts", &ListQuery::new(), 50_000)
            .await
            .unwrap();
        assert_eq!(got.len(), MAX_TOP);
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn silent_page_cap_stops() {
        // Pages capped at 2 items without a nextLink.
        let server = TestServer::start(|_, r: &Recorded| {
            let skip: usize = q(r, "$skip").and_then(|s| s.parse().ok()).unwrap_or(0);
            let top: usize = q(r, "$top").and_then(|s| s.parse().ok()).unwrap_or(0);
            let end = (skip + top.min(2)).min(5);
            axum::Json(json!({"value": items(skip.min(end)..end)})).into_response()
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        // limit 5 asks $top=5 and gets 2 (< 5): the endpoint caps silently, nothing more to do.
        let got = client
            .list_path("/api/x", &ListQuery::new(), 5)
            .await
            .unwrap();
        assert_eq!(got, items(0..2));
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn query_parameters_are_encoded() {
        let server =
            TestServer::start(|_, _| axum::Json(json!({"value": []})).into_response()).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let query = ListQuery::new()
            .filter("computerDnsName eq 'pc 1&x'")
            .param("$expand", "evidence")
            .param("$skip", "4")
            .param("$top", "99");
        let got = client
            .list_path("/api/alerts?lookBackHours=24", &query, 20_000)
            .await
            .unwrap();
        assert!(got.is_empty());
        let reqs = server.requests();
        assert_eq!(reqs.len(), 1);
        let raw = reqs[0].query.clone().unwrap();
        assert_eq!(
            raw,
            "lookBackHours=24&$top=10000&$skip=4&$filter=computerDnsName%20eq%20%27pc%201%26x%27&$expand=evidence"
        );
        assert_eq!(
            q(&reqs[0], "$filter").as_deref(),
            Some("computerDnsName eq 'pc 1&x'")
        );
    }

    #[tokio::test]
    async fn page_shapes_are_tolerated() {
        let server = TestServer::start(|n, _| match n {
            0 => axum::Json(json!([{"id": 1}, {"id": 2}])).into_response(),
            1 => axum::Json(json!({"@odata.context": "x"})).into_response(),
            2 => StatusCode::NO_CONTENT.into_response(),
            _ => axum::Json(json!({"value": {"id": 1}})).into_response(),
        })
        .await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let got = client
            .list_path("/api/x", &ListQuery::new(), 10)
            .await
            .unwrap();
        assert_eq!(got, vec![json!({"id": 1}), json!({"id": 2})]);
        assert!(
            client
                .list_path("/api/x", &ListQuery::new(), 10)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            client
                .list_path("/api/x", &ListQuery::new(), 10)
                .await
                .unwrap()
                .is_empty()
        );
        let err = client
            .list_path("/api/x", &ListQuery::new(), 10)
            .await
            .unwrap_err();
        assert!(matches!(err, DefenderError::Decode(_)));
        assert!(
            client
                .list_path("/api/x", &ListQuery::new(), 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(server.count(), 4);
    }

    #[tokio::test]
    async fn values_pass_through_untouched() {
        let row = json!({
            "id": "a",
            "riskScore": "5",
            "errorHResult": "-2147024891",
            "big": 18446744073709551615u64,
            "ratio": 1.5,
            "unknownField": {"nested": [1, "2", null]},
        });
        let body = json!({"value": [row.clone()], "extra": true});
        let server = TestServer::start(move |_, _| axum::Json(body.clone()).into_response()).await;
        let client = client_for(&server, Arc::new(FakeTokens::default()));
        let got = client
            .list_path("/api/machines", &ListQuery::new(), 10)
            .await
            .unwrap();
        assert_eq!(got, vec![row.clone()]);
        assert_eq!(
            serde_json::to_string(&got[0]).unwrap(),
            serde_json::to_string(&row).unwrap(),
            "key order and number forms are kept"
        );
    }
}
