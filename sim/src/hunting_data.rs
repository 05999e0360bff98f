//! Advanced hunting tables, generated deterministically from the scenario (seed: the
//! scenario's `alert_generation.seed`, else 0) with timestamps within the 25 days before the
//! simulated "now" of first use.
//!
//! Facts the tables keep true (tests rely on them):
//! - `DeviceInfo` has 3 rows per scenario machine: `DeviceId` = machine `id`, `DeviceName` =
//!   `computerDnsName`, `PublicIP` = `lastExternalIpAddress`, `OSPlatform`, `OSVersion`,
//!   `MachineGroup` = `rbacGroupName`, `OnboardingStatus`.
//! - Every key of `file_machines` (a SHA1 of 40 hex digits or a SHA256 of 64) appears in
//!   `DeviceFileEvents` (one `FileCreated` row with `FileOriginUrl` and `FileOriginIP`) and in
//!   `DeviceProcessEvents` (one `ProcessCreated` row) on exactly the machines listed for it and
//!   on no other (in the column of its kind, lower-case). The file is named `dropper.exe` for
//!   a SHA1 key and `loader.dll` for a SHA256 key (as in the generated alerts); its other hash
//!   is derived from the key.
//! - Every key of `domain_machines` appears as `RemoteUrl` of `DeviceNetworkEvents`
//!   (`ConnectionSuccess`, port 443) on exactly the machines listed; other rows never use a
//!   URL containing such a key.
//! - Every network event of a machine has `LocalIP` = its `lastIpAddress`.
//! - The first tenant's users log on: `DeviceLogonEvents` (`AccountName` = the UPN's local
//!   part, `AccountDomain` = the first label of the UPN's domain, e.g. `contoso`) with an
//!   `Interactive` logon on a scenario machine, `Network` and `RemoteInteractive` logons from
//!   one scenario machine to another (`RemoteIP`/`RemoteDeviceName` = the source machine), and
//!   a `LogonFailed`; `IdentityLogonEvents` has their logons by `AccountUpn` on the same
//!   machines.
//! - Attack traces on the first machine (persistence, privilege escalation, tampering,
//!   cover-up): `DeviceRegistryEvents` writes a value under
//!   `HKEY_CURRENT_USER\Software\Microsoft\Windows\CurrentVersion\Run`; `DeviceProcessEvents`
//!   has `schtasks.exe /create ...`, `runas.exe /user:...`, `whoami.exe /priv`,
//!   `powershell.exe ... Set-MpPreference -DisableRealtimeMonitoring $true`,
//!   `sc.exe stop WinDefend`, `wevtutil.exe cl Security`; `DeviceFileEvents` has a
//!   `FileDeleted` row.
//! - `EmailEvents` has one phishing mail (`ThreatTypes` = `Phish`) to each user from the first
//!   `domain_machines` domain, plus clean mails.
//! - `AlertInfo` has one row per alert as `/api/alerts` serves it (`AlertId` = alert `id`,
//!   `Timestamp` = `alertCreationTime`); `AlertEvidence` has, per alert, a `Machine` row with
//!   the alert's `machineId`/`computerDnsName` and one row per evidence entity (`File` rows
//!   carry the alert's file hashes and name and the alert's machine).
//! - With `hunting.synthetic_events` = N, `DeviceProcessEvents` has N more benign rows
//!   (`FileName` among a few system binaries, never a `file_machines` hash).

use std::sync::Arc;

use serde_json::{Map, Value as Json};
use sha2::Digest;

use crate::kql::{ColType, Table, Tables, Value, parse_datetime, ticks_from_ms};
use crate::scenario::Scenario;

use ColType::{Boolean as B, DateTime as D, Int32 as I32, Int64 as I64, String as S};

