//! The edge: slow and hostile clients (header timeout, early 413, X-Request-Id), vault limits
//! on downloads (gzip bomb, caps), download hosts (no SSRF), /readyz under load, and the
//! download headers of the vault.

use std::time::{Duration, Instant};

use defender_sim::Scenario;
use defender_sim::scenario::DeviceFile;
use defender_soar::config::{DownloadHosts, Environment};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// The default scenario's first machine, which holds the device files.
const DEV: &str = "f1eb97a430ca4c315e219960cd146874419fbefc";
const DOWNLOAD_ROUTE: &str = "/download/{token}";

fn instant_with(files: Vec<DeviceFile>) -> Scenario {
    let mut s = Scenario::default_scenario();
    s.timings.pending_ms = 0;
    s.timings.in_progress_ms = 0;
    s.device_files
        .entry(DEV.to_string())
        .or_default()
        .extend(files);
    s
}

fn text_file(path: &str, content: &str) -> DeviceFile {
    DeviceFile {
        path: path.into(),
        content: Some(content.into()),
        content_base64: None,
        size: None,
        zeros: false,
    }
}

fn zeros_file(path: &str, size: u64) -> DeviceFile {
    DeviceFile {
        path: path.into(),
        content: None,
        content_base64: None,
        size: Some(size),
        zeros: true,
    }
}

fn get_file(path: &str) -> Value {
    json!({"device_id": DEV, "file_path": path, "comment": "edge test", "timeout": 30})
}

