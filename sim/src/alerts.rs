//! Alerts: the scenario's own and those generated from its seed at load time, in Defender's
//! shape, with evidence consistent with the scenario (its machines, the files of
//! `file_machines`, the domains of `domain_machines`, the tenant's users), and the entities the
//! `/alerts/{id}/files|ips|domains|user` routes derive from the evidence.

use serde_json::{Map, Value, json};

use crate::scenario::Scenario;
use crate::state::Clock;

/// Severities, statuses, ... the generator picks from.
const SEVERITIES: &[&str] = &["Informational", "Low", "Low", "Medium", "Medium", "High"];
const STATUSES: &[&str] = &["New", "New", "InProgress", "Resolved"];
const DETECTION_SOURCES: &[&str] = &[
    "WindowsDefenderAv",
    "WindowsDefenderAtp",
    "WindowsDefenderSmartScreen",
    "CustomerTI",
    "AutomatedInvestigation",
    "CustomDetection",
];
const CATEGORIES: &[&str] = &[
    "Malware",
    "Execution",
    "CommandAndControl",
    "CredentialAccess",
    "DefenseEvasion",
    "Discovery",
    "LateralMovement",
    "Persistence",
    "SuspiciousActivity",
    "InitialAccess",
];
/// (classification, determinations) of resolved alerts.
const VERDICTS: &[(&str, &[&str])] = &[
    (
        "TruePositive",
        &[
            "Malware",
            "MultiStagedAttack",
            "CompromisedUser",
            "Phishing",
        ],
    ),
    (
        "FalsePositive",
        &["NotMalicious", "InsufficientData", "Other"],
    ),
    (
        "InformationalExpectedActivity",
        &[
            "SecurityTesting",
            "LineOfBusinessApplication",
            "ConfirmedActivity",
        ],
    ),
];
const THREATS: &[(&str, &str)] = &[
    ("Suspicious PowerShell command line", "T1059.001"),
    ("Mimikatz credential theft tool", "T1003.001"),
    (
        "Connection to a known command and control server",
        "T1071.001",
    ),
    ("Suspicious scheduled task created", "T1053.005"),
    ("Ransomware behavior detected", "T1486"),
    ("Suspicious process discovery", "T1057"),
    ("Phishing link opened", "T1566.002"),
    ("Suspicious remote service installation", "T1021.002"),
];
const ACCOUNTS: &[&str] = &["jdoe", "asmith", "bwilson", "mlopez", "svc-backup"];
const EXTRA_IPS: &[&str] = &["203.0.113.10", "198.51.100.23", "192.0.2.77"];
const EXTRA_DOMAINS: &[&str] = &["update-check.example", "cdn-files.example"];
const EXTRA_FILES: &[(&str, &str, &str)] = &[
    (
        "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
        "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
        "payload.exe",
    ),
    (
        "7c4a8d09ca3762af61e59520943dc26494f8941b",
        "8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92",
        "invoice.docm",
    ),
];

