//! Microsoft Graph security data: `alerts_v2` and incidents per tenant, generated
//! deterministically from the scenario (its tenants, users and machines) the first time a
//! tenant's Graph data is used, with creation times spread over the 60 days before that moment.
//!
//! Records are kept as JSON objects in Graph's shapes (camelCase enums, `@odata.type` on
//! evidence) so the OData subset in [`crate::api::odata`] filters them as it does machines.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::scenario::Scenario;
use crate::state::Clock;

/// Alert `status` values.
pub const ALERT_STATUSES: &[&str] = &["unknown", "new", "inProgress", "resolved"];
/// Incident `status` values a caller may set.
pub const INCIDENT_STATUSES: &[&str] = &["active", "resolved", "inProgress", "redirected"];
/// `severity` values.
pub const SEVERITIES: &[&str] = &["unknown", "informational", "low", "medium", "high"];
/// `classification` values.
pub const CLASSIFICATIONS: &[&str] = &[
    "unknown",
    "falsePositive",
    "truePositive",
    "informationalExpectedActivity",
];
/// `determination` values.
pub const DETERMINATIONS: &[&str] = &[
    "unknown",
    "apt",
    "malware",
    "securityPersonnel",
    "securityTesting",
    "unwantedSoftware",
    "other",
    "multiStagedAttack",
    "compromisedAccount",
    "phishing",
    "maliciousUserActivity",
    "notMalicious",
    "notEnoughDataToValidate",
    "confirmedActivity",
    "lineOfBusinessApplication",
];
/// `serviceSource` values the generator uses.
pub const SERVICE_SOURCES: &[&str] = &[
    "microsoftDefenderForEndpoint",
    "microsoftDefenderForIdentity",
    "microsoftDefenderForOffice365",
    "microsoftDefenderForCloudApps",
];

/// Alerts generated for the scenario's first tenant.
pub const MAIN_TENANT_ALERTS: usize = 300;
/// Alerts generated for every other tenant.
pub const OTHER_TENANT_ALERTS: usize = 40;
/// Days back the oldest generated alert may be.
pub const SPREAD_DAYS: i64 = 60;

/// Graph data of every tenant used so far (keyed by lower-case tenant id).
#[derive(Debug, Default)]
pub struct GraphStore {
    tenants: HashMap<String, TenantGraph>,
}

/// One tenant's alerts and incidents (incidents without their alerts; see
/// [`TenantGraph::incident_alerts`]).
#[derive(Debug, Default, Clone)]
pub struct TenantGraph {
    /// Alerts, newest first.
    pub alerts: Vec<Map<String, Value>>,
    /// Incidents, newest first.
    pub incidents: Vec<Map<String, Value>>,
}

impl GraphStore {
    /// The Graph data of `tenant_id`, generated on first use at `now_ms` (sim time).
    pub fn tenant(
        &mut self,
        scenario: &Scenario,
        tenant_id: &str,
        now_ms: i64,
    ) -> &mut TenantGraph {
        let key = tenant_id.to_ascii_lowercase();
        self.tenants
            .entry(key)
            .or_insert_with(|| generate(scenario, tenant_id, now_ms))
    }

    /// Every alert of every tenant generated so far.
    pub fn alerts_mut(&mut self) -> impl Iterator<Item = &mut Map<String, Value>> {
        self.tenants.values_mut().flat_map(|t| t.alerts.iter_mut())
    }
}

impl TenantGraph {
    /// The alert with this id (exact, then ignoring ASCII case).
    pub fn alert_mut(&mut self, id: &str) -> Option<&mut Map<String, Value>> {
        let pos = position(&self.alerts, id)?;
        self.alerts.get_mut(pos)
    }

    /// The incident with this id.
    pub fn incident_mut(&mut self, id: &str) -> Option<&mut Map<String, Value>> {
        let pos = position(&self.incidents, id)?;
        self.incidents.get_mut(pos)
    }

    /// The alerts of an incident, newest first.
    pub fn incident_alerts(&self, incident_id: &str) -> Vec<Value> {
        self.alerts
            .iter()
            .filter(|a| a.get("incidentId").and_then(Value::as_str) == Some(incident_id))
            .map(|a| Value::Object(a.clone()))
            .collect()
    }
}

fn position(records: &[Map<String, Value>], id: &str) -> Option<usize> {
    let id_of = |r: &Map<String, Value>| r.get("id").and_then(Value::as_str).map(str::to_owned);
    records
        .iter()
        .position(|r| id_of(r).as_deref() == Some(id))
        .or_else(|| {
            records
                .iter()
                .position(|r| id_of(r).is_some_and(|x| x.eq_ignore_ascii_case(id)))
        })
}

