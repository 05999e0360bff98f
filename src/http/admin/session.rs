//! Signed-in browsers of the admin console. A session is created when an admin-scoped API key
//! is entered in the sign-in form; the browser then holds only a random session id in an
//! HttpOnly, SameSite=Strict cookie (the key itself is never stored in the browser or
//! kept here). The host keeps the id's SHA-256, the key's name and assets and a CSRF token
//! that every form of the session must carry. Sessions live in memory: a restart signs
//! everyone out. They end after [`IDLE`] without a request or [`LIFETIME`] after sign-in.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config::AssetScope;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, whatever happens.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept; the oldest goes first when more sign in.
const MAX_SESSIONS: usize = 256;

/// A random value of 32 bytes, URL-safe base64 (43 characters).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `value` has the shape [`random_token`] gives (checked before hashing or comparing).
pub fn is_token(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    crate::http::api_key::key_matches(a, b)
}

fn hash(id: &str) -> String {
    Sha256::digest(id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a session knows about its browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The API key's name.
    pub key: String,
    /// The assets the key may see.
    pub assets: AssetScope,
    /// The CSRF token its forms carry.
    pub csrf: SecretString,
}

struct Entry {
    session: Session,
    created: Instant,
    last_seen: Instant,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.created) < LIFETIME && now.duration_since(self.last_seen) < IDLE
    }
}

/// The sessions by the SHA-256 of their id.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for key `key`: answers the session id for the cookie (the only
    /// place it is kept in clear) and the session.
    pub fn create(&self, key: &str, assets: AssetScope) -> (SecretString, Session) {
        let id = random_token();
        let session = Session {
            key: key.to_string(),
            assets,
            csrf: SecretString::from(random_token()),
        };
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, e| e.live(now));
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(
            hash(&id),
            Entry {
                session: session.clone(),
                created: now,
                last_seen: now,
            },
        );
        (SecretString::from(id), session)
    }

    /// The live session of cookie value `id` (its idle time restarts).
    pub fn get(&self, id: &str) -> Option<Session> {
        if !is_token(id) {
            return None;
        }
        let now = Instant::now();
        let mut map = self.lock();
        let key = hash(id);
        match map.get_mut(&key) {
            Some(e) if e.live(now) => {
                e.last_seen = now;
                Some(e.session.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of cookie value `id`.
    pub fn remove(&self, id: &str) {
        if is_token(id) {
            self.lock().remove(&hash(id));
        }
    }

    /// Live sessions.
    pub fn count(&self) -> usize {
        let now = Instant::now();
        self.lock().values().filter(|e| e.live(now)).count()
    }
}

impl Session {
    /// Whether `presented` is this session's CSRF token.
    pub fn csrf_ok(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| is_token(p) && same_token(p, self.csrf.expose_secret()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_open_find_and_end() {
        let s = Sessions::default();
        let (id, session) = s.create("ops", AssetScope::All);
        let id = id.expose_secret().to_string();
        assert!(is_token(&id));
        let found = s.get(&id).unwrap();
        assert_eq!(found.key, "ops");
        assert!(found.csrf_ok(Some(session.csrf.expose_secret())));
        assert!(!found.csrf_ok(None));
        assert!(!found.csrf_ok(Some(&random_token())));
        assert!(!found.csrf_ok(Some("short")));
        assert!(s.get(&random_token()).is_none());
        assert!(s.get("not a token").is_none());
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::default();
        let first = s.create("a", AssetScope::All).0;
        for _ in 0..MAX_SESSIONS + 5 {
            s.create("a", AssetScope::All);
        }
        assert!(s.count() <= MAX_SESSIONS);
        assert!(
            s.get(first.expose_secret()).is_none(),
            "the oldest went first"
        );
    }
}