/// A small deterministic generator (SplitMix64): the same seed gives the same alerts on
/// every platform and release.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The alerts of a freshly loaded world: the scenario's, then the generated ones; newest
/// first by `alertCreationTime`.
pub fn load(scenario: &Scenario, now_ms: i64) -> Vec<Map<String, Value>> {
    let mut alerts = scenario.alerts.clone();
    if let Some(g) = scenario.alert_generation {
        alerts.extend(generate(scenario, g.count, g.seed, g.days, now_ms));
    }
    alerts.sort_by(|a, b| {
        let t = |m: &Map<String, Value>| {
            m.get("alertCreationTime")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        t(b).cmp(&t(a))
    });
    alerts
}

/// `count` alerts from `seed`, created within `days` before `now_ms`, on the scenario's
/// machines.
pub fn generate(
    scenario: &Scenario,
    count: usize,
    seed: u64,
    days: u32,
    now_ms: i64,
) -> Vec<Map<String, Value>> {
    let mut rng = Rng(seed);
    let machines: Vec<&Map<String, Value>> = scenario.machines.iter().collect();
    let tenant_id = scenario
        .first_tenant()
        .map(|t| t.id.clone())
        .unwrap_or_default();
    let analysts: Vec<String> = scenario
        .first_tenant()
        .map(|t| t.users.iter().map(|u| u.upn.clone()).collect())
        .unwrap_or_default();
    let mut files: Vec<(String, Option<String>, String)> = Vec::new();
    for hash in scenario.file_machines.keys() {
        let h = hash.to_ascii_lowercase();
        if h.len() == 40 {
            files.push((h, None, "dropper.exe".into()));
        } else {
            files.push((String::new(), Some(h), "loader.dll".into()));
        }
    }
    for (sha1, sha256, name) in EXTRA_FILES {
        files.push((sha1.to_string(), Some(sha256.to_string()), name.to_string()));
    }
    let mut domains: Vec<String> = scenario.domain_machines.keys().cloned().collect();
    domains.extend(EXTRA_DOMAINS.iter().map(|d| d.to_string()));
    let span_ms = i64::from(days.max(1)) * 86_400_000;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let created = now_ms - (rng.next() % span_ms as u64) as i64 - 60_000;
        let first_event = created - (rng.below(3_600) as i64 + 1) * 1000;
        let last_event = created - rng.below(60) as i64 * 1000;
        let machine = if machines.is_empty() {
            None
        } else {
            Some(machines[rng.below(machines.len())])
        };
        let mtext = |key: &str| {
            machine
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let severity = *rng.pick(SEVERITIES);
        let status = *rng.pick(STATUSES);
        let detection_source = *rng.pick(DETECTION_SOURCES);
        let category = *rng.pick(CATEGORIES);
        let (title, technique) = *rng.pick(THREATS);
        let account = *rng.pick(ACCOUNTS);
        let (classification, determination) = match status {
            "Resolved" => {
                let (c, ds) = *rng.pick(VERDICTS);
                (json!(c), json!(*rng.pick(ds)))
            }
            "InProgress" if rng.below(3) == 0 => (json!("TruePositive"), json!("Malware")),
            _ => (Value::Null, Value::Null),
        };
        let assigned = if status != "New" && !analysts.is_empty() {
            json!(rng.pick(&analysts))
        } else {
            Value::Null
        };
        let updated = if status == "New" {
            created
        } else {
            (created + rng.below(86_400) as i64 * 1000).min(now_ms)
        };
        let resolved = if status == "Resolved" {
            json!(Clock::format_ms(updated))
        } else {
            Value::Null
        };
        let ticks = 637_000_000_000_000_000u64 + (created.max(0) as u64) * 10_000;
        let id = format!(
            "da{ticks}_{}",
            -((rng.next() % 2_000_000_000) as i64) - i as i64
        );
        let (sha1, sha256, file_name) = rng.pick(&files).clone();
        let ip = if rng.below(2) == 0 {
            mtext("lastIpAddress")
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| EXTRA_IPS[0].to_string())
        } else {
            rng.pick(EXTRA_IPS).to_string()
        };
        let domain = rng.pick(&domains).clone();
        let at = Clock::format_ms(first_event);
        let mut evidence = vec![
            json!({
                "entityType": "File", "evidenceCreationTime": at,
                "sha1": if sha1.is_empty() { Value::Null } else { json!(sha1) },
                "sha256": sha256, "fileName": file_name,
                "filePath": format!("C:\\Users\\{account}\\Downloads"),
                "processId": null, "processCommandLine": null, "processCreationTime": null,
                "parentProcessId": null, "parentProcessCreationTime": null,
                "ipAddress": null, "url": null, "registryKey": null, "registryHive": null,
                "registryValueType": null, "registryValue": null,
                "accountName": null, "domainName": null, "userSid": null, "aadUserId": null,
                "userPrincipalName": null, "detectionStatus": "Detected"
            }),
            json!({
                "entityType": "Ip", "evidenceCreationTime": at, "ipAddress": ip,
                "sha1": null, "sha256": null, "fileName": null, "filePath": null, "url": null,
                "accountName": null, "domainName": null, "detectionStatus": null
            }),
            json!({
                "entityType": "Url", "evidenceCreationTime": at,
                "url": format!("https://{domain}/"), "ipAddress": null,
                "sha1": null, "sha256": null, "fileName": null, "filePath": null,
                "accountName": null, "domainName": null, "detectionStatus": null
            }),
            json!({
                "entityType": "User", "evidenceCreationTime": at,
                "accountName": account, "domainName": "CONTOSO",
                "userSid": format!("S-1-5-21-1004336348-1177238915-682003330-{}", 1100 + ACCOUNTS.iter().position(|a| *a == account).unwrap_or(0)),
                "aadUserId": null, "userPrincipalName": format!("{account}@contoso.com"),
                "sha1": null, "sha256": null, "fileName": null, "filePath": null,
                "ipAddress": null, "url": null, "detectionStatus": null
            }),
        ];
        if rng.below(4) == 0 {
            evidence.truncate(2);
        }
        let incident = 100 + (i / 3) as i64;
        let alert = json!({
            "id": id,
            "incidentId": incident,
            "investigationId": if detection_source == "AutomatedInvestigation" { json!(5000 + i as i64) } else { Value::Null },
            "assignedTo": assigned,
            "severity": severity,
            "status": status,
            "classification": classification,
            "determination": determination,
            "investigationState": if status == "Resolved" { "Benign" } else { "Running" },
            "detectionSource": detection_source,
            "detectorId": stable_guid(&format!("{seed}/{title}")),
            "category": category,
            "threatFamilyName": if category == "Malware" { json!("Mimikatz") } else { Value::Null },
            "title": title,
            "description": format!("{title} on {}.", mtext("computerDnsName").as_str().unwrap_or("a device")),
            "alertCreationTime": Clock::format_ms(created),
            "firstEventTime": Clock::format_ms(first_event),
            "lastEventTime": Clock::format_ms(last_event),
            "lastUpdateTime": Clock::format_ms(updated),
            "resolvedTime": resolved,
            "machineId": mtext("id"),
            "computerDnsName": mtext("computerDnsName"),
            "rbacGroupName": mtext("rbacGroupName"),
            "aadTenantId": tenant_id,
            "threatName": if category == "Malware" { json!("HackTool:Win32/Mimikatz") } else { Value::Null },
            "mitreTechniques": [technique],
            "relatedUser": {"userName": account, "domainName": "CONTOSO"},
            "loggedOnUsers": [{"accountName": account, "domainName": "CONTOSO"}],
            "comments": [],
            "evidence": evidence,
        });
        if let Value::Object(map) = alert {
            out.push(map);
        }
    }
    out
}

