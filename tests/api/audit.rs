//! The audit trail: one chained line per state-changing request, verified by
//! `defender-soar audit verify`, read through `GET /audit`, without secrets.

use std::process::Command;

use serde_json::{Value, json};

use crate::helpers::*;
use crate::scopes::{ADMIN, RESPONDER, call, spawn_keyed};

const DEV: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";
const PASSWORD: &str = "hunter2-audit-password-never-written";

fn verify(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_defender-soar"))
        .args(["audit", "verify", "--config"])
        .arg(config)
        .env_remove("DEFENDER_SOAR_API_KEY")
        .env_remove("DEFENDER_SOAR_CONFIG")
        .output()
        .unwrap()
}

fn audit_files(app: &TestApp) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(app.state_dir.path().join("audit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn the_chain_verifies_after_1000_actions_and_breaks_when_a_line_is_edited() {
    let app = spawn_keyed().await;
    // One action that reaches Defender, with its event id…
    let (status, body) = {
        let r = call(
            &app,
            RESPONDER,
            "POST",
            "/assets/contoso/actions/unquarantine_device",
            Some(json!({"device_id": DEV, "comment": "IR-7 release"})),
        )
        .await;
        (r.0, serde_json::from_str::<Value>(&r.1).unwrap())
    };
    assert_eq!(status, 200, "{body}");
    let event_id = body["summary"]["event_id"].as_str().unwrap().to_string();
    // …a consent start…
    assert_eq!(
        call(&app, ADMIN, "POST", "/assets/contoso/consent", None)
            .await
            .0,
        409
    );
    // …and 1,000 refused ones (a parameter the action does not take: refused before any
    // upstream call, audited all the same), 8 at a time.
    let mut done = 0;
    while done < 1000 {
        let batch: Vec<_> = (0..8)
            .map(|i| {
                app.invoke(
                    "contoso",
                    "unquarantine_device",
                    json!({"device_id": DEV, "comment": format!("bulk {}", done + i), "password": PASSWORD}),
                )
            })
            .collect();
        for (status, _) in futures::future::join_all(batch).await {
            assert_eq!(status, 400);
        }
        done += 8;
    }
    // Read-only actions are not audited.
    assert_eq!(
        app.invoke("contoso", "test_connectivity", json!({}))
            .await
            .0,
        200
    );

    let text: String = audit_files(&app)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1002);
    let first = &lines[0];
    assert_eq!(first["key"], "soc-responder");
    assert_eq!(first["addr"], "127.0.0.1");
    assert_eq!(first["asset"], "contoso");
    assert_eq!(first["action"], "unquarantine_device");
    assert_eq!(first["target"]["device_id"], DEV);
    assert_eq!(first["event_id"], event_id.as_str());
    assert_eq!(first["outcome"]["status"], 200);
    assert_eq!(first["prev"], "0".repeat(64));
    assert!(!first["request_id"].as_str().unwrap().is_empty());
    assert_eq!(lines[1]["action"], "consent");
    assert_eq!(lines[1]["key"], "soc-admin");
    assert_eq!(lines[1]["outcome"]["status"], 409);
    assert_eq!(lines[2]["key"], "default");
    assert_eq!(lines[2]["outcome"]["status"], 400);
    assert!(lines[2]["parameters"].get("password").is_none());
    for secret in [PASSWORD, API_KEY, RESPONDER, ADMIN] {
        assert!(!text.contains(secret), "a secret reached the audit trail");
    }
    let client_secret = app.app.assets["contoso"]
        .config
        .client_secret
        .clone()
        .unwrap();
    assert!(!text.contains(secrecy::ExposeSecret::expose_secret(&client_secret)));

    // GET /audit: pages, newest last.
    let r = call(&app, ADMIN, "GET", "/audit?limit=600", None).await;
    assert_eq!(r.0, 200, "{}", r.1);
    let page: Value = serde_json::from_str(&r.1).unwrap();
    assert_eq!(page["lines"].as_array().unwrap().len(), 600);
    assert_eq!(page["lines"][0], lines[0]);
    let next = page["next"].as_str().unwrap().to_string();
    let r = call(
        &app,
        ADMIN,
        "GET",
        &format!("/audit?limit=1000&cursor={next}"),
        None,
    )
    .await;
    let rest: Value = serde_json::from_str(&r.1).unwrap();
    assert_eq!(rest["lines"].as_array().unwrap().len(), 402);
    assert_eq!(rest["lines"][401], lines[1001]);
    assert!(rest["next"].is_null());
    assert_eq!(
        call(
            &app,
            ADMIN,
            "GET",
            "/audit?since=2000-01-01T00:00:00Z&limit=1",
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&app, ADMIN, "GET", "/audit?since=yesterday", None)
            .await
            .0,
        400
    );
    assert_eq!(
        call(&app, ADMIN, "GET", "/audit?limit=5000", None).await.0,
        400
    );
    for secret in [PASSWORD, API_KEY, RESPONDER, ADMIN] {
        assert!(!r.1.contains(secret));
    }

    // The CLI verifies the chain…
    let config = app.state_dir.path().join("verify.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nstate_dir = {:?}\n",
            app.state_dir.path().display().to_string()
        ),
    )
    .unwrap();
    let out = verify(&config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1002 lines verified"), "{stdout}");
    // …and names the first broken link once a line is edited.
    let file = audit_files(&app).pop().unwrap();
    let content = std::fs::read_to_string(&file).unwrap();
    let n = content.lines().count();
    let edited: Vec<String> = content
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == n - 10 {
                l.replacen("bulk", "BULK", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&file, edited.join("\n") + "\n").unwrap();
    let out = verify(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        stderr.contains(&format!("{name} line {}", n - 8)),
        "{stderr}"
    );
}

#[test]
fn an_action_run_from_the_command_line_is_audited_as_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_defender-soar"))
        .current_dir(dir.path())
        .args([
            "invoke",
            "demo",
            "update_device_tag",
            "--param",
            &format!("device_id={DEV}"),
            "--param",
            "tag=audited",
            "--param",
            "operation=Add",
        ])
        .env_remove("DEFENDER_SOAR_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let audit: String = std::fs::read_dir(dir.path().join("state/audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let line: Value = serde_json::from_str(audit.lines().last().unwrap()).unwrap();
    assert_eq!(line["key"], "cli");
    assert_eq!(line["action"], "update_device_tag");
    assert_eq!(line["asset"], "demo");
    assert_eq!(line["parameters"]["tag"], "audited");
}
