//! Unit tests of the state store: format, encryption, permissions, refusal of bad files,
//! key handling and rotation, in-process concurrency.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{Value, json};

use super::*;

const ACCESS: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOi.access-token-plaintext-4f1c";
const REFRESH: &str = "0.AXoA-refresh-token-plaintext-9b2e";
const VERIFIER: &str = "pkce-verifier-plaintext-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

const KEY_A: [u8; 32] = [0xA5; 32];
const KEY_B: [u8; 32] = [0x5B; 32];

fn sample(state: &mut AssetState) {
    state.tokens = Some(StoredTokens {
        access_token: SecretString::from(ACCESS),
        refresh_token: Some(SecretString::from(REFRESH)),
        expires_at: 1_900_000_000,
        obtained_at: 1_899_996_400,
        grant: "authorization_code".into(),
        scope: Some("https://api.securitycenter.microsoft.com/.default".into()),
    });
    state.consent_sessions.push(ConsentSession {
        state_hash: "ab".repeat(32),
        verifier: SecretString::from(VERIFIER),
        created_at: 1_899_999_000,
        expires_at: 1_899_999_600,
        browser_hash: None,
    });
    state.idempotency.insert(
        "key-1".into(),
        IdempotencyRecord {
            action: "run_script".into(),
            event_id: "ev-1".into(),
            params_hash: "cd".repeat(32),
            created_at: 1_899_999_100,
        },
    );
    state.checkpoints.insert(
        "alerts".into(),
        json!({"cursor": "2024-01-01T00:00:00Z", "n": 3}),
    );
}

async fn write_sample(store: &StateStore, asset: &str) {
    store
        .update(asset, |s| {
            sample(s);
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Rewrites the file's JSON with `edit`.
fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut value: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

/// Asserts that `load` and `update` both fail with an error matching `check`, and that the
/// file is byte-for-byte unchanged afterwards.
async fn assert_refused(store: &StateStore, asset: &str, check: impl Fn(&StateError) -> bool) {
    let path = store.path(asset);
    let before = fs::read(&path).unwrap();
    let err = store.load(asset).await.unwrap_err();
    assert!(check(&err), "unexpected load error: {err}");
    assert!(err.is_bad_file());
    let called = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = called.clone();
    let err = store
        .update(asset, move |s| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            s.checkpoints.insert("x".into(), json!(1));
            Ok::<_, ()>(())
        })
        .await
        .unwrap_err();
    match err {
        UpdateError::State(e) => assert!(check(&e), "unexpected update error: {e}"),
        UpdateError::Inner(()) => panic!("update function failed unexpectedly"),
    }
    assert!(!called.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(fs::read(&path).unwrap(), before, "the file was modified");
    let message = err_text(store, asset).await;
    for secret in [ACCESS, REFRESH, VERIFIER] {
        assert!(!message.contains(secret), "secret in the error: {message}");
    }
}

async fn err_text(store: &StateStore, asset: &str) -> String {
    let e = store.load(asset).await.unwrap_err();
    format!("{e} {e:?}")
}

#[tokio::test]
async fn round_trip_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    write_sample(&store, "contoso").await;

    for store in [
        store.clone(),
        StateStore::with_key(dir.path(), KEY_A).unwrap(),
    ] {
        let state = store.load("contoso").await.unwrap();
        let tokens = state.tokens.unwrap();
        assert_eq!(tokens.access_token.expose_secret(), ACCESS);
        assert_eq!(tokens.refresh_token.unwrap().expose_secret(), REFRESH);
        assert_eq!(tokens.expires_at, 1_900_000_000);
        assert_eq!(tokens.obtained_at, 1_899_996_400);
        assert_eq!(tokens.grant, "authorization_code");
        assert_eq!(
            tokens.scope.as_deref(),
            Some("https://api.securitycenter.microsoft.com/.default")
        );
        assert_eq!(state.consent_sessions.len(), 1);
        assert_eq!(state.consent_sessions[0].verifier.expose_secret(), VERIFIER);
        assert_eq!(state.consent_sessions[0].state_hash, "ab".repeat(32));
        assert_eq!(state.idempotency["key-1"].event_id, "ev-1");
        assert_eq!(state.checkpoints["alerts"]["n"], 3);
    }

    // The on-disk format: version, asset id, clear non-secret fields.
    let value: Value = serde_json::from_slice(&fs::read(store.path("contoso")).unwrap()).unwrap();
    assert_eq!(value["version"], 1);
    assert_eq!(value["asset_id"], "contoso");
    assert_eq!(value["tokens"]["grant"], "authorization_code");
    assert_eq!(value["idempotency"]["key-1"]["event_id"], "ev-1");

    // Clearing tokens works too.
    store
        .update("contoso", |s| {
            s.tokens = None;
            Ok::<_, ()>(())
        })
        .await
        .unwrap();
    assert!(store.load("contoso").await.unwrap().tokens.is_none());
}

#[tokio::test]
async fn missing_file_is_default_and_load_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    let state = store.load("fresh").await.unwrap();
    assert!(state.tokens.is_none() && state.consent_sessions.is_empty());
    assert!(state.idempotency.is_empty() && state.checkpoints.is_empty());
    assert!(!store.path("fresh").exists());
    assert_eq!(store.path("fresh"), dir.path().join("fresh_state.json"));
    assert_eq!(store.dir(), dir.path());
}

#[tokio::test]
async fn modes_of_dir_file_key_and_lock() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nested").join("state");
    let store = StateStore::open_with_env(&dir, None).unwrap();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(KEY_FILE_NAME)), 0o600);
    assert_eq!(fs::metadata(dir.join(KEY_FILE_NAME)).unwrap().len(), 32);
    assert_eq!(
        store.key_source(),
        &KeySource::File(dir.join(KEY_FILE_NAME))
    );
    write_sample(&store, "contoso").await;
    assert_eq!(mode(&store.path("contoso")), 0o600);
    assert_eq!(mode(&dir.join("contoso_state.lock")), 0o600);

    // A second open reuses the key file.
    let again = StateStore::open_with_env(&dir, None).unwrap();
    assert!(again.load("contoso").await.unwrap().tokens.is_some());
}

