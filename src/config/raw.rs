//! The configuration as written (file and environment), before validation: every field
//! optional, scalars kept as text so each problem can be reported with its key.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, IgnoredAny, SeqAccess, Visitor};

/// Top level of the file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    /// `[server]`.
    pub server: RawServer,
    /// `[assets.<id>]`.
    pub assets: BTreeMap<String, RawAsset>,
    /// `[vault]`.
    pub vault: RawVault,
}

/// `[server]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub listen: Option<Text>,
    pub public_url: Option<Text>,
    pub state_dir: Option<Text>,
    pub api_key_env: Option<Text>,
    pub api_key_file: Option<Text>,
    /// Present only to refuse inline keys with a helpful message; the value is never kept.
    pub api_key: Option<IgnoredAny>,
    pub request_timeout_secs: Option<Text>,
    pub body_limit_bytes: Option<Text>,
    pub log_format: Option<Text>,
    pub callback_hosts: Option<TextList>,
    pub callback_secrets: Option<BTreeMap<String, Text>>,
    /// `[[server.api_keys]]`.
    pub api_keys: Option<Vec<RawApiKey>>,
    pub header_read_timeout_secs: Option<Text>,
    pub body_read_timeout_secs: Option<Text>,
    pub keep_alive_timeout_secs: Option<Text>,
    pub max_connections: Option<Text>,
    /// `[server.state]`.
    pub state: Option<RawStateBackend>,
}

/// `[server.state]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStateBackend {
    pub backend: Option<Text>,
    pub redis_url_env: Option<Text>,
    /// Present only to refuse inline URLs (they carry passwords); the value is never kept.
    pub redis_url: Option<IgnoredAny>,
    pub key_prefix: Option<Text>,
    pub fallback_share_percent: Option<Text>,
    pub lease_secs: Option<Text>,
}

/// One `[[server.api_keys]]` entry as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawApiKey {
    pub name: Option<Text>,
    pub key_env: Option<Text>,
    pub key_file: Option<Text>,
    /// Present only to refuse inline keys with a helpful message; the value is never kept.
    pub key: Option<IgnoredAny>,
    pub assets: Option<TextList>,
    pub scopes: Option<TextList>,
}

/// `[vault]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawVault {
    pub vault_dir: Option<Text>,
    pub max_file_bytes: Option<Text>,
    pub max_total_bytes: Option<Text>,
    pub when_full: Option<Text>,
    pub max_gunzip_ratio: Option<Text>,
    pub min_free_bytes: Option<Text>,
    pub retention_days: Option<Text>,
}

/// `[assets.<id>]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAsset {
    pub tenant_id: Option<Text>,
    pub client_id: Option<Text>,
    pub client_secret_env: Option<Text>,
    pub client_secret_file: Option<Text>,
    /// Present only to refuse inline secrets with a helpful message; the value is never kept.
    pub client_secret: Option<IgnoredAny>,
    pub auth: Option<Text>,
    pub environment: Option<Text>,
    pub token_endpoint: Option<Text>,
    pub login_url: Option<Text>,
    pub api_url: Option<Text>,
    pub graph_url: Option<Text>,
    pub certificate_file: Option<Text>,
    pub private_key_file: Option<Text>,
    pub private_key_password_env: Option<Text>,
    pub managed_identity_client_id: Option<Text>,
    pub managed_identity_url: Option<Text>,
    pub disabled_actions: Option<TextList>,
    pub allow_offboard: Option<Text>,
    pub allowed_consenters: Option<TextList>,
    pub ignore_classifications: Option<TextList>,
    pub ignore_determinations: Option<TextList>,
    pub ignore_severities: Option<TextList>,
    pub ignore_statuses: Option<TextList>,
    pub ignore_service_sources: Option<TextList>,
    pub lookback_days: Option<Text>,
    pub hunting_summary_fields: Option<TextList>,
    pub hunting_ignore_fields: Option<TextList>,
    pub connect_timeout_secs: Option<Text>,
    pub http_timeout_secs: Option<Text>,
    pub download_hosts: Option<TextList>,
    /// `[assets.<id>.budget]`.
    pub budget: Option<RawBudget>,
    /// `[assets.<id>.ingestion]`.
    pub ingestion: Option<RawIngestion>,
}

/// `[assets.<id>.ingestion]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIngestion {
    pub enabled: Option<Text>,
    pub source: Option<Text>,
    pub interval_secs: Option<Text>,
    pub statuses: Option<TextList>,
    pub severities: Option<TextList>,
    pub categories: Option<TextList>,
    pub detection_sources: Option<TextList>,
    pub service_sources: Option<TextList>,
    pub include_updates: Option<Text>,
    pub first_run_lookback: Option<Text>,
    pub max_per_poll: Option<Text>,
    pub expand_evidence: Option<Text>,
    pub outbox_max_events: Option<Text>,
    pub webhooks: Option<Vec<RawWebhook>>,
    pub adaptive: Option<Text>,
    pub actions_floor_percent: Option<Text>,
}

/// One entry of `[[assets.<id>.ingestion.webhooks]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWebhook {
    pub url: Option<Text>,
    pub secret_env: Option<Text>,
    pub batch_size: Option<Text>,
    pub retry_max_secs: Option<Text>,
}

/// `[assets.<id>.budget]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBudget {
    pub per_minute: Option<Text>,
    pub per_hour: Option<Text>,
    pub live_response_per_minute: Option<Text>,
    pub live_response_per_hour: Option<Text>,
    pub package_uri_per_minute: Option<Text>,
    pub package_uri_per_hour: Option<Text>,
    pub hunting_per_minute: Option<Text>,
    pub hunting_per_hour: Option<Text>,
    pub graph_per_minute: Option<Text>,
    pub graph_per_hour: Option<Text>,
    pub max_wait_secs: Option<Text>,
}

/// A scalar as text. Environment values are parsed by figment (`8080` becomes a number,
/// `true` a boolean), so strings, numbers and booleans are all accepted here and each field
/// is parsed later with a message naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

/// Visitor behind [`Text`].
struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
        Ok(Text(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Text, E> {
        Ok(Text(v))
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
        Ok(Text(v.to_string()))
    }
}

/// A list of strings: an array, or (handy in environment variables) one comma-separated
/// string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct TextList(pub Vec<String>);

impl<'de> Deserialize<'de> for TextList {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextListVisitor)
    }
}

/// Visitor behind [`TextList`].
struct TextListVisitor;

impl<'de> Visitor<'de> for TextListVisitor {
    type Value = TextList;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TextList, A::Error> {
        let mut items = Vec::new();
        while let Some(Text(item)) = seq.next_element::<Text>()? {
            items.push(item);
        }
        Ok(TextList(items))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<TextList, E> {
        Ok(TextList(
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}
