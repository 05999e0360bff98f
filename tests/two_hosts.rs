//! A highly available pair: two `defender-soar serve` processes over one state directory and
//! one interactive asset, against an in-process simulator. The asset is connected once through
//! the first host; then 288 calls go to both hosts, partly concurrently, while the simulator
//! expires every access token six times. Every call succeeds, no caller is asked to consent
//! again, and each expiry costs exactly one refresh for both processes together.

#[path = "support/host_process.rs"]
mod host_process;

use std::path::Path;

use host_process::{HostProcess, free_port, server_section};

use base64::Engine as _;
use defender_sim::{Scenario, SimHandle};
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};

const API_KEY: &str = "two-hosts-api-key-93be1f";
const SECRET_ENV: &str = "TWO_HOSTS_CLIENT_SECRET";
const ASSET: &str = "admin";
/// The same state key for both processes (base64 of 32 bytes).
const STATE_KEY: [u8; 32] = [7; 32];
const CALLS: usize = 288;
const EXPIRIES: u64 = 6;

/// Writes host `n`'s configuration (its own port, the shared state directory) and starts
/// `defender-soar serve` on it.
fn start_host(dir: &Path, n: u32, scenario: &Scenario, sim_base: &str) -> HostProcess {
    let port = free_port();
    let tenant = scenario.first_tenant().unwrap();
    let app = &tenant.apps[0];
    let config = format!(
        r#"{server}
[assets.{ASSET}]
tenant_id = "{tenant}"
client_id = "{client}"
client_secret_env = "{SECRET_ENV}"
auth = "authorization_code"
login_url = "{sim_base}"
api_url = "{sim_base}"

[assets.{ASSET}.budget]
per_minute = 100000
per_hour = 100000
"#,
        server = server_section(port, dir),
        tenant = tenant.id,
        client = app.client_id,
    );
    let state_key = base64::engine::general_purpose::STANDARD.encode(STATE_KEY);
    HostProcess::serve(
        dir,
        &format!("host-{n}"),
        port,
        &config,
        &[
            ("DEFENDER_SOAR_API_KEY", API_KEY),
            ("DEFENDER_SOAR_STATE_KEY", &state_key),
            (SECRET_ENV, &app.secret),
            ("RUST_LOG", "info"),
        ],
        &[],
    )
}

