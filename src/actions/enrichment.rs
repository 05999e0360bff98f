//! Enrichment of files, IP addresses, domains and users: a file's profile, the prevalence of a
//! file, an address or a domain in the organisation (`/stats?lookBackHours=`), the devices
//! that saw a file, contacted a domain or had a user logged on, and the devices that had an
//! internal address around a moment (`findbyip`).

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::alerts::{ip_input, moment, user_input};
use super::devices::{domain_input, hash_input};
use super::listing::clean;
use super::{Action, ActionContext, HandlerFn, erase, truncate};
use crate::defender::endpoints::{self, MAX_LOOK_BACK_HOURS};
use crate::defender::{Call, DefenderError, Endpoint, ListQuery};
use crate::envelope::{ActionError, Outcome};

/// How far around its timestamp `find_devices_by_ip` looks (Defender's window).
pub const FIND_BY_IP_WINDOW_MINUTES: i64 = 15;
/// How far back `find_devices_by_ip` may look (Defender keeps 30 days).
pub const FIND_BY_IP_MAX_AGE_DAYS: i64 = 30;

/// The handlers of this module.
pub fn handlers() -> Vec<(&'static str, HandlerFn)> {
    vec![
        erase::<GetFileInfo>(),
        erase::<FilePrevalence>(),
        erase::<IpPrevalence>(),
        erase::<DomainPrevalence>(),
        erase::<GetFileDevices>(),
        erase::<GetDomainDevices>(),
        erase::<GetUserDevices>(),
        erase::<FindDevicesByIp>(),
    ]
}

/// How a Defender failure ends an enrichment action: an unknown subject fails saying so.
pub(crate) fn failure(e: DefenderError, what: &str, subject: &str) -> Result<Outcome, ActionError> {
    super::listing::failure(e, what, Some(subject))
}

/// A number Defender sends as a number or as a numeric string (`"orgPrevalence": "3"`).
fn count_of(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The first of `keys` that carries a count.
fn count_of_any(v: &Value, keys: &[&str]) -> Option<u64> {
    keys.iter().find_map(|k| count_of(v, k))
}

/// The organisation's count in a stats answer: Microsoft's pages name it
/// `organizationPrevalence`; `orgPrevalence` is read too.
const ORG_PREVALENCE: &[&str] = &["organizationPrevalence", "orgPrevalence"];
/// The worldwide count in a stats answer: `globallyPrevalence` in Microsoft's file statistics
/// example, `globalPrevalence` in the file entity.
const GLOBAL_PREVALENCE: &[&str] = &["globallyPrevalence", "globalPrevalence"];

/// `look_back_hours` checked: 1 to 720; 400 naming the parameter otherwise.
pub fn look_back_hours(hours: u64) -> Result<u64, ActionError> {
    if (1..=MAX_LOOK_BACK_HOURS).contains(&hours) {
        Ok(hours)
    } else {
        Err(ActionError::InvalidParameter(format!(
            "parameter 'look_back_hours': {hours} is outside 1 to {MAX_LOOK_BACK_HOURS} (Defender \
             looks back at most 30 days)"
        )))
    }
}

// --- get_file_info --------------------------------------------------------------------------

/// `get_file_info`: a file's profile.
pub struct GetFileInfo;

/// Parameters of `get_file_info` and `get_file_devices`' hash.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileParams {
    /// SHA1 or SHA256.
    pub file_hash: String,
}

impl Action for GetFileInfo {
    const ID: &'static str = "get_file_info";
    type Params = FileParams;

    async fn run(ctx: ActionContext, p: FileParams) -> Result<Outcome, ActionError> {
        let hash = hash_input("file_hash", &p.file_hash)?;
        let file = match ctx.asset.defender.get(&endpoints::FILE.at(&[&hash])).await {
            Ok(f) => clean(f),
            Err(e) => return failure(e, "getting the file", &format!("file {hash}")),
        };
        let name = file
            .get("fileName")
            .and_then(Value::as_str)
            .unwrap_or("(no name)")
            .to_string();
        let mut outcome = Outcome::success(format!("File {hash}: {name}"))
            .with_summary("file_hash", hash.as_str());
        for (key, field) in [("sha1", "sha1"), ("sha256", "sha256")] {
            if let Some(v) = file.get(field).and_then(Value::as_str) {
                outcome = outcome.with_summary(key, v);
            }
        }
        if let Some(n) = count_of(&file, "globalPrevalence") {
            outcome = outcome.with_summary("global_prevalence", n);
        }
        Ok(outcome.with_data(file))
    }
}

