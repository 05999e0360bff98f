//! The catalogue of Defender API endpoints this host calls: one [`Endpoint`] per operation,
//! knowing its method, path template, rate family, metric label, the application permission
//! it needs and whether it changes state (and so goes first when the budget is short).
//!
//! Actions never build URLs: they pick an endpoint and fill its `{…}` placeholders with
//! [`Endpoint::at`], which percent-encodes every value as one path segment. The client takes
//! the family, the label and the priority from the endpoint instead of guessing them back from
//! the path. Adding an API call is one entry here.

use http::Method;

pub use super::budget::{Family, Priority};

/// One Defender API operation.
#[derive(Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// HTTP method.
    pub method: Method,
    /// Path under the API base, with `{name}` placeholders for path segments
    /// (`/api/machines/{id}/isolate`); also the metric label.
    pub path: &'static str,
    /// The rate-limit family its calls count against.
    pub family: Family,
    /// The application permission Microsoft requires (one of them, where several do).
    pub permission: &'static str,
    /// Budget priority.
    pub priority: Priority,
}

/// One call of an endpoint: the endpoint and its concrete path (placeholders filled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The endpoint called.
    pub endpoint: &'static Endpoint,
    /// The path with its segments percent-encoded (no query).
    pub path: String,
}

impl Endpoint {
    /// The call of this endpoint with its placeholders filled, in order, by `segments`, each
    /// percent-encoded as a single path segment (a `/` or `?` in a value cannot change the
    /// path). Missing segments leave the placeholder empty; extra ones are ignored.
    pub fn at(&'static self, segments: &[&str]) -> Call {
        let mut path = String::with_capacity(self.path.len() + 48);
        let mut rest = self.path;
        let mut values = segments.iter();
        while let Some(open) = rest.find('{') {
            path.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            if let Some(v) = values.next() {
                path.push_str(&encode_segment(v.trim()));
            }
            rest = &rest[open + close + 1..];
        }
        path.push_str(rest);
        Call {
            endpoint: self,
            path,
        }
    }

