//! Threat and vulnerability management actions through the host against the simulator: each
//! action end to end, lists paged past one upstream page, filters sent as OData, the data's
//! consistency (a device's vulnerabilities are those of its software; the devices a CVE
//! affects are those with a vulnerable software), unknown subjects, and bad inputs refused
//! naming the parameter with no upstream call.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::*;

/// Defender API requests the simulator has answered.
fn api_calls(app: &TestApp) -> u64 {
    app.sim
        .counters()
        .by_route
        .iter()
        .filter(|(k, _)| k.contains(" /api/"))
        .map(|(_, m)| m.values().sum::<u64>())
        .sum()
}

fn data(body: &Value) -> &Vec<Value> {
    body["data"].as_array().unwrap()
}

/// The `key` field of every record.
fn field_set(body: &Value, key: &str) -> BTreeSet<String> {
    data(body)
        .iter()
        .map(|r| r[key].as_str().unwrap().to_string())
        .collect()
}

/// The id of the first scenario machine whose `osPlatform` starts with `platform`.
fn machine_on(app: &TestApp, platform: &str) -> String {
    app.sim
        .scenario()
        .machines
        .iter()
        .find(|m| m["osPlatform"].as_str().unwrap().starts_with(platform))
        .map(|m| m["id"].as_str().unwrap().to_string())
        .unwrap()
}

async fn ok(app: &TestApp, action: &str, params: Value) -> Value {
    let (status, body) = app.invoke("contoso", action, params).await;
    assert_eq!(status, 200, "{action}: {body}");
    assert_envelope(&body, action, "contoso");
    assert_eq!(body["status"], "success", "{action}: {body}");
    body
}

#[tokio::test]
async fn device_vulnerabilities_are_exactly_those_of_its_software() {
    let app = spawn().await;
    for platform in ["Windows10", "Linux"] {
        let dev = machine_on(&app, platform);
        let software = ok(&app, "get_installed_software", json!({"device_id": dev})).await;
        let ids = field_set(&software, "id");
        assert!(!ids.is_empty(), "{software}");
        assert_eq!(software["summary"]["total_software"], ids.len());
        assert_eq!(software["summary"]["device_id"], dev.as_str());
        assert!(data(&software)[0].get("@odata.context").is_none());

        let found = ok(
            &app,
            "get_discovered_vulnerabilities",
            json!({"device_id": dev.to_uppercase()}),
        )
        .await;
        let on_device = field_set(&found, "id");
        assert!(!on_device.is_empty(), "{found}");

        let mut of_software = BTreeSet::new();
        for id in &ids {
            let body = ok(&app, "list_software_vulnerabilities", json!({"id": id})).await;
            assert_eq!(body["summary"]["software_id"], id.as_str());
            of_software.extend(field_set(&body, "id"));
        }
        assert!(on_device.is_subset(&of_software));
        assert_eq!(on_device, of_software, "{platform}");

        // The org-wide rows of this device name the same CVEs and only its software.
        let rows = ok(
            &app,
            "list_device_vulnerabilities",
            json!({"device_id": dev, "limit": 1000}),
        )
        .await;
        assert_eq!(field_set(&rows, "cveId"), on_device);
        for row in data(&rows) {
            assert_eq!(row["machineId"], dev.as_str());
            let sw = format!(
                "{}-_-{}",
                row["productVendor"].as_str().unwrap(),
                row["productName"].as_str().unwrap()
            );
            assert!(ids.contains(&sw), "{sw} not installed on {dev}");
        }
    }
}

