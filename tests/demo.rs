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
}
