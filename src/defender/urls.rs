//! Request URLs: joining paths onto the configured API base, query encoding, rebasing
//! `@odata.nextLink` onto the configured host, and id-free path templates for metrics.

use url::Url;

use super::error::{DefenderError, is_guid};

/// Collections whose next path segment is always an id, whatever it looks like.
const FREE_TEXT_ID_COLLECTIONS: &[&str] = &[
    "users",
    "domains",
    "ips",
    "libraryfiles",
    "software",
    "recommendations",
    "vulnerabilities",
];

/// Percent-encodes one query component (spaces as `%20`, never `+`).
fn encode_component(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Encodes `key=value` pairs for a query string; values are percent-encoded (quotes, spaces,
/// `&`, `#`, ...), the `$` of OData option names stays literal.
pub fn encode_query<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    pairs
        .into_iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                encode_component(k.as_ref()).replace("%24", "$"),
                encode_component(v.as_ref())
            )
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `path` with the encoded `pairs` appended (`?` or `&` as needed), for
/// [`DefenderClient::get`](super::DefenderClient::get).
pub fn path_with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return path.to_string();
    }
    let separator = if path.contains('?') { '&' } else { '?' };
    format!("{path}{separator}{}", encode_query(pairs.iter().copied()))
}

/// `host[:port]` of a URL, for messages.
pub(crate) fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or("(no host)");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// `{base}{path_and_query}`, refusing anything that would leave the configured host.
pub(crate) fn join(base: &Url, base_str: &str, path_and_query: &str) -> Result<Url, DefenderError> {
    let url = if path_and_query.starts_with('/') {
        Url::parse(&format!("{base_str}{path_and_query}"))
    } else {
        Url::parse(&format!("{base_str}/{path_and_query}"))
    };
    let url = url.map_err(|e| {
        DefenderError::Transport(format!(
            "cannot build a request URL on {} for {}: {e}; the request was not sent",
            authority(base),
            endpoint_template(path_and_query)
        ))
    })?;
    if url.origin() != base.origin() {
        return Err(DefenderError::Transport(format!(
            "refusing a request for {} outside the configured API host {}",
            endpoint_template(path_and_query),
            authority(base)
        )));
    }
    Ok(url)
}

/// The next page's URL on the configured host: the path (from its `/api` segment on) and the
/// query of `link` (absolute, on any host, any case of `/api`, or relative to `current`)
/// rebased onto `base`, so the bearer token never goes to another host.
pub(crate) fn rebase_next_link(
    base: &Url,
    current: &Url,
    link: &str,
) -> Result<Url, DefenderError> {
    let link = link.trim();
    let parsed = match Url::parse(link) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase) => current.join(link).map_err(|_| {
            DefenderError::Decode("the @odata.nextLink of a list page is not a URL".into())
        })?,
        Err(_) => {
            return Err(DefenderError::Decode(
                "the @odata.nextLink of a list page is not a URL".into(),
            ));
        }
    };
    let prefix = base.path().trim_end_matches('/');
    let mut path = parsed.path();
    if !prefix.is_empty()
        && parsed.origin() == base.origin()
        && let Some(rest) = strip_prefix_ci(path, prefix)
        && rest.starts_with('/')
    {
        path = rest;
    }
    // The API root of the page being read: `/api` (Defender) or `/v1.0` (Microsoft Graph);
    // the next page must stay under it.
    let current_path = current.path();
    let current_rest = strip_prefix_ci(current_path, prefix).unwrap_or(current_path);
    let root = if strip_prefix_ci(current_rest, "/v1.0").is_some_and(|r| r.starts_with('/')) {
        "/v1.0"
    } else {
        "/api"
    };
    let Some(rest) = strip_prefix_ci(path, root).filter(|r| r.is_empty() || r.starts_with('/'))
    else {
        return Err(DefenderError::Decode(format!(
            "the @odata.nextLink of a list page points outside {root} ({}); paging stopped",
            endpoint_template(path)
        )));
    };
    let mut url = base.clone();
    url.set_path(&format!("{prefix}{root}{rest}"));
    url.set_query(parsed.query());
    url.set_fragment(None);
    Ok(url)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// The path without its query, ids replaced by `{id}` and function arguments by `({args})`:
/// `/api/machines/{id}/isolate`, `/api/machineactions/{id}/GetLiveResponseResultDownloadLink({args})`.
pub(crate) fn endpoint_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut out = String::new();
    let mut previous: Option<&str> = None;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        let after_free_text = previous.is_some_and(|p| {
            FREE_TEXT_ID_COLLECTIONS
                .iter()
                .any(|c| p.eq_ignore_ascii_case(c))
        });
        if after_free_text || looks_like_id(segment) {
            out.push_str("{id}");
        } else if let Some(open) = segment.find('(') {
            out.push_str(&segment[..open]);
            out.push_str("({args})");
        } else {
            out.push_str(segment);
        }
        previous = Some(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// GUIDs, hashes (32+ hex digits: MD5, SHA-1 machine ids, SHA-256), numbers, alert ids
/// (`da637...._123`), CVE ids, and anything with characters names of endpoints never have.
fn looks_like_id(segment: &str) -> bool {
    if segment.contains('(') {
        return false;
    }
    let len = segment.len();
    let digits = segment.bytes().filter(u8::is_ascii_digit).count();
    is_guid(segment)
        || (len >= 32 && segment.bytes().all(|b| b.is_ascii_hexdigit()))
        || digits == len
        || (len >= 16 && digits * 2 >= len)
        || strip_prefix_ci(segment, "cve-").is_some()
        || segment
            .bytes()
            .any(|b| matches!(b, b'.' | b'@' | b':' | b'%' | b'\'' | b' ' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_hide_ids() {
        let sha1 = "a".repeat(40);
        assert_eq!(
            endpoint_template(&format!("/api/machines/{sha1}/isolate")),
            "/api/machines/{id}/isolate"
        );
        assert_eq!(
            endpoint_template(
                "/api/machineactions/1234abcd-0000-4000-8000-00000000beef/GetLiveResponseResultDownloadLink(index=0)"
            ),
            "/api/machineactions/{id}/GetLiveResponseResultDownloadLink({args})"
        );
        assert_eq!(
            endpoint_template("/api/machines?$filter=computerDnsName eq 'x'"),
            "/api/machines"
        );
        assert_eq!(
            endpoint_template("/api/advancedqueries/run"),
            "/api/advancedqueries/run"
        );
        assert_eq!(
            endpoint_template("/api/alerts/da637472900382838869_1364969609"),
            "/api/alerts/{id}"
        );
        assert_eq!(
            endpoint_template("/api/indicators/995"),
            "/api/indicators/{id}"
        );
        assert_eq!(
            endpoint_template("/api/users/jdoe/machines"),
            "/api/users/{id}/machines"
        );
        assert_eq!(
            endpoint_template("/api/ips/10.1.2.3/stats"),
            "/api/ips/{id}/stats"
        );
        assert_eq!(
            endpoint_template("/api/machines/$count"),
            "/api/machines/$count"
        );
        assert_eq!(endpoint_template(""), "/");
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode_query([("$filter", "computerDnsName eq 'a&b#c'"), ("$top", "5")]),
            "$filter=computerDnsName%20eq%20%27a%26b%23c%27&$top=5"
        );
        assert_eq!(encode_query([("q", "1+1")]), "q=1%2B1");
        assert_eq!(path_with_query("/api/x", &[("a", "b c")]), "/api/x?a=b%20c");
        assert_eq!(
            path_with_query("/api/x?z=1", &[("a", "b")]),
            "/api/x?z=1&a=b"
        );
        assert_eq!(path_with_query("/api/x", &[]), "/api/x");
    }

    #[test]
    fn join_stays_on_the_configured_host() {
        let base_str = "http://127.0.0.1:9000";
        let base = Url::parse(base_str).unwrap();
        assert_eq!(
            join(&base, base_str, "/api/machines?$top=1")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:9000/api/machines?$top=1"
        );
        assert_eq!(
            join(&base, base_str, "api/machines").unwrap().as_str(),
            "http://127.0.0.1:9000/api/machines"
        );
        let at = join(&base, base_str, "@evil.example/api").unwrap();
        assert_eq!(at.host_str(), Some("127.0.0.1"));
        let slashes = join(&base, base_str, "//evil.example/api").unwrap();
        assert_eq!(slashes.host_str(), Some("127.0.0.1"));
    }

    #[test]
    fn next_links_are_rebased() {
        let base = Url::parse("https://api.securitycenter.microsoft.com").unwrap();
        let current =
            Url::parse("https://api.securitycenter.microsoft.com/api/machines?$top=2").unwrap();
        let cases = [
            (
                "https://api.security.microsoft.com/api/machines?$skip=2&$top=2",
                "https://api.securitycenter.microsoft.com/api/machines?$skip=2&$top=2",
            ),
            (
                "https://evil.example:444/API/Machines?$skip=2",
                "https://api.securitycenter.microsoft.com/api/Machines?$skip=2",
            ),
            (
                "/api/machines?$skip=4",
                "https://api.securitycenter.microsoft.com/api/machines?$skip=4",
            ),
            (
                "machines?$skip=6",
                "https://api.securitycenter.microsoft.com/api/machines?$skip=6",
            ),
        ];
        for (link, want) in cases {
            assert_eq!(
                rebase_next_link(&base, &current, link).unwrap().as_str(),
                want,
                "{link}"
            );
        }
        for bad in ["https://evil.example/steal?x=1", "/apis/x", "http://[::1"] {
            assert!(
                matches!(
                    rebase_next_link(&base, &current, bad),
                    Err(DefenderError::Decode(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn next_links_keep_a_base_path_prefix() {
        let base = Url::parse("http://proxy.local/mde").unwrap();
        let current = Url::parse("http://proxy.local/mde/api/alerts").unwrap();
        assert_eq!(
            rebase_next_link(&base, &current, "http://proxy.local/mde/api/alerts?$skip=1")
                .unwrap()
                .as_str(),
            "http://proxy.local/mde/api/alerts?$skip=1"
        );
        assert_eq!(
            rebase_next_link(
                &base,
                &current,
                "https://api.security.microsoft.com/api/alerts?$skip=2"
            )
            .unwrap()
            .as_str(),
            "http://proxy.local/mde/api/alerts?$skip=2"
        );
    }

    #[test]
    fn graph_next_links_stay_under_v1_0_on_the_configured_host() {
        let base = Url::parse("https://graph.microsoft.com").unwrap();
        let current = Url::parse("https://graph.microsoft.com/v1.0/security/alerts_v2").unwrap();
        assert_eq!(
            rebase_next_link(
                &base,
                &current,
                "https://evil.example/v1.0/security/alerts_v2?$skip=2000"
            )
            .unwrap()
            .as_str(),
            "https://graph.microsoft.com/v1.0/security/alerts_v2?$skip=2000"
        );
        for bad in [
            "https://graph.microsoft.com/beta/security/alerts_v2",
            "https://graph.microsoft.com/api/machines",
        ] {
            assert!(rebase_next_link(&base, &current, bad).is_err(), "{bad}");
        }
    }
}
