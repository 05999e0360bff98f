//! Crash safety and cross-process locking of the state store, with real processes.
//!
//! The writer processes are this same test executable re-run on one test
//! (`child_process`), selected by `DEFENDER_SOAR_STATE_CRASH_CHILD`; without that variable
//! the test returns at once.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use defender_soar::state::{AssetState, ConsentSession, StateStore, StoredTokens};
use rand::Rng as _;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

/// Selects the child's role: `rewrite` (forever) or `increment` (500 times).
const CHILD_ENV: &str = "DEFENDER_SOAR_STATE_CRASH_CHILD";
/// The state directory the child works in.
const DIR_ENV: &str = "DEFENDER_SOAR_STATE_CRASH_DIR";
/// What a rewriting child prints once its first update is durable.
const READY: &str = "STATE-CRASH-CHILD-READY";
const ASSET: &str = "contoso";
/// Checkpoint entries per write: about 120 KB of JSON, so each write takes a while.
const PAYLOAD_ITEMS: usize = 1500;
const KILLS: usize = 200;
const INCREMENTS: u64 = 500;

/// The entry `i` of the payload written with counter `n`.
fn item(n: u64, i: usize) -> String {
    format!("{n:08}:{i:05}:{}", "x".repeat(60))
}

/// Sets every part of the state to values derived from `n`.
fn fill(state: &mut AssetState, n: u64) {
    state.checkpoints.insert("counter".into(), json!(n));
    let payload: Vec<Value> = (0..PAYLOAD_ITEMS).map(|i| json!(item(n, i))).collect();
    state
        .checkpoints
        .insert("payload".into(), Value::Array(payload));
    state.tokens = Some(StoredTokens {
        access_token: SecretString::from(format!("access-{n}")),
        refresh_token: Some(SecretString::from(format!("refresh-{n}"))),
        expires_at: 2_000_000_000,
        obtained_at: 1_000_000_000 + i64::try_from(n).unwrap(),
        grant: "authorization_code".into(),
        scope: None,
    });
    state.consent_sessions = vec![ConsentSession {
        state_hash: format!("{n:064}"),
        verifier: SecretString::from(format!("verifier-{n}")),
        created_at: 1,
        expires_at: 2,
        browser_hash: None,
    }];
}

/// Checks that `state` is one complete version and returns its counter (0: never written).
fn verify(state: &AssetState) -> u64 {
    let Some(n) = state.checkpoints.get("counter").and_then(Value::as_u64) else {
        assert!(state.tokens.is_none() && state.checkpoints.is_empty());
        return 0;
    };
    let payload = state.checkpoints["payload"].as_array().unwrap();
    assert_eq!(
        payload.len(),
        PAYLOAD_ITEMS,
        "payload of version {n} truncated"
    );
    for (i, value) in payload.iter().enumerate() {
        assert_eq!(
            value.as_str().unwrap(),
            item(n, i),
            "payload of version {n} mixed"
        );
    }
    let tokens = state.tokens.as_ref().unwrap();
    assert_eq!(tokens.access_token.expose_secret(), format!("access-{n}"));
    assert_eq!(
        tokens.refresh_token.as_ref().unwrap().expose_secret(),
        format!("refresh-{n}")
    );
    assert_eq!(
        tokens.obtained_at,
        1_000_000_000 + i64::try_from(n).unwrap()
    );
    assert_eq!(state.consent_sessions.len(), 1);
    assert_eq!(
        state.consent_sessions[0].verifier.expose_secret(),
        format!("verifier-{n}")
    );
    assert_eq!(state.consent_sessions[0].state_hash, format!("{n:064}"));
    n
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// This executable re-run as a child in `mode` on `dir`.
fn child(mode: &str, dir: &Path, stdout: Stdio) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .env(DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit on its own within `limit`; kills it and fails otherwise.
fn wait_with_deadline(child: &mut Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "child failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Temporary files of the asset's state in `dir`.
fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name().into_string().unwrap();
            name.starts_with(&format!(".{ASSET}_state.json.")) && name.ends_with(".tmp")
        })
        .count()
}

