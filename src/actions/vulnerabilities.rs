//! Threat and vulnerability management: a device's installed software, discovered
//! vulnerabilities, missing KBs and security recommendations; the software inventory and each
//! software's versions, devices and vulnerabilities; the vulnerability catalogue, the
//! vulnerabilities by device and software, the devices a CVE affects; the exposure score and
//! the secure score for devices.
//!
//! Every filter goes to Defender as an OData filter built with [`Filter`] (never as plain query
//! arguments); `offset` is `$skip` and `limit` bounds the items read, following nextLinks past
//! one page.

use serde::Deserialize;
use serde_json::Value;

use super::alerts::moment;
use super::engine::is_device_id;
use super::enrichment::failure;
use super::listing::{clean, counted, records};
use super::{Action, ActionContext, HandlerFn, erase, truncate};
use crate::defender::{Call, Filter, ListQuery, MAX_TOP, endpoints};
use crate::envelope::{ActionError, Outcome};

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<GetInstalledSoftware>(),
        erase::<GetDiscoveredVulnerabilities>(),
        erase::<GetMissingKbs>(),
        erase::<GetSecurityRecommendations>(),
        erase::<ListSoftware>(),
        erase::<ListSoftwareVersions>(),
        erase::<ListSoftwareMissingKbs>(),
        erase::<ListSoftwareDevices>(),
        erase::<ListSoftwareVulnerabilities>(),
        erase::<ListDeviceVulnerabilities>(),
        erase::<ListVulnerabilities>(),
        erase::<GetAffectedDevices>(),
        erase::<GetExposureScore>(),
        erase::<GetSecureScore>(),
    ]
}

/// The severities Defender gives vulnerabilities.
pub const SEVERITIES: [&str; 4] = ["Low", "Medium", "High", "Critical"];

/// Most items a per-device or per-software list reads (Defender sends them whole; the pages
/// are followed to the end up to this many).
const WHOLE_LIST: usize = MAX_TOP;

// --- input checks ---------------------------------------------------------------------------

/// A device id given in `param`: 40 hexadecimal characters (lower-cased); 400 naming the
/// parameter otherwise.
pub fn device_id(param: &str, raw: &str) -> Result<String, ActionError> {
    let id = raw.trim();
    if is_device_id(id) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': '{}' is not a Defender device id (40 hexadecimal characters)",
            truncate(id, 64)
        )))
    }
}

/// A software id as Defender forms it, `vendor-_-name` (letters, digits, `.`, `_`, `+`, `-`;
/// each part 1 to 100 characters), given in `param`; returns the id with its vendor and name.
pub fn software_id(param: &str, raw: &str) -> Result<(String, String, String), ActionError> {
    let id = raw.trim();
    let part_ok = |s: &str| {
        (1..=100).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
    };
    // Parts are ASCII, so every byte offset of an ASCII id is a character boundary.
    let split = id
        .is_ascii()
        .then(|| {
            (0..id.len())
                .filter(|&i| id[i..].starts_with("-_-"))
                .map(|i| (&id[..i], &id[i + 3..]))
                .find(|(vendor, name)| part_ok(vendor) && part_ok(name))
        })
        .flatten();
    match split {
        Some((vendor, name)) => Ok((id.to_string(), vendor.to_string(), name.to_string())),
        None => Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': '{}' is not a Defender software id (vendor-_-name, such as \
             microsoft-_-edge_chromium-based)",
            truncate(id, 64)
        ))),
    }
}

/// A CVE id given in `param`: `CVE-YYYY-NNNN` with four or more digits at the end (returned
/// upper-case); 400 naming the parameter otherwise.
pub fn cve_id(param: &str, raw: &str) -> Result<String, ActionError> {
    let id = raw.trim().to_ascii_uppercase();
    let mut parts = id.splitn(3, '-');
    let ok = parts.next() == Some("CVE")
        && parts
            .next()
            .is_some_and(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
        && parts
            .next()
            .is_some_and(|n| (4..=19).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(id)
    } else {
        Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': '{}' is not a CVE id (CVE-YYYY-NNNN, such as CVE-2024-21338)",
            truncate(raw.trim(), 64)
        )))
    }
}

