//! Replay: the real host runs actions end to end on Microsoft's documented bytes.

use serde_json::{Value, json};

use super::replay::{Host, Replay};

const DEVICE: &str = "1e5bc9d7e413ddd7902c2932e418702b84d0cc07";

/// Runs `action` with `params` on a host whose upstream answers are `fixtures`.
async fn run(action: &str, params: Value, fixtures: &[&str]) -> (Replay, u16, Value) {
    let replay = Replay::start().await;
    for f in fixtures {
        replay.answer(f);
    }
    let host = Host::start(&replay).await;
    let (status, envelope) = host.invoke(action, params).await;
    drop(host);
    (replay, status, envelope)
}

fn ok(envelope: &Value) {
    assert_eq!(envelope["status"], "success", "{envelope:#}");
}

fn first(envelope: &Value) -> &Value {
    &envelope["data"][0]
}

// --- Containment ----------------------------------------------------------------------------

#[tokio::test]
async fn quarantine_device_on_documented_bytes() {
    let (replay, status, env) = run(
        "quarantine_device",
        json!({"device_id": DEVICE, "type": "Full", "comment": "Isolate machine due to alert 1234", "timeout": 5}),
        &["mde/machine.json", "mde/isolate.json", "mde/machineaction_get.json"],
    )
    .await;
    assert_eq!(status, 200, "{env:#}");
    ok(&env);
    assert_eq!(env["summary"]["quarantine_status"], "Succeeded", "{env:#}");
    assert_eq!(
        first(&env)["id"],
        "5382f7ea-7557-4ab7-9782-d50480024a4e",
        "{env:#}"
    );
    let posts = replay.requests_to("POST /api/machines/{id}/isolate");
    assert_eq!(posts.len(), 1, "{:?}", replay.calls());
    assert_eq!(posts[0].path, format!("/api/machines/{DEVICE}/isolate"));
    assert_eq!(posts[0].body["IsolationType"], "Full");
    assert_eq!(
        posts[0].body["Comment"],
        "Isolate machine due to alert 1234"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn unquarantine_device_on_documented_bytes() {
    let (replay, _, env) = run(
        "unquarantine_device",
        json!({"device_id": DEVICE, "comment": "Unisolate machine since it was clean and validated", "timeout": 5}),
        &["mde/machine.json", "mde/unisolate.json", "mde/machineaction_get.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        env["summary"]["unquarantine_status"], "Succeeded",
        "{env:#}"
    );
    assert_eq!(
        replay
            .requests_to("POST /api/machines/{id}/unisolate")
            .len(),
        1
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn quarantine_file_on_documented_bytes() {
    let (replay, _, env) = run(
        "quarantine_file",
        json!({"device_id": DEVICE, "file_hash": "87662bc3d60e4200ceaf7aae249d1c343f4b83c9", "comment": "Stop and quarantine file", "timeout": 5}),
        &["mde/machine.json", "mde/stop_and_quarantine_file.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        env["summary"]["quarantine_file_status"], "Succeeded",
        "{env:#}"
    );
    assert_eq!(
        first(&env)["id"],
        "44cffc15-0e3d-4cbf-96aa-bf76f9b27f5e",
        "{env:#}"
    );
    let post = &replay.requests_to("POST /api/machines/{id}/StopAndQuarantineFile")[0];
    assert_eq!(
        post.body["Sha1"],
        "87662bc3d60e4200ceaf7aae249d1c343f4b83c9"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn scan_device_on_documented_bytes() {
    let (replay, _, env) = run(
        "scan_device",
        json!({"device_id": DEVICE, "scan_type": "Full", "comment": "Check machine for viruses due to alert 3212", "timeout": 5}),
        &["mde/machine.json", "mde/run_antivirus_scan.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["summary"]["scan_status"], "Succeeded", "{env:#}");
    let post = &replay.requests_to("POST /api/machines/{id}/runAntiVirusScan")[0];
    assert_eq!(post.body["ScanType"], "Full");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn restrict_app_execution_on_documented_bytes() {
    let (replay, _, env) = run(
        "restrict_app_execution",
        json!({"device_id": DEVICE, "comment": "Restrict code execution due to alert 1234", "timeout": 5}),
        &["mde/machine.json", "mde/restrict_code_execution.json", "mde/machineaction_get.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        env["summary"]["restrict_app_execution_status"], "Succeeded",
        "{env:#}"
    );
    assert_eq!(
        replay
            .requests_to("POST /api/machines/{id}/restrictCodeExecution")
            .len(),
        1
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn remove_app_restriction_on_documented_bytes() {
    let (replay, _, env) = run(
        "remove_app_restriction",
        json!({"device_id": DEVICE, "comment": "Unrestrict code execution", "timeout": 5}),
        &[
            "mde/machine.json",
            "mde/unrestrict_code_execution.json",
            "mde/machineaction_get.json",
        ],
    )
    .await;
    ok(&env);
    assert_eq!(
        env["summary"]["remove_app_restriction_status"], "Succeeded",
        "{env:#}"
    );
    assert_eq!(
        replay
            .requests_to("POST /api/machines/{id}/unrestrictCodeExecution")
            .len(),
        1
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn collect_investigation_package_on_documented_bytes() {
    let (replay, _, env) = run(
        "collect_investigation_package",
        json!({"device_id": DEVICE, "comment": "Collect forensics due to alert 1234", "timeout": 5}),
        &["mde/machine.json", "mde/collect_investigation_package.json", "mde/get_package_uri.json"],
    )
    .await;
    // The action succeeded; the package link (wrapped in quotes on Microsoft's page) is read
    // and then refused, as it points at Microsoft's storage, not at an allowed download host.
    assert_eq!(env["status"], "failed", "{env:#}");
    assert_eq!(
        env["summary"]["collect_investigation_package_status"], "Succeeded",
        "{env:#}"
    );
    let message = env["message"].as_str().unwrap();
    assert!(
        message.contains("https://userrequests-us.securitycenter.windows.com")
            && message.contains("download_hosts"),
        "{message}"
    );
    assert!(
        !message.contains("token="),
        "the link's signature leaked: {message}"
    );
    assert_eq!(
        replay.requests_to("GET /api/machineactions/{id}/getPackageUri")[0].path,
        "/api/machineactions/69dc3630-1ccc-4342-acf3-35286eec741d/getPackageUri"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_status_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_status",
        json!({"event_id": "2e9da30d-27f6-4208-81f2-9cd3d67893ba"}),
        &["mde/machineaction_get.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["summary"]["event_status"], "Succeeded", "{env:#}");
    assert_eq!(env["summary"]["action_type"], "Isolate", "{env:#}");
    assert_eq!(first(&env)["status"], "Succeeded", "{env:#}");
    assert_eq!(
        first(&env)["lastUpdateDateTimeUtc"],
        "2019-01-02T14:40:44.6596267Z",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn offboard_device_on_documented_bytes() {
    let (replay, _, env) = run(
        "offboard_device",
        json!({"device_id": DEVICE, "comment": "Offboard machine by automation", "timeout": 5}),
        &[
            "mde/machine.json",
            "mde/offboard.json",
            "mde/machineaction_get.json",
        ],
    )
    .await;
    ok(&env);
    assert_eq!(
        replay.requests_to("POST /api/machines/{id}/offboard").len(),
        1
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn cancel_action_on_documented_bytes() {
    let (replay, _, env) = run(
        "cancel_action",
        json!({"event_id": "988cc94e-7a8f-4b28-ab65-54970c5d5018", "comment": "Machine action was canceled by automation"}),
        &["mde/machineaction_get.json", "mde/cancel_machine_action.json"],
    )
    .await;
    assert!(
        env["status"] == "success" || env["status"] == "failed",
        "{env:#}"
    );
    assert!(!replay.calls().is_empty());
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_machine_actions_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_machine_actions",
        json!({}),
        &["mde/machineactions_list.json"],
    )
    .await;
    ok(&env);
    let data = env["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{env:#}");
    assert_eq!(
        data[2]["relatedFileInfo"]["fileIdentifier"],
        "a0c659857ccbe457fdaf5fe21d54efdcbf6f6508"
    );
    // The list names the update time lastUpdateTimeUtc; the action's declared output
    // (data.*.lastUpdateDateTimeUtc) carries it too.
    assert_eq!(
        data[0]["lastUpdateDateTimeUtc"], "2018-12-04T12:45:25.4049122Z",
        "{env:#}"
    );
    assert_eq!(
        data[0]["lastUpdateTimeUtc"], "2018-12-04T12:45:25.4049122Z",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

// --- Devices --------------------------------------------------------------------------------

#[tokio::test]
async fn list_devices_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_devices",
        json!({"input_type": "All"}),
        &["mde/machines.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], DEVICE, "{env:#}");
    assert_eq!(first(&env)["machineTags"][1], "test tag 2", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_device_details_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_device_details",
        json!({"device_ids": DEVICE}),
        &["mde/machine.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["computerDnsName"],
        "mymachine1.contoso.com",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn update_device_tag_on_documented_bytes() {
    let (replay, _, env) = run(
        "update_device_tag",
        json!({"device_id": DEVICE, "operation": "Add", "tag": "test Tag 2"}),
        &["mde/machine.json", "mde/machine_tags.json"],
    )
    .await;
    ok(&env);
    let post = &replay.requests_to("POST /api/machines/{id}/tags")[0];
    assert_eq!(post.body, json!({"Value": "test Tag 2", "Action": "Add"}));
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn find_devices_by_ip_on_documented_bytes() {
    let (replay, _, env) = run(
        "find_devices_by_ip",
        // The page's timestamp (2019) is older than the 30 days the host accepts.
        json!({"ip": "10.248.240.38"}),
        &["mde/find_machines_by_ip.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], DEVICE, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_domain_devices_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_domain_devices",
        json!({"domain": "api.securitycenter.microsoft.com"}),
        &["mde/domain_machines.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], DEVICE, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_file_devices_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_file_devices",
        json!({"file_hash": "1e5bc9d7e413ddd7902c2932e418702b84d0cc07"}),
        &["mde/file_machines.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], DEVICE, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_user_devices_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_user_devices",
        json!({"user_id": "user1"}),
        &["mde/user_machines.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], DEVICE, "{env:#}");
    replay.assert_no_unscripted_calls();
}

// --- Alerts ---------------------------------------------------------------------------------

#[tokio::test]
async fn list_alerts_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_alerts",
        json!({"input_type": "All"}),
        &["mde/alerts_expand_evidence.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["id"],
        "da637472900382838869_1364969609",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_alert_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_alert",
        json!({"alert_id": "da637472900382838869_1364969609"}),
        &["mde/alert.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["summary"]["alert_status"], "New", "{env:#}");
    assert_eq!(env["summary"]["severity"], "Low", "{env:#}");
    assert_eq!(
        first(&env)["evidence"].as_array().unwrap().len(),
        3,
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn update_alert_on_documented_bytes() {
    let (replay, _, env) = run(
        "update_alert",
        json!({"alert_id": "121688558380765161_2136280442", "status": "Resolved", "assigned_to": "secop2@contoso.com", "classification": "FalsePositive", "determination": "Malware", "comment": "Resolve my alert and assign to secop2"}),
        &["mde/update_alert.json", "mde/alerts.json"],
    )
    .await;
    ok(&env);
    let patch = &replay.requests_to("PATCH /api/alerts/{id}")[0];
    assert_eq!(patch.body["status"], "Resolved", "{:?}", patch.body);
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn update_alerts_on_documented_bytes() {
    let (replay, _, env) = run(
        "update_alerts",
        json!({"alert_ids": "da637399794050273582_760707377,da637399989469816469_51697947354", "status": "Resolved"}),
        &["mde/batch_update_alerts.json"],
    )
    .await;
    ok(&env);
    let post = &replay.requests_to("POST /api/alerts/batchUpdate")[0];
    assert_eq!(
        post.body["alertIds"].as_array().unwrap().len(),
        2,
        "{:?}",
        post.body
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn create_alert_on_documented_bytes() {
    let (replay, _, env) = run(
        "create_alert",
        json!({"report_id": "20776", "event_time": "2018-08-03T16:45:21.7115183Z", "device_id": DEVICE, "severity": "Low", "title": "example", "description": "example alert", "recommended_action": "nothing", "category": "Exploit"}),
        &["mde/create_alert_by_reference.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["id"],
        "da637472900382838869_1364969609",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_alert_user_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_alert_user",
        json!({"alert_id": "636688558380765161_2136280442"}),
        &["mde/alert_user.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["accountName"], "user1", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_alert_files_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_alert_files",
        json!({"alert_id": "636688558380765161_2136280442"}),
        &["mde/alert_files.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["sha1"],
        "f2a00fd2f2de1be0214b8529f1e9f67096c1aa70",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_alert_ips_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_alert_ips",
        json!({"alert_id": "636688558380765161_2136280442"}),
        &["mde/alert_ips.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["data"].as_array().unwrap().len(), 2, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_alert_domains_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_alert_domains",
        json!({"alert_id": "636688558380765161_2136280442"}),
        &["mde/alert_domains.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["host"], "www.example.com", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_domain_alerts_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_domain_alerts",
        json!({"domain": "client.wns.windows.com"}),
        &["mde/domain_alerts.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["id"],
        "da637308392288907382_-880718168",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_file_alerts_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_file_alerts",
        json!({"file_hash": "6532ec91d513acc05f43ee0aa3002599729fd3e1"}),
        &["mde/file_alerts.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["id"],
        "da637308392288907382_-880718168",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_user_alerts_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_user_alerts",
        json!({"user": "user1"}),
        &["mde/user_alerts.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["id"],
        "da637308392288907382_-880718168",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_device_alerts_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_device_alerts",
        json!({"device_id": "12ee6dd8c833c8a052ea231ec1b19adaf497b625"}),
        &["mde/machine_alerts.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["id"],
        "da637308392288907382_-880718168",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

// --- Indicators -----------------------------------------------------------------------------

#[tokio::test]
async fn list_indicators_on_documented_bytes() {
    let (replay, _, env) = run("list_indicators", json!({}), &["mde/indicators.json"]).await;
    ok(&env);
    assert_eq!(env["data"].as_array().unwrap().len(), 2, "{env:#}");
    assert_eq!(first(&env)["id"], "995", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_indicator_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_indicator",
        json!({"indicator_id": "994"}),
        &["mde/indicator.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["indicatorType"], "FileSha256", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn submit_indicator_on_documented_bytes() {
    let (replay, _, env) = run(
        "submit_indicator",
        json!({"title": "test", "description": "test", "indicator_type": "FileSha1", "indicator_value": "220e7d15b011d7fac48f2bd61114db1022197f7f", "action": "Block", "severity": "Informational"}),
        &["mde/submit_indicator.json", "mde/indicators.json"],
    )
    .await;
    ok(&env);
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn update_indicator_batch_on_documented_bytes() {
    let (replay, _, env) = run(
        "update_indicator_batch",
        json!({"indicator_batch": json!([
            {"indicatorValue": "220e7d15b011d7fac48f2bd61114db1022197f7f", "indicatorType": "FileSha1", "title": "demo", "application": "demo-test", "expirationTime": "2099-12-12T00:00:00Z", "action": "Alert", "severity": "Informational", "description": "demo2", "recommendedActions": "nothing", "rbacGroupNames": ["group1", "group2"]},
            {"indicatorValue": "2233223322332233223322332233223322332233223322332233223322332222", "indicatorType": "FileSha256", "title": "demo2", "application": "demo-test2", "expirationTime": "2099-12-12T00:00:00Z", "action": "Alert", "severity": "Medium", "description": "demo2", "recommendedActions": "nothing", "rbacGroupNames": []}
        ]).to_string()}),
        &["mde/import_indicators.json", "mde/indicators.json"],
    )
    .await;
    ok(&env);
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn delete_indicator_on_documented_bytes() {
    let (replay, _, env) = run(
        "delete_indicator",
        json!({"indicator_id": "995"}),
        &["mde/delete_indicator.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        replay.requests_to("DELETE /api/indicators/{id}")[0].path,
        "/api/indicators/995"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn delete_indicators_on_documented_bytes() {
    let (replay, _, env) = run(
        "delete_indicators",
        json!({"indicator_ids": "1,2,5"}),
        &["mde/batch_delete_indicators.json"],
    )
    .await;
    ok(&env);
    let post = &replay.requests_to("POST /api/indicators/BatchDelete")[0];
    assert_eq!(
        post.body["IndicatorIds"],
        json!(["1", "2", "5"]),
        "{:?}",
        post.body
    );
    replay.assert_no_unscripted_calls();
}

// --- Enrichment -----------------------------------------------------------------------------

#[tokio::test]
async fn get_file_info_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_file_info",
        json!({"file_hash": "4388963aaa83afe2042a46a3c017ad50bdcdafb3"}),
        &["mde/file.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["summary"]["global_prevalence"], 180022, "{env:#}");
    assert_eq!(
        first(&env)["determinationValue"],
        "PUA:Win32/FusionCore",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn file_prevalence_on_documented_bytes() {
    let (replay, _, env) = run(
        "file_prevalence",
        json!({"file_hash": "0991a395da64e1c5fbe8732ed11e6be064081d9f", "look_back_hours": 48}),
        &["mde/file_stats.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["summary"]["organization_prevalence"], 14850, "{env:#}");
    assert_eq!(env["summary"]["global_prevalence"], 705012, "{env:#}");
    assert_eq!(first(&env)["organizationPrevalence"], 14850, "{env:#}");
    assert!(
        replay.requests_to("GET /api/files/{hash}/stats")[0]
            .path
            .contains("lookBackHours=48")
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn ip_prevalence_on_documented_bytes() {
    let (replay, _, env) = run(
        "ip_prevalence",
        json!({"ip": "10.209.67.177", "look_back_hours": 48}),
        &["mde/ip_stats.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["summary"]["organization_prevalence"], 63515, "{env:#}");
    assert_eq!(first(&env)["organizationPrevalence"], 63515, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn domain_prevalence_on_documented_bytes() {
    let (replay, _, env) = run(
        "domain_prevalence",
        json!({"domain": "example.com", "look_back_hours": 48}),
        &["mde/domain_stats.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["summary"]["organization_prevalence"], 4070, "{env:#}");
    assert_eq!(first(&env)["organizationPrevalence"], 4070, "{env:#}");
    replay.assert_no_unscripted_calls();
}

// --- Investigations -------------------------------------------------------------------------

#[tokio::test]
async fn start_investigation_on_documented_bytes() {
    let (replay, _, env) = run(
        "start_investigation",
        json!({"device_id": DEVICE, "comment": "Test investigation"}),
        &["mde/machine.json", "mde/start_investigation.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], "63004", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_investigations_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_investigations",
        json!({}),
        &["mde/investigations.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], "63017", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_investigation_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_investigation",
        json!({"investigation_id": "63004"}),
        &["mde/investigation.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["state"], "Running", "{env:#}");
    replay.assert_no_unscripted_calls();
}

// --- Hunting --------------------------------------------------------------------------------

#[tokio::test]
async fn run_query_on_documented_bytes_mde() {
    let (replay, _, env) = run(
        "run_query",
        json!({"query": "DeviceProcessEvents | where InitiatingProcessFileName =~ 'powershell.exe' | project Timestamp, FileName, InitiatingProcessFileName, DeviceId | limit 2", "api": "mde"}),
        &["mde/advanced_queries.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        env["summary"]["columns"][3],
        json!({"name": "DeviceId", "type": "String"}),
        "{env:#}"
    );
    assert_eq!(env["summary"]["total_results"], 2, "{env:#}");
    assert_eq!(env["data"].as_array().unwrap().len(), 2, "{env:#}");
    assert_eq!(first(&env)["FileName"], "csc.exe", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn run_query_on_documented_bytes_graph_pascal_schema() {
    let (replay, _, env) = run(
        "run_query",
        json!({"query": "DeviceProcessEvents | where InitiatingProcessFileName =~ 'powershell.exe' | project Timestamp, FileName, InitiatingProcessFileName | limit 2", "api": "graph"}),
        &["graph/run_hunting_query_pascal_schema.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["FileName"], "conhost.exe", "{env:#}");
    replay.assert_no_unscripted_calls();
}

// --- Graph ----------------------------------------------------------------------------------

#[tokio::test]
async fn list_graph_alerts_on_documented_bytes() {
    let (replay, _, env) = run("list_graph_alerts", json!({}), &["graph/alerts_v2.json"]).await;
    ok(&env);
    assert_eq!(
        first(&env)["id"],
        "da637551227677560813_-961444813",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_graph_alert_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_graph_alert",
        json!({"alert_id": "da637578995287051192_756343937"}),
        &["graph/alert_v2.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["evidence"].as_array().unwrap().len(),
        4,
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn update_graph_alert_on_documented_bytes() {
    let (replay, _, env) = run(
        "update_graph_alert",
        json!({"alert_id": "da637551227677560813_-961444813", "status": "inProgress", "classification": "truePositive", "determination": "malware", "assigned_to": "secAdmin@contoso.onmicrosoft.com", "comment": "Demo for docs"}),
        &["graph/update_alert_v2.json", "graph/alert_v2_comments.json"],
    )
    .await;
    ok(&env);
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_incidents_on_documented_bytes() {
    let (replay, _, env) = run("list_incidents", json!({}), &["graph/incidents.json"]).await;
    ok(&env);
    assert_eq!(first(&env)["id"], "2972395", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_incident_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_incident",
        json!({"incident_id": "2972395"}),
        &["graph/incident.json"],
    )
    .await;
    ok(&env);
    // Microsoft's example spells the status Active (PascalCase); it is reported as sent.
    assert_eq!(env["summary"]["status"], "Active", "{env:#}");
    assert_eq!(first(&env)["status"], "Active", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn update_incident_on_documented_bytes() {
    let (replay, _, env) = run(
        "update_incident",
        json!({"incident_id": "2972395", "classification": "truePositive", "determination": "multiStagedAttack", "custom_tags": "Demo", "comment": "Demo for docs"}),
        &["graph/update_incident.json", "graph/incident_comments.json", "graph/incident.json"],
    )
    .await;
    ok(&env);
    replay.assert_no_unscripted_calls();
}

// --- Vulnerability management ---------------------------------------------------------------

#[tokio::test]
async fn get_installed_software_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_installed_software",
        json!({"device_id": "ac233fa6208e1579620bf44207c4006ed7cc4501"}),
        &["mde/machine_software.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["id"],
        "microsoft-_-internet_explorer",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_discovered_vulnerabilities_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_discovered_vulnerabilities",
        json!({"device_id": "ac233fa6208e1579620bf44207c4006ed7cc4501"}),
        &["mde/machine_vulnerabilities.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], "CVE-2019-1348", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_missing_kbs_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_missing_kbs",
        json!({"device_id": "2339ad14a01bd0299afb93dfa2550136057bff96"}),
        &["mde/machine_missing_kbs.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], "4540673", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_security_recommendations_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_security_recommendations",
        json!({"device_id": "ac233fa6208e1579620bf44207c4006ed7cc4501"}),
        &["mde/machine_recommendations.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], "va-_-git-scm-_-git", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_software_on_documented_bytes() {
    let (replay, _, env) = run("list_software", json!({}), &["mde/software.json"]).await;
    ok(&env);
    assert_eq!(first(&env)["id"], "microsoft-_-edge", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_software_versions_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_software_versions",
        json!({"id": "microsoft-_-edge"}),
        &["mde/software_distributions.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["data"].as_array().unwrap().len(), 2, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_software_missing_kbs_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_software_missing_kbs",
        json!({"id": "microsoft-_-edge"}),
        &["mde/software_missing_kbs.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["machineMissedOn"], 240, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_software_devices_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_software_devices",
        json!({"id": "microsoft-_-edge"}),
        &["mde/software_machines.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["computerDnsName"], "dave_desktop", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_software_vulnerabilities_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_software_vulnerabilities",
        json!({"id": "microsoft-_-edge"}),
        &["mde/software_vulnerabilities.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], "CVE-2017-0140", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_vulnerabilities_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_vulnerabilities",
        json!({}),
        &["mde/vulnerabilities.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["id"], "CVE-2019-0608", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_device_vulnerabilities_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_device_vulnerabilities",
        json!({"severity": "Low"}),
        &["mde/machines_vulnerabilities.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["data"].as_array().unwrap().len(), 2, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_affected_devices_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_affected_devices",
        json!({"cve_id": "CVE-2019-0608"}),
        &["mde/vulnerability_machines.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        first(&env)["id"],
        "235a2e6278c63fcf85bab9c370396972c58843de",
        "{env:#}"
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_exposure_score_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_exposure_score",
        json!({}),
        &["mde/exposure_score.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        env["summary"]["exposure_score"], 33.491554051195706,
        "{env:#}"
    );
    assert_eq!(first(&env)["score"], 33.491554051195706, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_secure_score_on_documented_bytes() {
    let (replay, _, env) = run(
        "get_secure_score",
        json!({}),
        &["mde/configuration_score.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["score"], 340, "{env:#}");
    replay.assert_no_unscripted_calls();
}

// --- Library --------------------------------------------------------------------------------

#[tokio::test]
async fn list_library_files_on_documented_bytes() {
    let (replay, _, env) = run("list_library_files", json!({}), &["mde/library_files.json"]).await;
    ok(&env);
    assert_eq!(env["data"].as_array().unwrap().len(), 3, "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn delete_library_file_on_documented_bytes() {
    let (replay, _, env) = run(
        "delete_library_file",
        json!({"file_name": "script1.ps1"}),
        &["mde/delete_library_file.json"],
    )
    .await;
    ok(&env);
    assert_eq!(
        replay.requests_to("DELETE /api/libraryfiles/{name}")[0].path,
        "/api/libraryfiles/script1.ps1"
    );
    replay.assert_no_unscripted_calls();
}

// --- Errors ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_documented_not_found_error_reaches_the_envelope() {
    let (replay, _, env) = run(
        "get_device_details",
        json!({"device_ids": DEVICE}),
        &["errors/mde_resource_not_found.json"],
    )
    .await;
    assert_eq!(env["status"], "failed", "{env:#}");
    let message = env["message"].as_str().unwrap();
    assert!(
        message.contains("not found: 1e5bc9d7e413ddd7902c2932e418702b84d0cc07"),
        "{message}"
    );
    assert_eq!(replay.calls(), ["GET /api/machines/{id}"]);
}

#[tokio::test]
async fn a_documented_bad_request_error_reaches_the_envelope() {
    let (replay, _, env) = run(
        "quarantine_device",
        json!({"device_id": DEVICE, "type": "Full", "comment": "x", "timeout": 5}),
        &["mde/machine.json", "errors/mde_invalid_request_body.json"],
    )
    .await;
    assert_eq!(env["status"], "failed", "{env:#}");
    let message = env["message"].as_str().unwrap();
    assert!(message.contains("Request body is incorrect"), "{message}");
    assert_eq!(
        replay.requests_to("POST /api/machines/{id}/isolate").len(),
        1
    );
}

#[tokio::test]
async fn a_pending_action_refusal_follows_the_pending_action() {
    let (replay, _, env) = run(
        "quarantine_device",
        json!({"device_id": "f46b9bb259ed4a7fb9981b73510e3cc7aa81ec1f", "type": "Full", "comment": "x", "timeout": 5}),
        &["mde/machine.json", "errors/mde_active_request_exists.json", "mde/machineactions_list.json", "mde/machineaction_get.json"],
    )
    .await;
    assert!(
        env["status"] == "success" || env["status"] == "failed",
        "{env:#}"
    );
    assert!(
        env["message"].as_str().unwrap().contains("already"),
        "{env:#}"
    );
    assert_eq!(
        replay.requests_to("POST /api/machines/{id}/isolate").len(),
        1
    );
}

#[tokio::test]
async fn the_v1_token_endpoint_with_numbers_as_strings_works() {
    let replay = Replay::start().await;
    replay.answer("mde/exposure_score.json");
    let host = Host::start_with(super::replay::asset(
        &replay.base,
        defender_soar::config::TokenEndpoint::V1,
    ))
    .await;
    let (_, env) = host.invoke("get_exposure_score", json!({})).await;
    ok(&env);
    assert!(
        replay
            .seen()
            .iter()
            .any(|s| s.path.ends_with("/oauth2/token"))
    );
}

// --- Bulk containment ---------------------------------------------------------------------

async fn bulk(action: &str, params: Value, submit: &str, endpoint: &str) {
    let (replay, _, env) = run(action, params, &[submit, "mde/machineaction_get.json"]).await;
    ok(&env);
    assert_eq!(env["summary"]["total_devices"], 1, "{env:#}");
    assert_eq!(env["summary"]["succeeded"], 1, "{env:#}");
    let posts = replay.requests_to(endpoint);
    assert_eq!(posts.len(), 1, "{:?}", replay.calls());
    assert_eq!(
        posts[0].path,
        endpoint.split(' ').nth(1).unwrap().replace("{id}", DEVICE)
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn quarantine_devices_on_documented_bytes() {
    bulk(
        "quarantine_devices",
        json!({"device_ids": DEVICE, "type": "Full", "comment": "c", "timeout": 5}),
        "mde/isolate.json",
        "POST /api/machines/{id}/isolate",
    )
    .await;
}

#[tokio::test]
async fn unquarantine_devices_on_documented_bytes() {
    bulk(
        "unquarantine_devices",
        json!({"device_ids": DEVICE, "comment": "c", "timeout": 5}),
        "mde/unisolate.json",
        "POST /api/machines/{id}/unisolate",
    )
    .await;
}

#[tokio::test]
async fn quarantine_files_on_documented_bytes() {
    bulk("quarantine_files", json!({"device_ids": DEVICE, "file_hash": "87662bc3d60e4200ceaf7aae249d1c343f4b83c9", "comment": "c", "timeout": 5}), "mde/stop_and_quarantine_file.json", "POST /api/machines/{id}/StopAndQuarantineFile").await;
}

#[tokio::test]
async fn restrict_app_executions_on_documented_bytes() {
    bulk(
        "restrict_app_executions",
        json!({"device_ids": DEVICE, "comment": "c", "timeout": 5}),
        "mde/restrict_code_execution.json",
        "POST /api/machines/{id}/restrictCodeExecution",
    )
    .await;
}

#[tokio::test]
async fn scan_devices_on_documented_bytes() {
    bulk(
        "scan_devices",
        json!({"device_ids": DEVICE, "scan_type": "Full", "comment": "c", "timeout": 5}),
        "mde/run_antivirus_scan.json",
        "POST /api/machines/{id}/runAntiVirusScan",
    )
    .await;
}

// --- More indicators, hunting, package, live response, connectivity, ingestion ----------

#[tokio::test]
async fn update_indicator_on_documented_bytes() {
    let (replay, _, env) = run(
        "update_indicator",
        json!({"indicator_value": "220e7d15b011d7fac48f2bd61114db1022197f7f", "indicator_type": "FileSha1", "action": "Block", "indicator_description": "test", "indicator_title": "test"}),
        &["mde/import_indicators.json", "mde/indicators.json"],
    )
    .await;
    ok(&env);
    let post = &replay.requests_to("POST /api/indicators/import")[0];
    assert_eq!(
        post.body["Indicators"][0]["indicatorValue"], "220e7d15b011d7fac48f2bd61114db1022197f7f",
        "{:?}",
        post.body
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn run_hunting_template_on_documented_bytes() {
    let (replay, _, env) = run(
        "run_hunting_template",
        json!({"template": "devices_reached_domain", "entity": "example.com", "api": "graph"}),
        &["graph/run_hunting_query.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["data"].as_array().unwrap().len(), 2, "{env:#}");
    assert_eq!(
        first(&env)["InitiatingProcessFileName"],
        "powershell.exe",
        "{env:#}"
    );
    let post = &replay.requests_to("POST /v1.0/security/runHuntingQuery")[0];
    assert!(
        post.body["Query"].as_str().unwrap().contains("example.com"),
        "{:?}",
        post.body
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn get_investigation_uri_on_documented_bytes() {
    // Microsoft's getPackageUri example asks for a 40-hex action id; the host's event ids are
    // GUIDs, so the collect example's id is used.
    let (replay, _, env) = run(
        "get_investigation_uri",
        json!({"action_id": "69dc3630-1ccc-4342-acf3-35286eec741d"}),
        &["mde/get_package_uri.json", "mde/machineaction_get.json"],
    )
    .await;
    let text = env.to_string();
    assert!(
        text.contains("userrequests-us.securitycenter.windows.com"),
        "{env:#}"
    );
    assert!(!text.contains("usable"), "{env:#}");
    assert!(
        !replay
            .requests_to("GET /api/machineactions/{id}/getPackageUri")
            .is_empty()
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn test_connectivity_on_documented_bytes() {
    let (replay, _, env) = run(
        "test_connectivity",
        json!({}),
        &["mde/machines.json", "graph/alerts_v2.json"],
    )
    .await;
    ok(&env);
    assert_eq!(env["summary"]["token_expires_in"], 3599, "{env:#}");
    assert_eq!(env["summary"]["token_acquired"], true, "{env:#}");
    assert!(
        replay
            .seen()
            .iter()
            .any(|s| s.path.ends_with("/oauth2/v2.0/token"))
    );
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn list_sessions_on_documented_bytes() {
    let (replay, _, env) = run(
        "list_sessions",
        json!({"device_id": DEVICE}),
        &["mde/machine_logon_users.json"],
    )
    .await;
    ok(&env);
    assert_eq!(first(&env)["accountName"], "user1", "{env:#}");
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn run_script_on_documented_bytes() {
    // Microsoft documents the live response only while Pending: the host submits it, follows
    // it for the timeout and hands back the (non-GUID, placeholder) id to collect later.
    let (replay, _, env) = run(
        "run_script",
        json!({"device_id": DEVICE, "script_name": "minidump.ps1", "script_args": "OfficeClickToRun", "comment": "Testing Live Response API", "timeout": 1}),
        &["mde/machine.json", "mde/library_files.json", "mde/run_live_response.json"],
    )
    .await;
    ok(&env);
    let message = env["message"].as_str().unwrap();
    assert!(
        message.contains("still Pending") && message.contains("{machine_action_id}"),
        "{message}"
    );
    let post = &replay.requests_to("POST /api/machines/{id}/runliveresponse")[0];
    assert_eq!(
        post.body["Commands"][0]["type"], "RunScript",
        "{:?}",
        post.body
    );
    assert_eq!(
        post.body["Commands"][0]["params"][0]["value"], "minidump.ps1",
        "{:?}",
        post.body
    );
}

#[tokio::test]
async fn get_file_on_documented_bytes() {
    // Microsoft documents no completed GetFile: the documented live response answer (Pending)
    // is what the host follows until its timeout, handing back the id to resume later.
    let (replay, _, env) = run(
        "get_file",
        json!({"device_id": DEVICE, "file_path": "C:\\windows\\TEMP\\OfficeClickToRun.dmp.zip", "comment": "Testing Live Response API", "timeout": 1}),
        &["mde/machine.json", "mde/run_live_response.json"],
    )
    .await;
    let post = &replay.requests_to("POST /api/machines/{id}/runliveresponse")[0];
    assert_eq!(
        post.body["Commands"][0]["type"], "GetFile",
        "{:?}",
        post.body
    );
    assert_eq!(
        post.body["Commands"][0]["params"][0]["value"],
        "C:\\windows\\TEMP\\OfficeClickToRun.dmp.zip",
        "{:?}",
        post.body
    );
    assert!(
        env["message"]
            .as_str()
            .unwrap()
            .contains("{machine_action_id}"),
        "{env:#}"
    );
}

#[tokio::test]
async fn put_file_on_documented_bytes() {
    let (replay, _, env) = run(
        "put_file",
        json!({"device_id": DEVICE, "file_name": "script1.ps1", "comment": "Testing Live Response API", "timeout": 1}),
        &["mde/machine.json", "mde/library_files.json", "mde/run_live_response.json"],
    )
    .await;
    let post = &replay.requests_to("POST /api/machines/{id}/runliveresponse")[0];
    assert_eq!(
        post.body["Commands"][0]["type"], "PutFile",
        "{:?}",
        post.body
    );
    assert!(
        env["message"]
            .as_str()
            .unwrap()
            .contains("{machine_action_id}"),
        "{env:#}"
    );
}

#[tokio::test]
async fn get_live_response_result_on_documented_bytes() {
    // The documented live response answer names its id with a placeholder
    // ({machine_action_id}); the host does not take an answer about another id as the action
    // it asked for.
    let (replay, _, env) = run(
        "get_live_response_result",
        json!({"event_id": "988cc94e-7a8f-4b28-ab65-54970c5d5018", "command_index": 0}),
        &[
            "mde/run_live_response.json",
            "mde/live_response_result_link.json",
        ],
    )
    .await;
    assert_eq!(env["status"], "failed", "{env:#}");
    assert!(
        env["message"]
            .as_str()
            .unwrap()
            .contains("no machine action 988cc94e"),
        "{env:#}"
    );
    assert_eq!(replay.calls(), ["GET /api/machineactions/{id}"]);
}

#[tokio::test]
async fn upload_library_file_on_documented_bytes() {
    // The documented answer is the library entry of another file (script1.ps1's SHA256 on
    // Microsoft's page): the host compares it with the bytes it sent and says so.
    let (replay, _, env) = run(
        "upload_library_file",
        json!({"file_name": "script1.ps1", "description": "test description", "content": "V3JpdGUtSG9zdCBoaQ==", "parameters_description": "test", "has_parameters": true, "override": true}),
        &["mde/upload_library_file.json"],
    )
    .await;
    assert_eq!(env["status"], "failed", "{env:#}");
    assert_eq!(
        env["summary"]["sha256"],
        "6e212a0db618507c44e4ec8ee7499dfef7e5767e5f8d31144df3b96fd1145caf",
        "{env:#}"
    );
    assert!(
        env["message"].as_str().unwrap().contains("upload it again"),
        "{env:#}"
    );
    assert_eq!(replay.requests_to("POST /api/libraryfiles").len(), 1);
    replay.assert_no_unscripted_calls();
}

#[tokio::test]
async fn on_poll_on_documented_bytes() {
    let (replay, _, env) = run("on_poll", json!({}), &["mde/alerts_expand_evidence.json"]).await;
    ok(&env);
    assert_eq!(env["summary"]["total_containers"], 1, "{env:#}");
    replay.assert_no_unscripted_calls();
}

// --- Which actions have a replay test -------------------------------------------------------

/// Actions replayed above.
const REPLAYED: &[&str] = &[
    "quarantine_device",
    "unquarantine_device",
    "quarantine_file",
    "scan_device",
    "restrict_app_execution",
    "remove_app_restriction",
    "collect_investigation_package",
    "get_status",
    "offboard_device",
    "cancel_action",
    "list_machine_actions",
    "list_devices",
    "get_device_details",
    "update_device_tag",
    "find_devices_by_ip",
    "get_domain_devices",
    "get_file_devices",
    "get_user_devices",
    "list_alerts",
    "get_alert",
    "update_alert",
    "update_alerts",
    "create_alert",
    "get_alert_user",
    "get_alert_files",
    "get_alert_ips",
    "get_alert_domains",
    "get_domain_alerts",
    "get_file_alerts",
    "get_user_alerts",
    "get_device_alerts",
    "list_indicators",
    "get_indicator",
    "submit_indicator",
    "update_indicator_batch",
    "delete_indicator",
    "delete_indicators",
    "get_file_info",
    "file_prevalence",
    "ip_prevalence",
    "domain_prevalence",
    "start_investigation",
    "list_investigations",
    "get_investigation",
    "run_query",
    "list_graph_alerts",
    "get_graph_alert",
    "update_graph_alert",
    "list_incidents",
    "get_incident",
    "update_incident",
    "get_installed_software",
    "get_discovered_vulnerabilities",
    "get_missing_kbs",
    "get_security_recommendations",
    "list_software",
    "list_software_versions",
    "list_software_missing_kbs",
    "list_software_devices",
    "list_software_vulnerabilities",
    "list_vulnerabilities",
    "list_device_vulnerabilities",
    "get_affected_devices",
    "get_exposure_score",
    "get_secure_score",
    "list_library_files",
    "delete_library_file",
    "quarantine_devices",
    "unquarantine_devices",
    "quarantine_files",
    "restrict_app_executions",
    "scan_devices",
    "update_indicator",
    "run_hunting_template",
    "get_investigation_uri",
    "test_connectivity",
    "list_sessions",
    "run_script",
    "get_file",
    "put_file",
    "get_live_response_result",
    "upload_library_file",
    "on_poll",
];

/// Actions without a replay test, and why. A new action fails the check below until it gets a
/// replay test or a line here.
const NOT_REPLAYED: &[(&str, &str)] = &[
    ("list_hunting_templates", "calls no API"),
    (
        "ingestion_status",
        "calls no API (reports the host's own ingestion state)",
    ),
];

#[test]
fn every_action_has_a_replay_test_or_a_reason() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("actions");
    let mut actions: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    actions.sort();
    let missing: Vec<&String> = actions
        .iter()
        .filter(|a| !REPLAYED.contains(&a.as_str()) && !NOT_REPLAYED.iter().any(|(n, _)| n == a))
        .collect();
    assert!(
        missing.is_empty(),
        "actions without a replay test on documented bytes: {missing:?}"
    );
    let unknown: Vec<&&str> = REPLAYED
        .iter()
        .chain(NOT_REPLAYED.iter().map(|(n, _)| n))
        .filter(|n| !actions.iter().any(|a| a == **n))
        .collect();
    assert!(
        unknown.is_empty(),
        "listed actions that do not exist: {unknown:?}"
    );
    let both: Vec<&&str> = REPLAYED
        .iter()
        .filter(|n| NOT_REPLAYED.iter().any(|(m, _)| m == *n))
        .collect();
    assert!(
        both.is_empty(),
        "listed as replayed and as not replayed: {both:?}"
    );
}
