//! The live response library actions against the simulator: listing, uploads from base64
//! content and from the vault (streamed, rebuilt after a 401), duplicates with and without
//! override, parameter checks that send nothing upstream, and a token lacking Library.Manage.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use defender_sim::Scenario;
use defender_soar::vault::{Origin, Vault};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const SCRIPT: &[u8] = b"Get-Service | Where-Object Status -eq Running\n";

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The library rows of a `list_library_files` envelope, by file name.
fn row<'a>(body: &'a Value, name: &str) -> Option<&'a Value> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fileName"] == name)
}

async fn list(app: &TestApp) -> Value {
    let (status, body) = app.invoke("contoso", "list_library_files", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "list_library_files", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    body
}

/// Library upload requests the simulator saw.
fn uploads(app: &TestApp) -> u64 {
    app.sim.counters().path("POST", "/api/libraryfiles")
}

#[tokio::test]
async fn lists_the_scenario_library() {
    let app = spawn().await;
    let body = list(&app).await;
    assert_eq!(body["summary"]["total_files"], 2, "{body}");
    assert_eq!(body["message"], "Found 2 library files");
    let triage = row(&body, "collect-triage.ps1").expect("collect-triage.ps1 listed");
    assert_eq!(
        triage["sha256"],
        sha256_hex(b"Get-Process; Get-NetTCPConnection\n")
    );
    assert_eq!(triage["hasParameters"], true);
    assert_eq!(triage["parametersDescription"], "-Verbose for more detail");
    assert_eq!(triage["createdBy"], "admin@contoso.onmicrosoft.com");
    for key in ["description", "creationTime", "lastUpdatedTime"] {
        assert!(triage[key].is_string(), "{key} missing in {triage}");
    }
    assert!(row(&body, "remediate.ps1").is_some(), "{body}");
    assert_eq!(app.sim.counters().path("GET", "/api/libraryfiles"), 1);
}

#[tokio::test]
async fn uploads_content_then_lists_it() {
    let app = spawn().await;
    let (status, body) = app
        .invoke(
            "contoso",
            "upload_library_file",
            json!({
                "content": STANDARD.encode(SCRIPT),
                "file_name": "running-services.ps1",
                "description": "Lists running services",
                "parameters_description": "-Name to filter",
                "has_parameters": true
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "upload_library_file", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    let sha = sha256_hex(SCRIPT);
    assert_eq!(body["summary"]["file_name"], "running-services.ps1");
    assert_eq!(body["summary"]["sha256"], sha.as_str());
    let data = &body["data"][0];
    assert_eq!(data["fileName"], "running-services.ps1", "{body}");
    assert_eq!(data["sha256"], sha.as_str());
    assert_eq!(data["description"], "Lists running services");
    assert_eq!(data["hasParameters"], true);
    assert_eq!(data["parametersDescription"], "-Name to filter");
    assert!(data.get("@odata.context").is_none(), "{data}");
    assert_eq!(uploads(&app), 1);

    let listed = list(&app).await;
    assert_eq!(listed["summary"]["total_files"], 3);
    let file = row(&listed, "running-services.ps1").expect("uploaded file listed");
    assert_eq!(file["sha256"], sha.as_str());
    let stored = app.sim.scenario();
    let stored = stored
        .library
        .iter()
        .find(|f| f.file_name == "running-services.ps1")
        .unwrap();
    assert_eq!(stored.content.as_bytes(), SCRIPT);
}

#[tokio::test]
async fn uploads_a_vault_file_streamed_and_resent_after_a_401() {
    let app = spawn().await;
    // Binary content larger than one read chunk, so the stream spans several chunks.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let vault = Vault::in_state_dir(app.state_dir.path());
    let stored = vault
        .store_bytes(
            &bytes,
            Origin {
                file_name: "tool.exe".into(),
                asset: "contoso".into(),
                device: None,
                event_id: None,
            },
        )
        .await
        .unwrap();
    let vault_id = stored.entry.sha256.clone();
    // A token the host holds but the simulator no longer accepts: the upload answers 401, the
    // host fetches a new token and sends the form again, reopening the vault file.
    let (status, _) = app.invoke("contoso", "list_library_files", json!({})).await;
    assert_eq!(status, 200);
    app.sim.expire_access_tokens(None);
    let (status, body) = app
        .invoke(
            "contoso",
            "upload_library_file",
            json!({
                "vault_id": vault_id.to_uppercase(),
                "file_name": "tool.exe",
                "description": "Collection tool"
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["sha256"], vault_id.as_str());
    assert_eq!(body["summary"]["file_name"], "tool.exe");
    assert_eq!(body["data"][0]["sha256"], vault_id.as_str());
    assert_eq!(body["data"][0]["hasParameters"], false);
    let c = app.sim.counters();
    assert_eq!(
        c.path("POST", "/api/libraryfiles"),
        2,
        "401 then the resent form"
    );
    assert_eq!(c.route_status("POST", "/api/libraryfiles", 401), 1);

    let listed = list(&app).await;
    let file = row(&listed, "tool.exe").expect("uploaded file listed");
    assert_eq!(file["sha256"], vault_id.as_str());
}

#[tokio::test]
async fn a_duplicate_name_needs_override() {
    let app = spawn().await;
    let params = |override_existing: bool| {
        json!({
            "content": STANDARD.encode(SCRIPT),
            "file_name": "collect-triage.ps1",
            "description": "Replacement triage script",
            "override": override_existing
        })
    };
    let (status, body) = app
        .invoke("contoso", "upload_library_file", params(false))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "upload_library_file", "contoso");
    assert_eq!(body["status"], "failed", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("already exists"), "{msg}");
    assert!(msg.contains("with override set to true"), "{msg}");
    assert_eq!(body["parameters"]["override"], false);
    let before = list(&app).await;
    assert_eq!(
        row(&before, "collect-triage.ps1").unwrap()["sha256"],
        sha256_hex(b"Get-Process; Get-NetTCPConnection\n"),
        "the library file is unchanged"
    );

    let (status, body) = app
        .invoke("contoso", "upload_library_file", params(true))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["sha256"], sha256_hex(SCRIPT));
    let after = list(&app).await;
    assert_eq!(after["summary"]["total_files"], 2);
    let file = row(&after, "collect-triage.ps1").unwrap();
    assert_eq!(file["sha256"], sha256_hex(SCRIPT));
    assert_eq!(file["description"], "Replacement triage script");
}

/// Invokes an upload expected to be refused with 400; returns the message.
async fn refused(app: &TestApp, params: Value) -> String {
    let (status, body) = app.invoke("contoso", "upload_library_file", params).await;
    assert_eq!(status, 400, "{body}");
    assert_envelope(&body, "upload_library_file", "contoso");
    assert_eq!(body["status"], "failed", "{body}");
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn parameter_problems_send_nothing_upstream() {
    let app = spawn().await;
    let content = STANDARD.encode(SCRIPT);

    let msg = refused(
        &app,
        json!({"content": content, "file_name": "../x.ps1", "description": "d"}),
    )
    .await;
    assert!(msg.contains("'file_name'"), "{msg}");
    let msg = refused(
        &app,
        json!({"content": content, "file_name": "..", "description": "d"}),
    )
    .await;
    assert!(msg.contains("'file_name'"), "{msg}");

    let msg = refused(
        &app,
        json!({"content": content, "vault_id": "a".repeat(64), "file_name": "x.ps1", "description": "d"}),
    )
    .await;
    assert!(
        msg.contains("'vault_id'") && msg.contains("'content'"),
        "{msg}"
    );
    let msg = refused(&app, json!({"file_name": "x.ps1", "description": "d"})).await;
    assert!(
        msg.contains("'vault_id'") && msg.contains("'content'"),
        "{msg}"
    );

    let big = STANDARD.encode(vec![b'x'; 1024 * 1024 + 1]);
    let msg = refused(
        &app,
        json!({"content": big, "file_name": "x.ps1", "description": "d"}),
    )
    .await;
    assert!(
        msg.contains("'content'") && msg.contains("vault_id"),
        "{msg}"
    );
    let msg = refused(
        &app,
        json!({"content": "%%% not base64", "file_name": "x.ps1", "description": "d"}),
    )
    .await;
    assert!(msg.contains("'content'") && msg.contains("base64"), "{msg}");

    let unknown = sha256_hex(b"never stored");
    let msg = refused(
        &app,
        json!({"vault_id": unknown, "file_name": "x.ps1", "description": "d"}),
    )
    .await;
    assert!(msg.contains("'vault_id'") && msg.contains("vault"), "{msg}");
    let msg = refused(
        &app,
        json!({"vault_id": "not-a-sha", "file_name": "x.ps1", "description": "d"}),
    )
    .await;
    assert!(msg.contains("'vault_id'"), "{msg}");

    // Too large for the library, judged from the vault's metadata before reading the file.
    let vault = Vault::in_state_dir(app.state_dir.path());
    let stored = vault
        .store_bytes(
            b"pretend to be large",
            Origin {
                file_name: "huge.bin".into(),
                asset: "contoso".into(),
                device: None,
                event_id: None,
            },
        )
        .await
        .unwrap();
    let mut entry = stored.entry.clone();
    entry.size = 250 * 1024 * 1024 + 1;
    std::fs::write(
        vault.dir().join(format!("{}.json", entry.sha256)),
        serde_json::to_vec(&entry).unwrap(),
    )
    .unwrap();
    let msg = refused(
        &app,
        json!({"vault_id": entry.sha256, "file_name": "huge.bin", "description": "d"}),
    )
    .await;
    assert!(
        msg.contains("'vault_id'") && msg.contains("250 MB"),
        "{msg}"
    );

    let msg = refused(&app, json!({"content": content, "file_name": "x.ps1"})).await;
    assert!(msg.contains("'description'"), "{msg}");
    let msg = refused(
        &app,
        json!({"content": content, "file_name": "x.ps1", "description": "d".repeat(1001)}),
    )
    .await;
    assert!(msg.contains("'description'"), "{msg}");

    let c = app.sim.counters();
    assert_eq!(c.total, 0, "nothing reached the simulator: {c:?}");
}

#[tokio::test]
async fn a_token_without_library_manage_fails_fast() {
    let scenario = Scenario::default_scenario();
    let for_config = scenario.clone();
    let app = spawn_configured(scenario, move |c| {
        let base = c.assets["contoso"].api_url.clone();
        let reader = asset_on_app("reader", &for_config, &base, 1);
        c.assets.insert(reader.id.clone(), reader);
    })
    .await;
    for (action, params) in [
        ("list_library_files", json!({})),
        (
            "upload_library_file",
            json!({"content": STANDARD.encode(SCRIPT), "file_name": "x.ps1", "description": "d"}),
        ),
    ] {
        let (status, body) = app.invoke("reader", action, params).await;
        assert_eq!(status, 200, "{body}");
        assert_envelope(&body, action, "reader");
        assert_eq!(body["status"], "failed", "{body}");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!(
                "lacks permission Library.Manage required by {action}"
            )),
            "{msg}"
        );
        assert_eq!(
            body["summary"]["missing_permissions"],
            json!(["Library.Manage"])
        );
    }
    let c = app.sim.counters();
    assert_eq!(c.tokens("client_credentials"), 1);
    assert_eq!(c.path("GET", "/api/libraryfiles"), 0);
    assert_eq!(c.path("POST", "/api/libraryfiles"), 0);
}

#[tokio::test]
async fn deletes_a_library_file_and_explains_an_unknown_one() {
    let app = spawn().await;
    let before = list(&app).await;
    let name = before["data"][0]["fileName"].as_str().unwrap().to_string();
    let (status, body) = app
        .invoke("contoso", "delete_library_file", json!({"file_name": name}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_envelope(&body, "delete_library_file", "contoso");
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["summary"]["deleted"], true);
    assert!(row(&list(&app).await, &name).is_none());
    let (status, body) = app
        .invoke("contoso", "delete_library_file", json!({"file_name": name}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no file named"),
        "{body}"
    );
    let deletes = || {
        app.sim
            .counters()
            .route("DELETE", "/api/libraryfiles/{name}")
    };
    let sent = deletes();
    for bad in ["..", "a/b.ps1", "x y.ps1", ""] {
        let (status, body) = app
            .invoke("contoso", "delete_library_file", json!({"file_name": bad}))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("file_name"),
            "{body}"
        );
    }
    assert_eq!(deletes(), sent);
}