/// A severity from [`SEVERITIES`] (any letter case; returned as listed).
pub fn severity(param: &str, raw: &str) -> Result<&'static str, ActionError> {
    SEVERITIES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(raw.trim()))
        .copied()
        .ok_or_else(|| {
            ActionError::InvalidParameter(format!(
                "parameter '{param}': '{}' is not a severity (one of {})",
                truncate(raw.trim(), 64),
                SEVERITIES.join(", ")
            ))
        })
}

/// A CVSS score: 0 to 10.
pub fn cvss(param: &str, value: f64) -> Result<f64, ActionError> {
    if value.is_finite() && (0.0..=10.0).contains(&value) {
        Ok(value)
    } else {
        Err(ActionError::InvalidParameter(format!(
            "parameter '{param}': {value} is outside 0 to 10 (a CVSS v3 score)"
        )))
    }
}

/// The text of an optional parameter, trimmed; `None` when absent or blank.
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

// --- shared runners -------------------------------------------------------------------------

/// Reads a whole related list (`call`) of `subject`; an unknown subject fails saying so.
async fn related(
    ctx: &ActionContext,
    call: Call,
    what: &str,
    subject: &str,
) -> Result<Result<Vec<Value>, Outcome>, ActionError> {
    match ctx
        .asset
        .defender
        .list(&call, &ListQuery::new(), WHOLE_LIST)
        .await
    {
        Ok(items) => Ok(Ok(records(items))),
        Err(e) => failure(e, &format!("listing the {what} of {subject}"), subject).map(Err),
    }
}

/// Reads up to `limit` items of a filtered list, `offset` in, pages of at most `page_size`.
async fn filtered(
    ctx: &ActionContext,
    call: Call,
    parts: Vec<Filter>,
    limit: u64,
    offset: u64,
    page_size: usize,
    what: &str,
) -> Result<Result<Vec<Value>, Outcome>, ActionError> {
    let query = super::listing::query(parts, offset);
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    match ctx
        .asset
        .defender
        .list_with_page_size(&call, &query, limit, page_size)
        .await
    {
        Ok(items) => Ok(Ok(records(items))),
        Err(e) if e.retry_after().is_some() => Err(e.into()),
        Err(e) => Ok(Err(Outcome::failed(format!("listing {what} failed: {e}")))),
    }
}

// --- per-device lists -----------------------------------------------------------------------

/// Parameters of the per-device actions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceParams {
    /// The device id (40 hexadecimal characters).
    pub device_id: String,
}

/// One list about one device or software: its endpoint, what its items are (singular,
/// plural) and the summary key of their count.
struct Related {
    endpoint: &'static endpoints::Endpoint,
    one: &'static str,
    plural: &'static str,
    total_key: &'static str,
}

/// Whose list it is: the summary key and value naming it, what it is (`device X`), and how
/// the count message ends (`on device X`).
struct Subject {
    key: &'static str,
    id: String,
    what: String,
    suffix: String,
}

impl Related {
    /// The whole list of `subject`, counted under `total_key`.
    async fn of(&self, ctx: &ActionContext, subject: Subject) -> Result<Outcome, ActionError> {
        let call = self.endpoint.at(&[&subject.id]);
        let items = match related(ctx, call, self.plural, &subject.what).await? {
            Ok(items) => items,
            Err(outcome) => return Ok(outcome.with_summary(subject.key, subject.id)),
        };
        let message = format!(
            "{} {}",
            counted(items.len(), self.one, self.plural),
            subject.suffix
        );
        Ok(super::listing::listed(items, message, self.total_key)
            .with_summary(subject.key, subject.id))
    }
}

async fn device_list(
    ctx: ActionContext,
    p: DeviceParams,
    list: Related,
) -> Result<Outcome, ActionError> {
    let id = device_id("device_id", &p.device_id)?;
    let subject = Subject {
        key: "device_id",
        what: format!("device {id}"),
        suffix: format!("on device {id}"),
        id,
    };
    list.of(&ctx, subject).await
}

/// `get_installed_software`.
pub struct GetInstalledSoftware;

impl Action for GetInstalledSoftware {
    const ID: &'static str = "get_installed_software";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let list = Related {
            endpoint: &endpoints::MACHINE_SOFTWARE,
            one: "software product installed",
            plural: "software products installed",
            total_key: "total_software",
        };
        device_list(ctx, p, list).await
    }
}

