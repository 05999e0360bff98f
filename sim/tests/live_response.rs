//! Live response over HTTP: session creation and validation, limits, download links and the
//! signed, unauthenticated downloads they point at.

mod common;

use std::io::Read;
use std::time::Duration;

use defender_sim::actions::MachineAction;
use defender_sim::api::download::{GeneratedFile, package_link};
use defender_sim::scenario::{DeviceFile, StageTimings};
use defender_sim::{Scenario, SimHandle};
use serde_json::{Value, json};

/// Has hosts, invoice.pdf.exe (binary) and big.bin (generated).
const M1: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";
const M2: &str = "8cfcc2dff88df3eed6a4227926412e6147aff567";
const M3: &str = "d01e2454fe9bc34a9e29c10e581a2705af4cf80b";
const HOSTS: &str = "C:\\Windows\\System32\\drivers\\etc\\hosts";
const HOSTS_CONTENT: &str = "127.0.0.1 localhost\n10.0.0.10 dc01.contoso.com\n";
const RUN_ROUTE: &str = "/api/machines/{id}/runliveresponse";

/// Live response actions finish as soon as they are created.
fn instant(mut s: Scenario) -> Scenario {
    s.timings.per_type.insert(
        "LiveResponse".into(),
        StageTimings {
            pending_ms: 0,
            in_progress_ms: 0,
        },
    );
    s
}

/// Actions only move when told.
fn manual(mut s: Scenario) -> Scenario {
    s.timings.manual = true;
    s
}

