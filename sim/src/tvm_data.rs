//! Threat and vulnerability management data, derived deterministically from the scenario's
//! machines: a small software catalogue, the vulnerabilities (CVEs) of each software, the
//! software each machine has (by its `osPlatform`), missing KBs, security recommendations and
//! the exposure and secure scores.
//!
//! Facts the data keeps true (tests rely on them):
//! - A machine has its operating system's software (`osPlatform` `Windows10` →
//!   `microsoft-_-windows_10`, …) and each application whose platforms include the machine's
//!   family (Windows, Linux, macOS) and whose share the machine falls in (a hash of the
//!   machine id and the software id), in one version picked the same way.
//! - Every installed version of a software has every vulnerability of that software, so a
//!   machine's vulnerabilities are exactly the vulnerabilities of the software it has, and
//!   the machines affected by a CVE are exactly the machines with a software the CVE affects.
//! - A Windows machine misses the fixing KB of each vulnerability of its software that has
//!   one; other machines miss none.
//! - A machine has one recommendation (`va-_-{vendor}-_-{name}`) per vulnerable software.
//!
//! CVE ids name real vulnerabilities; their figures here are the simulator's own.

use serde_json::{Map, Value, json};

use crate::scenario::Scenario;

/// A platform family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `osPlatform` starting with `Windows`.
    Windows,
    /// Linux distributions.
    Linux,
    /// `macOS`.
    MacOs,
}

/// The family of an `osPlatform` value.
pub fn family_of(os_platform: &str) -> Option<Family> {
    let p = os_platform.to_ascii_lowercase();
    if p.starts_with("windows") {
        Some(Family::Windows)
    } else if p.starts_with("macos") {
        Some(Family::MacOs)
    } else if ["linux", "ubuntu", "debian", "redhat", "centos", "suse"]
        .iter()
        .any(|l| p.starts_with(l))
    {
        Some(Family::Linux)
    } else {
        None
    }
}

/// One software product of the catalogue.
#[derive(Debug)]
pub struct Software {
    /// Vendor (`microsoft`).
    pub vendor: &'static str,
    /// Product name (`edge_chromium-based`).
    pub name: &'static str,
    /// The `osPlatform` this operating system is (OS software only).
    pub os: Option<&'static str>,
    /// Families an application runs on (empty for OS software).
    pub families: &'static [Family],
    /// Percentage of eligible machines that have the application.
    pub share: u64,
    /// Versions seen in the organisation.
    pub versions: &'static [&'static str],
    /// Whether it is an operating system (recommendation category `OS`).
    pub is_os: bool,
}

impl Software {
    /// Microsoft's software id: `vendor-_-name`.
    pub fn id(&self) -> String {
        format!("{}-_-{}", self.vendor, self.name)
    }
}

/// One vulnerability of the catalogue.
#[derive(Debug)]
pub struct Cve {
    /// `CVE-YYYY-NNNN`.
    pub id: &'static str,
    /// `Low`, `Medium`, `High` or `Critical`.
    pub severity: &'static str,
    /// CVSS v3 base score.
    pub cvss: f64,
    /// Publication date.
    pub published: &'static str,
    /// Last update.
    pub updated: &'static str,
    /// A public exploit exists.
    pub public_exploit: bool,
    /// The exploit is verified.
    pub exploit_verified: bool,
    /// The exploit is part of an exploit kit.
    pub exploit_in_kit: bool,
    /// The KB that fixes it (Windows updates), if any.
    pub fixing_kb: Option<&'static str>,
    /// Ids of the software it affects.
    pub software: &'static [&'static str],
    /// What kind of flaw it is.
    pub kind: &'static str,
}

const WIN: &[Family] = &[Family::Windows];
const ALL: &[Family] = &[Family::Windows, Family::Linux, Family::MacOs];