/// `get_discovered_vulnerabilities`.
pub struct GetDiscoveredVulnerabilities;

impl Action for GetDiscoveredVulnerabilities {
    const ID: &'static str = "get_discovered_vulnerabilities";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let list = Related {
            endpoint: &endpoints::MACHINE_VULNERABILITIES,
            one: "vulnerability discovered",
            plural: "vulnerabilities discovered",
            total_key: "total_vulnerabilities",
        };
        device_list(ctx, p, list).await
    }
}

/// `get_missing_kbs`.
pub struct GetMissingKbs;

impl Action for GetMissingKbs {
    const ID: &'static str = "get_missing_kbs";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let list = Related {
            endpoint: &endpoints::MACHINE_MISSING_KBS,
            one: "security update missing",
            plural: "security updates missing",
            total_key: "total_kbs",
        };
        device_list(ctx, p, list).await
    }
}

/// `get_security_recommendations`.
pub struct GetSecurityRecommendations;

impl Action for GetSecurityRecommendations {
    const ID: &'static str = "get_security_recommendations";
    type Params = DeviceParams;

    async fn run(ctx: ActionContext, p: DeviceParams) -> Result<Outcome, ActionError> {
        let list = Related {
            endpoint: &endpoints::MACHINE_RECOMMENDATIONS,
            one: "security recommendation",
            plural: "security recommendations",
            total_key: "total_recommendations",
        };
        device_list(ctx, p, list).await
    }
}

// --- software -------------------------------------------------------------------------------

/// `list_software`.
pub struct ListSoftware;

/// Parameters of `list_software`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSoftwareParams {
    /// Only this software id.
    #[serde(default)]
    pub id: Option<String>,
    /// Only software with this name.
    #[serde(default)]
    pub name: Option<String>,
    /// Only software of this vendor.
    #[serde(default)]
    pub vendor: Option<String>,
    /// Most products returned.
    pub limit: u64,
    /// Products skipped first.
    pub offset: u64,
}

impl Action for ListSoftware {
    const ID: &'static str = "list_software";
    type Params = ListSoftwareParams;

    async fn run(ctx: ActionContext, p: ListSoftwareParams) -> Result<Outcome, ActionError> {
        let mut parts = Vec::new();
        if let Some(raw) = given(&p.id) {
            parts.push(Filter::eq("id", &software_id("id", raw)?.0));
        }
        if let Some(name) = given(&p.name) {
            parts.push(Filter::eq("name", name));
        }
        if let Some(vendor) = given(&p.vendor) {
            parts.push(Filter::eq("vendor", vendor));
        }
        let call = endpoints::SOFTWARE.at(&[]);
        let items =
            match filtered(&ctx, call, parts, p.limit, p.offset, MAX_TOP, "software").await? {
                Ok(items) => items,
                Err(outcome) => return Ok(outcome),
            };
        let n = items.len();
        let mut outcome = Outcome::success(format!(
            "Found {}",
            counted(n, "software product", "software products").to_lowercase()
        ))
        .with_summary("total_software", n);
        outcome.data = items;
        Ok(outcome)
    }
}

/// Parameters of the per-software actions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwareParams {
    /// The software id (`vendor-_-name`).
    pub id: String,
}

async fn software_list(
    ctx: ActionContext,
    p: SoftwareParams,
    list: Related,
) -> Result<Outcome, ActionError> {
    let (id, _, _) = software_id("id", &p.id)?;
    let subject = Subject {
        key: "software_id",
        what: format!("software {id}"),
        suffix: format!("of software {id}"),
        id,
    };
    list.of(&ctx, subject).await
}

/// `list_software_missing_kbs`.
pub struct ListSoftwareMissingKbs;

impl Action for ListSoftwareMissingKbs {
    const ID: &'static str = "list_software_missing_kbs";
    type Params = SoftwareParams;

    async fn run(ctx: ActionContext, p: SoftwareParams) -> Result<Outcome, ActionError> {
        let list = Related {
            endpoint: &endpoints::SOFTWARE_MISSING_KBS,
            one: "security update missing",
            plural: "security updates missing",
            total_key: "total_kbs",
        };
        software_list(ctx, p, list).await
    }
}

/// `list_software_versions`.
pub struct ListSoftwareVersions;

impl Action for ListSoftwareVersions {
    const ID: &'static str = "list_software_versions";
    type Params = SoftwareParams;