#[tokio::test]
async fn file_holds_no_secret_in_clear_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    write_sample(&store, "contoso").await;
    let bytes = fs::read(store.path("contoso")).unwrap();
    for secret in [ACCESS, REFRESH, VERIFIER] {
        assert!(!contains(&bytes, secret), "plaintext secret in the file");
        assert!(!contains(&bytes, &STANDARD.encode(secret)));
    }
    // Each secret is base64(nonce || ciphertext || tag).
    let value: Value = serde_json::from_slice(&bytes).unwrap();
    let sealed = STANDARD
        .decode(value["tokens"]["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(sealed.len(), 12 + ACCESS.len() + 16);
}

#[tokio::test]
async fn debug_and_errors_redact_secrets() {
    let mut state = AssetState::default();
    sample(&mut state);
    let debug = format!("{state:?} {:?} {:?}", state.tokens, state.consent_sessions);
    for secret in [ACCESS, REFRESH, VERIFIER] {
        assert!(!debug.contains(secret), "secret in Debug output: {debug}");
    }
    assert!(debug.contains("REDACTED"));
}

#[tokio::test]
async fn tampered_ciphertext_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    write_sample(&store, "contoso").await;
    write_sample(&store, "fabrikam").await;

    // Flip one bit in the ciphertext of the refresh token, then (separately) in the nonce.
    for index in [20usize, 0] {
        let path = store.path("contoso");
        let original = fs::read(&path).unwrap();
        edit_json(&path, |v| {
            let sealed = v["tokens"]["refresh_token"].as_str().unwrap();
            let mut raw = STANDARD.decode(sealed).unwrap();
            raw[index] ^= 0x01;
            v["tokens"]["refresh_token"] = Value::String(STANDARD.encode(raw));
        });
        assert_refused(&store, "contoso", |e| {
            matches!(e, StateError::Decrypt { field, .. } if field == "tokens.refresh_token")
                && e.to_string().contains("tampered")
                && e.to_string().contains("contoso_state.json")
                && e.to_string().contains("left untouched")
        })
        .await;
        fs::write(&path, original).unwrap();
    }

    // A verifier that is no longer base64 is reported as corrupt.
    edit_json(&store.path("contoso"), |v| {
        v["consent_sessions"][0]["verifier"] = json!("%%%");
    });
    assert_refused(&store, "contoso", |e| {
        matches!(e, StateError::Corrupt { detail, .. } if detail.contains("consent_sessions[0].verifier"))
    })
    .await;

    // Other assets keep working.
    assert!(store.load("fabrikam").await.unwrap().tokens.is_some());
    write_sample(&store, "fabrikam").await;
}