    /// The metric label (`endpoint` label of the upstream counters): the path template.
    pub fn label(&self) -> &'static str {
        self.path
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

const fn read(path: &'static str, permission: &'static str) -> Endpoint {
    Endpoint {
        method: Method::GET,
        path,
        family: Family::Default,
        permission,
        priority: Priority::Read,
    }
}

const fn respond(path: &'static str, permission: &'static str) -> Endpoint {
    Endpoint {
        method: Method::POST,
        path,
        family: Family::Default,
        permission,
        priority: Priority::Respond,
    }
}

// --- Devices --------------------------------------------------------------------------------

/// `GET /api/machines`: the device list (OData).
pub static MACHINES: Endpoint = read("/api/machines", "Machine.Read.All");
/// `GET /api/domains/{domain}/machines`: devices that contacted a domain.
pub static DOMAIN_MACHINES: Endpoint = read("/api/domains/{domain}/machines", "Machine.Read.All");
/// `GET /api/files/{hash}/machines`: devices that saw a file.
pub static FILE_MACHINES: Endpoint = read("/api/files/{hash}/machines", "Machine.Read.All");
/// `POST /api/machines/{id}/tags`: add or remove a device tag.
pub static MACHINE_TAGS: Endpoint = respond("/api/machines/{id}/tags", "Machine.ReadWrite.All");

// --- Machine actions ------------------------------------------------------------------------

/// `POST /api/machines/{id}/isolate`.
pub static ISOLATE: Endpoint = respond("/api/machines/{id}/isolate", "Machine.Isolate");
/// `POST /api/machines/{id}/unisolate`.
pub static UNISOLATE: Endpoint = respond("/api/machines/{id}/unisolate", "Machine.Isolate");
/// `POST /api/machines/{id}/StopAndQuarantineFile`.
pub static STOP_AND_QUARANTINE_FILE: Endpoint = respond(
    "/api/machines/{id}/StopAndQuarantineFile",
    "Machine.StopAndQuarantine",
);
/// `POST /api/machines/{id}/runAntiVirusScan`.
pub static RUN_ANTIVIRUS_SCAN: Endpoint =
    respond("/api/machines/{id}/runAntiVirusScan", "Machine.Scan");
/// `POST /api/machines/{id}/restrictCodeExecution`.
pub static RESTRICT_CODE_EXECUTION: Endpoint = respond(
    "/api/machines/{id}/restrictCodeExecution",
    "Machine.RestrictExecution",
);
/// `POST /api/machines/{id}/unrestrictCodeExecution`.
pub static UNRESTRICT_CODE_EXECUTION: Endpoint = respond(
    "/api/machines/{id}/unrestrictCodeExecution",
    "Machine.RestrictExecution",
);
/// `POST /api/machines/{id}/collectInvestigationPackage`.
pub static COLLECT_INVESTIGATION_PACKAGE: Endpoint = respond(
    "/api/machines/{id}/collectInvestigationPackage",
    "Machine.CollectForensics",
);
/// `POST /api/machines/{id}/runliveresponse` (10 calls a minute).
pub static RUN_LIVE_RESPONSE: Endpoint = Endpoint {
    method: Method::POST,
    path: "/api/machines/{id}/runliveresponse",
    family: Family::LiveResponse,
    permission: "Machine.LiveResponse",
    priority: Priority::Respond,
};
/// `GET /api/machineactions`: the machine action list (OData).
pub static MACHINE_ACTIONS: Endpoint = read("/api/machineactions", "Machine.Read.All");
/// `GET /api/machineactions/{id}`: one machine action.
pub static MACHINE_ACTION: Endpoint = read("/api/machineactions/{id}", "Machine.Read.All");
/// `POST /api/machineactions/{id}/cancel` (Microsoft asks for the permission of the cancelled
/// action's own type; isolation's is named here).
pub static CANCEL_MACHINE_ACTION: Endpoint =
    respond("/api/machineactions/{id}/cancel", "Machine.Isolate");
/// `GET /api/machineactions/{id}/getPackageUri` (2 calls a minute).
pub static PACKAGE_URI: Endpoint = Endpoint {
    method: Method::GET,
    path: "/api/machineactions/{id}/getPackageUri",
    family: Family::PackageUri,
    permission: "Machine.CollectForensics",
    priority: Priority::Read,
};
/// `GET /api/machineactions/{id}/GetLiveResponseResultDownloadLink(index={index})`.
pub static LIVE_RESPONSE_RESULT_LINK: Endpoint = read(
    "/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index={index})",
    "Machine.LiveResponse",
);

// --- Library --------------------------------------------------------------------------------

/// `GET /api/libraryfiles`: the live response library.
pub static LIBRARY_FILES: Endpoint = read("/api/libraryfiles", "Library.Manage");
/// `POST /api/libraryfiles`: upload a library file (multipart).
pub static UPLOAD_LIBRARY_FILE: Endpoint = respond("/api/libraryfiles", "Library.Manage");
/// `DELETE /api/libraryfiles/{name}`: removes a library file (204; 404 when there is none).
pub static DELETE_LIBRARY_FILE: Endpoint = Endpoint {
    method: Method::DELETE,
    path: "/api/libraryfiles/{name}",
    family: Family::Default,
    permission: "Library.Manage",
    priority: Priority::Respond,
};

// --- Alerts ---------------------------------------------------------------------------------

/// `GET /api/alerts`: the alert list (OData; `$expand=evidence`).
pub static ALERTS: Endpoint = read("/api/alerts", "Alert.Read.All");
/// `GET /api/alerts/{id}`: one alert.
pub static ALERT: Endpoint = read("/api/alerts/{id}", "Alert.Read.All");
/// `PATCH /api/alerts/{id}`: status, assignedTo, classification, determination, comment.
pub static UPDATE_ALERT: Endpoint = Endpoint {
    method: Method::PATCH,
    path: "/api/alerts/{id}",
    family: Family::Default,
    permission: "Alert.ReadWrite.All",
    priority: Priority::Respond,
};
/// `POST /api/alerts/batchUpdate`: the same change on up to 500 alerts (Defender: 10 calls a
/// minute, 500 an hour).
pub static BATCH_UPDATE_ALERTS: Endpoint =
    respond("/api/alerts/batchUpdate", "Alert.ReadWrite.All");
/// `POST /api/alerts/CreateAlertByReference`: an alert from an event (Defender: 15 calls a
/// minute).
pub static CREATE_ALERT_BY_REFERENCE: Endpoint =
    respond("/api/alerts/CreateAlertByReference", "Alert.ReadWrite.All");
/// `GET /api/alerts/{id}/user`: the user of an alert.
pub static ALERT_USER: Endpoint = read("/api/alerts/{id}/user", "User.Read.All");
/// `GET /api/alerts/{id}/files`: the files of an alert.
pub static ALERT_FILES: Endpoint = read("/api/alerts/{id}/files", "File.Read.All");
/// `GET /api/alerts/{id}/ips`: the IP addresses of an alert.
pub static ALERT_IPS: Endpoint = read("/api/alerts/{id}/ips", "Ip.Read.All");
/// `GET /api/alerts/{id}/domains`: the domains of an alert.
pub static ALERT_DOMAINS: Endpoint = read("/api/alerts/{id}/domains", "URL.Read.All");
/// `GET /api/domains/{domain}/alerts`: alerts of a domain.
pub static DOMAIN_ALERTS: Endpoint = read("/api/domains/{domain}/alerts", "Alert.Read.All");
/// `GET /api/files/{hash}/alerts`: alerts of a file.
pub static FILE_ALERTS: Endpoint = read("/api/files/{hash}/alerts", "Alert.Read.All");
/// `GET /api/ips/{ip}/alerts`: alerts of an IP address.
pub static IP_ALERTS: Endpoint = read("/api/ips/{ip}/alerts", "Alert.Read.All");
/// `GET /api/users/{user}/alerts`: alerts of a user.
pub static USER_ALERTS: Endpoint = read("/api/users/{user}/alerts", "Alert.Read.All");
/// `GET /api/machines/{id}/alerts`: alerts of a device.
pub static MACHINE_ALERTS: Endpoint = read("/api/machines/{id}/alerts", "Alert.Read.All");
// --- Advanced hunting -----------------------------------------------------------------------

/// `POST /api/advancedqueries/run`: a KQL query on Defender for Endpoint's older hunting API
/// (45 calls a minute, 1,500 an hour; a read, whatever the method).
pub static ADVANCED_QUERIES: Endpoint = Endpoint {
    method: Method::POST,
    path: "/api/advancedqueries/run",
    family: Family::Hunting,
    permission: "AdvancedQuery.Read.All",
    priority: Priority::Read,
};
/// `POST /v1.0/security/runHuntingQuery`: a KQL query on Microsoft Graph (the same hunting
/// budget; a read).
pub static RUN_HUNTING_QUERY: Endpoint = Endpoint {
    method: Method::POST,
    path: "/v1.0/security/runHuntingQuery",
    family: Family::Hunting,
    permission: "ThreatHunting.Read.All",
    priority: Priority::Read,
};

// --- Indicators (custom threat intelligence) ------------------------------------------------

/// Most indicators one `POST /api/indicators/import` takes, and most ids one
/// `POST /api/indicators/BatchDelete` takes.
pub const INDICATOR_BATCH_MAX: usize = 500;
/// Active indicators a tenant may hold.
pub const TENANT_INDICATOR_LIMIT: usize = 15_000;

/// `GET /api/indicators`: the indicator list (OData). With `Ti.ReadWrite` only the app's own.
pub static INDICATORS: Endpoint = read("/api/indicators", "Ti.ReadWrite.All");
/// `GET /api/indicators/{id}`: one indicator.
pub static INDICATOR: Endpoint = read("/api/indicators/{id}", "Ti.ReadWrite.All");
/// `POST /api/indicators`: creates or updates (same type and value) an indicator.
pub static SUBMIT_INDICATOR: Endpoint = respond("/api/indicators", "Ti.ReadWrite.All");
/// `POST /api/indicators/import`: up to 500 indicators, one result each (30 calls a minute).
pub static IMPORT_INDICATORS: Endpoint = respond("/api/indicators/import", "Ti.ReadWrite.All");
/// `POST /api/indicators/BatchDelete`: deletes up to 500 indicators by id (204).
pub static BATCH_DELETE_INDICATORS: Endpoint =
    respond("/api/indicators/BatchDelete", "Ti.ReadWrite.All");
/// `DELETE /api/indicators/{id}` (204; 404 for an unknown id).
pub static DELETE_INDICATOR: Endpoint = Endpoint {
    method: Method::DELETE,
    path: "/api/indicators/{id}",
    family: Family::Default,
    permission: "Ti.ReadWrite.All",
    priority: Priority::Respond,
};
// --- Enrichment and device information (files, addresses, domains, users, devices) --------

/// Longest look-back of the prevalence endpoints (`lookBackHours`, 30 days).
pub const MAX_LOOK_BACK_HOURS: u64 = 720;

/// `GET /api/files/{hash}`: a file's profile (SHA1 or SHA256).
pub static FILE: Endpoint = read("/api/files/{hash}", "File.Read.All");
/// `GET /api/files/{hash}/stats?lookBackHours=`: a file's prevalence.
pub static FILE_STATS: Endpoint = read("/api/files/{hash}/stats", "File.Read.All");
/// `GET /api/ips/{ip}/stats?lookBackHours=`: an IP address's prevalence.
pub static IP_STATS: Endpoint = read("/api/ips/{ip}/stats", "Ip.Read.All");
/// `GET /api/domains/{domain}/stats?lookBackHours=`: a domain's prevalence.
pub static DOMAIN_STATS: Endpoint = read("/api/domains/{domain}/stats", "URL.Read.All");
/// `GET /api/users/{user}/machines`: devices a user logged on to.
pub static USER_MACHINES: Endpoint = read("/api/users/{user}/machines", "Machine.Read.All");
/// `GET /api/machines/{id}`: one device.
pub static MACHINE: Endpoint = read("/api/machines/{id}", "Machine.Read.All");
/// `GET /api/machines/{id}/logonusers`: users who logged on to a device.
pub static MACHINE_LOGON_USERS: Endpoint = read("/api/machines/{id}/logonusers", "User.Read.All");
/// `GET /api/machines/findbyip(ip='{ip}',timestamp={timestamp})`: devices that had an internal
/// address within 15 minutes of a moment of the last 30 days; called through
/// [`find_by_ip`], which builds the function-call segment.
pub static FIND_MACHINES_BY_IP: Endpoint = read(
    "/api/machines/findbyip(ip={ip},timestamp={timestamp})",
    "Machine.Read.All",
);
/// `POST /api/machines/{id}/offboard`: offboards a device (a MachineAction; cannot be undone
/// through the API).
pub static OFFBOARD: Endpoint = respond("/api/machines/{id}/offboard", "Machine.Offboard");
/// `POST /api/machines/{id}/startInvestigation`: starts an automated investigation (201
/// Investigation; Defender allows 50 calls an hour).
pub static START_INVESTIGATION: Endpoint = respond(
    "/api/machines/{id}/startInvestigation",
    "Alert.ReadWrite.All",
);
/// `GET /api/investigations`: automated investigations (OData).
pub static INVESTIGATIONS: Endpoint = read("/api/investigations", "Alert.Read.All");
/// `GET /api/investigations/{id}`: one automated investigation.
pub static INVESTIGATION: Endpoint = read("/api/investigations/{id}", "Alert.Read.All");

/// The call of [`FIND_MACHINES_BY_IP`] for `ip` at `at`: the address as an OData string
/// literal ([`super::odata::literal`]) and the moment as an unquoted UTC date-time literal
/// formatted here, so no caller text reaches the path but the parsed address.
pub fn find_by_ip(ip: std::net::IpAddr, at: time::OffsetDateTime) -> Call {
    let utc = at.to_offset(time::UtcOffset::UTC);
    let moment = utc
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string());
    Call {
        endpoint: &FIND_MACHINES_BY_IP,
        path: format!(
            "/api/machines/findbyip(ip={},timestamp={moment})",
            super::odata::literal(&ip.to_string())
        ),
    }
}