// --- prevalence -----------------------------------------------------------------------------

/// One prevalence lookup: the stats endpoint of `subject` over `hours`.
async fn prevalence(
    ctx: &ActionContext,
    call: Call,
    hours: u64,
    subject: &str,
) -> Result<Outcome, ActionError> {
    let hours_text = hours.to_string();
    let stats = match ctx
        .asset
        .defender
        .get_with_query(&call, &[("lookBackHours", hours_text.as_str())])
        .await
    {
        Ok(s) => clean(s),
        Err(e) => return failure(e, &format!("getting the prevalence of {subject}"), subject),
    };
    let org = count_of_any(&stats, ORG_PREVALENCE).unwrap_or(0);
    let mut message = format!(
        "{subject} was seen on {org} device{} of the organisation in the last {hours} hours",
        if org == 1 { "" } else { "s" }
    );
    let mut outcome = Outcome::success(String::new())
        .with_summary("organization_prevalence", org)
        .with_summary("look_back_hours", hours);
    if let Some(global) = count_of_any(&stats, GLOBAL_PREVALENCE) {
        message.push_str(&format!("; {global} worldwide"));
        outcome = outcome.with_summary("global_prevalence", global);
    }
    outcome.message = message;
    Ok(outcome.with_data(stats))
}

/// `file_prevalence`.
pub struct FilePrevalence;

/// Parameters of `file_prevalence`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePrevalenceParams {
    /// SHA1 or SHA256.
    pub file_hash: String,
    /// Hours to look back (1–720).
    pub look_back_hours: u64,
}

impl Action for FilePrevalence {
    const ID: &'static str = "file_prevalence";
    type Params = FilePrevalenceParams;

    async fn run(ctx: ActionContext, p: FilePrevalenceParams) -> Result<Outcome, ActionError> {
        let hash = hash_input("file_hash", &p.file_hash)?;
        let hours = look_back_hours(p.look_back_hours)?;
        let call = endpoints::FILE_STATS.at(&[&hash]);
        prevalence(&ctx, call, hours, &format!("File {hash}")).await
    }
}

/// `ip_prevalence`.
pub struct IpPrevalence;

/// Parameters of `ip_prevalence`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpPrevalenceParams {
    /// IPv4 or IPv6 address.
    pub ip: String,
    /// Hours to look back (1–720).
    pub look_back_hours: u64,
}

impl Action for IpPrevalence {
    const ID: &'static str = "ip_prevalence";
    type Params = IpPrevalenceParams;

    async fn run(ctx: ActionContext, p: IpPrevalenceParams) -> Result<Outcome, ActionError> {
        let ip = ip_input("ip", &p.ip)?;
        let hours = look_back_hours(p.look_back_hours)?;
        let call = endpoints::IP_STATS.at(&[&ip]);
        prevalence(&ctx, call, hours, &format!("IP address {ip}")).await
    }
}

/// `domain_prevalence`.
pub struct DomainPrevalence;

/// Parameters of `domain_prevalence`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainPrevalenceParams {
    /// Domain name.
    pub domain: String,
    /// Hours to look back (1–720).
    pub look_back_hours: u64,
}

impl Action for DomainPrevalence {
    const ID: &'static str = "domain_prevalence";
    type Params = DomainPrevalenceParams;

    async fn run(ctx: ActionContext, p: DomainPrevalenceParams) -> Result<Outcome, ActionError> {
        let domain = domain_input("domain", &p.domain)?;
        let hours = look_back_hours(p.look_back_hours)?;
        let call = endpoints::DOMAIN_STATS.at(&[&domain]);
        prevalence(&ctx, call, hours, &format!("Domain {domain}")).await
    }
}

// --- devices of a file, a domain, a user ----------------------------------------------------