#[tokio::test]
async fn affected_devices_of_a_cve_are_the_devices_with_a_vulnerable_software() {
    let app = spawn().await;
    let cve = "CVE-2024-7971";
    let affected = ok(
        &app,
        "get_affected_devices",
        json!({"cve_id": "cve-2024-7971"}),
    )
    .await;
    assert_eq!(affected["summary"]["cve_id"], cve);
    let devices = field_set(&affected, "id");
    assert!(!devices.is_empty(), "{affected}");
    assert_eq!(affected["summary"]["total_devices"], devices.len());

    let vulnerable = ok(
        &app,
        "list_software_vulnerabilities",
        json!({"id": "google-_-chrome"}),
    )
    .await;
    assert!(field_set(&vulnerable, "id").contains(cve));
    let mut with_software = BTreeSet::new();
    for sw in ["microsoft-_-edge_chromium-based", "google-_-chrome"] {
        let body = ok(&app, "list_software_devices", json!({"id": sw})).await;
        with_software.extend(field_set(&body, "id"));
    }
    assert_eq!(devices, with_software);

    let rows = ok(
        &app,
        "list_device_vulnerabilities",
        json!({"cve_id": cve, "limit": 1000}),
    )
    .await;
    assert_eq!(field_set(&rows, "machineId"), devices);

    // The catalogue counts the same devices.
    let listed = ok(&app, "list_vulnerabilities", json!({"id": cve})).await;
    assert_eq!(data(&listed).len(), 1, "{listed}");
    assert_eq!(data(&listed)[0]["exposedMachines"], devices.len());
}

#[tokio::test]
async fn lists_page_past_one_upstream_page() {
    let app = spawn_with(scenario_with_page_size(1)).await;
    let all = ok(&app, "list_software", json!({"limit": 100})).await;
    let total = data(&all).len();
    assert!(total >= 5, "{all}");
    assert_eq!(
        app.sim.counters().route("GET", "/api/software"),
        total as u64
    );

    let before = app.sim.counters().route("GET", "/api/software");
    let page = ok(&app, "list_software", json!({"limit": 3, "offset": 1})).await;
    assert_eq!(data(&page).as_slice(), &data(&all)[1..4]);
    assert_eq!(page["summary"]["total_software"], 3);
    assert_eq!(app.sim.counters().route("GET", "/api/software") - before, 3);

    let vulns = ok(&app, "list_vulnerabilities", json!({})).await;
    let catalogue = defender_sim::tvm_data::CVES.len();
    assert!(catalogue > 5);
    assert_eq!(data(&vulns).len(), catalogue.min(25), "{vulns}");
    let vulns = ok(
        &app,
        "list_vulnerabilities",
        json!({"limit": 5, "offset": 2}),
    )
    .await;
    assert_eq!(data(&vulns).len(), 5);

    let dev = machine_on(&app, "Windows10");
    let before = app
        .sim
        .counters()
        .route("GET", "/api/machines/{id}/software");
    let installed = ok(&app, "get_installed_software", json!({"device_id": dev})).await;
    let n = data(&installed).len() as u64;
    assert!(n > 1, "{installed}");
    assert_eq!(
        app.sim
            .counters()
            .route("GET", "/api/machines/{id}/software")
            - before,
        n
    );

    let rows = ok(&app, "list_device_vulnerabilities", json!({"limit": 4})).await;
    assert_eq!(data(&rows).len(), 4);
    assert_eq!(
        app.sim
            .counters()
            .route("GET", "/api/vulnerabilities/machinesvulnerabilities"),
        4
    );
}