// --- Threat and vulnerability management ----------------------------------------------------

/// Largest `$top` of `GET /api/vulnerabilities`.
pub const VULNERABILITIES_MAX_TOP: usize = 8_000;

/// `GET /api/machines/{id}/software`: the software installed on a device.
pub static MACHINE_SOFTWARE: Endpoint = read("/api/machines/{id}/software", "Software.Read.All");
/// `GET /api/machines/{id}/vulnerabilities`: the vulnerabilities discovered on a device
/// (Defender: 50 calls a minute).
pub static MACHINE_VULNERABILITIES: Endpoint = read(
    "/api/machines/{id}/vulnerabilities",
    "Vulnerability.Read.All",
);
/// `GET /api/machines/{id}/getmissingkbs`: the security updates a device misses.
pub static MACHINE_MISSING_KBS: Endpoint =
    read("/api/machines/{id}/getmissingkbs", "Software.Read.All");
/// `GET /api/machines/{id}/recommendations`: a device's security recommendations.
pub static MACHINE_RECOMMENDATIONS: Endpoint = read(
    "/api/machines/{id}/recommendations",
    "SecurityRecommendation.Read.All",
);
/// `GET /api/Software`: the software inventory (OData on id, name, vendor).
pub static SOFTWARE: Endpoint = read("/api/Software", "Software.Read.All");
/// `GET /api/Software/{id}/distributions`: a software's versions and their installations.
pub static SOFTWARE_DISTRIBUTIONS: Endpoint =
    read("/api/Software/{id}/distributions", "Software.Read.All");