/// A GUID derived from `seed`.
fn stable_guid(seed: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

fn evidence<'a>(alert: &'a Map<String, Value>, kind: &'a str) -> impl Iterator<Item = &'a Value> {
    alert
        .get("evidence")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |e| {
            e.get("entityType")
                .and_then(Value::as_str)
                .is_some_and(|t| t.eq_ignore_ascii_case(kind))
        })
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The File entities of an alert (`/alerts/{id}/files`), one per distinct file.
pub fn files(alert: &Map<String, Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for e in evidence(alert, "File") {
        let sha1 = text(e, "sha1");
        let sha256 = text(e, "sha256");
        if out
            .iter()
            .any(|f| text(f, "sha1") == sha1 && text(f, "sha256") == sha256)
        {
            continue;
        }
        out.push(json!({
            "sha1": sha1, "sha256": sha256, "md5": null,
            "globalPrevalence": 1_247, "globalFirstObserved": "2024-02-11T10:21:03.0000000Z",
            "globalLastObserved": e.get("evidenceCreationTime"),
            "size": 482_304, "fileType": null, "isPeFile": true,
            "filePublisher": null, "fileProductName": null, "signer": null, "issuer": null,
            "signerHash": null, "isValidCertificate": false,
            "determinationType": "Malware", "determinationValue": "HackTool:Win32/Mimikatz",
            "fileName": e.get("fileName"), "filePath": e.get("filePath"),
        }));
    }
    out
}

/// The IP addresses of an alert (`/alerts/{id}/ips`).
pub fn ips(alert: &Map<String, Value>) -> Vec<Value> {
    let mut seen: Vec<String> = Vec::new();
    for e in evidence(alert, "Ip") {
        if let Some(ip) = text(e, "ipAddress")
            && !seen.iter().any(|s| s == ip)
        {
            seen.push(ip.to_string());
        }
    }
    seen.into_iter().map(|ip| json!({"id": ip})).collect()
}

/// The host of a URL (`https://host/...` → `host`).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', ':', '?', '#']).next().unwrap_or(rest)
}

/// The domains of an alert (`/alerts/{id}/domains`).
pub fn domains(alert: &Map<String, Value>) -> Vec<Value> {
    let mut seen: Vec<String> = Vec::new();
    for e in evidence(alert, "Url") {
        if let Some(url) = text(e, "url") {
            let host = host_of(url).to_ascii_lowercase();
            if !host.is_empty() && !seen.contains(&host) {
                seen.push(host);
            }
        }
    }
    seen.into_iter().map(|d| json!({"host": d})).collect()
}