#[tokio::test]
async fn filters_reach_defender_as_odata() {
    let app = spawn().await;
    let body = ok(&app, "list_software", json!({"vendor": "microsoft"})).await;
    assert!(data(&body).len() >= 2, "{body}");
    assert!(data(&body).iter().all(|s| s["vendor"] == "microsoft"));
    let body = ok(&app, "list_software", json!({"id": "git-scm-_-git"})).await;
    assert_eq!(
        field_set(&body, "id"),
        BTreeSet::from(["git-scm-_-git".into()])
    );
    let body = ok(
        &app,
        "list_software",
        json!({"name": "chrome", "vendor": "google"}),
    )
    .await;
    assert_eq!(data(&body).len(), 1, "{body}");

    let body = ok(
        &app,
        "list_vulnerabilities",
        json!({"severity": "critical"}),
    )
    .await;
    assert!(!data(&body).is_empty());
    assert!(data(&body).iter().all(|v| v["severity"] == "Critical"));
    let body = ok(&app, "list_vulnerabilities", json!({"cvss": "9"})).await;
    assert!(!data(&body).is_empty());
    assert!(
        data(&body)
            .iter()
            .all(|v| v["cvssV3"].as_f64().unwrap() >= 9.0)
    );
    let body = ok(
        &app,
        "list_vulnerabilities",
        json!({"published_on": "2024-07-01", "updated_on": "2024-07-01T00:00:00Z"}),
    )
    .await;
    assert!(!data(&body).is_empty());
    assert!(
        data(&body)
            .iter()
            .all(|v| v["publishedOn"].as_str().unwrap() >= "2024-07-01")
    );
    let body = ok(
        &app,
        "list_vulnerabilities",
        json!({"name_contains": "2023-"}),
    )
    .await;
    assert!(!data(&body).is_empty());
    assert!(
        data(&body)
            .iter()
            .all(|v| v["name"].as_str().unwrap().contains("2023-"))
    );
    let body = ok(
        &app,
        "list_vulnerabilities",
        json!({"description_contains": "openssh", "name_equal": "CVE-2024-6387"}),
    )
    .await;
    assert_eq!(
        field_set(&body, "id"),
        BTreeSet::from(["CVE-2024-6387".into()])
    );
    // A quote in a value stays inside its literal.
    let body = ok(
        &app,
        "list_vulnerabilities",
        json!({"name_contains": "x' or 1 eq 1 or 'x"}),
    )
    .await;
    assert!(data(&body).is_empty(), "{body}");

    let dev = machine_on(&app, "Windows");
    let body = ok(
        &app,
        "list_device_vulnerabilities",
        json!({"device_id": dev, "software_id": "microsoft-_-edge_chromium-based",
               "severity": "High", "limit": 100}),
    )
    .await;
    assert!(!data(&body).is_empty(), "{body}");
    for row in data(&body) {
        assert_eq!(row["machineId"], dev.as_str());
        assert_eq!(row["productVendor"], "microsoft");
        assert_eq!(row["productName"], "edge_chromium-based");
        assert_eq!(row["severity"], "High");
    }
    let body = ok(
        &app,
        "list_device_vulnerabilities",
        json!({"product_vendor": "openbsd", "product_name": "openssh", "limit": 100}),
    )
    .await;
    assert!(data(&body).iter().all(|r| r["productName"] == "openssh"));
    let version = data(&body)[0]["productVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let body = ok(
        &app,
        "list_device_vulnerabilities",
        json!({"product_version": version, "limit": 100}),
    )
    .await;
    assert!(
        data(&body)
            .iter()
            .all(|r| r["productVersion"] == version.as_str())
    );
}

#[tokio::test]
async fn versions_kbs_recommendations_and_scores() {
    let app = spawn().await;
    let sw = "microsoft-_-edge_chromium-based";
    let versions = ok(&app, "list_software_versions", json!({"id": sw})).await;
    let installations: u64 = data(&versions)
        .iter()
        .map(|v| v["installations"].as_u64().unwrap())
        .sum();
    let devices = ok(&app, "list_software_devices", json!({"id": sw})).await;
    assert_eq!(installations, data(&devices).len() as u64);
    assert_eq!(versions["summary"]["total_versions"], data(&versions).len());

    let windows = machine_on(&app, "Windows10");
    let kbs = ok(&app, "get_missing_kbs", json!({"device_id": windows})).await;
    assert!(!data(&kbs).is_empty(), "{kbs}");
    let rows = ok(
        &app,
        "list_device_vulnerabilities",
        json!({"device_id": windows, "limit": 1000}),
    )
    .await;
    let fixing: BTreeSet<String> = data(&rows)
        .iter()
        .filter_map(|r| r["fixingKbId"].as_str().map(str::to_string))
        .collect();
    assert_eq!(field_set(&kbs, "id"), fixing);
    for kb in data(&kbs) {
        assert!(
            kb["url"]
                .as_str()
                .unwrap()
                .contains(kb["id"].as_str().unwrap())
        );
        assert!(kb["cveAddressed"].as_u64().unwrap() >= 1);
    }
    let linux = machine_on(&app, "Linux");
    let kbs = ok(&app, "get_missing_kbs", json!({"device_id": linux})).await;
    assert!(data(&kbs).is_empty());
    assert_eq!(kbs["summary"]["total_kbs"], 0);

    let recs = ok(
        &app,
        "get_security_recommendations",
        json!({"device_id": windows}),
    )
    .await;
    let software = ok(
        &app,
        "get_installed_software",
        json!({"device_id": windows}),
    )
    .await;
    let vulnerable: BTreeSet<String> = data(&software)
        .iter()
        .filter(|s| s["weaknesses"].as_u64().unwrap() > 0)
        .map(|s| format!("va-_-{}", s["id"].as_str().unwrap()))
        .collect();
    assert_eq!(field_set(&recs, "id"), vulnerable);

    let exposure = ok(&app, "get_exposure_score", json!({})).await;
    let score = exposure["summary"]["exposure_score"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&score) && score > 0.0, "{exposure}");
    assert_eq!(data(&exposure)[0]["score"].as_f64().unwrap(), score);
    assert!(data(&exposure)[0]["time"].is_string());
    let secure = ok(&app, "get_secure_score", json!({})).await;
    assert!(
        secure["summary"]["secure_score"].as_f64().unwrap() > 0.0,
        "{secure}"
    );
    assert_eq!(app.sim.counters().route("GET", "/api/exposurescore"), 1);
    assert_eq!(
        app.sim.counters().route("GET", "/api/configurationscore"),
        1
    );
}