/// `GET /api/Software/{id}/getmissingkbs`: the security updates that fix a software's
/// vulnerabilities and that devices miss.
pub static SOFTWARE_MISSING_KBS: Endpoint =
    read("/api/Software/{id}/getmissingkbs", "Software.Read.All");
/// `GET /api/Software/{id}/machineReferences`: the devices that have a software.
pub static SOFTWARE_MACHINES: Endpoint =
    read("/api/Software/{id}/machineReferences", "Software.Read.All");
/// `GET /api/Software/{id}/vulnerabilities`: a software's vulnerabilities.
pub static SOFTWARE_VULNERABILITIES: Endpoint = read(
    "/api/Software/{id}/vulnerabilities",
    "Vulnerability.Read.All",
);
/// `GET /api/vulnerabilities`: the vulnerability catalogue (OData on id, name, description,
/// cvssV3, publishedOn, severity, updatedOn; at most 8,000 a page).
pub static VULNERABILITIES: Endpoint = read("/api/vulnerabilities", "Vulnerability.Read.All");
/// `GET /api/vulnerabilities/machinesVulnerabilities`: vulnerabilities by device and software
/// (OData on id, cveId, machineId, fixingKbId, productName, productVersion, severity,
/// productVendor).
pub static MACHINES_VULNERABILITIES: Endpoint = read(
    "/api/vulnerabilities/machinesVulnerabilities",
    "Vulnerability.Read.All",
);
/// `GET /api/vulnerabilities/{id}/machineReferences`: the devices a CVE affects.
pub static VULNERABILITY_MACHINES: Endpoint = read(
    "/api/vulnerabilities/{id}/machineReferences",
    "Vulnerability.Read.All",
);
/// `GET /api/exposureScore`: the organisation's exposure score.
pub static EXPOSURE_SCORE: Endpoint = read("/api/exposureScore", "Score.Read.All");
/// `GET /api/configurationScore`: the secure score for devices.
pub static CONFIGURATION_SCORE: Endpoint = read("/api/configurationScore", "Score.Read.All");