/// Undoes the HTML escaping of attribute values.
fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Connects the asset through the host at `host_url`: asks the API for a consent link, opens
/// it as a browser (keeping the binding cookie), accepts on the simulator's consent page and
/// follows the redirect back to the host's result page. (The only place that knows how a
/// consent is started.)
async fn connect(host_url: &str, sim: &SimHandle, browser: &reqwest::Client) {
    let ticket = browser
        .post(format!("{host_url}/assets/{ASSET}/consent"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(ticket.status().as_u16(), 200);
    let body: Value = ticket.json().await.unwrap();
    let link = body["summary"]["consent_url"].as_str().unwrap().to_string();

    let start = browser.get(&link).send().await.unwrap();
    assert_eq!(start.status().as_u16(), 302, "{:?}", start.text().await);
    let cookie = start.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let authorize = start.headers()["location"].to_str().unwrap().to_string();

    let page = browser.get(&authorize).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    let form = regex::Regex::new(r#"<form method="post" action="([^"]*)" id="consent">"#)
        .unwrap()
        .captures(&html)
        .unwrap_or_else(|| panic!("no consent form in {html}"))[1]
        .to_string();
    let hidden =
        regex::Regex::new(r#"<input type="hidden" name="([^"]*)" value="([^"]*)">"#).unwrap();
    let mut fields: Vec<(String, String)> = hidden
        .captures_iter(&html)
        .map(|c| (html_unescape(&c[1]), html_unescape(&c[2])))
        .collect();
    fields.push(("decision".into(), "accept".into()));
    let decided = browser
        .post(format!("{}{}", sim.base_url(), html_unescape(&form)))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status().as_u16(), 302);
    let back = decided.headers()["location"].to_str().unwrap().to_string();
    assert!(back.starts_with(host_url), "{back}");

    let result = browser
        .get(&back)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = result.status().as_u16();
    let body = result.text().await.unwrap();
    assert_eq!(status, 200, "{body}");
}

/// One `list_devices` call through `host`: (HTTP status, envelope).
async fn list_devices(client: &reqwest::Client, host: &HostProcess) -> (u16, Value) {
    let resp = client
        .post(host.url(&format!("/assets/{ASSET}/actions/list_devices")))
        .bearer_auth(API_KEY)
        .json(&json!({"parameters": {"limit": 1}}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_sharing_a_state_directory_refresh_once_per_expiry() {
    let mut scenario = Scenario::default_scenario();
    scenario.rate_limits.disabled = true;
    let sim = defender_sim::start("127.0.0.1:0".parse().unwrap(), scenario.clone())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let mut hosts = [
        start_host(dir.path(), 1, &scenario, &sim.base_url()),
        start_host(dir.path(), 2, &scenario, &sim.base_url()),
    ];
    for host in &mut hosts {
        host.wait_ready(&client).await;
    }
    connect(&hosts[0].url(""), &sim, &browser).await;
    assert_eq!(sim.counters().tokens("authorization_code"), 1);

    // 8 rounds of 36 calls in waves of 12 concurrent ones, alternating hosts; every access
    // token expires before rounds 1 to 6.
    let rounds = 8;
    let per_round = CALLS / rounds;
    let wave = 12;
    let mut answers = Vec::with_capacity(CALLS);
    for round in 0..rounds {
        if (1..=EXPIRIES as usize).contains(&round) {
            let expired = client
                .post(format!("{}/_sim/tokens/expire", sim.base_url()))
                .send()
                .await
                .unwrap();
            assert_eq!(expired.status().as_u16(), 200);
        }
        for w in 0..per_round / wave {
            let calls = (0..wave).map(|i| {
                let host = &hosts[(round + w + i) % 2];
                list_devices(&client, host)
            });
            answers.extend(futures::future::join_all(calls).await);
        }
    }

    let logs = || format!("{}\n{}", hosts[0].log(), hosts[1].log());
    assert_eq!(answers.len(), CALLS);
    for (status, body) in &answers {
        assert_ne!(*status, 409, "{body}\n{}", logs());
        let message = body["message"].as_str().unwrap_or_default();
        assert!(!message.contains("consent"), "{body}");
        assert_eq!(*status, 200, "{body}\n{}", logs());
        assert_eq!(body["status"], "success", "{body}");
    }

    // Exactly one refresh per expiry, for both processes together; no consent asked again.
    let counters: Value = client
        .get(format!("{}/_sim/counters", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        counters["tokens_issued"]["refresh_token"],
        EXPIRIES,
        "{counters}\n{}",
        logs()
    );
    assert_eq!(
        counters["tokens_issued"]["authorization_code"], 1,
        "{counters}"
    );
    let c = sim.counters();
    assert_eq!(
        c.route_status("POST", "/{tenant}/oauth2/v2.0/token", 400),
        0,
        "a refresh was refused"
    );
    // Both hosts served calls.
    assert!(c.route("GET", "/api/machines") >= CALLS as u64);

    // The shared directory: the token lock next to the state file, owner-only; the stored
    // pair (readable with the shared key) never appears in the hosts' logs.
    let state_dir = dir.path().join("state");
    let lock = std::fs::metadata(state_dir.join(format!("{ASSET}_token.lock"))).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(lock.permissions().mode() & 0o777, 0o600);
    let store = defender_soar::state::StateStore::with_key(&state_dir, STATE_KEY).unwrap();
    let tokens = store.load(ASSET).await.unwrap().tokens.unwrap();
    let all_logs = logs();
    assert!(!all_logs.contains(tokens.access_token.expose_secret()));
    assert!(!all_logs.contains(tokens.refresh_token.unwrap().expose_secret()));
    assert!(all_logs.contains("access token refreshed"), "{all_logs}");

    for host in &mut hosts {
        host.kill();
    }
}