/// The software catalogue.
pub static SOFTWARE: &[Software] = &[
    Software {
        vendor: "microsoft",
        name: "windows_10",
        os: Some("Windows10"),
        families: &[],
        share: 100,
        versions: &["10.0.19045.3930", "10.0.19045.4046"],
        is_os: true,
    },
    Software {
        vendor: "microsoft",
        name: "windows_11",
        os: Some("Windows11"),
        families: &[],
        share: 100,
        versions: &["10.0.22631.3007", "10.0.22631.3155"],
        is_os: true,
    },
    Software {
        vendor: "microsoft",
        name: "windows_server_2022",
        os: Some("WindowsServer2022"),
        families: &[],
        share: 100,
        versions: &["10.0.20348.2227"],
        is_os: true,
    },
    Software {
        vendor: "microsoft",
        name: "edge_chromium-based",
        os: None,
        families: &[Family::Windows, Family::MacOs],
        share: 100,
        versions: &["121.0.2277.128", "122.0.2365.52"],
        is_os: false,
    },
    Software {
        vendor: "google",
        name: "chrome",
        os: None,
        families: ALL,
        share: 60,
        versions: &["121.0.6167.185", "122.0.6261.94"],
        is_os: false,
    },
    Software {
        vendor: "mozilla",
        name: "firefox",
        os: None,
        families: &[Family::Windows, Family::Linux],
        share: 50,
        versions: &["122.0.1", "123.0"],
        is_os: false,
    },
    Software {
        vendor: "openbsd",
        name: "openssh",
        os: None,
        families: &[Family::Linux, Family::MacOs],
        share: 100,
        versions: &["8.9p1", "9.6p1"],
        is_os: false,
    },
    Software {
        vendor: "apache",
        name: "http_server",
        os: None,
        families: &[Family::Linux],
        share: 100,
        versions: &["2.4.58"],
        is_os: false,
    },
    Software {
        vendor: "git-scm",
        name: "git",
        os: None,
        families: ALL,
        share: 50,
        versions: &["2.43.0", "2.44.0"],
        is_os: false,
    },
    Software {
        vendor: "7-zip",
        name: "7-zip",
        os: None,
        families: WIN,
        share: 70,
        versions: &["23.01"],
        is_os: false,
    },
];

const fn cve(
    id: &'static str,
    (severity, cvss): (&'static str, f64),
    published: &'static str,
    exploit: (bool, bool, bool),
    fixing_kb: Option<&'static str>,
    software: &'static [&'static str],
    kind: &'static str,
) -> Cve {
    Cve {
        id,
        severity,
        cvss,
        published,
        updated: published,
        public_exploit: exploit.0,
        exploit_verified: exploit.1,
        exploit_in_kit: exploit.2,
        fixing_kb,
        software,
        kind,
    }
}

const NO_EXPLOIT: (bool, bool, bool) = (false, false, false);