/// Up to `limit` devices of a related list; an unknown subject is an empty list.
async fn related_devices(
    ctx: &ActionContext,
    endpoint: &'static Endpoint,
    key: &str,
    limit: u64,
    subject: &str,
) -> Result<Outcome, ActionError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let devices = match ctx
        .asset
        .defender
        .list(&endpoint.at(&[key]), &ListQuery::new(), limit)
        .await
    {
        Ok(d) => d,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => return failure(e, &format!("listing the devices of {subject}"), subject),
    };
    let devices = super::listing::records(devices);
    let message = format!(
        "{} for {subject}",
        super::listing::found(devices.len(), "device", "devices")
    );
    Ok(super::listing::listed(devices, message, "total_devices"))
}

/// `get_file_devices`: devices where a file was seen.
pub struct GetFileDevices;

/// Parameters of `get_file_devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDevicesParams {
    /// SHA1 or SHA256.
    pub file_hash: String,
    /// Most devices returned.
    pub limit: u64,
}

impl Action for GetFileDevices {
    const ID: &'static str = "get_file_devices";
    type Params = FileDevicesParams;

    async fn run(ctx: ActionContext, p: FileDevicesParams) -> Result<Outcome, ActionError> {
        let hash = hash_input("file_hash", &p.file_hash)?;
        let subject = format!("file {hash}");
        related_devices(&ctx, &endpoints::FILE_MACHINES, &hash, p.limit, &subject).await
    }
}

/// `get_domain_devices`: devices that contacted a domain.
pub struct GetDomainDevices;

/// Parameters of `get_domain_devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainDevicesParams {
    /// Domain name.
    pub domain: String,
    /// Most devices returned.
    pub limit: u64,
}

impl Action for GetDomainDevices {
    const ID: &'static str = "get_domain_devices";
    type Params = DomainDevicesParams;

    async fn run(ctx: ActionContext, p: DomainDevicesParams) -> Result<Outcome, ActionError> {
        let domain = domain_input("domain", &p.domain)?;
        let subject = format!("domain {domain}");
        related_devices(
            &ctx,
            &endpoints::DOMAIN_MACHINES,
            &domain,
            p.limit,
            &subject,
        )
        .await
    }
}

/// `get_user_devices` (Splunk: `get_user_related_devices`): devices a user logged on to.
pub struct GetUserDevices;

/// Parameters of `get_user_devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserDevicesParams {
    /// The account name (`jdoe`, `CONTOSO\jdoe` or `jdoe@contoso.com`).
    pub user_id: String,
    /// Most devices returned.
    pub limit: u64,
}

impl Action for GetUserDevices {
    const ID: &'static str = "get_user_devices";
    type Params = UserDevicesParams;

    async fn run(ctx: ActionContext, p: UserDevicesParams) -> Result<Outcome, ActionError> {
        let user = user_input("user_id", &p.user_id)?;
        let subject = format!("user {user}");
        related_devices(&ctx, &endpoints::USER_MACHINES, &user, p.limit, &subject).await
    }
}

// --- find_devices_by_ip ---------------------------------------------------------------------

/// `find_devices_by_ip`: devices that had an internal address around a moment.
pub struct FindDevicesByIp;

/// Parameters of `find_devices_by_ip`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindByIpParams {
    /// IPv4 or IPv6 address.
    pub ip: String,
    /// ISO 8601 moment; now when absent.
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// The moment of `find_devices_by_ip`: `raw` (or `now` when blank), within the last 30 days
/// and not in the future; 400 naming `timestamp` otherwise.
pub fn find_by_ip_moment(
    raw: Option<&str>,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, ActionError> {
    let Some(raw) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(now);
    };
    let at = moment("timestamp", raw)?;
    if at > now + time::Duration::minutes(1) {
        return Err(ActionError::InvalidParameter(format!(
            "parameter 'timestamp': '{}' is in the future; give a moment of the last \
             {FIND_BY_IP_MAX_AGE_DAYS} days",
            truncate(raw, 64)
        )));
    }
    if at < now - time::Duration::days(FIND_BY_IP_MAX_AGE_DAYS) {
        return Err(ActionError::InvalidParameter(format!(
            "parameter 'timestamp': '{}' is more than {FIND_BY_IP_MAX_AGE_DAYS} days ago; \
             Defender finds devices by address only within the last {FIND_BY_IP_MAX_AGE_DAYS} \
             days",
            truncate(raw, 64)
        )));
    }
    Ok(at)
}

