//! Talking to a running simulator: its control API (`/_sim/...`: scenario, counters, timings)
//! and the Defender API directly, as a connector without the host would (tokens, isolate,
//! machine actions, download links). Also builds the scenarios the benchmarks load.

use std::time::Duration;

use defender_sim::{Counters, Scenario};
use serde_json::{Map, Value, json};

use crate::BoxError;

/// The Defender resource, as a v2 scope.
pub const SCOPE: &str = "https://api.securitycenter.microsoft.com/.default";
/// The Microsoft Graph resource, as a v2 scope.
pub const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
/// How long the simulator may take to answer its health check.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of control calls.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// A client for one simulator.
#[derive(Clone)]
pub struct SimControl {
    /// Shared keep-alive client.
    pub client: reqwest::Client,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

/// An app registration's credentials, from the active scenario.
#[derive(Debug, Clone)]
pub struct AppCreds {
    /// Tenant id.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub secret: String,
}

impl SimControl {
    /// A client for the simulator at `base`.
    pub fn new(client: reqwest::Client, base: &str) -> SimControl {
        SimControl {
            client,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Polls `GET /_sim/health` until it answers, within a bounded time.
    pub async fn wait_ready(&self) -> Result<(), BoxError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            match self.client.get(self.url("/_sim/health")).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                _ if tokio::time::Instant::now() >= deadline => {
                    return Err("the simulator did not answer its health check".into());
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The active scenario.
    pub async fn scenario(&self) -> Result<Scenario, BoxError> {
        let v = ok_json(
            self.client
                .get(self.url("/_sim/scenario"))
                .timeout(CONTROL_TIMEOUT)
                .send()
                .await?,
        )
        .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// Loads a scenario (drops actions, counters and rate windows of the previous one).
    pub async fn put_scenario(&self, scenario: &Scenario) -> Result<(), BoxError> {
        ok_json(
            self.client
                .put(self.url("/_sim/scenario"))
                .timeout(CONTROL_TIMEOUT)
                .json(scenario)
                .send()
                .await?,
        )
        .await?;
        Ok(())
    }

    /// Replaces the action timings (they apply to actions created afterwards).
    pub async fn put_timings(&self, timings: &Value) -> Result<(), BoxError> {
        ok_json(
            self.client
                .put(self.url("/_sim/timings"))
                .timeout(CONTROL_TIMEOUT)
                .json(timings)
                .send()
                .await?,
        )
        .await?;
        Ok(())
    }

    /// The request counters.
    pub async fn counters(&self) -> Result<Counters, BoxError> {
        let v = ok_json(
            self.client
                .get(self.url("/_sim/counters"))
                .timeout(CONTROL_TIMEOUT)
                .send()
                .await?,
        )
        .await?;
        Ok(serde_json::from_value(v)?)
    }

    /// `POST /_sim/alerts` with `{"count": count}`: alerts created now (1 ms apart, the last
    /// one now), in the MDE list and Graph `alerts_v2`; answers their ids, oldest first.
    pub async fn create_alerts(&self, count: usize) -> Result<Vec<String>, BoxError> {
        let v = ok_json(
            self.client
                .post(self.url("/_sim/alerts"))
                .timeout(CONTROL_TIMEOUT)
                .json(&json!({ "count": count }))
                .send()
                .await?,
        )
        .await?;
        let ids: Vec<String> = v["ids"]
            .as_array()
            .ok_or("the create answer has no ids")?
            .iter()
            .filter_map(|i| i.as_str().map(str::to_string))
            .collect();
        if ids.len() != count {
            return Err(
                format!("asked for {count} alerts, the simulator made {}", ids.len()).into(),
            );
        }
        Ok(ids)
    }

    /// A client credentials token (v2) for `app`.
    pub async fn token(&self, app: &AppCreds) -> Result<String, BoxError> {
        self.token_for(app, SCOPE).await
    }

    /// A client credentials token (v2) for `app` and `scope` ([`SCOPE`], [`GRAPH_SCOPE`]).
    pub async fn token_for(&self, app: &AppCreds, scope: &str) -> Result<String, BoxError> {
        let v = ok_json(self.scoped_token_request(app, scope).send().await?).await?;
        Ok(v["access_token"]
            .as_str()
            .ok_or("the token answer has no access_token")?
            .to_string())
    }

    /// The token request for `app` and `scope` (a per-process connector sends one per
    /// action).
    fn scoped_token_request(&self, app: &AppCreds, scope: &str) -> reqwest::RequestBuilder {
        self.client
            .post(self.url(&format!("/{}/oauth2/v2.0/token", app.tenant_id)))
            .timeout(CONTROL_TIMEOUT)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", app.client_id.as_str()),
                ("client_secret", app.secret.as_str()),
                ("scope", scope),
            ])
    }

    /// `POST /api/machines/{machine}/isolate` (Full); answers the machine action id.
    pub async fn isolate(&self, token: &str, machine: &str) -> Result<String, BoxError> {
        let v = ok_json(
            self.client
                .post(self.url(&format!("/api/machines/{machine}/isolate")))
                .timeout(CONTROL_TIMEOUT)
                .bearer_auth(token)
                .json(&json!({"Comment": "defender-bench", "IsolationType": "Full"}))
                .send()
                .await?,
        )
        .await?;
        Ok(v["id"]
            .as_str()
            .ok_or("the isolate answer has no id")?
            .to_string())
    }

    /// `GET /api/machineactions/{id}`.
    pub async fn action(&self, token: &str, id: &str) -> Result<Value, BoxError> {
        ok_json(
            self.client
                .get(self.url(&format!("/api/machineactions/{id}")))
                .timeout(CONTROL_TIMEOUT)
                .bearer_auth(token)
                .send()
                .await?,
        )
        .await
    }

    /// A fresh download link of a live response command's result.
    pub async fn result_link(&self, token: &str, id: &str) -> Result<String, BoxError> {
        let v = ok_json(
            self.client
                .get(self.url(&format!(
                    "/api/machineactions/{id}/GetLiveResponseResultDownloadLink(index=0)"
                )))
                .timeout(CONTROL_TIMEOUT)
                .bearer_auth(token)
                .send()
                .await?,
        )
        .await?;
        Ok(v["value"]
            .as_str()
            .ok_or("the link answer has no value")?
            .to_string())
    }
}

/// Credentials of app `index` of the first tenant.
pub fn app_creds(scenario: &Scenario, index: usize) -> Result<AppCreds, BoxError> {
    let tenant = scenario
        .tenants
        .first()
        .ok_or("the scenario has no tenant")?;
    let app = tenant
        .apps
        .get(index)
        .ok_or_else(|| format!("the first tenant has no app #{index}"))?;
    Ok(AppCreds {
        tenant_id: tenant.id.clone(),
        client_id: app.client_id.clone(),
        secret: app.secret.clone(),
    })
}

/// Adds machines until the scenario holds at least `count`, copies of the first one with ids
/// `be0c…` and names `bench-NNNN.contoso.com`.
pub fn ensure_machines(scenario: &mut Scenario, count: usize) -> Result<(), BoxError> {
    let template: Map<String, Value> = scenario
        .machines
        .first()
        .cloned()
        .ok_or("the scenario has no machine to copy")?;
    let mut n = 0usize;
    while scenario.machines.len() < count {
        let mut m = template.clone();
        m.insert("id".into(), json!(format!("be0c{n:036x}")));
        m.insert(
            "computerDnsName".into(),
            json!(format!("bench-{n:04}.contoso.com")),
        );
        m.insert(
            "aadDeviceId".into(),
            json!(format!("00000000-0000-4000-8000-{n:012x}")),
        );
        scenario.machines.push(m);
        n += 1;
    }
    Ok(())
}

/// The machine ids of the scenario, in order.
pub fn machine_ids(scenario: &Scenario) -> Vec<String> {
    scenario
        .machines
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// Requests counted for `METHOD /route/{template}`, any status.
pub fn route_count(c: &Counters, method_and_route: &str) -> u64 {
    c.by_route
        .get(method_and_route)
        .map(|m| m.values().sum())
        .unwrap_or(0)
}

/// Requests counted on every route whose `METHOD /route` ends with `suffix` (ASCII case
/// ignored), any status.
pub fn route_count_suffix(c: &Counters, suffix: &str) -> u64 {
    let suffix = suffix.to_ascii_lowercase();
    c.by_route
        .iter()
        .filter(|(k, _)| k.to_ascii_lowercase().ends_with(&suffix))
        .flat_map(|(_, m)| m.values())
        .sum()
}

/// Client credentials tokens issued so far.
pub fn tokens_issued(c: &Counters) -> u64 {
    c.tokens_issued
        .get("client_credentials")
        .copied()
        .unwrap_or(0)
}

/// The JSON body of a 2xx answer; an error naming the path, status and body otherwise.
pub async fn ok_json(resp: reqwest::Response) -> Result<Value, BoxError> {
    let status = resp.status();
    let url = resp.url().path().to_string();
    let text = resp.text().await?;
    if !status.is_success() {
        return Err(format!("{url} answered {status}: {}", truncate(&text, 300)).into());
    }
    Ok(serde_json::from_str(&text)?)
}

/// At most `n` characters of `s`.
pub fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Unix time in milliseconds of an ISO 8601 UTC timestamp as the simulator writes it
/// (`2025-01-02T03:04:05.1234567Z`).
pub fn parse_utc_ms(text: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// The wall clock now, in unix milliseconds (the simulator's clock when not advanced).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sim_timestamps() {
        assert_eq!(parse_utc_ms("1970-01-01T00:00:01.2500000Z"), Some(1250));
        assert_eq!(parse_utc_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(parse_utc_ms("nope"), None);
    }

    #[test]
    fn counts_routes_by_suffix() {
        let c: Counters = serde_json::from_value(json!({
            "total": 6,
            "by_route": {
                "POST /api/advancedqueries/run": {"200": 3, "400": 1},
                "POST /v1.0/security/runHuntingQuery": {"200": 2},
            },
            "by_path": {},
            "tokens_issued": {},
            "throttled": 0,
        }))
        .unwrap();
        assert_eq!(route_count_suffix(&c, "/api/AdvancedQueries/run"), 4);
        assert_eq!(route_count_suffix(&c, "/v1.0/security/runHuntingQuery"), 2);
        assert_eq!(route_count_suffix(&c, "/api/machines"), 0);
    }

    #[test]
    fn adds_machines() {
        let mut s = Scenario::default_scenario();
        let before = s.machines.len();
        ensure_machines(&mut s, before + 3).unwrap();
        let ids = machine_ids(&s);
        assert_eq!(ids.len(), before + 3);
        assert!(ids.iter().all(|id| id.len() == 40));
        let unique: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(s.check().is_ok());
    }
}