/// The vulnerability catalogue.
pub static CVES: &[Cve] = &[
    cve(
        "CVE-2024-21338",
        ("High", 7.8),
        "2024-02-13T00:00:00Z",
        (true, true, false),
        Some("5034763"),
        &[
            "microsoft-_-windows_10",
            "microsoft-_-windows_11",
            "microsoft-_-windows_server_2022",
        ],
        "An elevation of privilege",
    ),
    cve(
        "CVE-2024-21412",
        ("High", 8.1),
        "2024-02-13T00:00:00Z",
        (true, false, false),
        Some("5034763"),
        &["microsoft-_-windows_10", "microsoft-_-windows_11"],
        "A security feature bypass",
    ),
    cve(
        "CVE-2024-38063",
        ("Critical", 9.8),
        "2024-08-13T00:00:00Z",
        NO_EXPLOIT,
        Some("5041580"),
        &[
            "microsoft-_-windows_10",
            "microsoft-_-windows_11",
            "microsoft-_-windows_server_2022",
        ],
        "A remote code execution",
    ),
    cve(
        "CVE-2024-30078",
        ("High", 8.8),
        "2024-06-11T00:00:00Z",
        NO_EXPLOIT,
        Some("5039211"),
        &["microsoft-_-windows_10"],
        "A remote code execution",
    ),
    cve(
        "CVE-2024-43461",
        ("Medium", 6.5),
        "2024-09-10T00:00:00Z",
        (true, true, false),
        Some("5043050"),
        &["microsoft-_-windows_server_2022"],
        "A spoofing",
    ),
    cve(
        "CVE-2024-7971",
        ("High", 8.8),
        "2024-08-21T00:00:00Z",
        (true, true, true),
        None,
        &["microsoft-_-edge_chromium-based", "google-_-chrome"],
        "A type confusion",
    ),
    cve(
        "CVE-2024-4671",
        ("Critical", 9.6),
        "2024-05-14T00:00:00Z",
        (true, false, false),
        None,
        &["google-_-chrome", "microsoft-_-edge_chromium-based"],
        "A use-after-free",
    ),
    cve(
        "CVE-2024-9680",
        ("Critical", 9.8),
        "2024-10-09T00:00:00Z",
        (true, true, false),
        None,
        &["mozilla-_-firefox"],
        "A use-after-free",
    ),
    cve(
        "CVE-2024-6387",
        ("High", 8.1),
        "2024-07-01T00:00:00Z",
        (true, false, false),
        None,
        &["openbsd-_-openssh"],
        "A race condition",
    ),
    cve(
        "CVE-2023-48795",
        ("Medium", 5.9),
        "2023-12-18T00:00:00Z",
        NO_EXPLOIT,
        None,
        &["openbsd-_-openssh"],
        "A prefix truncation",
    ),
    cve(
        "CVE-2023-51767",
        ("Low", 3.1),
        "2023-12-24T00:00:00Z",
        NO_EXPLOIT,
        None,
        &["openbsd-_-openssh"],
        "An authentication bypass",
    ),
    cve(
        "CVE-2024-38476",
        ("Critical", 9.8),
        "2024-07-01T00:00:00Z",
        NO_EXPLOIT,
        None,
        &["apache-_-http_server"],
        "An information disclosure",
    ),
    cve(
        "CVE-2024-32002",
        ("Critical", 9.0),
        "2024-05-14T00:00:00Z",
        (true, false, false),
        None,
        &["git-scm-_-git"],
        "A remote code execution",
    ),
    cve(
        "CVE-2023-25652",
        ("High", 7.5),
        "2023-04-25T00:00:00Z",
        NO_EXPLOIT,
        None,
        &["git-scm-_-git"],
        "A path traversal",
    ),
];

/// FNV-1a of the parts (stable across runs and platforms).
fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b.to_ascii_lowercase());
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn text<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A machine's id.
pub fn machine_id(m: &Map<String, Value>) -> &str {
    text(m, "id")
}

/// One software on one machine.
#[derive(Debug, Clone, Copy)]
pub struct Installed {
    /// The software.
    pub software: &'static Software,
    /// Its version there.
    pub version: &'static str,
}

/// The software a machine has, in catalogue order.
pub fn installed(machine: &Map<String, Value>) -> Vec<Installed> {
    let platform = text(machine, "osPlatform");
    let id = machine_id(machine);
    let family = family_of(platform);
    SOFTWARE
        .iter()
        .filter(|s| match s.os {
            Some(os) => os.eq_ignore_ascii_case(platform),
            None => {
                family.is_some_and(|f| s.families.contains(&f))
                    && hash(&[id, &s.id()]) % 100 < s.share
            }
        })
        .map(|s| Installed {
            software: s,
            version: s.versions
                [(hash(&[id, &s.id(), "version"]) % s.versions.len() as u64) as usize],
        })
        .collect()
}

/// The software with this id (case-insensitive).
pub fn software(id: &str) -> Option<&'static Software> {
    SOFTWARE.iter().find(|s| s.id().eq_ignore_ascii_case(id))
}

/// The vulnerability with this id (case-insensitive).
pub fn cve_by_id(id: &str) -> Option<&'static Cve> {
    CVES.iter().find(|c| c.id.eq_ignore_ascii_case(id))
}

/// The vulnerabilities of a software.
pub fn cves_of(software: &Software) -> Vec<&'static Cve> {
    let id = software.id();
    CVES.iter()
        .filter(|c| c.software.iter().any(|s| *s == id))
        .collect()
}