impl Action for FindDevicesByIp {
    const ID: &'static str = "find_devices_by_ip";
    type Params = FindByIpParams;

    async fn run(ctx: ActionContext, p: FindByIpParams) -> Result<Outcome, ActionError> {
        let ip: std::net::IpAddr = ip_input("ip", &p.ip)?.parse().map_err(|_| {
            ActionError::InvalidParameter("parameter 'ip' is not an address".into())
        })?;
        let at = find_by_ip_moment(p.timestamp.as_deref(), OffsetDateTime::now_utc())?;
        let shown = at
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_default();
        let subject = format!("IP address {ip}");
        let answer = match ctx.asset.defender.get(&endpoints::find_by_ip(ip, at)).await {
            Ok(a) => a,
            Err(e) => return failure(e, &format!("finding the devices of {subject}"), &subject),
        };
        let devices: Vec<Value> = match answer {
            Value::Object(mut map) => match map.remove("value") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            },
            Value::Array(items) => items,
            _ => Vec::new(),
        }
        .into_iter()
        .filter(Value::is_object)
        .map(clean)
        .collect();
        let n = devices.len();
        let window = format!(
            "between {FIND_BY_IP_WINDOW_MINUTES} minutes before and {FIND_BY_IP_WINDOW_MINUTES} \
             minutes after {shown}"
        );
        let message = match n {
            0 => format!("No device had the internal address {ip} {window}"),
            1 => format!("1 device had the internal address {ip} {window}"),
            n => format!("{n} devices had the internal address {ip} {window}"),
        };
        let mut outcome = Outcome::success(message)
            .with_summary("total_devices", n)
            .with_summary("ip", ip.to_string())
            .with_summary("timestamp", shown);
        outcome.data = devices;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prevalence_counts_are_read_under_microsofts_names() {
        let documented =
            serde_json::json!({"organizationPrevalence": 14850, "globallyPrevalence": 705012});
        assert_eq!(count_of_any(&documented, ORG_PREVALENCE), Some(14850));
        assert_eq!(count_of_any(&documented, GLOBAL_PREVALENCE), Some(705012));
        let short = serde_json::json!({"orgPrevalence": "3", "globalPrevalence": "105"});
        assert_eq!(count_of_any(&short, ORG_PREVALENCE), Some(3));
        assert_eq!(count_of_any(&short, GLOBAL_PREVALENCE), Some(105));
        assert_eq!(count_of_any(&serde_json::json!({}), ORG_PREVALENCE), None);
    }

    use super::*;
    use time::macros::datetime;

    #[test]
    fn look_back_is_one_to_720_hours() {
        assert!(look_back_hours(0).is_err());
        assert_eq!(look_back_hours(720).unwrap(), 720);
        let e = look_back_hours(721).unwrap_err().to_string();
        assert!(e.contains("look_back_hours") && e.contains("720"), "{e}");
    }

    #[test]
    fn find_by_ip_moment_is_within_the_last_30_days() {
        let now = datetime!(2025-11-20 12:00 UTC);
        assert_eq!(find_by_ip_moment(None, now).unwrap(), now);
        assert_eq!(find_by_ip_moment(Some(" "), now).unwrap(), now);
        assert_eq!(
            find_by_ip_moment(Some("2025-11-19T10:00:00Z"), now).unwrap(),
            datetime!(2025-11-19 10:00 UTC)
        );
        for bad in ["2025-10-01T00:00:00Z", "2025-11-21T00:00:00Z", "yesterday"] {
            let e = find_by_ip_moment(Some(bad), now).unwrap_err();
            assert!(matches!(e, ActionError::InvalidParameter(_)), "{bad}");
            assert!(e.to_string().contains("'timestamp'"), "{e}");
        }
    }

    #[test]
    fn counts_read_from_numbers_and_strings() {
        let v = serde_json::json!({"a": "3", "b": 4, "c": "x"});
        assert_eq!(count_of(&v, "a"), Some(3));
        assert_eq!(count_of(&v, "b"), Some(4));
        assert_eq!(count_of(&v, "c"), None);
    }
}