/// The canonical spelling of `value` in `allowed` (ASCII case ignored).
pub fn canonical(allowed: &[&'static str], value: &str) -> Option<&'static str> {
    allowed
        .iter()
        .copied()
        .find(|a| a.eq_ignore_ascii_case(value))
}

/// SplitMix64: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn seeded(seed: &str) -> Rng {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(seed.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        Rng(u64::from_le_bytes(bytes))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 0..n (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            s.push_str(&format!("{:016x}", self.next()));
        }
        s.truncate(len);
        s
    }
}

/// (title, category, MITRE techniques) per service source.
fn templates(source: &str) -> &'static [(&'static str, &'static str, &'static [&'static str])] {
    match source {
        "microsoftDefenderForEndpoint" => &[
            (
                "Suspicious PowerShell command line",
                "Execution",
                &["T1059.001"],
            ),
            ("Ransomware behavior detected", "Ransomware", &["T1486"]),
            (
                "Credential dumping activity observed",
                "CredentialAccess",
                &["T1003", "T1003.001"],
            ),
            (
                "Suspicious process injection observed",
                "DefenseEvasion",
                &["T1055"],
            ),
            ("'Emotet' malware was detected", "Malware", &["T1204.002"]),
        ],
        "microsoftDefenderForIdentity" => &[
            (
                "Suspected DCSync attack (replication of directory services)",
                "CredentialAccess",
                &["T1003.006"],
            ),
            (
                "Suspected brute-force attack (LDAP)",
                "CredentialAccess",
                &["T1110"],
            ),
            (
                "Account enumeration reconnaissance",
                "Discovery",
                &["T1087.002"],
            ),
        ],
        "microsoftDefenderForOffice365" => &[
            (
                "Email messages containing malicious URL removed after delivery",
                "InitialAccess",
                &["T1566.002"],
            ),
            (
                "A potentially malicious URL click was detected",
                "InitialAccess",
                &["T1566.002"],
            ),
            (
                "Email reported by user as malware or phish",
                "InitialAccess",
                &["T1566"],
            ),
        ],
        _ => &[
            ("Impossible travel activity", "InitialAccess", &["T1078"]),
            ("Mass download by a single user", "Exfiltration", &["T1530"]),
            ("Suspicious inbox forwarding", "Collection", &["T1114.003"]),
        ],
    }
}

fn detection_source(rng: &mut Rng, source: &str) -> &'static str {
    match source {
        "microsoftDefenderForEndpoint" => {
            const MDE: [&str; 4] = [
                "microsoftDefenderForEndpoint",
                "antivirus",
                "automatedInvestigation",
                "customTi",
            ];
            MDE[rng.below(MDE.len() as u64) as usize]
        }
        "microsoftDefenderForIdentity" => "microsoftDefenderForIdentity",
        "microsoftDefenderForOffice365" => "microsoftDefenderForOffice365",
        _ => "microsoftCloudAppSecurity",
    }
}

fn id_prefix(source: &str) -> &'static str {
    match source {
        "microsoftDefenderForEndpoint" => "da",
        "microsoftDefenderForIdentity" => "aa",
        "microsoftDefenderForOffice365" => "fa",
        _ => "ca",
    }
}

/// A (classification, determination) pair consistent with each other.
fn verdict(rng: &mut Rng, resolved: bool) -> (&'static str, &'static str) {
    if !resolved && rng.chance(70) {
        return ("unknown", "unknown");
    }
    match rng.below(3) {
        0 => (
            "truePositive",
            *rng.pick(&[
                "malware",
                "apt",
                "phishing",
                "multiStagedAttack",
                "compromisedAccount",
                "maliciousUserActivity",
                "unwantedSoftware",
                "other",
            ]),
        ),
        1 => (
            "falsePositive",
            *rng.pick(&["notMalicious", "notEnoughDataToValidate", "other"]),
        ),
        _ => (
            "informationalExpectedActivity",
            *rng.pick(&[
                "securityTesting",
                "lineOfBusinessApplication",
                "confirmedActivity",
                "securityPersonnel",
                "other",
            ]),
        ),
    }
}

fn severity_rank(s: &str) -> usize {
    SEVERITIES.iter().position(|x| *x == s).unwrap_or(0)
}