/// The machines that have a software.
pub fn machines_with<'a>(
    scenario: &'a Scenario,
    software: &Software,
) -> Vec<&'a Map<String, Value>> {
    scenario
        .machines
        .iter()
        .filter(|m| {
            installed(m)
                .iter()
                .any(|i| std::ptr::eq(i.software, software))
        })
        .collect()
}

/// The machines a vulnerability affects: those with a software it affects.
pub fn machines_affected<'a>(scenario: &'a Scenario, cve: &Cve) -> Vec<&'a Map<String, Value>> {
    scenario
        .machines
        .iter()
        .filter(|m| {
            installed(m)
                .iter()
                .any(|i| cve.software.iter().any(|s| *s == i.software.id()))
        })
        .collect()
}

/// A machine's vulnerabilities (each once, catalogue order).
pub fn machine_cves(machine: &Map<String, Value>) -> Vec<&'static Cve> {
    let have = installed(machine);
    CVES.iter()
        .filter(|c| {
            have.iter()
                .any(|i| c.software.iter().any(|s| *s == i.software.id()))
        })
        .collect()
}

/// A Software entity.
pub fn software_json(scenario: &Scenario, software: &Software) -> Value {
    let cves = cves_of(software);
    let exposed = if cves.is_empty() {
        0
    } else {
        machines_with(scenario, software).len()
    };
    let impact: f64 = cves.iter().map(|c| c.cvss).sum::<f64>() * exposed as f64 / 100.0;
    json!({
        "id": software.id(),
        "name": software.name,
        "vendor": software.vendor,
        "weaknesses": cves.len(),
        "publicExploit": cves.iter().any(|c| c.public_exploit),
        "activeAlert": false,
        "exposedMachines": exposed,
        "impactScore": (impact * 1000.0).round() / 1000.0,
    })
}

/// The software inventory: every catalogue software at least one machine has.
pub fn inventory(scenario: &Scenario) -> Vec<Value> {
    SOFTWARE
        .iter()
        .filter(|s| !machines_with(scenario, s).is_empty())
        .map(|s| software_json(scenario, s))
        .collect()
}

/// A Vulnerability entity.
pub fn cve_json(scenario: &Scenario, cve: &Cve) -> Value {
    let exploit_types: Vec<&str> = if cve.public_exploit {
        vec!["PrivilegeEscalation"]
    } else {
        Vec::new()
    };
    let exploit_uris: Vec<String> = if cve.public_exploit {
        vec![format!(
            "https://exploits.example/{}",
            cve.id.to_ascii_lowercase()
        )]
    } else {
        Vec::new()
    };
    let products: Vec<String> = cve
        .software
        .iter()
        .filter_map(|s| software(s))
        .map(|s| s.name.to_string())
        .collect();
    json!({
        "id": cve.id,
        "name": cve.id,
        "description": format!(
            "{} vulnerability in {}.",
            cve.kind,
            products.join(", ")
        ),
        "severity": cve.severity,
        "cvssV3": cve.cvss,
        "cvssVector": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "exposedMachines": machines_affected(scenario, cve).len(),
        "publishedOn": cve.published,
        "updatedOn": cve.updated,
        "publicExploit": cve.public_exploit,
        "exploitVerified": cve.exploit_verified,
        "exploitInKit": cve.exploit_in_kit,
        "exploitTypes": exploit_types,
        "exploitUris": exploit_uris,
        "cveSupportability": "Supported",
    })
}

/// A MachineReference.
pub fn machine_reference(machine: &Map<String, Value>) -> Value {
    json!({
        "id": machine_id(machine),
        "computerDnsName": machine.get("computerDnsName").cloned().unwrap_or(Value::Null),
        "osPlatform": machine.get("osPlatform").cloned().unwrap_or(Value::Null),
        "rbacGroupName": machine.get("rbacGroupName").cloned().unwrap_or(Value::Null),
        "rbacGroupId": machine.get("rbacGroupId").cloned().unwrap_or(Value::Null),
        "firstSeen": machine.get("firstSeen").cloned().unwrap_or(Value::Null),
        "lastSeen": machine.get("lastSeen").cloned().unwrap_or(Value::Null),
    })
}