#[tokio::test]
async fn wrong_key_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let writer = StateStore::with_key(dir.path(), KEY_A).unwrap();
    write_sample(&writer, "contoso").await;

    let reader = StateStore::with_key(dir.path(), KEY_B).unwrap();
    assert_refused(&reader, "contoso", |e| {
        let text = e.to_string();
        matches!(e, StateError::Decrypt { .. })
            && text.contains("DEFENDER_SOAR_STATE_KEY")
            && text.contains("state.key")
            && text.contains("restore the previous key")
    })
    .await;

    // With a key from the key file the message names that file as the current key.
    fs::write(dir.path().join(KEY_FILE_NAME), KEY_B).unwrap();
    fs::set_permissions(
        dir.path().join(KEY_FILE_NAME),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let from_file = StateStore::open_with_env(dir.path(), None).unwrap();
    let text = err_text(&from_file, "contoso").await;
    assert!(text.contains("key file"), "{text}");
    // And with the variable, it names the variable.
    let from_env =
        StateStore::open_with_env(dir.path(), Some(OsString::from(STANDARD.encode(KEY_B))))
            .unwrap();
    let text = err_text(&from_env, "contoso").await;
    assert!(
        text.contains("environment variable DEFENDER_SOAR_STATE_KEY"),
        "{text}"
    );
    // The right key through the variable reads it.
    let right = StateStore::open_with_env(dir.path(), Some(OsString::from(STANDARD.encode(KEY_A))))
        .unwrap();
    assert!(right.load("contoso").await.unwrap().tokens.is_some());
}

#[tokio::test]
async fn corrupt_json_is_refused_without_echoing_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    let path = store.path("contoso");

    fs::write(
        &path,
        b"{\"version\": 1, \"asset_id\": \"contoso\", \"tokens\": {",
    )
    .unwrap();
    assert_refused(&store, "contoso", |e| {
        matches!(e, StateError::Corrupt { .. }) && e.to_string().contains("corrupt")
    })
    .await;

    fs::write(&path, b"").unwrap();
    assert_refused(
        &store,
        "contoso",
        |e| matches!(e, StateError::Corrupt { detail, .. } if detail.contains("empty")),
    )
    .await;

    fs::write(&path, b"[1, 2]").unwrap();
    assert_refused(&store, "contoso", |e| {
        matches!(e, StateError::Corrupt { .. })
    })
    .await;

    fs::write(&path, br#"{"asset_id": "contoso"}"#).unwrap();
    assert_refused(
        &store,
        "contoso",
        |e| matches!(e, StateError::Corrupt { detail, .. } if detail.contains("version")),
    )
    .await;

    // A value of the wrong type is not quoted back (it could be a token pasted by hand).
    let body = json!({
        "version": 1, "asset_id": "contoso",
        "tokens": {"access_token": "x", "expires_at": ACCESS, "obtained_at": 1, "grant": "g"}
    });
    fs::write(&path, serde_json::to_vec(&body).unwrap()).unwrap();
    assert_refused(&store, "contoso", |e| {
        matches!(e, StateError::Corrupt { .. }) && !e.to_string().contains(ACCESS)
    })
    .await;
}

#[tokio::test]
async fn newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    write_sample(&store, "contoso").await;
    edit_json(&store.path("contoso"), |v| v["version"] = json!(99));
    assert_refused(&store, "contoso", |e| {
        matches!(e, StateError::UnsupportedVersion { found: 99, .. })
            && e.to_string().contains("newer than version 1")
    })
    .await;
    edit_json(&store.path("contoso"), |v| v["version"] = json!(0));
    assert_refused(&store, "contoso", |e| {
        matches!(e, StateError::UnsupportedVersion { found: 0, .. })
    })
    .await;
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    write_sample(&store, "contoso").await;
    edit_json(&store.path("contoso"), |v| {
        v["added_later"] = json!({"x": 1});
        v["tokens"]["extra"] = json!(true);
    });
    let state = store.load("contoso").await.unwrap();
    assert_eq!(state.tokens.unwrap().access_token.expose_secret(), ACCESS);
}

#[tokio::test]
async fn file_of_another_asset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    write_sample(&store, "contoso").await;
    fs::copy(store.path("contoso"), store.path("fabrikam")).unwrap();
    assert_refused(&store, "fabrikam", |e| {
        matches!(e, StateError::AssetMismatch { found, expected, .. }
            if found == "contoso" && expected == "fabrikam")
    })
    .await;

    // Editing the asset id inside the file does not help: the secrets are bound to it.
    edit_json(&store.path("fabrikam"), |v| {
        v["asset_id"] = json!("fabrikam")
    });
    assert_refused(&store, "fabrikam", |e| {
        matches!(e, StateError::Decrypt { .. })
    })
    .await;
}