    async fn run(ctx: ActionContext, p: SoftwareParams) -> Result<Outcome, ActionError> {
        let list = Related {
            endpoint: &endpoints::SOFTWARE_DISTRIBUTIONS,
            one: "version",
            plural: "versions",
            total_key: "total_versions",
        };
        software_list(ctx, p, list).await
    }
}

/// `list_software_devices`.
pub struct ListSoftwareDevices;

impl Action for ListSoftwareDevices {
    const ID: &'static str = "list_software_devices";
    type Params = SoftwareParams;

    async fn run(ctx: ActionContext, p: SoftwareParams) -> Result<Outcome, ActionError> {
        let list = Related {
            endpoint: &endpoints::SOFTWARE_MACHINES,
            one: "device has a version",
            plural: "devices have a version",
            total_key: "total_devices",
        };
        software_list(ctx, p, list).await
    }
}

/// `list_software_vulnerabilities`.
pub struct ListSoftwareVulnerabilities;

impl Action for ListSoftwareVulnerabilities {
    const ID: &'static str = "list_software_vulnerabilities";
    type Params = SoftwareParams;

    async fn run(ctx: ActionContext, p: SoftwareParams) -> Result<Outcome, ActionError> {
        let list = Related {
            endpoint: &endpoints::SOFTWARE_VULNERABILITIES,
            one: "vulnerability",
            plural: "vulnerabilities",
            total_key: "total_vulnerabilities",
        };
        software_list(ctx, p, list).await
    }
}

// --- vulnerabilities ------------------------------------------------------------------------

/// `list_device_vulnerabilities`.
pub struct ListDeviceVulnerabilities;

/// Parameters of `list_device_vulnerabilities`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceVulnerabilitiesParams {
    /// Only this device.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Only this software (`vendor-_-name`).
    #[serde(default)]
    pub software_id: Option<String>,
    /// Only this CVE.
    #[serde(default)]
    pub cve_id: Option<String>,
    /// Only this product name.
    #[serde(default)]
    pub product_name: Option<String>,
    /// Only this product version.
    #[serde(default)]
    pub product_version: Option<String>,
    /// Only this severity.
    #[serde(default)]
    pub severity: Option<String>,
    /// Only this product vendor.
    #[serde(default)]
    pub product_vendor: Option<String>,
    /// Most rows returned.
    pub limit: u64,
    /// Rows skipped first.
    pub offset: u64,
}

impl Action for ListDeviceVulnerabilities {
    const ID: &'static str = "list_device_vulnerabilities";
    type Params = DeviceVulnerabilitiesParams;

    async fn run(
        ctx: ActionContext,
        p: DeviceVulnerabilitiesParams,
    ) -> Result<Outcome, ActionError> {
        let mut parts = Vec::new();
        if let Some(raw) = given(&p.device_id) {
            parts.push(Filter::eq("machineId", &device_id("device_id", raw)?));
        }
        if let Some(raw) = given(&p.software_id) {
            // Rows carry the software as its vendor and product name, not as an id.
            let (_, vendor, name) = software_id("software_id", raw)?;
            parts.push(Filter::eq("productVendor", &vendor));
            parts.push(Filter::eq("productName", &name));
        }
        if let Some(raw) = given(&p.cve_id) {
            parts.push(Filter::eq("cveId", &cve_id("cve_id", raw)?));
        }
        if let Some(name) = given(&p.product_name) {
            parts.push(Filter::eq("productName", name));
        }
        if let Some(version) = given(&p.product_version) {
            parts.push(Filter::eq("productVersion", version));
        }
        if let Some(raw) = given(&p.severity) {
            parts.push(Filter::eq("severity", severity("severity", raw)?));
        }
        if let Some(vendor) = given(&p.product_vendor) {
            parts.push(Filter::eq("productVendor", vendor));
        }
        let call = endpoints::MACHINES_VULNERABILITIES.at(&[]);
        let what = "vulnerabilities by device";
        let items = match filtered(&ctx, call, parts, p.limit, p.offset, MAX_TOP, what).await? {
            Ok(items) => items,
            Err(outcome) => return Ok(outcome),
        };
        let n = items.len();
        let mut outcome = Outcome::success(format!(
            "Found {}",
            counted(
                n,
                "vulnerable software on a device",
                "vulnerable software rows"
            )
            .to_lowercase()
        ))
        .with_summary("total_vulnerabilities", n);
        outcome.data = items;
        Ok(outcome)
    }
}