/// Every (machine, software, vulnerability) row of `/api/vulnerabilities/machinesVulnerabilities`.
pub fn machine_vulnerability_rows(scenario: &Scenario) -> Vec<Value> {
    let mut rows = Vec::new();
    for machine in &scenario.machines {
        let mid = machine_id(machine).to_ascii_lowercase();
        for i in installed(machine) {
            for c in cves_of(i.software) {
                let kb = c.fixing_kb.unwrap_or_default();
                rows.push(json!({
                    "id": format!(
                        "{mid}-_-{}-_-{}-_-{}-_-{}-_-{kb}",
                        c.id, i.software.vendor, i.software.name, i.version
                    ),
                    "cveId": c.id,
                    "machineId": mid,
                    "fixingKbId": c.fixing_kb,
                    "productName": i.software.name,
                    "productVendor": i.software.vendor,
                    "productVersion": i.version,
                    "severity": c.severity,
                }));
            }
        }
    }
    rows
}

/// The version distribution of a software.
pub fn distributions(scenario: &Scenario, software: &Software) -> Vec<Value> {
    let weaknesses = cves_of(software).len();
    software
        .versions
        .iter()
        .filter_map(|v| {
            let n = scenario
                .machines
                .iter()
                .filter(|m| {
                    installed(m)
                        .iter()
                        .any(|i| std::ptr::eq(i.software, software) && i.version == *v)
                })
                .count();
            (n > 0)
                .then(|| json!({"version": v, "installations": n, "vulnerabilities": weaknesses}))
        })
        .collect()
}

/// The KBs a machine misses (Windows machines only).
pub fn missing_kbs(scenario: &Scenario, machine: &Map<String, Value>) -> Vec<Value> {
    if family_of(text(machine, "osPlatform")) != Some(Family::Windows) {
        return Vec::new();
    }
    let mut kbs: Vec<&str> = Vec::new();
    for c in machine_cves(machine) {
        if let Some(kb) = c.fixing_kb
            && !kbs.contains(&kb)
        {
            kbs.push(kb);
        }
    }
    let os_build = machine
        .get("osBuild")
        .cloned()
        .filter(|v| !v.is_null())
        .unwrap_or(Value::Null);
    kbs.into_iter()
        .map(|kb| kb_json(scenario, kb, os_build.clone()))
        .collect()
}

/// The KBs that fix vulnerabilities of `software`, when a Windows machine has it (what
/// `GET /api/Software/{id}/getmissingkbs` answers).
pub fn software_missing_kbs(scenario: &Scenario, software: &Software) -> Vec<Value> {
    if machines_with(scenario, software).is_empty() {
        return Vec::new();
    }
    let mut kbs: Vec<&str> = Vec::new();
    for c in cves_of(software) {
        if let Some(kb) = c.fixing_kb
            && !kbs.contains(&kb)
        {
            kbs.push(kb);
        }
    }
    kbs.into_iter()
        .map(|kb| kb_json(scenario, kb, Value::Null))
        .collect()
}

/// One missing KB as Defender describes it: the products it fixes, the Windows machines that
/// miss it, the CVEs it addresses.
fn kb_json(scenario: &Scenario, kb: &str, os_build: Value) -> Value {
    let fixed: Vec<&Cve> = CVES.iter().filter(|c| c.fixing_kb == Some(kb)).collect();
    let mut products: Vec<&str> = Vec::new();
    for c in &fixed {
        for s in c.software {
            if let Some(sw) = software(s)
                && !products.contains(&sw.name)
            {
                products.push(sw.name);
            }
        }
    }
    let missed_on = scenario
        .machines
        .iter()
        .filter(|m| family_of(text(m, "osPlatform")) == Some(Family::Windows))
        .filter(|m| machine_cves(m).iter().any(|c| c.fixing_kb == Some(kb)))
        .count();
    let month = fixed
        .first()
        .map(|c| &c.published[..7])
        .unwrap_or("2024-01");
    json!({
        "id": kb,
        "name": format!("{month} Cumulative Security Update"),
        "osBuild": os_build,
        "productsNames": products,
        "url": format!("https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB{kb}"),
        "machineMissedOn": missed_on,
        "cveAddressed": fixed.len(),
    })
}