const DEVICE_INFO: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("DeviceId", S),
    ("DeviceName", S),
    ("OSPlatform", S),
    ("OSVersion", S),
    ("PublicIP", S),
    ("MachineGroup", S),
    ("OnboardingStatus", S),
];
const PROCESS_EVENTS: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("DeviceId", S),
    ("DeviceName", S),
    ("ActionType", S),
    ("FileName", S),
    ("FolderPath", S),
    ("SHA1", S),
    ("SHA256", S),
    ("MD5", S),
    ("ProcessId", I64),
    ("ProcessCommandLine", S),
    ("AccountDomain", S),
    ("AccountName", S),
    ("InitiatingProcessFileName", S),
    ("InitiatingProcessCommandLine", S),
    ("InitiatingProcessSHA1", S),
    ("InitiatingProcessAccountName", S),
    ("InitiatingProcessParentFileName", S),
    ("ReportId", I64),
];
const NETWORK_EVENTS: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("DeviceId", S),
    ("DeviceName", S),
    ("ActionType", S),
    ("RemoteIP", S),
    ("RemotePort", I32),
    ("RemoteUrl", S),
    ("LocalIP", S),
    ("LocalPort", I32),
    ("Protocol", S),
    ("InitiatingProcessFileName", S),
    ("InitiatingProcessSHA1", S),
    ("InitiatingProcessSHA256", S),
    ("InitiatingProcessCommandLine", S),
    ("InitiatingProcessAccountName", S),
    ("ReportId", I64),
];
const FILE_EVENTS: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("DeviceId", S),
    ("DeviceName", S),
    ("ActionType", S),
    ("FileName", S),
    ("FolderPath", S),
    ("SHA1", S),
    ("SHA256", S),
    ("MD5", S),
    ("FileSize", I64),
    ("FileOriginUrl", S),
    ("FileOriginIP", S),
    ("InitiatingProcessFileName", S),
    ("InitiatingProcessCommandLine", S),
    ("InitiatingProcessAccountName", S),
    ("InitiatingProcessSHA1", S),
    ("ReportId", I64),
];
const LOGON_EVENTS: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("DeviceId", S),
    ("DeviceName", S),
    ("ActionType", S),
    ("LogonType", S),
    ("AccountDomain", S),
    ("AccountName", S),
    ("AccountSid", S),
    ("RemoteIP", S),
    ("RemoteDeviceName", S),
    ("IsLocalAdmin", B),
    ("ReportId", I64),
];
const REGISTRY_EVENTS: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("DeviceId", S),
    ("DeviceName", S),
    ("ActionType", S),
    ("RegistryKey", S),
    ("RegistryValueName", S),
    ("RegistryValueData", S),
    ("InitiatingProcessFileName", S),
    ("InitiatingProcessCommandLine", S),
    ("InitiatingProcessAccountName", S),
    ("ReportId", I64),
];
const ALERT_INFO: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("AlertId", S),
    ("Title", S),
    ("Category", S),
    ("Severity", S),
    ("ServiceSource", S),
    ("DetectionSource", S),
    ("AttackTechniques", S),
];
const ALERT_EVIDENCE: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("AlertId", S),
    ("Title", S),
    ("Categories", S),
    ("EntityType", S),
    ("EvidenceRole", S),
    ("SHA1", S),
    ("SHA256", S),
    ("FileName", S),
    ("FolderPath", S),
    ("RemoteIP", S),
    ("RemoteUrl", S),
    ("AccountName", S),
    ("AccountDomain", S),
    ("AccountUpn", S),
    ("DeviceId", S),
    ("DeviceName", S),
];
const EMAIL_EVENTS: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("NetworkMessageId", S),
    ("SenderFromAddress", S),
    ("SenderFromDomain", S),
    ("SenderIPv4", S),
    ("RecipientEmailAddress", S),
    ("Subject", S),
    ("DeliveryAction", S),
    ("ThreatTypes", S),
];
const IDENTITY_LOGON_EVENTS: &[(&str, ColType)] = &[
    ("Timestamp", D),
    ("ActionType", S),
    ("LogonType", S),
    ("Application", S),
    ("AccountUpn", S),
    ("AccountName", S),
    ("AccountDomain", S),
    ("DeviceName", S),
    ("IPAddress", S),
    ("Location", S),
];

/// The tables and their columns (name, type), in the order of the hunting schema.
pub const TABLES: &[(&str, &[(&str, ColType)])] = &[
    ("DeviceInfo", DEVICE_INFO),
    ("DeviceProcessEvents", PROCESS_EVENTS),
    ("DeviceNetworkEvents", NETWORK_EVENTS),
    ("DeviceFileEvents", FILE_EVENTS),
    ("DeviceLogonEvents", LOGON_EVENTS),
    ("DeviceRegistryEvents", REGISTRY_EVENTS),
    ("AlertInfo", ALERT_INFO),
    ("AlertEvidence", ALERT_EVIDENCE),
    ("EmailEvents", EMAIL_EVENTS),
    ("IdentityLogonEvents", IDENTITY_LOGON_EVENTS),
];