// --- Microsoft Graph security ---------------------------------------------------------------

/// Largest `$top` of `GET /v1.0/security/alerts_v2`.
pub const GRAPH_ALERTS_MAX_TOP: usize = 2_000;
/// Largest `$top` of `GET /v1.0/security/incidents`.
pub const GRAPH_INCIDENTS_MAX_TOP: usize = 50;

const fn graph(method: Method, path: &'static str, permission: &'static str) -> Endpoint {
    let priority = if matches!(method, Method::GET) {
        Priority::Read
    } else {
        Priority::Respond
    };
    Endpoint {
        method,
        path,
        family: Family::Graph,
        permission,
        priority,
    }
}

/// `GET /v1.0/security/alerts_v2`: alerts of every Defender service (OData, 2,000 a page).
pub static GRAPH_ALERTS: Endpoint = graph(
    Method::GET,
    "/v1.0/security/alerts_v2",
    "SecurityAlert.Read.All",
);
/// `GET /v1.0/security/alerts_v2/{id}`: one alert with its evidence.
pub static GRAPH_ALERT: Endpoint = graph(
    Method::GET,
    "/v1.0/security/alerts_v2/{id}",
    "SecurityAlert.Read.All",
);
/// `PATCH /v1.0/security/alerts_v2/{id}`: status, classification, determination, assignedTo.
pub static UPDATE_GRAPH_ALERT: Endpoint = graph(
    Method::PATCH,
    "/v1.0/security/alerts_v2/{id}",
    "SecurityAlert.ReadWrite.All",
);
/// `POST /v1.0/security/alerts_v2/{id}/comments`: adds a comment.
pub static GRAPH_ALERT_COMMENTS: Endpoint = graph(
    Method::POST,
    "/v1.0/security/alerts_v2/{id}/comments",
    "SecurityAlert.ReadWrite.All",
);
/// `GET /v1.0/security/incidents`: incidents (OData, 50 a page, `$expand=alerts`).
pub static GRAPH_INCIDENTS: Endpoint = graph(
    Method::GET,
    "/v1.0/security/incidents",
    "SecurityIncident.Read.All",
);
/// `GET /v1.0/security/incidents/{id}`: one incident.
pub static GRAPH_INCIDENT: Endpoint = graph(
    Method::GET,
    "/v1.0/security/incidents/{id}",
    "SecurityIncident.Read.All",
);
/// `PATCH /v1.0/security/incidents/{id}`: status, assignedTo, classification, determination,
/// customTags, description.
pub static UPDATE_GRAPH_INCIDENT: Endpoint = graph(
    Method::PATCH,
    "/v1.0/security/incidents/{id}",
    "SecurityIncident.ReadWrite.All",
);
/// `POST /v1.0/security/incidents/{id}/comments`: adds a comment.
pub static GRAPH_INCIDENT_COMMENTS: Endpoint = graph(
    Method::POST,
    "/v1.0/security/incidents/{id}/comments",
    "SecurityIncident.ReadWrite.All",
);

