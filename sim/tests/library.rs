//! The live response library over HTTP: list, multipart upload (override, duplicates, names),
//! delete, and how the library feeds PutFile/RunScript.

mod common;

use std::time::Duration;

use defender_sim::SimHandle;
use defender_sim::scenario::StageTimings;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const M1: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";

struct Api {
    sim: SimHandle,
    http: reqwest::Client,
    token: String,
}

impl Api {
    async fn start() -> Api {
        let mut s = common::scenario();
        s.timings.per_type.insert(
            "LiveResponse".into(),
            StageTimings {
                pending_ms: 0,
                in_progress_ms: 0,
            },
        );
        let sim = common::start(s).await;
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

    async fn list(&self) -> Value {
        let resp = self
            .http
            .get(self.url("/api/libraryfiles"))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    async fn names(&self) -> Vec<String> {
        self.list().await["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["fileName"].as_str().unwrap().to_string())
            .collect()
    }

    async fn upload(&self, form: Form) -> reqwest::Response {
        self.http
            .post(self.url("/api/LibraryFiles"))
            .bearer_auth(&self.token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    async fn delete(&self, name: &str) -> reqwest::Response {
        self.http
            .delete(self.url(&format!("/api/libraryfiles/{name}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }
}

fn file_form(name: &str, content: &[u8]) -> Form {
    Form::new().part(
        "File",
        Part::bytes(content.to_vec()).file_name(name.to_string()),
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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

#[tokio::test]
async fn list_shows_the_scenario_library() {
    let api = Api::start().await;
    let body = api.list().await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/$metadata#LibraryFiles")
    );
    let files = body["value"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    let triage = &files[0];
    let expected = api.sim.scenario().library[0].clone();
    assert_eq!(triage["fileName"], "collect-triage.ps1");
    assert_eq!(triage["sha256"], sha256_hex(expected.content.as_bytes()));
    assert_eq!(triage["description"], expected.description.as_str());
    assert_eq!(triage["hasParameters"], true);
    assert_eq!(triage["parametersDescription"], "-Verbose for more detail");
    assert_eq!(triage["createdBy"], "admin@contoso.onmicrosoft.com");
    for key in ["creationTime", "lastUpdatedTime"] {
        assert!(triage[key].as_str().unwrap().ends_with('Z'), "{key}");
    }
    assert_eq!(files[1]["hasParameters"], false);
}

#[tokio::test]
async fn upload_adds_a_file_that_run_script_can_use() {
    let api = Api::start().await;
    let content = b"param($Name)\nWrite-Output \"hi $Name\"\n";
    let form = file_form("hello_v1.ps1", content)
        .text("Description", "Says hello")
        .text("ParametersDescription", "-Name <who>")
        .text("HasParameters", "true")
        .text("OverrideIfExists", "false");
    let resp = api.upload(form).await;
    assert_eq!(resp.status(), 200);
    let file: Value = resp.json().await.unwrap();
    assert!(
        file["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("/api/$metadata#LibraryFiles/$entity")
    );
    let app_name = api.sim.scenario().tenants[0].apps[0].name.clone();
    assert_eq!(file["fileName"], "hello_v1.ps1");
    assert_eq!(file["sha256"], sha256_hex(content));
    assert_eq!(file["description"], "Says hello");
    assert_eq!(file["parametersDescription"], "-Name <who>");
    assert_eq!(file["hasParameters"], true);
    assert_eq!(file["createdBy"], app_name.as_str());
    assert_eq!(file["creationTime"], file["lastUpdatedTime"]);
    assert!(api.names().await.contains(&"hello_v1.ps1".to_string()));

    // The uploaded script runs, with the default output naming it and its args.
    let resp = api
        .http
        .post(api.url(&format!("/api/machines/{M1}/runliveresponse")))
        .bearer_auth(&api.token)
        .json(&json!({
            "Commands": [
                {"type": "PutFile", "params": [{"key": "FileName", "value": "hello_v1.ps1"}]},
                {"type": "RunScript", "params": [
                    {"key": "ScriptName", "value": "hello_v1.ps1"},
                    {"key": "Args", "value": "-Name x"}
                ]}
            ],
            "Comment": "run the upload"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let action: Value = resp.json().await.unwrap();
    assert_eq!(action["status"], "Succeeded");
    let id = action["id"].as_str().unwrap();
    let link: Value = api
        .http
        .get(api.url(&format!(
            "/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index=1)"
        )))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result: Value = api
        .http
        .get(link["value"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(result["script_name"], "hello_v1.ps1");
    assert_eq!(result["script_output"], "Ran hello_v1.ps1 -Name x\n");
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["script_errors"], "");
}

#[tokio::test]
async fn duplicate_needs_override_and_override_replaces() {
    let api = Api::start().await;
    let resp = api.upload(file_form("tool.ps1", b"v1")).await;
    assert_eq!(resp.status(), 200);
    let first: Value = resp.json().await.unwrap();

    let (status, code, message) = error_code(api.upload(file_form("tool.ps1", b"v2")).await).await;
    assert_eq!((status, code.as_str()), (400, "BadRequest"));
    assert!(message.contains("OverrideIfExists"), "{message}");
    // Names compare case-insensitively, as on the service.
    let (status, _, _) = error_code(api.upload(file_form("TOOL.ps1", b"v2")).await).await;
    assert_eq!(status, 400);
    let (status, _, _) = error_code(
        api.upload(file_form("tool.ps1", b"v2").text("OverrideIfExists", "false"))
            .await,
    )
    .await;
    assert_eq!(status, 400);

    api.sim.clock.advance(Duration::from_secs(90));
    let resp = api
        .upload(
            file_form("tool.ps1", b"v2")
                .text("OverrideIfExists", "true")
                .text("Description", "second"),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let second: Value = resp.json().await.unwrap();
    assert_eq!(second["sha256"], sha256_hex(b"v2"));
    assert_eq!(second["description"], "second");
    assert_eq!(second["creationTime"], first["creationTime"]);
    assert_ne!(second["lastUpdatedTime"], first["lastUpdatedTime"]);
    let names = api.names().await;
    assert_eq!(names.iter().filter(|n| *n == "tool.ps1").count(), 1);
    let listed = api.list().await;
    let listed = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fileName"] == "tool.ps1")
        .unwrap()
        .clone();
    assert_eq!(listed["sha256"], sha256_hex(b"v2"));
}

#[tokio::test]
async fn binary_upload_keeps_its_sha256() {
    let api = Api::start().await;
    let content: Vec<u8> = (0..=255u8).rev().collect();
    let resp = api.upload(file_form("blob.bin", &content)).await;
    assert_eq!(resp.status(), 200);
    let file: Value = resp.json().await.unwrap();
    assert_eq!(file["sha256"], sha256_hex(&content));
}

#[tokio::test]
async fn bad_uploads_are_refused() {
    let api = Api::start().await;
    for bad in ["bad name.ps1", "..\\evil.ps1", "a/b.ps1", "naïve.ps1"] {
        let (status, code, message) = error_code(api.upload(file_form(bad, b"x")).await).await;
        assert_eq!((status, code.as_str()), (400, "InvalidInput"), "{bad}");
        assert!(message.contains("letters, digits"), "{bad}: {message}");
    }
    let (status, code, message) =
        error_code(api.upload(Form::new().text("Description", "no file")).await).await;
    assert_eq!((status, code.as_str()), (400, "InvalidRequestBody"));
    assert!(message.contains("File"), "{message}");

    let (status, code, message) = error_code(
        api.upload(file_form("ok.ps1", b"x").text("HasParameters", "yes"))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "InvalidInput"));
    assert!(message.contains("HasParameters"), "{message}");

    let resp = api
        .http
        .post(api.url("/api/libraryfiles"))
        .bearer_auth(&api.token)
        .json(&json!({"File": "x"}))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "InvalidRequestBody"));
    assert_eq!(api.names().await.len(), 2);
}

#[tokio::test]
async fn delete_removes_and_unknown_is_404() {
    let api = Api::start().await;
    let resp = api.delete("Remediate.ps1").await;
    assert_eq!(resp.status(), 204);
    assert_eq!(api.names().await, vec!["collect-triage.ps1".to_string()]);
    let (status, code, message) = error_code(api.delete("remediate.ps1").await).await;
    assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
    assert!(message.contains("remediate.ps1"), "{message}");

    // A deleted file can no longer be put on a device.
    let resp = api
        .http
        .post(api.url(&format!("/api/machines/{M1}/runliveresponse")))
        .bearer_auth(&api.token)
        .json(&json!({
            "Commands": [{"type": "PutFile", "params": [{"key": "FileName", "value": "remediate.ps1"}]}],
            "Comment": "after delete"
        }))
        .send()
        .await
        .unwrap();
    let action: Value = resp.json().await.unwrap();
    assert_eq!(action["status"], "Failed");
    assert_eq!(
        action["commands"][0]["errors"][0],
        "File remediate.ps1 was not found in the library"
    );
}

#[tokio::test]
async fn library_routes_require_library_manage() {
    let api = Api::start().await;
    let s = api.sim.scenario();
    let tenant = &s.tenants[0];
    let app = &tenant.apps[1];
    let reader = defender_sim::jwt::issue(
        &api.sim,
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
    .0;
    let list = api
        .http
        .get(api.url("/api/libraryfiles"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 403);
    let upload = api
        .http
        .post(api.url("/api/libraryfiles"))
        .bearer_auth(&reader)
        .multipart(file_form("x.ps1", b"x"))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 403);
    let delete = api
        .http
        .delete(api.url("/api/libraryfiles/remediate.ps1"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 403);
    assert_eq!(api.names().await.len(), 2);
}