/// The security recommendations of a machine: one per vulnerable software.
pub fn recommendations(scenario: &Scenario, machine: &Map<String, Value>) -> Vec<Value> {
    installed(machine)
        .into_iter()
        .filter_map(|i| {
            let cves = cves_of(i.software);
            if cves.is_empty() {
                return None;
            }
            let s = i.software;
            let latest = s.versions.last().copied().unwrap_or(i.version);
            let recommended = format!("{latest}.1");
            let exposed = machines_with(scenario, s).len();
            let severity = cves.iter().map(|c| c.cvss).fold(0.0_f64, f64::max);
            Some(json!({
                "id": format!("va-_-{}-_-{}", s.vendor, s.name),
                "productName": s.name,
                "recommendationName": format!("Update {} to version {recommended}", s.name),
                "weaknesses": cves.len(),
                "vendor": s.vendor,
                "recommendedVersion": recommended,
                "recommendationCategory": if s.is_os { "OS" } else { "Application" },
                "subCategory": "",
                "severityScore": severity,
                "publicExploit": cves.iter().any(|c| c.public_exploit),
                "activeAlert": false,
                "associatedThreats": [],
                "remediationType": "Update",
                "status": "Active",
                "configScoreImpact": 0,
                "exposureImpact": (severity * exposed as f64 / 10.0 * 100.0).round() / 100.0,
                "totalMachineCount": exposed,
                "exposedMachinesCount": exposed,
                "nonProductivityImpactedAssets": 0,
                "relatedComponent": s.name,
            }))
        })
        .collect()
}

/// The organisation's exposure score (0–100): the mean over machines of the highest CVSS of
/// their vulnerabilities, scaled to 100.
pub fn exposure_score(scenario: &Scenario) -> f64 {
    let n = scenario.machines.len();
    if n == 0 {
        return 0.0;
    }
    let sum: f64 = scenario
        .machines
        .iter()
        .map(|m| {
            machine_cves(m)
                .iter()
                .map(|c| c.cvss)
                .fold(0.0_f64, f64::max)
        })
        .sum();
    (sum / n as f64 * 10.0 * 1000.0).round() / 1000.0
}

/// The secure score for devices (0–1000): 1000 less 10 per recommendation of each machine,
/// averaged.
pub fn secure_score(scenario: &Scenario) -> f64 {
    let n = scenario.machines.len();
    if n == 0 {
        return 1000.0;
    }
    let sum: f64 = scenario
        .machines
        .iter()
        .map(|m| 1000.0 - 10.0 * recommendations(scenario, m).len() as f64)
        .sum();
    (sum / n as f64).round()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cve_names_catalogue_software_and_ids_are_well_formed() {
        for c in CVES {
            assert!(c.id.starts_with("CVE-"), "{}", c.id);
            for s in c.software {
                assert!(software(s).is_some(), "{} names {s}", c.id);
            }
            assert!(["Low", "Medium", "High", "Critical"].contains(&c.severity));
            assert!((0.0..=10.0).contains(&c.cvss));
        }
    }

    #[test]
    fn machines_have_their_os_and_vulnerabilities_of_their_software() {
        let s = Scenario::default_scenario();
        for m in &s.machines {
            let have = installed(m);
            let platform = text(m, "osPlatform");
            if let Some(os) = SOFTWARE.iter().find(|x| x.os == Some(platform)) {
                assert!(have.iter().any(|i| std::ptr::eq(i.software, os)));
            }
            for c in machine_cves(m) {
                assert!(machines_affected(&s, c).iter().any(|x| std::ptr::eq(*x, m)));
            }
        }
        assert!(!machine_vulnerability_rows(&s).is_empty());
        assert!(exposure_score(&s) > 0.0);
    }
}