/// Benign processes: (file name, folder, command line, parent).
const BENIGN: &[(&str, &str, &str, &str)] = &[
    (
        "svchost.exe",
        "C:\\Windows\\System32\\svchost.exe",
        "svchost.exe -k netsvcs -p",
        "services.exe",
    ),
    (
        "chrome.exe",
        "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
        "\"chrome.exe\" --type=renderer",
        "explorer.exe",
    ),
    (
        "OUTLOOK.EXE",
        "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
        "\"OUTLOOK.EXE\"",
        "explorer.exe",
    ),
    (
        "notepad.exe",
        "C:\\Windows\\System32\\notepad.exe",
        "notepad.exe C:\\Users\\Public\\notes.txt",
        "explorer.exe",
    ),
    (
        "cmd.exe",
        "C:\\Windows\\System32\\cmd.exe",
        "cmd.exe /c ipconfig /all",
        "explorer.exe",
    ),
    (
        "powershell.exe",
        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
        "powershell.exe -NoProfile Get-Service",
        "explorer.exe",
    ),
    (
        "MsMpEng.exe",
        "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\MsMpEng.exe",
        "MsMpEng.exe",
        "services.exe",
    ),
    (
        "Teams.exe",
        "C:\\Users\\Public\\AppData\\Local\\Microsoft\\Teams\\Teams.exe",
        "Teams.exe --system-initiated",
        "explorer.exe",
    ),
];

/// Background URLs (any that contains a `domain_machines` key is skipped).
const BENIGN_URLS: &[(&str, &str)] = &[
    ("www.bing.com", "204.79.197.200"),
    ("settings-win.data.microsoft.com", "20.42.65.92"),
    ("update.googleapis.com", "142.250.72.3"),
    ("teams.microsoft.com", "52.113.194.132"),
    ("github.com", "140.82.112.3"),
];

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
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable fake SHA1 / SHA256 / MD5 of a seed text.
fn sha1_of(seed: &str) -> String {
    use sha1::Digest as _;
    hex(&sha1::Sha1::digest(seed.as_bytes()))
}
fn sha256_of(seed: &str) -> String {
    hex(&sha2::Sha256::digest(seed.as_bytes()))
}
fn md5_of(seed: &str) -> String {
    sha256_of(&format!("md5/{seed}"))[..32].to_string()
}

struct Machine {
    id: String,
    name: String,
    ip: String,
    public_ip: String,
    os: String,
    os_version: String,
    group: Value,
    onboarding: String,
}

fn text(m: &Map<String, Json>, key: &str) -> String {
    m.get(key)
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string()
}

struct UserRef {
    upn: String,
    name: String,
    domain: String,
    sid: String,
}

fn s(v: impl Into<String>) -> Value {
    Value::Str(v.into())
}