/// The child side: does nothing unless started by one of the tests below.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var_os(DIR_ENV).unwrap());
    runtime().block_on(async move {
        let store = StateStore::open(&dir).unwrap();
        match mode.as_str() {
            "rewrite" => {
                let mut announced = false;
                loop {
                    store
                        .update(ASSET, |s| {
                            let n = s.checkpoints.get("counter").and_then(Value::as_u64);
                            fill(s, n.unwrap_or(0) + 1);
                            Ok::<_, ()>(())
                        })
                        .await
                        .unwrap();
                    if !announced {
                        println!("{READY}");
                        announced = true;
                    }
                }
            }
            "increment" => {
                let me = format!("by-{}", std::process::id());
                for _ in 0..INCREMENTS {
                    let me = me.clone();
                    store
                        .update(ASSET, move |s| {
                            let bump = |s: &mut AssetState, key: &str| {
                                let n = s.checkpoints.get(key).and_then(Value::as_u64);
                                s.checkpoints.insert(key.into(), json!(n.unwrap_or(0) + 1));
                            };
                            bump(s, "counter");
                            bump(s, &me);
                            if s.checkpoints.get("last") != Some(&json!(me)) {
                                bump(s, "switches");
                                s.checkpoints.insert("last".into(), json!(me));
                            }
                            Ok::<_, ()>(())
                        })
                        .await
                        .unwrap();
                }
            }
            other => panic!("unknown child mode {other}"),
        }
    });
}

#[test]
fn sigkill_during_rewrites_leaves_old_or_new_version() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let rt = runtime();
    // Creates the key file the children will use.
    let store = StateStore::open(&dir).unwrap();
    let mut rng = rand::thread_rng();
    let mut last = 0;
    let mut advanced = 0;
    let mut kills_with_temp_file = 0;

    for round in 0..KILLS {
        let mut writer = child("rewrite", &dir, Stdio::piped());
        let stdout = writer.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(READY) {
                    let _ = ready_tx.send(());
                }
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = writer.kill();
            panic!("round {round}: the writer never reported its first write");
        }
        // Not a synchronisation: picks the moment of the kill.
        std::thread::sleep(Duration::from_micros(rng.gen_range(0..20_000)));
        writer.kill().unwrap(); // SIGKILL
        writer.wait().unwrap();
        reader.join().unwrap();

        if temp_files(&dir) > 0 {
            kills_with_temp_file += 1;
        }
        let state = rt
            .block_on(store.load(ASSET))
            .unwrap_or_else(|e| panic!("round {round}: load after SIGKILL failed: {e}"));
        let n = verify(&state);
        assert!(
            n >= last,
            "round {round}: counter went back from {last} to {n}"
        );
        assert!(
            n >= 1,
            "round {round}: the first write was reported but is missing"
        );
        if n > last {
            advanced += 1;
        }
        last = n;
    }

    // Leftover temporary files never break anything and the next writer removes them.
    rt.block_on(store.update(ASSET, |s| {
        let n = s.checkpoints["counter"].as_u64().unwrap();
        fill(s, n + 1);
        Ok::<_, ()>(())
    }))
    .unwrap();
    assert_eq!(temp_files(&dir), 0);
    assert_eq!(verify(&rt.block_on(store.load(ASSET)).unwrap()), last + 1);

    // The file is private and holds no secret in clear text.
    let path = store.path(ASSET);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    for secret in [
        format!("access-{}", last + 1),
        format!("refresh-{}", last + 1),
        format!("verifier-{}", last + 1),
    ] {
        assert!(!text.contains(&secret), "{secret} in clear text");
    }

    eprintln!(
        "state crash test: {KILLS} kills, final counter {last}, counter advanced in {advanced} \
         rounds, temporary file present after {kills_with_temp_file} kills, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn two_processes_lose_no_update() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let store = StateStore::open(&dir).unwrap();
    let mut first = child("increment", &dir, Stdio::null());
    let mut second = child("increment", &dir, Stdio::null());
    wait_with_deadline(&mut first, Duration::from_secs(300));
    wait_with_deadline(&mut second, Duration::from_secs(300));

    let state = runtime().block_on(store.load(ASSET)).unwrap();
    assert_eq!(state.checkpoints["counter"], json!(2 * INCREMENTS));
    for pid in [first.id(), second.id()] {
        assert_eq!(state.checkpoints[&format!("by-{pid}")], json!(INCREMENTS));
    }
    eprintln!(
        "two processes: {} hand-overs between the writers",
        state.checkpoints["switches"]
    );
}