struct Api {
    sim: SimHandle,
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn start(scenario: Scenario) -> Api {
        let sim = common::start(scenario).await;
        let token = common::token(&sim);
        Api {
            sim,
            http: common::client(),
            token,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn run(&self, machine: &str, body: Value) -> reqwest::Response {
        self.run_raw(machine, body.to_string()).await
    }

    async fn run_raw(&self, machine: &str, body: String) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/api/machines/{machine}/runliveresponse")))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Runs a session and returns the 201 body.
    async fn run_ok(&self, machine: &str, commands: Vec<Value>) -> Value {
        let resp = self.run(machine, session(commands)).await;
        assert_eq!(resp.status(), 201);
        resp.json().await.unwrap()
    }

    async fn link_resp(&self, action_id: &str, index: usize) -> reqwest::Response {
        self.http
            .get(self.url(&format!(
                "/api/machineactions/{action_id}/GetLiveResponseResultDownloadLink(index={index})"
            )))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn link(&self, action_id: &str, index: usize) -> String {
        let resp = self.link_resp(action_id, index).await;
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["@odata.context"]
                .as_str()
                .unwrap()
                .ends_with("/api/$metadata#Edm.String")
        );
        body["value"].as_str().unwrap().to_string()
    }

    /// Fetches a download link with no Authorization header.
    async fn fetch(&self, link: &str) -> reqwest::Response {
        self.http.get(link).send().await.unwrap()
    }

    /// The action as `GET /api/machineactions/{id}` answers it.
    async fn action(&self, id: &str) -> Value {
        let resp = self
            .http
            .get(self.url(&format!("/api/machineactions/{id}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    fn complete(&self, id: &str) {
        let now = self.sim.clock.now_ms();
        self.sim
            .world()
            .actions
            .get_mut(id)
            .unwrap()
            .complete("Succeeded", None, now);
    }
}

fn session(commands: Vec<Value>) -> Value {
    json!({"Commands": commands, "Comment": "live response test"})
}

fn get_file(path: &str) -> Value {
    json!({"type": "GetFile", "params": [{"key": "Path", "value": path}]})
}

fn run_script(name: &str, args: Option<&str>) -> Value {
    let mut params = vec![json!({"key": "ScriptName", "value": name})];
    if let Some(a) = args {
        params.push(json!({"key": "Args", "value": a}));
    }
    json!({"type": "RunScript", "params": params})
}

fn put_file(name: &str) -> Value {
    json!({"type": "PutFile", "params": [{"key": "FileName", "value": name}]})
}

/// Gunzips a single-member gzip stream, checking nothing follows the member.
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut dec = flate2::bufread::GzDecoder::new(bytes);
    let mut out = Vec::new();
    dec.read_to_end(&mut out).unwrap();
    assert!(dec.into_inner().is_empty(), "more than one gzip member");
    out
}

async fn error_code(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn disposition(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-disposition")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn get_file_lifecycle_downloads_the_gzipped_file() {
    let api = Api::start(instant(common::scenario())).await;
    let action = api
        .run_ok(
            M1,
            vec![
                get_file(HOSTS),
                get_file("C:\\Users\\alice\\Downloads\\invoice.pdf.exe"),
            ],
        )
        .await;
    assert!(
        action["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/$metadata#MachineActions/$entity")
    );
    assert_eq!(action["type"], "LiveResponse");
    assert_eq!(action["machineId"], M1);
    assert_eq!(action["computerDnsName"], "ws-finance-01.contoso.com");
    assert_eq!(action["requestorComment"], "live response test");
    assert_eq!(action["status"], "Succeeded");
    assert_eq!(action["commands"][0]["commandStatus"], "Completed");
    assert_eq!(action["commands"][0]["command"]["type"], "GetFile");
    assert_eq!(
        action["commands"][0]["command"]["params"][0]["value"],
        HOSTS
    );
    let id = action["id"].as_str().unwrap();

    let link = api.link(id, 0).await;
    assert!(link.starts_with(&format!("{}/download/", api.sim.base_url())));
    let resp = api.fetch(&link).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    assert_eq!(disposition(&resp), "attachment; filename=\"hosts.gz\"");
    let bytes = resp.bytes().await.unwrap();
    assert_eq!(gunzip(&bytes), HOSTS_CONTENT.as_bytes());

    // The binary file comes back byte for byte.
    let resp = api.fetch(&api.link(id, 1).await).await;
    assert_eq!(
        disposition(&resp),
        "attachment; filename=\"invoice.pdf.exe.gz\""
    );
    let bytes = resp.bytes().await.unwrap();
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD
        .decode("TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAA=")
        .unwrap();
    assert_eq!(gunzip(&bytes), expected);

    let c = api.sim.counters();
    assert_eq!(c.route_status("GET", "/download/{token}", 200), 2);
    assert_eq!(
        c.route_status("GET", "/api/machineactions/{id}/{function}", 200),
        2
    );
}

#[tokio::test]
async fn each_link_request_yields_a_fresh_working_link() {
    let api = Api::start(instant(common::scenario())).await;
    let action = api.run_ok(M1, vec![get_file(HOSTS)]).await;
    let id = action["id"].as_str().unwrap();
    let a = api.link(id, 0).await;
    let b = api.link(id, 0).await;
    assert_ne!(a, b);
    for link in [a, b] {
        let resp = api.fetch(&link).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            gunzip(&resp.bytes().await.unwrap()),
            HOSTS_CONTENT.as_bytes()
        );
    }
}

#[tokio::test]
async fn run_script_result_is_the_script_json() {
    let api = Api::start(instant(common::scenario())).await;
    let action = api
        .run_ok(
            M1,
            vec![
                put_file("remediate.ps1"),
                run_script("collect-triage.ps1", Some("-Verbose")),
                get_file(HOSTS),
            ],
        )
        .await;
    assert_eq!(action["status"], "Succeeded");
    for i in 0..3 {
        assert_eq!(action["commands"][i]["commandStatus"], "Completed");
        assert_eq!(action["commands"][i]["index"], i);
    }
    assert_eq!(action["commands"][1]["command"]["params"][1]["key"], "Args");
    let id = action["id"].as_str().unwrap();
    let resp = api.fetch(&api.link(id, 1).await).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let result: Value = resp.json().await.unwrap();
    let expected_output = api
        .sim
        .scenario()
        .library_file("collect-triage.ps1")
        .unwrap()
        .script_output
        .clone()
        .unwrap();
    assert_eq!(
        result,
        json!({
            "script_name": "collect-triage.ps1",
            "exit_code": 0,
            "script_output": expected_output,
            "script_errors": "",
        })
    );
    // The PutFile result is a small acknowledgement.
    let put: Value = api
        .fetch(&api.link(id, 0).await)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(put["file_name"], "remediate.ps1");
}

#[tokio::test]
async fn generated_file_streams_its_exact_size_deterministically() {
    const SIZE: u64 = 5 * 1024 * 1024;
    const PATH: &str = "C:\\Temp\\five.bin";
    let mut s = instant(common::scenario());
    s.device_files.get_mut(M1).unwrap().push(DeviceFile {
        path: PATH.into(),
        content: None,
        content_base64: None,
        size: Some(SIZE),
        zeros: false,
    });
    let api = Api::start(s).await;
    let action = api.run_ok(M1, vec![get_file("c:\\temp\\FIVE.bin")]).await;
    let id = action["id"].as_str().unwrap();

    let mut downloads = Vec::new();
    for _ in 0..2 {
        let resp = api.fetch(&api.link(id, 0).await).await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers().get("content-length").is_none(),
            "streamed bodies carry no Content-Length"
        );
        assert_eq!(disposition(&resp), "attachment; filename=\"FIVE.bin.gz\"");
        let plain = gunzip(&resp.bytes().await.unwrap());
        assert_eq!(plain.len() as u64, SIZE);
        downloads.push(plain);
    }
    assert_eq!(downloads[0], downloads[1]);
    let mut expected = Vec::new();
    GeneratedFile::new(PATH, SIZE)
        .read_to_end(&mut expected)
        .unwrap();
    assert_eq!(downloads[0], expected);
    assert!(downloads[0].iter().any(|b| *b != downloads[0][0]));
}

#[tokio::test]
async fn expired_link_is_refused() {
    let api = Api::start(instant(common::scenario())).await;
    let action = api.run_ok(M1, vec![get_file(HOSTS)]).await;
    let link = api.link(action["id"].as_str().unwrap(), 0).await;
    assert_eq!(api.fetch(&link).await.status(), 200);
    let lifetime = api.sim.scenario().download_link_lifetime_secs;
    api.sim.clock.advance(Duration::from_secs(lifetime + 2));
    let resp = api.fetch(&link).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["x-ms-error-code"], "AuthenticationFailed");
    let body = resp.text().await.unwrap();
    assert!(body.contains("<Code>AuthenticationFailed</Code>"), "{body}");
    assert!(body.contains("expiry"), "{body}");
}

#[tokio::test]
async fn tampered_link_is_refused() {
    let api = Api::start(instant(common::scenario())).await;
    let action = api.run_ok(M1, vec![get_file(HOSTS)]).await;
    let link = api.link(action["id"].as_str().unwrap(), 0).await;
    let (base, token) = link.rsplit_once('/').unwrap();
    let dot = token.find('.').unwrap();
    // Change one character in the signed part, then one in the signature.
    for pos in [dot / 2, dot + 3, token.len() - 2] {
        let mut bytes = token.as_bytes().to_vec();
        bytes[pos] = if bytes[pos] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{base}/{}", String::from_utf8(bytes).unwrap());
        let resp = api.fetch(&tampered).await;
        assert_eq!(resp.status(), 403, "position {pos}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("AuthenticationFailed"), "{body}");
    }
    assert_eq!(api.fetch(&format!("{base}/garbage")).await.status(), 403);
    assert_eq!(api.fetch(&link).await.status(), 200);
}

#[tokio::test]
async fn link_works_without_authorization_only_the_api_needs_a_token() {
    let api = Api::start(instant(common::scenario())).await;
    let action = api.run_ok(M1, vec![get_file(HOSTS)]).await;
    let id = action["id"].as_str().unwrap();
    let link = api.link(id, 0).await;
    let resp = reqwest::Client::new().get(&link).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let unauth = reqwest::Client::new()
        .get(api.url(&format!(
            "/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index=0)"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
}

#[tokio::test]
async fn link_before_completion_and_bad_link_requests() {
    let api = Api::start(manual(common::scenario())).await;
    let action = api.run_ok(M1, vec![get_file(HOSTS)]).await;
    assert_eq!(action["status"], "Pending");
    assert_eq!(action["commands"][0]["commandStatus"], "Created");
    let id = action["id"].as_str().unwrap();

    let (status, code, message) = error_code(api.link_resp(id, 0).await).await;
    assert_eq!((status, code.as_str()), (400, "BadRequest"));
    assert!(message.contains("not completed"), "{message}");

    let (status, code, _) = error_code(api.link_resp(id, 5).await).await;
    assert_eq!((status, code.as_str()), (400, "InvalidInput"));

    let unknown = "0b5c3a77-1d2e-4f00-9a55-000000000000";
    let (status, code, _) = error_code(api.link_resp(unknown, 0).await).await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));

    let resp = api
        .http
        .get(api.url(&format!("/api/machineactions/{id}/SomethingElse")))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = api
        .http
        .get(api.url(&format!(
            "/api/machineactions/{id}/GetLiveResponseResultDownloadLink(idx=0)"
        )))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    api.complete(id);
    assert_eq!(api.action(id).await["status"], "Succeeded");
    let link = api.link(id, 0).await;
    assert_eq!(api.fetch(&link).await.status(), 200);
}

#[tokio::test]
async fn timed_session_moves_with_the_clock() {
    let mut s = common::scenario();
    s.timings.per_type.insert(
        "LiveResponse".into(),
        StageTimings {
            pending_ms: 1_000,
            in_progress_ms: 2_000,
        },
    );
    let api = Api::start(s).await;
    let action = api.run_ok(M1, vec![get_file(HOSTS)]).await;
    assert_eq!(action["status"], "Pending");
    let id = action["id"].as_str().unwrap();
    api.sim.clock.advance(Duration::from_millis(1_500));
    let now = api.action(id).await;
    assert_eq!(now["status"], "InProgress");
    assert_eq!(now["commands"][0]["commandStatus"], "InProgress");
    assert_eq!(api.link_resp(id, 0).await.status(), 400);
    api.sim.clock.advance(Duration::from_millis(2_000));
    let now = api.action(id).await;
    assert_eq!(now["status"], "Succeeded");
    assert_eq!(now["commands"][0]["commandStatus"], "Completed");
    let resp = api.fetch(&api.link(id, 0).await).await;
    assert_eq!(
        gunzip(&resp.bytes().await.unwrap()),
        HOSTS_CONTENT.as_bytes()
    );
}

#[tokio::test]
async fn link_for_a_non_live_response_action_is_400() {
    let api = Api::start(instant(common::scenario())).await;
    let id = insert_action(&api.sim, "Isolate");
    let (status, code, message) = error_code(api.link_resp(&id, 0).await).await;
    assert_eq!((status, code.as_str()), (400, "BadRequest"));
    assert!(message.contains("Isolate"), "{message}");
}

#[tokio::test]
async fn put_file_missing_from_library_fails_and_stops_the_session() {
    let api = Api::start(instant(common::scenario())).await;
    let action = api
        .run_ok(
            M1,
            vec![
                put_file("nope.ps1"),
                run_script("collect-triage.ps1", None),
                get_file(HOSTS),
            ],
        )
        .await;
    assert_eq!(action["status"], "Failed");
    let cmds = &action["commands"];
    assert_eq!(cmds[0]["commandStatus"], "Failed");
    assert_eq!(
        cmds[0]["errors"],
        json!(["File nope.ps1 was not found in the library"])
    );
    assert_eq!(cmds[1]["commandStatus"], "Created");
    assert_eq!(cmds[2]["commandStatus"], "Created");
    assert_eq!(cmds[1]["errors"], json!([]));
    let id = action["id"].as_str().unwrap();
    let read_back = api.action(id).await;
    assert_eq!(read_back["status"], "Failed");
    assert_eq!(read_back["commands"], action["commands"]);
    let (status, _, _) = error_code(api.link_resp(id, 1).await).await;
    assert_eq!(status, 400);

    // A missing script fails at the RunScript step, after the PutFile ran.
    let action = api
        .run_ok(
            M1,
            vec![put_file("remediate.ps1"), run_script("missing.ps1", None)],
        )
        .await;
    assert_eq!(action["status"], "Failed");
    assert_eq!(action["commands"][0]["commandStatus"], "Completed");
    assert_eq!(action["commands"][1]["commandStatus"], "Failed");
    assert_eq!(
        action["commands"][1]["errors"][0],
        "File missing.ps1 was not found in the library"
    );
}

#[tokio::test]
async fn get_file_on_a_missing_path_fails() {
    let api = Api::start(instant(common::scenario())).await;
    let action = api.run_ok(M1, vec![get_file("C:\\nope.txt")]).await;
    assert_eq!(action["status"], "Failed");
    assert_eq!(action["commands"][0]["commandStatus"], "Failed");
    assert_eq!(
        action["commands"][0]["errors"],
        json!(["File not found: C:\\nope.txt"])
    );
    // A file of another device is not on this one.
    let action = api.run_ok(M2, vec![get_file(HOSTS)]).await;
    assert_eq!(action["status"], "Failed");
    // The path matches case-insensitively.
    let action = api.run_ok(M1, vec![get_file(&HOSTS.to_uppercase())]).await;
    assert_eq!(action["status"], "Succeeded");
}

#[tokio::test]
async fn bad_bodies_are_invalid_request_body() {
    let mut s = instant(common::scenario());
    s.rate_limits.live_response.per_minute = 100;
    let api = Api::start(s).await;
    let cases: Vec<(String, &str)> = vec![
        (json!({"Commands": [get_file(HOSTS)]}).to_string(), "Comment"),
        (
            json!({"Commands": [get_file(HOSTS)], "Comment": ""}).to_string(),
            "Comment",
        ),
        (
            json!({"commands": [get_file(HOSTS)], "Comment": "c"}).to_string(),
            "commands",
        ),
        (json!({"Commands": [], "Comment": "c"}).to_string(), "Commands"),
        (json!({"Comment": "c"}).to_string(), "Commands"),
        (
            json!({"Commands": [{"type": "DeleteFile", "params": []}], "Comment": "c"})
                .to_string(),
            "DeleteFile",
        ),
        (
            json!({"Commands": [{"type": "GetFile", "params": []}], "Comment": "c"}).to_string(),
            "Path",
        ),
        (
            json!({"Commands": [{"type": "RunScript", "params": [{"key": "Args", "value": "-x"}]}], "Comment": "c"})
                .to_string(),
            "ScriptName",
        ),
        (
            json!({"Commands": [get_file(HOSTS), run_script("remediate.ps1", None)], "Comment": "c"})
                .to_string(),
            "order",
        ),
        (
            json!({"Commands": [run_script("remediate.ps1", None), put_file("remediate.ps1")], "Comment": "c"})
                .to_string(),
            "order",
        ),
        ("{not json".to_string(), "JSON"),
        (String::new(), "empty"),
    ];
    for (body, needle) in cases {
        let (status, code, message) = error_code(api.run_raw(M1, body.clone()).await).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(code, "InvalidRequestBody", "{body}");
        assert!(message.contains(needle), "{body}: {message}");
    }
    assert_eq!(api.sim.world().actions.iter().count(), 0);
}

#[tokio::test]
async fn unknown_machine_is_404() {
    let api = Api::start(instant(common::scenario())).await;
    let missing = "0000000000000000000000000000000000000000";
    let (status, code, message) =
        error_code(api.run(missing, session(vec![get_file(HOSTS)])).await).await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    assert!(message.contains(missing), "{message}");
}

#[tokio::test]
async fn busy_device_answers_active_request_already_exists() {
    let api = Api::start(manual(common::scenario())).await;
    let first = api.run_ok(M1, vec![get_file(HOSTS)]).await;
    let (status, code, _) = error_code(api.run(M1, session(vec![get_file(HOSTS)])).await).await;
    assert_eq!((status, code.as_str()), (400, "ActiveRequestAlreadyExists"));
    // Machine ids are case-insensitive: still the same device.
    let (status, _, _) = error_code(
        api.run(&M1.to_uppercase(), session(vec![get_file(HOSTS)]))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    // Another device is free.
    api.run_ok(M2, vec![get_file("C:\\x")]).await;
    // Once the first session ends, the device takes a new one.
    api.complete(first["id"].as_str().unwrap());
    api.run_ok(M1, vec![get_file(HOSTS)]).await;
}

#[tokio::test]
async fn tenant_session_limit_answers_429_with_retry_after() {
    let mut s = manual(common::scenario());
    s.max_live_sessions_per_tenant = 1;
    let api = Api::start(s).await;
    let first = api.run_ok(M1, vec![get_file(HOSTS)]).await;
    let resp = api.run(M2, session(vec![get_file(HOSTS)])).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let (_, code, message) = error_code(resp).await;
    assert_eq!(code, "TooManyRequests");
    assert!(message.contains("live response sessions"), "{message}");
    api.complete(first["id"].as_str().unwrap());
    api.run_ok(M2, vec![get_file(HOSTS)]).await;
}

#[tokio::test]
async fn live_response_calls_have_their_own_rate_limit() {
    let mut s = instant(common::scenario());
    s.rate_limits.live_response.per_minute = 2;
    let api = Api::start(s).await;
    api.run_ok(M1, vec![get_file(HOSTS)]).await;
    api.run_ok(M2, vec![get_file(HOSTS)]).await;
    let resp = api.run(M3, session(vec![get_file(HOSTS)])).await;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let c = api.sim.counters();
    assert_eq!(c.route_status("POST", RUN_ROUTE, 201), 2);
    assert_eq!(c.route_status("POST", RUN_ROUTE, 429), 1);
    // Other endpoints keep their own budget.
    let id = api.sim.world().actions.iter().next().unwrap().id.clone();
    api.link(&id, 0).await;
    // A minute later the budget is back.
    api.sim.clock.advance(Duration::from_secs(61));
    api.run_ok(M3, vec![get_file(HOSTS)]).await;
}

#[tokio::test]
async fn routes_require_the_live_response_role() {
    let api = Api::start(instant(common::scenario())).await;
    let action = api.run_ok(M1, vec![get_file(HOSTS)]).await;
    let id = action["id"].as_str().unwrap();
    let reader = reader_token(&api.sim);
    let resp = api
        .http
        .post(api.url(&format!("/api/machines/{M2}/runliveresponse")))
        .bearer_auth(&reader)
        .json(&session(vec![get_file(HOSTS)]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = api
        .http
        .get(api.url(&format!(
            "/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index=0)"
        )))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn package_link_serves_a_small_zip() {
    let api = Api::start(instant(common::scenario())).await;
    let id = insert_action(&api.sim, "CollectInvestigationPackage");
    let link = package_link(&api.sim, &api.sim.base_url(), &id);
    let resp = api.fetch(&link).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        disposition(&resp),
        format!("attachment; filename=\"investigation-package-{id}.zip\"")
    );
    let zip = resp.bytes().await.unwrap().to_vec();
    let entries = read_stored_zip(&zip);
    assert_eq!(entries.len(), 2);
    let summary = String::from_utf8(entries[0].1.clone()).unwrap();
    assert!(summary.contains(M1), "{summary}");
    assert!(summary.contains(&id), "{summary}");

    // A link to an action the simulator does not know is a missing blob.
    let gone = package_link(&api.sim, &api.sim.base_url(), "no-such-action");
    let resp = api.fetch(&gone).await;
    assert_eq!(resp.status(), 404);
    assert!(resp.text().await.unwrap().contains("BlobNotFound"));
}

/// Parses a stored zip through its central directory, checking every CRC.
fn read_stored_zip(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let u16_at = |p: usize| u16::from_le_bytes([zip[p], zip[p + 1]]) as usize;
    let u32_at = |p: usize| u32::from_le_bytes(zip[p..p + 4].try_into().unwrap());
    let eocd = zip.len() - 22;
    assert_eq!(u32_at(eocd), 0x0605_4b50);
    let count = u16_at(eocd + 10);
    let mut cd = u32_at(eocd + 16) as usize;
    let mut out = Vec::new();
    for _ in 0..count {
        assert_eq!(u32_at(cd), 0x0201_4b50);
        let crc = u32_at(cd + 16);
        let size = u32_at(cd + 20) as usize;
        let name_len = u16_at(cd + 28);
        let local = u32_at(cd + 42) as usize;
        let name = String::from_utf8(zip[cd + 46..cd + 46 + name_len].to_vec()).unwrap();
        assert_eq!(u32_at(local), 0x0403_4b50);
        let data_at = local + 30 + u16_at(local + 26) + u16_at(local + 28);
        let data = zip[data_at..data_at + size].to_vec();
        let mut c = flate2::Crc::new();
        c.update(&data);
        assert_eq!(c.sum(), crc, "{name}");
        out.push((name, data));
        cd += 46 + name_len + u16_at(cd + 30) + u16_at(cd + 32);
    }
    out
}

/// Puts a finished action of another type straight into the store.
fn insert_action(sim: &SimHandle, action_type: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let now = sim.clock.now_ms();
    let tenant = sim.scenario().tenants[0].id.clone();
    sim.world().actions.insert(MachineAction {
        id: id.clone(),
        tenant_id: tenant,
        action_type: action_type.into(),
        title: String::new(),
        requestor: "test".into(),
        comment: "inserted".into(),
        machine_id: M1.into(),
        computer_dns_name: Some("ws-finance-01.contoso.com".into()),
        scope: None,
        external_id: None,
        related_file_info: None,
        created_ms: now,
        timings: StageTimings {
            pending_ms: 0,
            in_progress_ms: 0,
        },
        manual: false,
        stage_floor: 0,
        floor_changed_ms: now,
        outcome: "Succeeded".into(),
        error: None,
        cancellation: None,
        commands: vec![],
    });
    id
}

/// A token of the scenario's read-only app (no live response role).
fn reader_token(sim: &SimHandle) -> String {
    let s = sim.scenario();
    let tenant = &s.tenants[0];
    let app = &tenant.apps[1];
    defender_sim::jwt::issue(
        sim,
        &defender_sim::jwt::TokenRequest {
            tenant_id: &tenant.id,
            client_id: &app.client_id,
            audience: "https://api.securitycenter.microsoft.com",
            roles: Some(app.roles.clone()),
            scopes: None,
            v2: true,
            login_base: "https://login.microsoftonline.com",
            user: None,
        },
    )
    .0
}

/// Peak resident memory of this process, in KiB (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A sink that only counts what is written to it.
#[derive(Default)]
struct Count(u64);

impl std::io::Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A 1 GiB generated file streams through with little memory. Slow in debug builds:
/// `cargo test --release -p defender-sim --test live_response -- --ignored`.
#[tokio::test]
#[ignore]
async fn one_gib_download_streams_in_little_memory() {
    use std::io::Write;
    const SIZE: u64 = 1024 * 1024 * 1024;
    let mut s = instant(common::scenario());
    s.device_files.get_mut(M1).unwrap().push(DeviceFile {
        path: "C:\\Temp\\huge.bin".into(),
        content: None,
        content_base64: None,
        size: Some(SIZE),
        zeros: false,
    });
    let api = Api::start(s).await;
    let action = api.run_ok(M1, vec![get_file("C:\\Temp\\huge.bin")]).await;
    let mut resp = api
        .fetch(&api.link(action["id"].as_str().unwrap(), 0).await)
        .await;
    assert_eq!(resp.status(), 200);
    let before = peak_rss_kib().unwrap();
    let mut plain = flate2::write::GzDecoder::new(Count::default());
    while let Some(chunk) = resp.chunk().await.unwrap() {
        plain.write_all(&chunk).unwrap();
    }
    let total = plain.finish().unwrap().0;
    assert_eq!(total, SIZE);
    let grown = peak_rss_kib().unwrap().saturating_sub(before);
    assert!(grown < 64 * 1024, "peak memory grew by {grown} KiB");
}