/// Generates a tenant's alerts and incidents.
fn generate(scenario: &Scenario, tenant_id: &str, now_ms: i64) -> TenantGraph {
    let tenant = scenario.tenant(tenant_id);
    let is_main = scenario
        .first_tenant()
        .is_some_and(|t| t.id.eq_ignore_ascii_case(tenant_id));
    let total = if is_main {
        MAIN_TENANT_ALERTS
    } else {
        OTHER_TENANT_ALERTS
    };
    let domain = tenant
        .and_then(|t| t.domain.clone())
        .unwrap_or_else(|| "contoso.onmicrosoft.com".to_string());
    let upns: Vec<String> = tenant
        .map(|t| t.users.iter().map(|u| u.upn.clone()).collect())
        .unwrap_or_default();
    let user_names = ["jdoe", "asmith", "mbrown", "lchen", "kpatel", "rgarcia"];
    let mut rng = Rng::seeded(&format!("graph/{}", tenant_id.to_ascii_lowercase()));
    let tenant_lc = tenant_id.to_ascii_lowercase();
    let day_ms: i64 = 86_400_000;
    let mut graph = TenantGraph::default();
    let mut incident_no: u64 = if is_main { 1000 } else { 5000 };

    while graph.alerts.len() < total {
        incident_no += 1 + rng.below(3);
        let incident_id = incident_no.to_string();
        let size = (1 + rng.below(5) as usize).min(total - graph.alerts.len());
        let incident_status = *rng.pick(&[
            "active",
            "active",
            "active",
            "inProgress",
            "resolved",
            "resolved",
            "redirected",
        ]);
        let resolved = matches!(incident_status, "resolved" | "redirected");
        let (classification, determination) = verdict(&mut rng, resolved);
        let assigned_to = if rng.chance(50) || upns.is_empty() {
            Value::Null
        } else {
            json!(rng.pick(&upns))
        };
        let created =
            now_ms - (rng.below((SPREAD_DAYS * day_ms) as u64 - 3_600_000) as i64) - 3_600_000;
        let mut last_update = created;
        let mut top_severity = "informational";
        let mut first_title = String::new();
        let user = *rng.pick(&user_names);
        for k in 0..size {
            let source = *rng.pick(SERVICE_SOURCES);
            let (title, category, techniques) = *rng.pick(templates(source));
            if k == 0 {
                first_title = title.to_string();
            }
            let severity = *rng.pick(&[
                "informational",
                "low",
                "low",
                "medium",
                "medium",
                "high",
                "high",
            ]);
            if severity_rank(severity) > severity_rank(top_severity) {
                top_severity = severity;
            }
            let status = match incident_status {
                "resolved" | "redirected" => "resolved",
                "inProgress" => *rng.pick(&["inProgress", "resolved", "new"]),
                _ => *rng.pick(&["new", "new", "inProgress"]),
            };
            let alert_created =
                (created + k as i64 * 600_000 + rng.below(300_000) as i64).min(now_ms - 60_000);
            let updated = (alert_created + rng.below(2 * day_ms as u64) as i64).min(now_ms);
            last_update = last_update.max(updated);
            let id = format!(
                "{}{}_{}{}",
                id_prefix(source),
                638_000_000_000_000_000u64 + rng.below(999_999_999_999_999),
                if rng.chance(50) { "-" } else { "" },
                1_000_000_000 + rng.below(1_000_000_000)
            );
            let evidence = evidence(&mut rng, scenario, source, &domain, user, alert_created);
            let mut a = Map::new();
            a.insert("id".into(), json!(id));
            a.insert("providerAlertId".into(), json!(id[2..].to_string()));
            a.insert("incidentId".into(), json!(incident_id));
            a.insert("status".into(), json!(status));
            a.insert("severity".into(), json!(severity));
            a.insert("classification".into(), json!(classification));
            a.insert("determination".into(), json!(determination));
            a.insert("serviceSource".into(), json!(source));
            a.insert(
                "detectionSource".into(),
                json!(detection_source(&mut rng, source)),
            );
            a.insert("detectorId".into(), json!(rng.hex(8)));
            a.insert("tenantId".into(), json!(tenant_lc));
            a.insert("title".into(), json!(title));
            a.insert(
                "description".into(),
                json!(format!("{title} involving {user}@{domain}.")),
            );
            a.insert(
                "recommendedActions".into(),
                json!("Investigate the activity and the entities involved."),
            );
            a.insert("category".into(), json!(category));
            a.insert("assignedTo".into(), assigned_to.clone());
            a.insert(
                "alertWebUrl".into(),
                json!(format!(
                    "https://security.microsoft.com/alerts/{id}?tid={tenant_lc}"
                )),
            );
            a.insert(
                "incidentWebUrl".into(),
                json!(format!(
                    "https://security.microsoft.com/incidents/{incident_id}?tid={tenant_lc}"
                )),
            );
            a.insert("actorDisplayName".into(), Value::Null);
            a.insert("threatDisplayName".into(), Value::Null);
            a.insert("threatFamilyName".into(), Value::Null);
            a.insert("mitreTechniques".into(), json!(techniques));
            a.insert(
                "createdDateTime".into(),
                json!(Clock::format_ms(alert_created)),
            );
            a.insert(
                "lastUpdateDateTime".into(),
                json!(Clock::format_ms(updated)),
            );
            a.insert(
                "resolvedDateTime".into(),
                if status == "resolved" {
                    json!(Clock::format_ms(updated))
                } else {
                    Value::Null
                },
            );
            a.insert(
                "firstActivityDateTime".into(),
                json!(Clock::format_ms(alert_created - 300_000)),
            );
            a.insert(
                "lastActivityDateTime".into(),
                json!(Clock::format_ms(alert_created - 60_000)),
            );
            a.insert("comments".into(), json!([]));
            a.insert("systemTags".into(), json!([]));
            a.insert("evidence".into(), Value::Array(evidence));
            graph.alerts.push(a);
        }
        let mut i = Map::new();
        i.insert("id".into(), json!(incident_id));
        i.insert("tenantId".into(), json!(tenant_lc));
        i.insert(
            "displayName".into(),
            json!(if size > 1 {
                format!("Multi-stage incident involving {first_title}")
            } else {
                first_title.clone()
            }),
        );
        i.insert(
            "incidentWebUrl".into(),
            json!(format!(
                "https://security.microsoft.com/incidents/{incident_id}?tid={tenant_lc}"
            )),
        );
        i.insert("redirectIncidentId".into(), Value::Null);
        i.insert("status".into(), json!(incident_status));
        i.insert("severity".into(), json!(top_severity));
        i.insert("classification".into(), json!(classification));
        i.insert("determination".into(), json!(determination));
        i.insert("assignedTo".into(), assigned_to);
        i.insert("createdDateTime".into(), json!(Clock::format_ms(created)));
        i.insert(
            "lastUpdateDateTime".into(),
            json!(Clock::format_ms(last_update)),
        );
        i.insert("customTags".into(), json!([]));
        i.insert("systemTags".into(), json!([]));
        i.insert("description".into(), Value::Null);
        i.insert("summary".into(), Value::Null);
        i.insert("comments".into(), json!([]));
        graph.incidents.push(i);
    }
    let created_of = |r: &Map<String, Value>| {
        r.get("createdDateTime")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_default()
    };
    graph
        .alerts
        .sort_by_key(|r| std::cmp::Reverse(created_of(r)));
    graph
        .incidents
        .sort_by_key(|r| std::cmp::Reverse(created_of(r)));
    graph
}

