//! `defender-soar demo` prints curl examples that work when pasted.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn demo_curl_examples_work_when_pasted() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is needed for this test (apt-get install curl)");
    }
    let child = Command::new(env!("CARGO_BIN_EXE_defender-soar"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("DEFENDER_SOAR_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut banner = String::new();
        // Reads until the process ends, so its stdout never sees a closed pipe.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let done = line.starts_with("Press ctrl-c");
            banner.push_str(&line);
            banner.push('\n');
            if done {
                let _ = tx.send(std::mem::take(&mut banner));
            }
        }
    });
    let banner = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("demo banner");
    assert!(banner.contains("API key:"), "{banner}");
    let start = banner.find("export KEY").unwrap();
    let end = banner.find("Press ctrl-c").unwrap();
    let script = &banner[start..end];
    let script = script.replace("curl -s ", "curl -sS ");
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        answers.len() >= 9,
        "{text}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(answers[0]["action"], "test_connectivity");
    assert_eq!(answers[0]["status"], "success", "{}", answers[0]);
    assert_eq!(answers[1]["action"], "list_devices");
    assert_eq!(answers[1]["status"], "success", "{}", answers[1]);
    assert!(answers[1]["summary"]["total_devices"].as_u64().unwrap() > 0);
    // Alert triage: list, get with evidence, assign and classify the same alert.
    assert_eq!(answers[2]["action"], "list_alerts");
    assert_eq!(answers[2]["status"], "success", "{}", answers[2]);
    let listed = answers[2]["data"].as_array().unwrap();
    assert!(!listed.is_empty(), "{}", answers[2]);
    assert!(
        listed
            .iter()
            .all(|a| a["status"] == "New" && a["severity"] == "High")
    );
    let first = listed[0]["id"].as_str().unwrap();
    assert_eq!(answers[3]["action"], "get_alert");
    assert_eq!(answers[3]["status"], "success", "{}", answers[3]);
    assert_eq!(answers[3]["summary"]["alert_id"], first);
    assert!(
        answers[3]["data"][0]["evidence"].is_array(),
        "{}",
        answers[3]
    );
    assert_eq!(answers[4]["action"], "update_alert");
    assert_eq!(answers[4]["status"], "success", "{}", answers[4]);
    assert_eq!(answers[4]["summary"]["alert_id"], first);
    assert_eq!(answers[4]["summary"]["assigned_to"], "analyst@contoso.com");
    assert_eq!(answers[4]["summary"]["classification"], "TruePositive");
    // Hunting: the template finds the devices the scenario says reached the domain, and the
    // query answers rows with the columns it projects.
    assert_eq!(answers[5]["action"], "run_hunting_template");
    assert_eq!(answers[5]["status"], "success", "{}", answers[5]);
    assert_eq!(answers[5]["summary"]["api"], "graph", "{}", answers[5]);
    let mut devices: Vec<&str> = answers[5]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["DeviceId"].as_str().unwrap())
        .collect();
    devices.sort_unstable();
    assert_eq!(
        devices,
        [
            "8cfcc2dff88df3eed6a4227926412e6147aff567",
            "f1eb97a430ca4c315e219960cd146874419fbefc"
        ],
        "{}",
        answers[5]
    );
    assert_eq!(answers[6]["action"], "run_query");
    assert_eq!(answers[6]["status"], "success", "{}", answers[6]);
    let rows = answers[6]["data"].as_array().unwrap();
    assert!(!rows.is_empty() && rows.len() <= 5, "{}", answers[6]);
    assert!(
        rows.iter().all(|r| r["ProcessCommandLine"]
            .as_str()
            .unwrap()
            .contains("wevtutil")),
        "{}",
        answers[6]
    );
    assert!(answers[7].is_array(), "{}", answers[7]);
    assert!(answers[8]["actions"].is_array(), "{}", answers[8]);
    // Alert ingestion: the simulator made three alerts, the feed answered a page, and the
    // three alerts reach the feed within a few polls (every 10 s).
    assert_eq!(answers.len(), 11, "{text}");
    assert_eq!(answers[9]["created"], 3, "{}", answers[9]);
    let created: Vec<String> = answers[9]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap().to_string())
        .collect();
    assert_eq!(created.len(), 3, "{}", answers[9]);
    assert!(answers[10]["events"].is_array(), "{}", answers[10]);
    assert!(answers[10]["next_cursor"].is_string(), "{}", answers[10]);
    let base = banner_value(&banner, "host:");
    let key = banner_value(&banner, "API key:");
    let delivered = feed_until(&base, &key, &created, Duration::from_secs(60));
    for id in &created {
        let events: Vec<&serde_json::Value> = delivered
            .iter()
            .filter(|e| e["alert"]["id"] == id.as_str())
            .collect();
        assert_eq!(events.len(), 1, "alert {id} in the feed: {events:?}");
        let e = events[0];
        assert_eq!(e["asset"], "demo", "{e}");
        assert_eq!(e["source"], "graph", "{e}");
        assert_eq!(e["kind"], "created", "{e}");
        assert_eq!(e["alert"]["severity"], "high", "{e}");
        assert!(e["seq"].as_u64().unwrap() >= 1, "{e}");
        assert!(
            e["event_key"].as_str().unwrap().starts_with(id.as_str()),
            "{e}"
        );
    }
}

/// The value after `label` on its banner line (`  host:      http://...`).
fn banner_value(banner: &str, label: &str) -> String {
    banner
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} line in the banner: {banner}"))
        .trim()
        .to_string()
}

/// Reads the demo asset's alert feed from the start, following `next_cursor`, until it holds
/// every alert of `ids` or `deadline` has passed; answers every event read.
fn feed_until(base: &str, key: &str, ids: &[String], deadline: Duration) -> Vec<serde_json::Value> {
    let until = std::time::Instant::now() + deadline;
    let mut cursor = "0".to_string();
    let mut events: Vec<serde_json::Value> = Vec::new();
    loop {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-H"])
            .arg(format!("Authorization: Bearer {key}"))
            .arg(format!(
                "{base}/assets/demo/alerts/feed?cursor={cursor}&limit=1000"
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        let page_events = page["events"].as_array().unwrap().clone();
        let full_page = page_events.len() == 1000;
        events.extend(page_events);
        cursor = page["next_cursor"].as_str().unwrap().to_string();
        let all_in = ids
            .iter()
            .all(|id| events.iter().any(|e| e["alert"]["id"] == id.as_str()));
        if all_in {
            return events;
        }
        assert!(
            std::time::Instant::now() < until,
            "the feed did not deliver {ids:?} within {deadline:?}; {} events read",
            events.len()
        );
        if !full_page {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