/// `list_vulnerabilities`.
pub struct ListVulnerabilities;

/// Parameters of `list_vulnerabilities`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListVulnerabilitiesParams {
    /// Only this CVE.
    #[serde(default)]
    pub id: Option<String>,
    /// Only this name.
    #[serde(default)]
    pub name_equal: Option<String>,
    /// Only names containing this.
    #[serde(default)]
    pub name_contains: Option<String>,
    /// Only descriptions containing this.
    #[serde(default)]
    pub description_contains: Option<String>,
    /// Published on or after.
    #[serde(default)]
    pub published_on: Option<String>,
    /// CVSS v3 of at least.
    #[serde(default)]
    pub cvss: Option<f64>,
    /// Only this severity.
    #[serde(default)]
    pub severity: Option<String>,
    /// Updated on or after.
    #[serde(default)]
    pub updated_on: Option<String>,
    /// Most vulnerabilities returned.
    pub limit: u64,
    /// Vulnerabilities skipped first.
    pub offset: u64,
}

impl Action for ListVulnerabilities {
    const ID: &'static str = "list_vulnerabilities";
    type Params = ListVulnerabilitiesParams;

    async fn run(ctx: ActionContext, p: ListVulnerabilitiesParams) -> Result<Outcome, ActionError> {
        let mut parts = Vec::new();
        if let Some(raw) = given(&p.id) {
            parts.push(Filter::eq("id", &cve_id("id", raw)?));
        }
        if let Some(name) = given(&p.name_equal) {
            parts.push(Filter::eq("name", name));
        }
        if let Some(text) = given(&p.name_contains) {
            parts.push(Filter::contains("name", text));
        }
        if let Some(text) = given(&p.description_contains) {
            parts.push(Filter::contains("description", text));
        }
        if let Some(raw) = given(&p.published_on) {
            parts.push(Filter::ge_datetime(
                "publishedOn",
                moment("published_on", raw)?,
            ));
        }
        if let Some(score) = p.cvss {
            parts.push(Filter::ge_number("cvssV3", cvss("cvss", score)?));
        }
        if let Some(raw) = given(&p.severity) {
            parts.push(Filter::eq("severity", severity("severity", raw)?));
        }
        if let Some(raw) = given(&p.updated_on) {
            parts.push(Filter::ge_datetime("updatedOn", moment("updated_on", raw)?));
        }
        let call = endpoints::VULNERABILITIES.at(&[]);
        let page = endpoints::VULNERABILITIES_MAX_TOP;
        let items = match filtered(
            &ctx,
            call,
            parts,
            p.limit,
            p.offset,
            page,
            "vulnerabilities",
        )
        .await?
        {
            Ok(items) => items,
            Err(outcome) => return Ok(outcome),
        };
        let n = items.len();
        let mut outcome = Outcome::success(format!(
            "Found {}",
            counted(n, "vulnerability", "vulnerabilities").to_lowercase()
        ))
        .with_summary("total_vulnerabilities", n);
        outcome.data = items;
        Ok(outcome)
    }
}

/// `get_affected_devices`.
pub struct GetAffectedDevices;

/// Parameters of `get_affected_devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffectedParams {
    /// The CVE id.
    pub cve_id: String,
}

impl Action for GetAffectedDevices {
    const ID: &'static str = "get_affected_devices";
    type Params = AffectedParams;

    async fn run(ctx: ActionContext, p: AffectedParams) -> Result<Outcome, ActionError> {
        let id = cve_id("cve_id", &p.cve_id)?;
        let call = endpoints::VULNERABILITY_MACHINES.at(&[&id]);
        let subject = format!("vulnerability {id}");
        let items = match related(&ctx, call, "devices", &subject).await? {
            Ok(items) => items,
            Err(outcome) => return Ok(outcome.with_summary("cve_id", id.as_str())),
        };
        let n = items.len();
        let mut outcome = Outcome::success(format!(
            "{} affected by {id}",
            counted(n, "device is", "devices are")
        ))
        .with_summary("cve_id", id.as_str())
        .with_summary("total_devices", n);
        outcome.data = items;
        Ok(outcome)
    }
}