/// The user of an alert (`/alerts/{id}/user`): from its User evidence, else `relatedUser`.
pub fn user(alert: &Map<String, Value>) -> Option<Value> {
    let (name, domain, sid) = match evidence(alert, "User").next() {
        Some(e) => (
            text(e, "accountName")?.to_string(),
            text(e, "domainName").unwrap_or("").to_string(),
            e.get("userSid").cloned().unwrap_or(Value::Null),
        ),
        None => {
            let related = alert.get("relatedUser")?;
            (
                text(related, "userName")?.to_string(),
                text(related, "domainName").unwrap_or("").to_string(),
                Value::Null,
            )
        }
    };
    Some(json!({
        "id": format!("{}\\{}", domain.to_ascii_lowercase(), name),
        "accountName": name,
        "accountDomain": domain.to_ascii_lowercase(),
        "accountSid": sid,
        "firstSeen": alert.get("firstEventTime"),
        "lastSeen": alert.get("lastEventTime"),
        "mostPrevalentMachineId": alert.get("machineId"),
        "leastPrevalentMachineId": alert.get("machineId"),
        "logonTypes": "Interactive",
        "logOnMachinesCount": 1,
        "isDomainAdmin": false,
        "isOnlyNetworkUser": false,
    }))
}

/// Whether the alert concerns the file (SHA1 or SHA256, any case).
pub fn has_file(alert: &Map<String, Value>, hash: &str) -> bool {
    evidence(alert, "File").any(|e| {
        [text(e, "sha1"), text(e, "sha256")]
            .into_iter()
            .flatten()
            .any(|h| h.eq_ignore_ascii_case(hash))
    })
}

/// Whether the alert concerns the IP address.
pub fn has_ip(alert: &Map<String, Value>, ip: &str) -> bool {
    evidence(alert, "Ip").any(|e| text(e, "ipAddress").is_some_and(|i| i.eq_ignore_ascii_case(ip)))
}

/// Whether the alert concerns the domain (a URL on it or a subdomain of it).
pub fn has_domain(alert: &Map<String, Value>, domain: &str) -> bool {
    let d = domain.to_ascii_lowercase();
    evidence(alert, "Url").any(|e| {
        text(e, "url").is_some_and(|u| {
            let host = host_of(u).to_ascii_lowercase();
            host == d || host.ends_with(&format!(".{d}"))
        })
    })
}

/// Whether the alert concerns the user (account name, `DOMAIN\name` or UPN).
pub fn has_user(alert: &Map<String, Value>, user: &str) -> bool {
    let name = user.rsplit('\\').next().unwrap_or(user);
    let name = name.split('@').next().unwrap_or(name);
    let related = alert
        .get("relatedUser")
        .and_then(|r| text(r, "userName"))
        .is_some_and(|u| u.eq_ignore_ascii_case(name));
    related
        || evidence(alert, "User")
            .any(|e| text(e, "accountName").is_some_and(|a| a.eq_ignore_ascii_case(name)))
}

/// Whether the alert is on the machine.
pub fn on_machine(alert: &Map<String, Value>, machine_id: &str) -> bool {
    alert
        .get("machineId")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case(machine_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_varied() {
        let s = Scenario::default_scenario();
        let a = generate(&s, 200, 7, 60, 1_764_374_400_000);
        let b = generate(&s, 200, 7, 60, 1_764_374_400_000);
        assert_eq!(a, b);
        let distinct = |key: &str| {
            let mut v: Vec<String> = a
                .iter()
                .filter_map(|x| x.get(key).and_then(Value::as_str).map(str::to_string))
                .collect();
            v.sort();
            v.dedup();
            v.len()
        };
        assert_eq!(distinct("severity"), 4);
        assert_eq!(distinct("status"), 3);
        assert!(distinct("classification") >= 3);
        assert!(distinct("detectionSource") >= 5);
        assert_eq!(distinct("id"), 200);
        let c = generate(&s, 200, 8, 60, 1_764_374_400_000);
        assert_ne!(a, c);
        for alert in &a {
            let m = alert["machineId"].as_str().unwrap();
            assert!(s.machine(m).is_some());
            assert!(!files(alert).is_empty());
            assert!(!ips(alert).is_empty());
        }
    }

    #[test]
    fn related_entities_come_from_evidence() {
        let s = Scenario::default_scenario();
        let a = generate(&s, 50, 1, 60, 1_764_374_400_000);
        let with_url = a.iter().find(|x| !domains(x).is_empty()).unwrap();
        let host = domains(with_url)[0]["host"].as_str().unwrap().to_string();
        assert!(has_domain(with_url, &host));
        let u = user(with_url).unwrap();
        assert!(has_user(with_url, u["accountName"].as_str().unwrap()));
        assert_eq!(host_of("https://a.example:8443/x"), "a.example");
    }
}