/// Every endpoint of the catalogue (documentation and tests).
pub static ALL: &[&Endpoint] = &[
    &MACHINES,
    &DOMAIN_MACHINES,
    &FILE_MACHINES,
    &MACHINE_TAGS,
    &ISOLATE,
    &UNISOLATE,
    &STOP_AND_QUARANTINE_FILE,
    &RUN_ANTIVIRUS_SCAN,
    &RESTRICT_CODE_EXECUTION,
    &UNRESTRICT_CODE_EXECUTION,
    &COLLECT_INVESTIGATION_PACKAGE,
    &RUN_LIVE_RESPONSE,
    &MACHINE_ACTIONS,
    &MACHINE_ACTION,
    &CANCEL_MACHINE_ACTION,
    &PACKAGE_URI,
    &LIVE_RESPONSE_RESULT_LINK,
    &LIBRARY_FILES,
    &UPLOAD_LIBRARY_FILE,
    &DELETE_LIBRARY_FILE,
    &ALERTS,
    &ALERT,
    &UPDATE_ALERT,
    &BATCH_UPDATE_ALERTS,
    &CREATE_ALERT_BY_REFERENCE,
    &ALERT_USER,
    &ALERT_FILES,
    &ALERT_IPS,
    &ALERT_DOMAINS,
    &DOMAIN_ALERTS,
    &FILE_ALERTS,
    &IP_ALERTS,
    &USER_ALERTS,
    &MACHINE_ALERTS,
    &INDICATORS,
    &INDICATOR,
    &SUBMIT_INDICATOR,
    &IMPORT_INDICATORS,
    &BATCH_DELETE_INDICATORS,
    &DELETE_INDICATOR,
    &GRAPH_ALERTS,
    &GRAPH_ALERT,
    &UPDATE_GRAPH_ALERT,
    &GRAPH_ALERT_COMMENTS,
    &GRAPH_INCIDENTS,
    &GRAPH_INCIDENT,
    &UPDATE_GRAPH_INCIDENT,
    &GRAPH_INCIDENT_COMMENTS,
    &ADVANCED_QUERIES,
    &RUN_HUNTING_QUERY,
    &FILE,
    &FILE_STATS,
    &IP_STATS,
    &DOMAIN_STATS,
    &USER_MACHINES,
    &MACHINE,
    &MACHINE_LOGON_USERS,
    &FIND_MACHINES_BY_IP,
    &OFFBOARD,
    &START_INVESTIGATION,
    &INVESTIGATIONS,
    &INVESTIGATION,
    &MACHINE_SOFTWARE,
    &MACHINE_VULNERABILITIES,
    &MACHINE_MISSING_KBS,
    &MACHINE_RECOMMENDATIONS,
    &SOFTWARE,
    &SOFTWARE_DISTRIBUTIONS,
    &SOFTWARE_MISSING_KBS,
    &SOFTWARE_MACHINES,
    &SOFTWARE_VULNERABILITIES,
    &VULNERABILITIES,
    &MACHINES_VULNERABILITIES,
    &VULNERABILITY_MACHINES,
    &EXPOSURE_SCORE,
    &CONFIGURATION_SCORE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_encoded() {
        let call = ISOLATE.at(&["ABC"]);
        assert_eq!(call.path, "/api/machines/ABC/isolate");
        let hostile = MACHINE_ACTION.at(&["../machines/x?$top=1#"]);
        assert_eq!(
            hostile.path,
            "/api/machineactions/..%2Fmachines%2Fx%3F%24top%3D1%23"
        );
        let link = LIVE_RESPONSE_RESULT_LINK.at(&["e1", "2"]);
        assert_eq!(
            link.path,
            "/api/machineactions/e1/GetLiveResponseResultDownloadLink(index=2)"
        );
        assert_eq!(MACHINES.at(&[]).path, "/api/machines");
        let at = time::macros::datetime!(2025-11-01 10:20:30.5 +01:00);
        let ip: std::net::IpAddr = "10.1.4.21".parse().unwrap();
        assert_eq!(
            find_by_ip(ip, at).path,
            "/api/machines/findbyip(ip='10.1.4.21',timestamp=2025-11-01T09:20:30Z)"
        );
    }

    #[test]
    fn families_and_priorities_agree_with_the_path_rules() {
        for e in ALL {
            let concrete = e.path.replace("{id}", "x").replace("{index}", "0");
            assert_eq!(
                Family::of(&e.method, &concrete),
                e.family,
                "{} {}",
                e.method,
                e.path
            );
            let writes = e.method != Method::GET && e.family != Family::Hunting;
            assert_eq!(
                e.priority == Priority::Respond,
                writes,
                "{} {}",
                e.method,
                e.path
            );
            let graph = e.path.starts_with("/v1.0/");
            let prefix = if graph { "/v1.0/security/" } else { "/api/" };
            assert!(e.path.starts_with(prefix), "{}", e.path);
            let graph_permission = ["SecurityAlert", "SecurityIncident", "ThreatHunting"]
                .iter()
                .any(|p| e.permission.starts_with(p));
            assert_eq!(graph, graph_permission, "{}", e.path);
            assert!(!e.permission.is_empty());
        }
    }
}
