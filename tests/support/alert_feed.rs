//! Alerts made in the simulator and read back through a host's feed, for the ingestion tests
//! that run hosts as child processes.

#![allow(dead_code)]

use serde_json::Value;

use crate::host_process::HostProcess;

/// Creates alerts in the simulator at `sim_base` (`body` as `/_sim/alerts` takes it); answers
/// their ids.
pub async fn create_alerts(client: &reqwest::Client, sim_base: &str, body: Value) -> Vec<String> {
    let resp = client
        .post(format!("{sim_base}/_sim/alerts"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let created: Value = resp.json().await.unwrap();
    created["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// Every event of the `contoso` asset's feed on `host`, read with `api_key`.
pub async fn feed(client: &reqwest::Client, host: &HostProcess, api_key: &str) -> Vec<Value> {
    let mut cursor = "0".to_string();
    let mut out = Vec::new();
    loop {
        let resp = client
            .get(host.url(&format!(
                "/assets/contoso/alerts/feed?cursor={cursor}&limit=1000"
            )))
            .bearer_auth(api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body: Value = resp.json().await.unwrap();
        let events = body["events"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        cursor = body["next_cursor"].as_str().unwrap().to_string();
        out.extend(events);
    }
}