#[tokio::test]
async fn unknown_subjects_fail_saying_so() {
    let app = spawn().await;
    let cases = [
        (
            "get_installed_software",
            json!({"device_id": "ffffffffffffffffffffffffffffffffffffffff"}),
        ),
        (
            "get_security_recommendations",
            json!({"device_id": "ffffffffffffffffffffffffffffffffffffffff"}),
        ),
        ("list_software_versions", json!({"id": "nobody-_-nothing"})),
        ("list_software_devices", json!({"id": "nobody-_-nothing"})),
        ("get_affected_devices", json!({"cve_id": "CVE-1999-0001"})),
    ];
    for (action, params) in cases {
        let (status, body) = app.invoke("contoso", action, params).await;
        assert_eq!(status, 200, "{action}: {body}");
        assert_eq!(body["status"], "failed", "{action}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("not found"),
            "{action}: {body}"
        );
    }
    let body = ok(&app, "list_software", json!({"id": "nobody-_-nothing"})).await;
    assert!(data(&body).is_empty());
}

#[tokio::test]
async fn bad_inputs_are_refused_naming_the_parameter_without_an_upstream_call() {
    let app = spawn().await;
    let hex39 = "a".repeat(39);
    let cases = [
        (
            "get_installed_software",
            json!({"device_id": "ws-finance-01"}),
            "device_id",
        ),
        (
            "get_discovered_vulnerabilities",
            json!({"device_id": hex39}),
            "device_id",
        ),
        ("get_missing_kbs", json!({"device_id": " "}), "device_id"),
        ("get_security_recommendations", json!({}), "device_id"),
        ("list_software", json!({"id": "edge"}), "id"),
        ("list_software", json!({"limit": 0}), "limit"),
        ("list_software", json!({"limit": 10001}), "limit"),
        ("list_software", json!({"offset": -1}), "offset"),
        ("list_software", json!({"name": "x".repeat(201)}), "name"),
        ("list_software_versions", json!({"id": "a/b-_-c"}), "id"),
        ("list_software_devices", json!({"id": ""}), "id"),
        (
            "list_software_vulnerabilities",
            json!({"id": "microsoft_edge"}),
            "id",
        ),
        (
            "list_device_vulnerabilities",
            json!({"device_id": "x"}),
            "device_id",
        ),
        (
            "list_device_vulnerabilities",
            json!({"software_id": "chrome"}),
            "software_id",
        ),
        (
            "list_device_vulnerabilities",
            json!({"cve_id": "CVE-24-1"}),
            "cve_id",
        ),
        (
            "list_device_vulnerabilities",
            json!({"severity": "Severe"}),
            "severity",
        ),
        (
            "list_device_vulnerabilities",
            json!({"limit": "0"}),
            "limit",
        ),
        (
            "list_device_vulnerabilities",
            json!({"offset": 1_000_001}),
            "offset",
        ),
        ("list_vulnerabilities", json!({"id": "CVE-2024"}), "id"),
        ("list_vulnerabilities", json!({"cvss": 11}), "cvss"),
        ("list_vulnerabilities", json!({"cvss": -0.5}), "cvss"),
        ("list_vulnerabilities", json!({"cvss": "high"}), "cvss"),
        (
            "list_vulnerabilities",
            json!({"severity": "urgent"}),
            "severity",
        ),
        (
            "list_vulnerabilities",
            json!({"published_on": "yesterday"}),
            "published_on",
        ),
        (
            "list_vulnerabilities",
            json!({"updated_on": "2024-13-01"}),
            "updated_on",
        ),
        ("list_vulnerabilities", json!({"limit": 20000}), "limit"),
        (
            "get_affected_devices",
            json!({"cve_id": "2024-1234"}),
            "cve_id",
        ),
        ("get_exposure_score", json!({"score": 1}), "score"),
        ("get_secure_score", json!({"time": "now"}), "time"),
    ];
    for (action, params, param) in cases {
        let (status, body) = app.invoke("contoso", action, params).await;
        assert_eq!(status, 400, "{action}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains(&format!("'{param}'")),
            "{action}: {body}"
        );
    }
    assert_eq!(api_calls(&app), 0);
}