/// Evidence for an alert created through the control API: as the generator's, from a seed.
pub fn evidence_for(
    seed: &str,
    scenario: &Scenario,
    domain: &str,
    user: &str,
    created_ms: i64,
) -> Vec<Value> {
    let mut rng = Rng::seeded(seed);
    evidence(
        &mut rng,
        scenario,
        "microsoftDefenderForEndpoint",
        domain,
        user,
        created_ms,
    )
}

/// Evidence of an alert: devices and files from the scenario's machines, IPs, the user.
fn evidence(
    rng: &mut Rng,
    scenario: &Scenario,
    source: &str,
    domain: &str,
    user: &str,
    created_ms: i64,
) -> Vec<Value> {
    let created = Clock::format_ms(created_ms);
    let common = |rng: &mut Rng, kind: &str| {
        let mut m = Map::new();
        m.insert(
            "@odata.type".into(),
            json!(format!("#microsoft.graph.security.{kind}")),
        );
        m.insert("createdDateTime".into(), json!(created));
        m.insert(
            "verdict".into(),
            json!(rng.pick(&["unknown", "suspicious", "malicious", "noThreatsFound"])),
        );
        m.insert(
            "remediationStatus".into(),
            json!(rng.pick(&["none", "remediated", "prevented", "blocked", "notFound"])),
        );
        m.insert("remediationStatusDetails".into(), Value::Null);
        m.insert("roles".into(), json!([]));
        m.insert("tags".into(), json!([]));
        m
    };
    let mut out = Vec::new();
    let machine = (!scenario.machines.is_empty()).then(|| rng.pick(&scenario.machines).clone());
    let text = |m: &Map<String, Value>, k: &str| m.get(k).cloned().unwrap_or(Value::Null);
    if let Some(machine) = machine.filter(|_| {
        matches!(
            source,
            "microsoftDefenderForEndpoint" | "microsoftDefenderForIdentity"
        )
    }) {
        let mut d = common(rng, "deviceEvidence");
        d.insert("mdeDeviceId".into(), text(&machine, "id"));
        d.insert("deviceDnsName".into(), text(&machine, "computerDnsName"));
        d.insert("azureAdDeviceId".into(), text(&machine, "aadDeviceId"));
        d.insert("firstSeenDateTime".into(), text(&machine, "firstSeen"));
        d.insert("osPlatform".into(), text(&machine, "osPlatform"));
        d.insert("osBuild".into(), text(&machine, "osBuild"));
        d.insert("version".into(), text(&machine, "version"));
        d.insert("healthStatus".into(), json!("active"));
        d.insert(
            "riskScore".into(),
            json!(rng.pick(&["none", "low", "medium", "high"])),
        );
        d.insert("rbacGroupId".into(), text(&machine, "rbacGroupId"));
        d.insert("rbacGroupName".into(), text(&machine, "rbacGroupName"));
        d.insert("onboardingStatus".into(), json!("onboarded"));
        d.insert("defenderAvStatus".into(), json!("updated"));
        d.insert(
            "ipInterfaces".into(),
            json!([text(&machine, "lastIpAddress")]),
        );
        d.insert(
            "loggedOnUsers".into(),
            json!([{"accountName": user, "domainName": domain}]),
        );
        out.push(Value::Object(d));
        if source == "microsoftDefenderForEndpoint" {
            let mut f = common(rng, "fileEvidence");
            let name = *rng.pick(&["invoice.exe", "update.ps1", "svch0st.exe", "payload.dll"]);
            f.insert(
                "detectionStatus".into(),
                json!(rng.pick(&["detected", "blocked", "prevented"])),
            );
            f.insert("mdeDeviceId".into(), text(&machine, "id"));
            f.insert(
                "fileDetails".into(),
                json!({
                    "fileName": name,
                    "filePath": format!("C:\\Users\\{user}\\Downloads"),
                    "filePublisher": null,
                    "fileSize": 1024 + rng.below(4_000_000),
                    "issuer": null,
                    "sha1": rng.hex(40),
                    "sha256": rng.hex(64),
                    "signer": null,
                }),
            );
            out.push(Value::Object(f));
        }
    }
    if rng.chance(60) {
        let mut ip = common(rng, "ipEvidence");
        ip.insert(
            "ipAddress".into(),
            json!(format!("198.51.100.{}", 1 + rng.below(254))),
        );
        ip.insert(
            "countryLetterCode".into(),
            json!(rng.pick(&["US", "NL", "RU", "BR", "SG"])),
        );
        out.push(Value::Object(ip));
    }
    let mut u = common(rng, "userEvidence");
    u.insert(
        "userAccount".into(),
        json!({
            "accountName": user,
            "domainName": domain,
            "userSid": format!("S-1-5-21-{}-{}-{}-{}", 1000 + rng.below(9000), 1000 + rng.below(9000), 1000 + rng.below(9000), 1100 + rng.below(900)),
            "azureAdUserId": uuid::Uuid::from_u64_pair(rng.next(), rng.next()).to_string(),
            "userPrincipalName": format!("{user}@{domain}"),
            "displayName": user,
        }),
    );
    out.push(Value::Object(u));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_consistent() {
        let s = Scenario::default_scenario();
        let tid = s.tenants[0].id.clone();
        let now = 1_764_374_400_000;
        let a = generate(&s, &tid, now);
        let b = generate(&s, &tid, now);
        assert_eq!(a.alerts, b.alerts);
        assert_eq!(a.alerts.len(), MAIN_TENANT_ALERTS);
        for inc in &a.incidents {
            let id = inc["id"].as_str().unwrap();
            assert!(id.bytes().all(|c| c.is_ascii_digit()));
            let n = a.incident_alerts(id).len();
            assert!((1..=5).contains(&n), "{n}");
        }
        for source in SERVICE_SOURCES {
            assert!(a.alerts.iter().any(|x| x["serviceSource"] == *source));
        }
        let oldest = now - SPREAD_DAYS * 86_400_000;
        for x in &a.alerts {
            let created = x["createdDateTime"].as_str().unwrap();
            assert!(created >= Clock::format_ms(oldest).as_str());
            assert!(created <= Clock::format_ms(now).as_str());
        }
    }
}