#[tokio::test]
async fn failing_update_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();

    let err = store
        .update("contoso", |s| {
            sample(s);
            Err::<(), _>("nope")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, UpdateError::Inner("nope")));
    assert!(!store.path("contoso").exists());

    write_sample(&store, "contoso").await;
    let before = fs::read(store.path("contoso")).unwrap();
    let err = store
        .update("contoso", |s| {
            s.tokens = None;
            s.checkpoints.clear();
            Err::<(), _>(42)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, UpdateError::Inner(42)));
    assert_eq!(fs::read(store.path("contoso")).unwrap(), before);

    // The value of a successful update is returned.
    let n = store
        .update("contoso", |s| Ok::<_, ()>(s.idempotency.len()))
        .await
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn invalid_asset_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    for bad in ["", "../etc", "a/b", "a.b", &"x".repeat(65)] {
        assert!(matches!(
            store.load(bad).await,
            Err(StateError::InvalidAssetId { .. })
        ));
        assert!(matches!(
            store.update(bad, |_| Ok::<_, ()>(())).await,
            Err(UpdateError::State(StateError::InvalidAssetId { .. }))
        ));
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn leftover_temp_files_are_ignored_and_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    write_sample(&store, "contoso").await;
    let leftover = dir
        .path()
        .join(".contoso_state.json.4242.00000000deadbeef.tmp");
    fs::write(&leftover, b"{\"version\": 1, \"asset_id\": \"cont").unwrap();
    let other = dir
        .path()
        .join(".fabrikam_state.json.4242.00000000deadbeef.tmp");
    fs::write(&other, b"x").unwrap();

    assert!(store.load("contoso").await.unwrap().tokens.is_some());
    assert!(leftover.exists(), "load never modifies the directory");
    write_sample(&store, "contoso").await;
    assert!(!leftover.exists());
    assert!(
        other.exists(),
        "only the asset's own temporary files are removed"
    );
}