/// Files in the vault directory (temporary ones included).
fn vault_files(app: &TestApp) -> Vec<String> {
    match std::fs::read_dir(app.state_dir.path().join("vault")) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Reads until the peer closes (or `limit` passes); answers what arrived and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

#[tokio::test]
async fn a_slow_header_client_is_dropped_while_others_are_served() {
    let app = spawn_configured(Scenario::default_scenario(), |c| {
        c.server.header_read_timeout_secs = 1;
    })
    .await;
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    // Others are served meanwhile.
    for _ in 0..5 {
        let (status, _) = app.get("/healthz").await;
        assert_eq!(status, 200);
    }
    // The slow client keeps trickling bytes, but its head is never complete.
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(5) {
        if slow.write_all(b"a").await.is_err() {
            closed = true;
            break;
        }
        let (_, gone) = read_until_closed(&mut slow, Duration::from_millis(200)).await;
        if gone {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "the slow client was not dropped within 5 s");
    assert!(
        took >= Duration::from_millis(800),
        "dropped too early ({took:?}): the limit is 1 s"
    );
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_keep_alive_timeout() {
    let app = spawn_configured(Scenario::default_scenario(), |c| {
        c.server.keep_alive_timeout_secs = 1;
    })
    .await;
    let mut conn = TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (got, closed) = read_until_closed(&mut conn, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(closed, "the idle connection stayed open");
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn a_one_gigabyte_content_length_is_answered_413_at_once() {
    let app = spawn().await;
    for auth in [
        format!("Authorization: Bearer {API_KEY}\r\n"),
        String::new(),
    ] {
        let mut conn = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /assets/contoso/actions/list_devices HTTP/1.1\r\nHost: x\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{{\"param"
        );
        conn.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (got, _) = read_until_closed(&mut conn, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("body_limit_bytes"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // The limit itself still lets normal bodies through.
    let (status, body) = app.invoke("contoso", "list_devices", json!({})).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_gzip_bomb_is_stopped_at_the_cap_and_leaves_nothing() {
    let bomb = "C:\\temp\\bomb.bin";
    let scenario = instant_with(vec![zeros_file(bomb, 256 << 20)]);
    // The size cap first (ratio guard out of the way), then the ratio guard.
    let cases: [(u64, u64, &str); 2] = [
        (8 << 20, 1_000_000, "max_file_bytes"),
        (1 << 30, 200, "max_gunzip_ratio"),
    ];
    for (max_file, ratio, key) in cases {
        let app = spawn_configured(scenario.clone(), |c| {
            c.vault.max_file_bytes = max_file;
            c.vault.max_gunzip_ratio = ratio;
        })
        .await;
        let (_, body) = app.invoke("contoso", "get_file", get_file(bomb)).await;
        assert_envelope(&body, "get_file", "contoso");
        assert_eq!(body["status"], "failed", "{body}");
        let msg = body["message"].as_str().unwrap();
        assert!(msg.contains(key), "{key}: {msg}");
        assert!(msg.contains("nothing was stored"), "{msg}");
        assert!(
            vault_files(&app).is_empty(),
            "left behind: {:?}",
            vault_files(&app)
        );
    }
}

#[tokio::test]
async fn a_link_to_a_host_outside_the_list_is_refused() {
    let hosts = "C:\\Windows\\System32\\drivers\\etc\\hosts";
    let app = spawn_configured(instant_with(vec![text_file(hosts, "x")]), |c| {
        // contoso keeps the cloud's default (blob storage over https); the simulator serves
        // its links from http://127.0.0.1, so they are refused.
        c.assets.get_mut("contoso").unwrap().download_hosts =
            DownloadHosts::for_environment(Environment::Public);
    })
    .await;
    let (_, body) = app.invoke("contoso", "get_file", get_file(hosts)).await;
    assert_eq!(body["status"], "failed", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("127.0.0.1") && msg.contains("download_hosts"),
        "{msg}"
    );
    assert!(!msg.contains("/download/"), "the link itself leaked: {msg}");
    assert_eq!(app.sim.counters().route("GET", DOWNLOAD_ROUTE), 0);
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logs.contains("download link refused"), "not logged");
    // The same download through an asset that allows the simulator's host goes through.
    let (_, ok) = app.invoke("contoso_v1", "get_file", get_file(hosts)).await;
    assert_eq!(ok["status"], "success", "{ok}");
    assert_eq!(app.sim.counters().route("GET", DOWNLOAD_ROUTE), 1);
}

#[tokio::test]
async fn four_hundred_concurrent_readyz_all_answer_200_and_write_nothing() {
    let app = spawn().await;
    let before: Vec<_> = std::fs::read_dir(app.state_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(400)
        .build()
        .unwrap();
    let url = app.url("/readyz");
    let calls = (0..400).map(|_| {
        let client = client.clone();
        let url = url.clone();
        async move { client.get(&url).send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| matches!(s, Ok(200))).count();
    assert_eq!(
        ok,
        400,
        "{:?}",
        statuses.iter().find(|s| !matches!(s, Ok(200)))
    );
    let after: Vec<_> = std::fs::read_dir(app.state_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "/readyz wrote into the state directory");
}

#[tokio::test]
async fn readyz_is_503_when_the_state_dir_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let app = spawn_configured(Scenario::default_scenario(), |c| {
        c.server.state_dir = state.clone();
    })
    .await;
    assert_eq!(app.get("/readyz").await.0, 200);
    // The directory replaced by a file: not ready, and the file is left as it was.
    std::fs::rename(&state, dir.path().join("moved")).unwrap();
    std::fs::write(&state, b"x").unwrap();
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not a directory"), "{body}");
    assert_eq!(std::fs::read(&state).unwrap(), b"x");
    std::fs::remove_file(&state).unwrap();
    std::fs::rename(dir.path().join("moved"), &state).unwrap();
    assert_eq!(app.get("/readyz").await.0, 200);
}

#[tokio::test]
async fn an_unsafe_request_id_is_replaced_and_never_logged() {
    let app = spawn().await;
    let forged = "x\" level=ERROR msg=\"forged-line-7731";
    let resp = app
        .client
        .get(app.url("/actions"))
        .bearer_auth(API_KEY)
        .header("x-request-id", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, forged);
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
    let long = "a".repeat(129);
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", &long)
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"].to_str().unwrap(), long);
    // A safe id is kept as sent.
    let resp = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "soar-run:42.a_b-c")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "soar-run:42.a_b-c");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logs.contains("X-Request-Id replaced"));
    assert!(!logs.contains("forged-line-7731"), "the raw id was logged");
    assert!(!logs.contains(&long), "the raw id was logged");
}

#[tokio::test]
async fn vault_downloads_say_nosniff_and_carry_the_exact_name() {
    let path = "C:\\temp\\résumé 1.txt";
    let app = spawn_configured(instant_with(vec![text_file(path, "cv")]), |_| {}).await;
    let (_, body) = app.invoke("contoso", "get_file", get_file(path)).await;
    assert_eq!(body["status"], "success", "{body}");
    let id = body["summary"]["vault_id"].as_str().unwrap().to_string();
    let resp = app
        .client
        .get(app.url(&format!("/vault/{id}")))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let cd = resp.headers()["content-disposition"].to_str().unwrap();
    assert!(
        cd.contains("filename*=UTF-8''r%C3%A9sum%C3%A9%201.txt"),
        "{cd}"
    );
    assert!(cd.contains("filename=\"r_sum_ 1.txt\""), "{cd}");
}

#[tokio::test]
async fn the_vault_evicts_the_oldest_file_or_refuses_at_max_total_bytes() {
    let (a, b, c) = ("C:\\a.txt", "C:\\b.txt", "C:\\c.txt");
    let files = vec![
        text_file(a, &"a".repeat(1000)),
        text_file(b, &"b".repeat(1000)),
        text_file(c, &"c".repeat(1000)),
    ];
    let evict = spawn_configured(instant_with(files.clone()), |c| {
        c.vault.max_total_bytes = 2500;
        c.vault.max_file_bytes = 2000;
    })
    .await;
    let mut ids = Vec::new();
    for path in [a, b, c] {
        let (_, body) = evict.invoke("contoso", "get_file", get_file(path)).await;
        assert_eq!(body["status"], "success", "{body}");
        ids.push(body["summary"]["vault_id"].as_str().unwrap().to_string());
    }
    let info = |id: &str| {
        let client = evict.client.clone();
        let url = evict.url(&format!("/vault/{id}/info"));
        async move {
            client
                .get(url)
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(info(&ids[0]).await, 404, "the oldest file was not evicted");
    assert_eq!(info(&ids[1]).await, 200);
    assert_eq!(info(&ids[2]).await, 200);

    let refuse = spawn_configured(instant_with(files), |c| {
        c.vault.max_total_bytes = 2500;
        c.vault.max_file_bytes = 2000;
        c.vault.when_full = defender_soar::config::WhenFull::Refuse;
    })
    .await;
    for path in [a, b] {
        let (_, body) = refuse.invoke("contoso", "get_file", get_file(path)).await;
        assert_eq!(body["status"], "success", "{body}");
    }
    let (_, body) = refuse.invoke("contoso", "get_file", get_file(c)).await;
    assert_eq!(body["status"], "failed", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("max_total_bytes"), "{msg}");
    let left: Vec<_> = vault_files(&refuse)
        .into_iter()
        .filter(|n| !n.ends_with(".json"))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[tokio::test]
async fn downloads_are_refused_below_the_free_space_reserve() {
    let hosts = "C:\\hosts";
    let app = spawn_configured(instant_with(vec![text_file(hosts, "x")]), |c| {
        c.vault.min_free_bytes = u64::MAX / 2;
    })
    .await;
    let (_, body) = app.invoke("contoso", "get_file", get_file(hosts)).await;
    assert_eq!(body["status"], "failed", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(msg.contains("min_free_bytes"), "{msg}");
    assert!(vault_files(&app).is_empty());
}
