//! `list_devices`: machines of the tenant, of a domain, or that saw a file.

use serde::Deserialize;
use serde_json::Value;

use super::{Action, ActionContext};
use crate::defender::{Filter, ListQuery, endpoints};
use crate::envelope::{ActionError, Outcome};

/// Lists devices.
pub struct ListDevices;

/// Parameters of `list_devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// `All`, `Domain` or `File Hash`.
    pub input_type: String,
    /// The domain or the file hash.
    #[serde(default)]
    pub input: Option<String>,
    /// Extra OData filter expression, passed through as the caller wrote it.
    #[serde(default)]
    pub query: Option<String>,
    /// Maximum devices returned.
    pub limit: u64,
}

/// Where to list from, decided from the parameters.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    /// `/api/machines`.
    All,
    /// `/api/domains/{domain}/machines`.
    Domain(String),
    /// `/api/files/{sha}/machines`.
    File(String),
}

/// Checks `input` against `input_type`.
pub fn source(p: &Params) -> Result<Source, ActionError> {
    let input = p.input.as_deref().map(str::trim).filter(|s| !s.is_empty());
    match p.input_type.as_str() {
        "All" => Ok(Source::All),
        "Domain" => {
            let d = input.ok_or_else(|| {
                ActionError::InvalidParameter(
                    "parameter 'input' is required when input_type is Domain (a domain name such as contoso.com)".into(),
                )
            })?;
            domain_input("input", d).map(Source::Domain)
        }
        "File Hash" => {
            let h = input.ok_or_else(|| {
                ActionError::InvalidParameter(
                    "parameter 'input' is required when input_type is File Hash (a SHA1 or SHA256)"
                        .into(),
                )
            })?;
            hash_input("input", h).map(Source::File)
        }
        other => Err(ActionError::InvalidParameter(format!(
            "parameter 'input_type': must be one of All, Domain, File Hash (got '{}')",
            super::truncate(other, 64)
        ))),
    }
}

/// A domain name given in parameter `param`, lower-cased; 400 naming `param` otherwise.
pub fn domain_input(param: &str, d: &str) -> Result<String, ActionError> {
    let d = d.trim();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        return Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': '{}' is not a domain name (letters, digits, '-' and dots)",
            super::truncate(d, 64)
        )));
    }
    Ok(d.to_ascii_lowercase())
}

/// A SHA1 or SHA256 given in parameter `param`, lower-cased; 400 naming `param` otherwise
/// (an MD5 is refused: Defender looks files up by SHA1 or SHA256).
pub fn hash_input(param: &str, h: &str) -> Result<String, ActionError> {
    let h = h.trim();
    let hex = h.chars().all(|c| c.is_ascii_hexdigit());
    match (hex, h.len()) {
        (true, 40) | (true, 64) => Ok(h.to_ascii_lowercase()),
        (true, 32) => Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': Defender looks files up by SHA1 or SHA256; an MD5 is not supported"
        ))),
        _ => Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': '{}' is not a SHA1 (40 hex) or SHA256 (64 hex)",
            super::truncate(h, 64)
        ))),
    }
}

/// The caller's own OData filter of parameter `param`, checked to be one expression
/// ([`Filter::passthrough`]); `None` when blank; 400 naming `param` otherwise.
pub fn caller_filter(param: &str, text: Option<&str>) -> Result<Option<Filter>, ActionError> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => Filter::passthrough(t).map(Some).map_err(|why| {
            ActionError::InvalidParameter(format!(
                "parameter '{param}' is not an OData filter expression: {why}"
            ))
        }),
    }
}

impl Action for ListDevices {
    const ID: &'static str = "list_devices";
    type Params = Params;

    async fn run(ctx: ActionContext, p: Params) -> Result<Outcome, ActionError> {
        let source = source(&p)?;
        let call = match &source {
            Source::All => endpoints::MACHINES.at(&[]),
            Source::Domain(d) => endpoints::DOMAIN_MACHINES.at(&[d.as_str()]),
            Source::File(h) => endpoints::FILE_MACHINES.at(&[h.as_str()]),
        };
        let query = ListQuery {
            filter: caller_filter("query", p.query.as_deref())?.map(String::from),
            ..ListQuery::default()
        };
        let limit = usize::try_from(p.limit).unwrap_or(usize::MAX);
        let devices = match ctx.asset.defender.list(&call, &query, limit).await {
            Ok(d) => d,
            Err(e) if e.is_not_found() && source != Source::All => Vec::new(),
            // Throttled past the deadline: 503 with Retry-After, so the caller retries later.
            Err(e) if e.retry_after().is_some() => return Err(e.into()),
            Err(e) => return Ok(Outcome::failed(format!("listing devices failed: {e}"))),
        };
        let total = devices.len();
        let mut outcome = Outcome::success(match total {
            0 => "No devices found".to_string(),
            1 => "Found 1 device".to_string(),
            n => format!("Found {n} devices"),
        })
        .with_summary("total_devices", total);
        outcome.data = devices.into_iter().filter(Value::is_object).collect();
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: &str, input: Option<&str>) -> Params {
        Params {
            input_type: t.into(),
            input: input.map(str::to_string),
            query: None,
            limit: 10,
        }
    }

    #[test]
    fn input_checked_per_type() {
        assert_eq!(source(&p("All", None)).unwrap(), Source::All);
        assert_eq!(
            source(&p("Domain", Some("Contoso.com"))).unwrap(),
            Source::Domain("contoso.com".into())
        );
        assert!(source(&p("Domain", None)).is_err());
        assert!(source(&p("Domain", Some("a/../b"))).is_err());
        assert!(source(&p("File Hash", Some(&"a".repeat(40)))).is_ok());
        let md5 = source(&p("File Hash", Some(&"a".repeat(32)))).unwrap_err();
        assert!(md5.to_string().contains("MD5"));
        assert!(source(&p("File Hash", Some("xyz"))).is_err());
    }
}