#[test]
fn env_key_values() {
    let key = [3u8; 32];
    for text in [
        STANDARD.encode(key),
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(key),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key),
        format!("  {}\n", STANDARD.encode(key)),
    ] {
        assert_eq!(key::key_from_env_value(&OsString::from(text)).unwrap(), key);
    }
    let secretish = STANDARD.encode([9u8; 31]);
    for (value, problem) in [
        (secretish.as_str(), "31 bytes"),
        ("not base64 at all!", "not valid base64"),
        ("", "empty"),
    ] {
        let err = key::key_from_env_value(&OsString::from(value)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("DEFENDER_SOAR_STATE_KEY"), "{text}");
        assert!(text.contains(problem), "{text}");
        if !value.is_empty() {
            assert!(!text.contains(value), "the value is echoed: {text}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let err = StateStore::open_with_env(dir.path(), Some(OsString::from("short"))).unwrap_err();
    assert!(matches!(err, StateError::KeyEnv { .. }));
    assert!(!dir.path().join(KEY_FILE_NAME).exists());
}

#[test]
fn bad_key_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(KEY_FILE_NAME);

    fs::write(&path, [1u8; 31]).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let err = StateStore::open_with_env(dir.path(), None).unwrap_err();
    assert!(
        matches!(err, StateError::KeyFileSize { len: 31, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("exactly 32 bytes"));
    assert!(err.to_string().contains("state.key"));

    fs::write(&path, [1u8; 32]).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let err = StateStore::open_with_env(dir.path(), None).unwrap_err();
    assert!(
        matches!(err, StateError::KeyFilePermissions { mode: 0o640, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"));

    fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
    StateStore::open_with_env(dir.path(), None).unwrap();
    // The key file is never rewritten by open.
    assert_eq!(fs::read(&path).unwrap(), [1u8; 32]);
}

#[tokio::test]
async fn rotate_key_with_explicit_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    write_sample(&store, "contoso").await;
    write_sample(&store, "fabrikam").await;
    let before = fs::read(store.path("contoso")).unwrap();

    assert_eq!(store.rotate_key(KEY_B).await.unwrap(), 2);
    assert_ne!(fs::read(store.path("contoso")).unwrap(), before);
    assert_eq!(mode(&store.path("contoso")), 0o600);
    // The same store goes on working with the new key.
    assert!(store.load("contoso").await.unwrap().tokens.is_some());
    write_sample(&store, "contoso").await;
    // Another store with the new key reads both; the old key no longer does.
    let new = StateStore::with_key(dir.path(), KEY_B).unwrap();
    for asset in ["contoso", "fabrikam"] {
        let tokens = new.load(asset).await.unwrap().tokens.unwrap();
        assert_eq!(tokens.access_token.expose_secret(), ACCESS);
    }
    let old = StateStore::with_key(dir.path(), KEY_A).unwrap();
    assert!(matches!(
        old.load("contoso").await,
        Err(StateError::Decrypt { .. })
    ));
}

#[tokio::test]
async fn rotate_key_completes_an_interrupted_rotation_and_refuses_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = StateStore::with_key(dir.path(), KEY_A).unwrap();
    let b = StateStore::with_key(dir.path(), KEY_B).unwrap();
    write_sample(&a, "contoso").await;
    write_sample(&b, "fabrikam").await; // already under the new key
    assert_eq!(a.rotate_key(KEY_B).await.unwrap(), 1);
    assert!(b.load("contoso").await.is_ok() && b.load("fabrikam").await.is_ok());

    // A file readable with neither key stops the rotation before anything is rewritten.
    let c = StateStore::with_key(dir.path(), [0xCC; 32]).unwrap();
    write_sample(&c, "northwind").await;
    let before = fs::read(b.path("contoso")).unwrap();
    let err = b.rotate_key(KEY_A).await.unwrap_err();
    assert!(
        matches!(&err, StateError::Decrypt { path, .. } if path.ends_with("northwind_state.json"))
    );
    assert_eq!(fs::read(b.path("contoso")).unwrap(), before);
    assert!(b.load("contoso").await.is_ok(), "the key is unchanged");
}

#[tokio::test]
async fn rotate_key_replaces_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open_with_env(dir.path(), None).unwrap();
    write_sample(&store, "contoso").await;
    assert_eq!(store.rotate_key(KEY_B).await.unwrap(), 1);
    let key_file = dir.path().join(KEY_FILE_NAME);
    assert_eq!(fs::read(&key_file).unwrap(), KEY_B);
    assert_eq!(mode(&key_file), 0o600);
    let reopened = StateStore::open_with_env(dir.path(), None).unwrap();
    assert!(reopened.load("contoso").await.unwrap().tokens.is_some());
    // No temporary files are left behind.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..20 {
                store
                    .update("contoso", |s| {
                        let n = s.checkpoints.get("n").and_then(Value::as_u64).unwrap_or(0);
                        s.checkpoints.insert("n".into(), json!(n + 1));
                        Ok::<_, ()>(())
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    // A second store on the same directory (its own in-process locks): the file lock still
    // serialises it with the first.
    let second = StateStore::with_key(dir.path(), KEY_A).unwrap();
    for _ in 0..20 {
        second
            .update("contoso", |s| {
                let n = s.checkpoints.get("m").and_then(Value::as_u64).unwrap_or(0);
                s.checkpoints.insert("m".into(), json!(n + 1));
                Ok::<_, ()>(())
            })
            .await
            .unwrap();
    }
    for task in tasks {
        task.await.unwrap();
    }
    let state = store.load("contoso").await.unwrap();
    assert_eq!(state.checkpoints["n"], 1000);
    assert_eq!(state.checkpoints["m"], 20);
}

#[tokio::test]
async fn the_token_lock_excludes_other_holders_but_not_state_updates() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::with_key(dir.path(), KEY_A).unwrap();
    // A second store stands for another process: its own open file description.
    let other = StateStore::with_key(dir.path(), KEY_A).unwrap();
    let held = store.lock_tokens("contoso").await.unwrap();
    assert_eq!(mode(&dir.path().join("contoso_token.lock")), 0o600);

    // The holder can still update and load the asset's state.
    write_sample(&store, "contoso").await;
    assert!(store.load("contoso").await.unwrap().tokens.is_some());
    assert!(other.load("contoso").await.unwrap().tokens.is_some());

    // Another holder waits until the first lets go.
    let mut waiter = tokio::spawn(async move { other.lock_tokens("contoso").await.map(|_| ()) });
    let blocked = tokio::time::timeout(std::time::Duration::from_millis(200), &mut waiter).await;
    assert!(blocked.is_err(), "the second holder got the lock too");
    // Other assets are not affected.
    drop(store.lock_tokens("fabrikam").await.unwrap());
    drop(held);
    waiter.await.unwrap().unwrap();
    // The lock file is not a state file: listings and key rotation ignore it.
    assert_eq!(disk::list_assets(dir.path()).unwrap(), vec!["contoso"]);
    assert!(store.lock_tokens("../x").await.is_err());
}