#[tokio::test]
async fn an_app_without_the_permissions_is_refused_before_any_call() {
    let s = defender_sim::scenario::Scenario::default_scenario();
    let scenario = s.clone();
    let app = spawn_configured(scenario, move |c| {
        let base = c.assets.values().next().unwrap().api_url.clone();
        // The scenario's second app reads machines and alerts only.
        c.assets
            .insert("reporter".into(), asset_on_app("reporter", &s, &base, 1));
    })
    .await;
    let dev = machine_on(&app, "Windows");
    let cases = [
        (
            "get_installed_software",
            json!({"device_id": dev}),
            "Software.Read.All",
        ),
        ("list_vulnerabilities", json!({}), "Vulnerability.Read.All"),
        (
            "get_security_recommendations",
            json!({"device_id": dev}),
            "SecurityRecommendation.Read.All",
        ),
        ("get_exposure_score", json!({}), "Score.Read.All"),
    ];
    for (action, params, permission) in cases {
        let (_, body) = app.invoke("reporter", action, params).await;
        assert_eq!(body["status"], "failed", "{action}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(permission),
            "{action}: {body}"
        );
    }
    for route in [
        "/api/machines/{id}/software",
        "/api/vulnerabilities",
        "/api/machines/{id}/recommendations",
        "/api/exposurescore",
    ] {
        assert_eq!(app.sim.counters().route("GET", route), 0, "{route}");
    }
}

#[tokio::test]
async fn a_softwares_missing_kbs_are_the_updates_fixing_its_vulnerabilities() {
    let app = spawn().await;
    let windows = machine_on(&app, "Windows10");
    let software = ok(
        &app,
        "get_installed_software",
        json!({"device_id": windows}),
    )
    .await;
    let vulnerable = data(&software)
        .iter()
        .find(|s| s["weaknesses"].as_u64().unwrap() > 0)
        .map(|s| s["id"].as_str().unwrap().to_string())
        .unwrap();
    let kbs = ok(&app, "list_software_missing_kbs", json!({"id": vulnerable})).await;
    assert_eq!(kbs["summary"]["software_id"], vulnerable.as_str());
    assert_eq!(kbs["summary"]["total_kbs"], data(&kbs).len());
    // The updates are those fixing the software's vulnerabilities on the devices.
    let rows = ok(
        &app,
        "list_device_vulnerabilities",
        json!({"software_id": vulnerable, "limit": 1000}),
    )
    .await;
    let fixing: BTreeSet<String> = data(&rows)
        .iter()
        .filter_map(|c| c["fixingKbId"].as_str().map(str::to_string))
        .collect();
    assert!(!fixing.is_empty(), "{rows}");
    assert_eq!(field_set(&kbs, "id"), fixing, "{kbs}");
    let (status, body) = app
        .invoke(
            "contoso",
            "list_software_missing_kbs",
            json!({"id": "nobody-_-nothing"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    let calls = api_calls(&app);
    let (status, body) = app
        .invoke(
            "contoso",
            "list_software_missing_kbs",
            json!({"id": "no separator"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("id"), "{body}");
    assert_eq!(api_calls(&app), calls);
}