// --- scores ---------------------------------------------------------------------------------

/// Parameters of the score actions: none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// Reads a score (`{"time": …, "score": …}`).
async fn score(
    ctx: &ActionContext,
    call: Call,
    what: &str,
    key: &str,
) -> Result<Outcome, ActionError> {
    let answer = match ctx.asset.defender.get(&call).await {
        Ok(a) => clean(a),
        Err(e) => return failure(e, &format!("getting the {what}"), &format!("the {what}")),
    };
    let Some(value) = answer.get("score").and_then(Value::as_f64) else {
        return Ok(Outcome::failed(format!(
            "Defender's answer holds no {what} (no numeric 'score')"
        )));
    };
    let rounded = (value * 100.0).round() / 100.0;
    let mut message = format!("The {what} is {rounded}");
    if let Some(time) = answer.get("time").and_then(Value::as_str) {
        message.push_str(&format!(" (as of {time})"));
    }
    Ok(Outcome::success(message)
        .with_summary(key, value)
        .with_data(answer))
}

/// `get_exposure_score`.
pub struct GetExposureScore;

impl Action for GetExposureScore {
    const ID: &'static str = "get_exposure_score";
    type Params = NoParams;

    async fn run(ctx: ActionContext, _p: NoParams) -> Result<Outcome, ActionError> {
        let call = endpoints::EXPOSURE_SCORE.at(&[]);
        score(&ctx, call, "exposure score", "exposure_score").await
    }
}

/// `get_secure_score`.
pub struct GetSecureScore;

impl Action for GetSecureScore {
    const ID: &'static str = "get_secure_score";
    type Params = NoParams;

    async fn run(ctx: ActionContext, _p: NoParams) -> Result<Outcome, ActionError> {
        let call = endpoints::CONFIGURATION_SCORE.at(&[]);
        score(&ctx, call, "secure score for devices", "secure_score").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_ids_split_into_vendor_and_name() {
        let (id, vendor, name) = software_id("id", " git-scm-_-git ").unwrap();
        assert_eq!(
            (id.as_str(), vendor.as_str(), name.as_str()),
            ("git-scm-_-git", "git-scm", "git")
        );
        let (_, vendor, name) = software_id("id", "microsoft-_-edge_chromium-based").unwrap();
        assert_eq!(
            (vendor.as_str(), name.as_str()),
            ("microsoft", "edge_chromium-based")
        );
        for bad in ["", "edge", "-_-edge", "microsoft-_-", "a b-_-c", "x/y-_-z"] {
            let e = software_id("software_id", bad).unwrap_err().to_string();
            assert!(e.contains("'software_id'"), "{bad}: {e}");
        }
    }

    #[test]
    fn cve_ids_are_checked_and_upper_cased() {
        assert_eq!(
            cve_id("cve_id", " cve-2024-21338 ").unwrap(),
            "CVE-2024-21338"
        );
        assert_eq!(
            cve_id("cve_id", "CVE-2021-1234567").unwrap(),
            "CVE-2021-1234567"
        );
        for bad in [
            "",
            "CVE-24-1234",
            "CVE-2024-123",
            "CVE-2024-12a4",
            "2024-1234",
            "CVE-2024",
        ] {
            let e = cve_id("cve_id", bad).unwrap_err().to_string();
            assert!(e.contains("'cve_id'"), "{bad}: {e}");
        }
    }

    #[test]
    fn device_ids_severities_and_scores_are_checked() {
        let id = "A".repeat(40);
        assert_eq!(device_id("device_id", &id).unwrap(), "a".repeat(40));
        assert!(device_id("device_id", "host.contoso.com").is_err());
        assert_eq!(severity("severity", "critical").unwrap(), "Critical");
        assert!(severity("severity", "Severe").is_err());
        assert_eq!(cvss("cvss", 7.5).unwrap(), 7.5);
        assert!(cvss("cvss", 10.5).is_err());
        assert!(cvss("cvss", f64::NAN).is_err());
    }

    #[test]
    fn filters_are_odata() {
        let f = Filter::contains("name", "o'neil").and(Filter::ge_number("cvssV3", 7.5));
        assert_eq!(f.as_str(), "contains(name,'o''neil') and cvssV3 ge 7.5");
    }
}