/// Everything except the alert tables, from the scenario at `now_ms` (simulated time).
pub fn device_tables(scenario: &Scenario, now_ms: i64) -> Tables {
    let seed = scenario.alert_generation.map_or(0, |g| g.seed);
    let mut rng = Rng(seed ^ 0x4855_4e54);
    let now = ticks_from_ms(now_ms);
    let span = 25 * 86_400 * 10_000_000i64;
    let when = |rng: &mut Rng| now - 60 * 10_000_000 - (rng.next() % span as u64) as i64;
    let mut report = 1000i64;
    let mut next_report = || {
        report += 1;
        Value::Int(report)
    };
    let machines: Vec<Machine> = scenario
        .machines
        .iter()
        .map(|m| Machine {
            id: text(m, "id"),
            name: text(m, "computerDnsName"),
            ip: text(m, "lastIpAddress"),
            public_ip: text(m, "lastExternalIpAddress"),
            os: text(m, "osPlatform"),
            os_version: text(m, "osVersion"),
            group: m
                .get("rbacGroupName")
                .and_then(Json::as_str)
                .map_or(Value::Null, s),
            onboarding: text(m, "onboardingStatus"),
        })
        .collect();
    let users: Vec<UserRef> = scenario
        .first_tenant()
        .map(|t| {
            t.users
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let (local, domain) = u.upn.split_once('@').unwrap_or((&u.upn, "contoso"));
                    UserRef {
                        upn: u.upn.clone(),
                        name: local.to_string(),
                        domain: domain.split('.').next().unwrap_or(domain).to_string(),
                        sid: format!("S-1-5-21-1004336348-1177238915-682003330-{}", 1500 + i),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let actor = users
        .first()
        .map_or("admin".to_string(), |u| u.name.clone());
    let actor_domain = users
        .first()
        .map_or("contoso".to_string(), |u| u.domain.clone());

    let mut info = Table::new(DEVICE_INFO);
    let mut proc_t = Table::new(PROCESS_EVENTS);
    let mut net = Table::new(NETWORK_EVENTS);
    let mut files = Table::new(FILE_EVENTS);
    let mut logons = Table::new(LOGON_EVENTS);
    let mut reg = Table::new(REGISTRY_EVENTS);
    let mut mail = Table::new(EMAIL_EVENTS);
    let mut ident = Table::new(IDENTITY_LOGON_EVENTS);

    let process = |t: &mut Table,
                   at: i64,
                   m: &Machine,
                   (name, folder, cmd, parent): (&str, &str, &str, &str),
                   hashes: Option<(String, String)>,
                   account: &str,
                   report: Value| {
        let (sha1, sha256) = hashes.unwrap_or_else(|| (sha1_of(folder), sha256_of(folder)));
        t.push(vec![
            ("Timestamp", Value::DateTime(at)),
            ("DeviceId", s(&m.id)),
            ("DeviceName", s(&m.name)),
            ("ActionType", s("ProcessCreated")),
            ("FileName", s(name)),
            ("FolderPath", s(folder)),
            ("MD5", s(md5_of(&sha256))),
            ("SHA1", s(sha1)),
            ("SHA256", s(sha256)),
            ("ProcessId", Value::Int(1000 + (at / 10_000 % 60_000))),
            ("ProcessCommandLine", s(cmd)),
            ("AccountDomain", s(&actor_domain)),
            ("AccountName", s(account)),
            ("InitiatingProcessFileName", s(parent)),
            ("InitiatingProcessCommandLine", s(parent)),
            ("InitiatingProcessSHA1", s(sha1_of(parent))),
            ("InitiatingProcessAccountName", s(account)),
            ("InitiatingProcessParentFileName", s("userinit.exe")),
            ("ReportId", report),
        ]);
    };

    for m in &machines {
        for days in [1i64, 10, 20] {
            info.push(vec![
                (
                    "Timestamp",
                    Value::DateTime(now - days * 86_400 * 10_000_000 + 3_600 * 10_000_000),
                ),
                ("DeviceId", s(&m.id)),
                ("DeviceName", s(&m.name)),
                ("OSPlatform", s(&m.os)),
                ("OSVersion", s(&m.os_version)),
                ("PublicIP", s(&m.public_ip)),
                ("MachineGroup", m.group.clone()),
                ("OnboardingStatus", s(&m.onboarding)),
            ]);
        }
        for _ in 0..12 {
            let b = BENIGN[rng.below(BENIGN.len())];
            let at = when(&mut rng);
            process(&mut proc_t, at, m, b, None, &actor, next_report());
        }
        let urls: Vec<&(&str, &str)> = BENIGN_URLS
            .iter()
            .filter(|(u, _)| {
                !scenario
                    .domain_machines
                    .keys()
                    .any(|k| u.contains(k.as_str()))
            })
            .collect();
        for i in 0..6 {
            let at = when(&mut rng);
            let (url, ip) = if urls.is_empty() {
                ("", "192.0.2.1")
            } else {
                *urls[rng.below(urls.len())]
            };
            let ok = i != 5;
            net.push(net_row(at, m, url, ip, ok, &actor, next_report()));
        }
        for i in 0..4 {
            let at = when(&mut rng);
            let name = format!("report-{}.docx", rng.below(100));
            let folder = format!("C:\\Users\\{actor}\\Documents\\{name}");
            files.push(vec![
                ("Timestamp", Value::DateTime(at)),
                ("DeviceId", s(&m.id)),
                ("DeviceName", s(&m.name)),
                (
                    "ActionType",
                    s(if i == 3 {
                        "FileRenamed"
                    } else {
                        "FileModified"
                    }),
                ),
                ("FileName", s(&name)),
                ("FolderPath", s(&folder)),
                ("SHA1", s(sha1_of(&folder))),
                ("SHA256", s(sha256_of(&folder))),
                ("MD5", s(md5_of(&folder))),
                ("FileSize", Value::Int(10_000 + rng.below(90_000) as i64)),
                ("InitiatingProcessFileName", s("WINWORD.EXE")),
                ("InitiatingProcessCommandLine", s("\"WINWORD.EXE\" /n")),
                ("InitiatingProcessAccountName", s(&actor)),
                ("InitiatingProcessSHA1", s(sha1_of("WINWORD.EXE"))),
                ("ReportId", next_report()),
            ]);
        }
        let at = when(&mut rng);
        reg.push(vec![
            ("Timestamp", Value::DateTime(at)),
            ("DeviceId", s(&m.id)),
            ("DeviceName", s(&m.name)),
            ("ActionType", s("RegistryValueSet")),
            (
                "RegistryKey",
                s("HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows Defender\\Signature Updates"),
            ),
            ("RegistryValueName", s("SignaturesLastUpdated")),
            ("RegistryValueData", s("1")),
            ("InitiatingProcessFileName", s("MsMpEng.exe")),
            ("InitiatingProcessCommandLine", s("MsMpEng.exe")),
            ("InitiatingProcessAccountName", s("system")),
            ("ReportId", next_report()),
        ]);
    }

    // Files of `file_machines`, exactly on their machines.
    let origin_domain = scenario
        .domain_machines
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| "downloads.example".to_string());
    for (key, on) in &scenario.file_machines {
        let key = key.to_ascii_lowercase();
        let (sha1, sha256, name) = if key.len() == 40 {
            (
                key.clone(),
                sha256_of(&format!("pair/{key}")),
                "dropper.exe",
            )
        } else {
            (sha1_of(&format!("pair/{key}")), key.clone(), "loader.dll")
        };
        for mid in on {
            let Some(m) = machines.iter().find(|m| m.id.eq_ignore_ascii_case(mid)) else {
                continue;
            };
            let at = when(&mut rng);
            let folder = format!("C:\\Users\\{actor}\\Downloads\\{name}");
            files.push(vec![
                ("Timestamp", Value::DateTime(at)),
                ("DeviceId", s(&m.id)),
                ("DeviceName", s(&m.name)),
                ("ActionType", s("FileCreated")),
                ("FileName", s(name)),
                ("FolderPath", s(&folder)),
                ("SHA1", s(&sha1)),
                ("SHA256", s(&sha256)),
                ("MD5", s(md5_of(&sha256))),
                ("FileSize", Value::Int(482_304)),
                (
                    "FileOriginUrl",
                    s(format!("https://{origin_domain}/download/{name}")),
                ),
                ("FileOriginIP", s("198.51.100.23")),
                ("InitiatingProcessFileName", s("chrome.exe")),
                ("InitiatingProcessCommandLine", s("\"chrome.exe\"")),
                ("InitiatingProcessAccountName", s(&actor)),
                ("InitiatingProcessSHA1", s(sha1_of("chrome.exe"))),
                ("ReportId", next_report()),
            ]);
            let cmd = if name.ends_with(".dll") {
                format!("rundll32.exe {folder},Start")
            } else {
                format!("\"{folder}\" --silent")
            };
            process(
                &mut proc_t,
                at + 30 * 10_000_000,
                m,
                (name, &folder, &cmd, "explorer.exe"),
                Some((sha1.clone(), sha256.clone())),
                &actor,
                next_report(),
            );
        }
    }

    // Domains of `domain_machines`, exactly on their machines.
    for (domain, on) in &scenario.domain_machines {
        for mid in on {
            let Some(m) = machines.iter().find(|m| m.id.eq_ignore_ascii_case(mid)) else {
                continue;
            };
            let at = when(&mut rng);
            let ip = format!("198.51.100.{}", 10 + rng.below(200));
            net.push(net_row(at, m, domain, &ip, true, &actor, next_report()));
        }
    }

    // Attack traces on the first machine.
    if let Some(m) = machines.first() {
        let story: &[(&str, &str, &str, &str)] = &[
            (
                "schtasks.exe",
                "C:\\Windows\\System32\\schtasks.exe",
                "schtasks.exe /create /tn \"Updater\" /tr \"C:\\Users\\Public\\updater.exe\" /sc onlogon /ru SYSTEM",
                "cmd.exe",
            ),
            (
                "runas.exe",
                "C:\\Windows\\System32\\runas.exe",
                "runas.exe /user:CONTOSO\\administrator cmd.exe",
                "cmd.exe",
            ),
            (
                "whoami.exe",
                "C:\\Windows\\System32\\whoami.exe",
                "whoami.exe /priv",
                "cmd.exe",
            ),
            (
                "powershell.exe",
                "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                "powershell.exe -NoProfile -Command Set-MpPreference -DisableRealtimeMonitoring $true",
                "cmd.exe",
            ),
            (
                "sc.exe",
                "C:\\Windows\\System32\\sc.exe",
                "sc.exe stop WinDefend",
                "cmd.exe",
            ),
            (
                "wevtutil.exe",
                "C:\\Windows\\System32\\wevtutil.exe",
                "wevtutil.exe cl Security",
                "cmd.exe",
            ),
        ];
        let start = now - 3 * 86_400 * 10_000_000;
        for (i, p) in story.iter().enumerate() {
            let at = start + i as i64 * 120 * 10_000_000;
            process(&mut proc_t, at, m, *p, None, &actor, next_report());
        }
        reg.push(vec![
            ("Timestamp", Value::DateTime(start + 60 * 10_000_000)),
            ("DeviceId", s(&m.id)),
            ("DeviceName", s(&m.name)),
            ("ActionType", s("RegistryValueSet")),
            (
                "RegistryKey",
                s("HKEY_CURRENT_USER\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"),
            ),
            ("RegistryValueName", s("Updater")),
            ("RegistryValueData", s("C:\\Users\\Public\\updater.exe")),
            ("InitiatingProcessFileName", s("reg.exe")),
            (
                "InitiatingProcessCommandLine",
                s("reg.exe add HKCU\\Software\\Microsoft\\Windows\\CurrentVersion\\Run /v Updater /d C:\\Users\\Public\\updater.exe"),
            ),
            ("InitiatingProcessAccountName", s(&actor)),
            ("ReportId", next_report()),
        ]);
        let folder = "C:\\Users\\Public\\updater.exe";
        files.push(vec![
            ("Timestamp", Value::DateTime(start + 900 * 10_000_000)),
            ("DeviceId", s(&m.id)),
            ("DeviceName", s(&m.name)),
            ("ActionType", s("FileDeleted")),
            ("FileName", s("updater.exe")),
            ("FolderPath", s(folder)),
            ("SHA1", s(sha1_of(folder))),
            ("SHA256", s(sha256_of(folder))),
            ("MD5", s(md5_of(folder))),
            ("FileSize", Value::Int(73_728)),
            ("InitiatingProcessFileName", s("cmd.exe")),
            (
                "InitiatingProcessCommandLine",
                s("cmd.exe /c del /f C:\\Users\\Public\\updater.exe"),
            ),
            ("InitiatingProcessAccountName", s(&actor)),
            ("InitiatingProcessSHA1", s(sha1_of("cmd.exe"))),
            ("ReportId", next_report()),
        ]);
    }

    // Logons of the tenant's users, including lateral movement between machines.
    let logon_types = ["Interactive", "Network", "RemoteInteractive"];
    for (ui, u) in users.iter().enumerate() {
        if machines.is_empty() {
            break;
        }
        let home = &machines[ui % machines.len()];
        let other = &machines[(ui + 1) % machines.len()];
        for (li, lt) in logon_types.iter().enumerate() {
            let (target, source) = if li == 0 {
                (home, None)
            } else {
                (other, Some(home))
            };
            let at = when(&mut rng);
            logons.push(vec![
                ("Timestamp", Value::DateTime(at)),
                ("DeviceId", s(&target.id)),
                ("DeviceName", s(&target.name)),
                ("ActionType", s("LogonSuccess")),
                ("LogonType", s(*lt)),
                ("AccountDomain", s(&u.domain)),
                ("AccountName", s(&u.name)),
                ("AccountSid", s(&u.sid)),
                ("RemoteIP", source.map_or(Value::Null, |m| s(&m.ip))),
                (
                    "RemoteDeviceName",
                    source.map_or(Value::Null, |m| s(&m.name)),
                ),
                ("IsLocalAdmin", Value::Bool(ui == 0)),
                ("ReportId", next_report()),
            ]);
            ident.push(vec![
                ("Timestamp", Value::DateTime(at)),
                ("ActionType", s("LogonSuccess")),
                (
                    "LogonType",
                    s(if li == 0 {
                        "Interactive"
                    } else {
                        "Resource access"
                    }),
                ),
                ("Application", s("Active Directory")),
                ("AccountUpn", s(&u.upn)),
                ("AccountName", s(&u.name)),
                ("AccountDomain", s(&u.domain)),
                ("DeviceName", s(&target.name)),
                ("IPAddress", s(&source.unwrap_or(target).ip)),
                ("Location", s("US")),
            ]);
        }
        let at = when(&mut rng);
        logons.push(vec![
            ("Timestamp", Value::DateTime(at)),
            ("DeviceId", s(&home.id)),
            ("DeviceName", s(&home.name)),
            ("ActionType", s("LogonFailed")),
            ("LogonType", s("Network")),
            ("AccountDomain", s(&u.domain)),
            ("AccountName", s(&u.name)),
            ("AccountSid", s(&u.sid)),
            ("RemoteIP", s("198.51.100.23")),
            ("RemoteDeviceName", Value::Null),
            ("IsLocalAdmin", Value::Bool(false)),
            ("ReportId", next_report()),
        ]);
        ident.push(vec![
            ("Timestamp", Value::DateTime(at)),
            ("ActionType", s("LogonFailed")),
            ("LogonType", s("Login to a website")),
            ("Application", s("Microsoft 365")),
            ("AccountUpn", s(&u.upn)),
            ("AccountName", s(&u.name)),
            ("AccountDomain", s(&u.domain)),
            ("DeviceName", Value::Null),
            ("IPAddress", s("198.51.100.23")),
            ("Location", s("NL")),
        ]);
        // Mail: one phish and two clean ones.
        for k in 0..3 {
            let phish = k == 0;
            let (sender, domain, ip) = if phish {
                (
                    format!("security@{origin_domain}"),
                    origin_domain.clone(),
                    "198.51.100.23",
                )
            } else {
                (
                    format!("newsletter{k}@fabrikam.example"),
                    "fabrikam.example".to_string(),
                    "192.0.2.40",
                )
            };
            mail.push(vec![
                ("Timestamp", Value::DateTime(when(&mut rng))),
                (
                    "NetworkMessageId",
                    s(format!(
                        "{}-{k}",
                        &sha256_of(&format!("{}/{k}", u.upn))[..32]
                    )),
                ),
                ("SenderFromAddress", s(sender)),
                ("SenderFromDomain", s(domain)),
                ("SenderIPv4", s(ip)),
                ("RecipientEmailAddress", s(&u.upn)),
                (
                    "Subject",
                    s(if phish {
                        "Action required: verify your account"
                    } else {
                        "Weekly update"
                    }),
                ),
                ("DeliveryAction", s("Delivered")),
                ("ThreatTypes", s(if phish { "Phish" } else { "" })),
            ]);
        }
    }

    // Synthetic benign process events for benchmarks.
    let synthetic = scenario.hunting.synthetic_events;
    if synthetic > 0 && !machines.is_empty() {
        proc_t.rows.reserve(synthetic);
        let pre: Vec<[Value; 6]> = BENIGN
            .iter()
            .map(|(n, f, c, _)| {
                [
                    s(*n),
                    s(*f),
                    s(sha1_of(f)),
                    s(sha256_of(f)),
                    s(md5_of(&sha256_of(f))),
                    s(*c),
                ]
            })
            .collect();
        let mvals: Vec<(Value, Value)> = machines.iter().map(|m| (s(&m.id), s(&m.name))).collect();
        for i in 0..synthetic {
            let b = &pre[i % pre.len()];
            let (id, name) = &mvals[rng.below(mvals.len())];
            let at = when(&mut rng);
            let row: Vec<Value> = vec![
                Value::DateTime(at),
                id.clone(),
                name.clone(),
                s("ProcessCreated"),
                b[0].clone(),
                b[1].clone(),
                b[2].clone(),
                b[3].clone(),
                b[4].clone(),
                Value::Int(2000 + (i % 60_000) as i64),
                b[5].clone(),
                s(&actor_domain),
                s(&actor),
                s("explorer.exe"),
                s("explorer.exe"),
                s(sha1_of("explorer.exe")),
                s(&actor),
                s("userinit.exe"),
                Value::Int(1_000_000 + i as i64),
            ];
            proc_t.rows.push(row.into());
        }
    }

    let mut t = Tables::new();
    for (name, table) in [
        ("DeviceInfo", info),
        ("DeviceProcessEvents", proc_t),
        ("DeviceNetworkEvents", net),
        ("DeviceFileEvents", files),
        ("DeviceLogonEvents", logons),
        ("DeviceRegistryEvents", reg),
        ("EmailEvents", mail),
        ("IdentityLogonEvents", ident),
    ] {
        t.insert(name.to_string(), Arc::new(table));
    }
    t
}

fn net_row(
    at: i64,
    m: &Machine,
    url: &str,
    ip: &str,
    ok: bool,
    account: &str,
    report: Value,
) -> Vec<(&'static str, Value)> {
    vec![
        ("Timestamp", Value::DateTime(at)),
        ("DeviceId", s(&m.id)),
        ("DeviceName", s(&m.name)),
        (
            "ActionType",
            s(if ok {
                "ConnectionSuccess"
            } else {
                "ConnectionFailed"
            }),
        ),
        ("RemoteIP", s(ip)),
        ("RemotePort", Value::Int(443)),
        ("RemoteUrl", s(url)),
        ("LocalIP", s(&m.ip)),
        ("LocalPort", Value::Int(49_152 + (at / 10_000_000 % 16_000))),
        ("Protocol", s("Tcp")),
        ("InitiatingProcessFileName", s("chrome.exe")),
        ("InitiatingProcessSHA1", s(sha1_of("chrome.exe"))),
        ("InitiatingProcessSHA256", s(sha256_of("chrome.exe"))),
        ("InitiatingProcessCommandLine", s("\"chrome.exe\"")),
        ("InitiatingProcessAccountName", s(account)),
        ("ReportId", report),
    ]
}

/// Adds `AlertInfo` and `AlertEvidence` built from `alerts` (Defender's alert shape).
pub fn add_alert_tables(tables: &mut Tables, alerts: &[Map<String, Json>]) {
    let mut info = Table::new(ALERT_INFO);
    let mut evidence = Table::new(ALERT_EVIDENCE);
    let opt =
        |m: &Map<String, Json>, k: &str| m.get(k).and_then(Json::as_str).map_or(Value::Null, s);
    for a in alerts {
        let at = a
            .get("alertCreationTime")
            .and_then(Json::as_str)
            .and_then(parse_datetime)
            .map_or(Value::Null, Value::DateTime);
        let id = opt(a, "id");
        let title = opt(a, "title");
        let category = opt(a, "category");
        let techniques = a
            .get("mitreTechniques")
            .map_or_else(|| "[]".to_string(), Json::to_string);
        info.push(vec![
            ("Timestamp", at.clone()),
            ("AlertId", id.clone()),
            ("Title", title.clone()),
            ("Category", category.clone()),
            ("Severity", opt(a, "severity")),
            ("ServiceSource", s("Microsoft Defender for Endpoint")),
            ("DetectionSource", opt(a, "detectionSource")),
            ("AttackTechniques", s(techniques)),
        ]);
        let categories = s(format!("[\"{}\"]", category.to_text()));
        let device_id = opt(a, "machineId");
        let device_name = opt(a, "computerDnsName");
        let base = |entity: &str, role: &str| -> Vec<(&'static str, Value)> {
            vec![
                ("Timestamp", at.clone()),
                ("AlertId", id.clone()),
                ("Title", title.clone()),
                ("Categories", categories.clone()),
                ("EntityType", s(entity)),
                ("EvidenceRole", s(role)),
                ("DeviceId", device_id.clone()),
                ("DeviceName", device_name.clone()),
            ]
        };
        evidence.push(base("Machine", "Impacted"));
        for e in a
            .get("evidence")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let Some(e) = e.as_object() else { continue };
            let kind = e
                .get("entityType")
                .and_then(Json::as_str)
                .unwrap_or_default();
            let mut row = match kind {
                "File" => {
                    let mut r = base("File", "Related");
                    r.push(("SHA1", opt(e, "sha1")));
                    r.push(("SHA256", opt(e, "sha256")));
                    r.push(("FileName", opt(e, "fileName")));
                    r.push(("FolderPath", opt(e, "filePath")));
                    r
                }
                "Ip" => {
                    let mut r = base("Ip", "Related");
                    r.push(("RemoteIP", opt(e, "ipAddress")));
                    r
                }
                "Url" => {
                    let mut r = base("Url", "Related");
                    r.push(("RemoteUrl", opt(e, "url")));
                    r
                }
                "User" => {
                    let mut r = base("User", "Impacted");
                    r.push(("AccountName", opt(e, "accountName")));
                    r.push(("AccountDomain", opt(e, "domainName")));
                    r.push(("AccountUpn", opt(e, "userPrincipalName")));
                    r
                }
                _ => continue,
            };
            row.retain(|(_, v)| *v != Value::Str(String::new()));
            evidence.push(row);
        }
    }
    tables.insert("AlertInfo".into(), Arc::new(info));
    tables.insert("AlertEvidence".into(), Arc::new(evidence));
}

/// All hunting tables of a scenario at `now_ms` (ms since the epoch, simulated), with the alert
/// tables built from the scenario's alerts as [`crate::alerts::load`] makes them at `now_ms`.
/// The running simulator uses its live alerts instead: see [`crate::state::Sim::hunting_tables`].
pub fn hunting_tables(scenario: &Scenario, now_ms: i64) -> Tables {
    let mut t = device_tables(scenario, now_ms);
    add_alert_tables(&mut t, &crate::alerts::load(scenario, now_ms));
    t
}
