//! Unit tests of configuration layering, validation and secret handling.

use std::collections::HashMap;
use std::env::VarError;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Mutex;

use figment::Figment;
use figment::providers::{Format, Toml};
use secrecy::ExposeSecret;

use super::resolve::from_figment_with;
use super::*;

const TENANT: &str = "6f1c2a3b-4d5e-4f60-8a71-92b3c4d5e6f7";
const CLIENT: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const SECRET: &str = "s3cr3t-Value~xyz";

/// Serialises the tests that change the process environment.
static ENV_LOCK: Mutex<()> = Mutex::new(());

/// An environment made of `vars` only.
fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<String, VarError> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name: &str| map.get(name).cloned().ok_or(VarError::NotPresent)
}

/// Resolves `toml` alone (no environment layer) with `vars` as the environment.
fn parse(toml: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    from_figment_with(&Figment::from(Toml::string(toml)), &env_of(vars))
}

/// Resolves `toml` and expects exactly one error; answers its message.
fn error_of(toml: &str, vars: &[(&str, &str)]) -> String {
    match parse(toml, vars) {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(e) => {
            assert_eq!(e.problems().len(), 1, "expected one problem: {e}");
            e.to_string()
        }
    }
}

/// A minimal valid asset `contoso` reading its secret from `CONTOSO_SECRET`, plus `extra`.
fn asset_toml(extra: &str) -> String {
    format!(
        "[assets.contoso]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret_env = \"CONTOSO_SECRET\"\n{extra}\n"
    )
}

/// The environment [`asset_toml`] needs.
const SECRET_ENV: &[(&str, &str)] = &[("CONTOSO_SECRET", SECRET)];

/// Sets environment variables for the duration of a test and removes them afterwards.
struct EnvGuard {
    names: Vec<String>,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl EnvGuard {
    fn set(vars: &[(&str, &str)]) -> EnvGuard {
        let lock = ENV_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in vars {
            // SAFETY: test-only; the names are unique to these tests and changes are
            // serialised by ENV_LOCK.
            unsafe { std::env::set_var(k, v) };
        }
        EnvGuard {
            names: vars.iter().map(|(k, _)| (*k).to_owned()).collect(),
            _lock: lock,
        }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for k in &self.names {
            // SAFETY: as in `EnvGuard::set`.
            unsafe { std::env::remove_var(k) };
        }
    }
}

#[test]
fn defaults_apply_to_an_empty_file() {
    let config = parse("", &[]).unwrap();
    let server = &config.server;
    assert_eq!(
        server.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(server.public_url.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(server.redirect_uri(), "http://127.0.0.1:8080/result");
    assert_eq!(server.state_dir, PathBuf::from("state"));
    assert!(server.api_key.is_none());
    assert_eq!(server.request_timeout_secs, 3900);
    assert_eq!(server.body_limit_bytes, 16 * 1024 * 1024);
    assert_eq!(server.log_format, LogFormat::Text);
    assert!(config.assets.is_empty());
}

#[test]
fn default_api_key_comes_from_the_default_variable() {
    let config = parse("", &[(DEFAULT_API_KEY_ENV, "key-123\n")]).unwrap();
    assert_eq!(config.server.api_key.unwrap().expose_secret(), "key-123");
}

#[test]
fn asset_defaults() {
    let config = parse(&asset_toml(""), SECRET_ENV).unwrap();
    let asset = config.asset("contoso").unwrap();
    assert_eq!(asset.id, "contoso");
    assert_eq!(
        asset.client_secret.as_ref().unwrap().expose_secret(),
        SECRET
    );
    assert_eq!(asset.auth, AuthKind::ClientCredentials);
    assert_eq!(asset.environment, Environment::Public);
    assert_eq!(asset.token_endpoint, TokenEndpoint::V2);
    assert_eq!(asset.login_url, "https://login.microsoftonline.com");
    assert_eq!(asset.api_url, "https://api.securitycenter.microsoft.com");
    assert_eq!(asset.resource, "https://api.securitycenter.microsoft.com");
    assert!(asset.disabled_actions.is_empty());
    assert_eq!(asset.connect_timeout_secs, 10);
    assert_eq!(asset.http_timeout_secs, 60);
    assert!(config.asset("other").is_none());
}

#[test]
fn full_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api_key");
    std::fs::write(&key_file, "the-api-key\n").unwrap();
    let secret_file = dir.path().join("fabrikam_secret");
    std::fs::write(&secret_file, "fabrikam-secret\r\n").unwrap();
    let toml = format!(
        r#"
[server]
listen = "0.0.0.0:9443"
public_url = "https://plugin.example.com/soar/"
state_dir = "/var/lib/defender-soar"
api_key_file = "{key}"
request_timeout_secs = 4000
body_limit_bytes = 1048576
log_format = "json"

[assets.contoso]
tenant_id = "{TENANT}"
client_id = "{CLIENT}"
client_secret_env = "CONTOSO_SECRET"
auth = "authorization_code"
environment = "GCC High"
token_endpoint = "v1"
login_url = "http://127.0.0.1:9000/"
api_url = "http://127.0.0.1:9000/mde/"
disabled_actions = ["unquarantine_device", "run_script"]
connect_timeout_secs = 5
http_timeout_secs = 120

[assets.Fabrikam_2]
tenant_id = "fabrikam.onmicrosoft.com"
client_id = "{CLIENT}"
client_secret_file = "{secret}"
environment = "dod"
"#,
        key = key_file.display(),
        secret = secret_file.display(),
    );
    let config = parse(&toml, SECRET_ENV).unwrap();

    let server = &config.server;
    assert_eq!(server.listen, "0.0.0.0:9443".parse::<SocketAddr>().unwrap());
    assert_eq!(
        server.public_url.as_str(),
        "https://plugin.example.com/soar/"
    );
    assert_eq!(
        server.redirect_uri(),
        "https://plugin.example.com/soar/result"
    );
    assert_eq!(server.state_dir, PathBuf::from("/var/lib/defender-soar"));
    assert_eq!(
        server.api_key.as_ref().unwrap().expose_secret(),
        "the-api-key"
    );
    assert_eq!(server.request_timeout_secs, 4000);
    assert_eq!(server.body_limit_bytes, 1_048_576);
    assert_eq!(server.log_format, LogFormat::Json);

    let contoso = config.asset("contoso").unwrap();
    assert_eq!(contoso.tenant_id, TENANT);
    assert_eq!(contoso.client_id, CLIENT);
    assert_eq!(contoso.auth, AuthKind::AuthorizationCode);
    assert_eq!(contoso.environment, Environment::GccHigh);
    assert_eq!(contoso.token_endpoint, TokenEndpoint::V1);
    assert_eq!(contoso.login_url, "http://127.0.0.1:9000");
    assert_eq!(contoso.api_url, "http://127.0.0.1:9000/mde");
    // The resource stays the environment's even with overridden hosts.
    assert_eq!(
        contoso.resource,
        "https://api-gov.securitycenter.microsoft.us"
    );
    assert_eq!(
        contoso.disabled_actions.iter().collect::<Vec<_>>(),
        ["run_script", "unquarantine_device"]
    );
    assert_eq!(contoso.connect_timeout_secs, 5);
    assert_eq!(contoso.http_timeout_secs, 120);

    let fabrikam = config.asset("Fabrikam_2").unwrap();
    assert_eq!(fabrikam.tenant_id, "fabrikam.onmicrosoft.com");
    assert_eq!(
        fabrikam.client_secret.as_ref().unwrap().expose_secret(),
        "fabrikam-secret"
    );
    assert_eq!(fabrikam.environment, Environment::Dod);
    assert_eq!(fabrikam.login_url, "https://login.microsoftonline.us");
    assert_eq!(
        fabrikam.api_url,
        "https://api-gov.securitycenter.microsoft.us"
    );
}

#[test]
fn unspecified_listen_address_gives_a_loopback_public_url() {
    let config = parse("[server]\nlisten = \"0.0.0.0:9000\"", &[]).unwrap();
    assert_eq!(config.server.public_url.as_str(), "http://127.0.0.1:9000/");
    let config = parse("[server]\nlisten = \"[::]:9000\"", &[]).unwrap();
    assert_eq!(config.server.public_url.as_str(), "http://[::1]:9000/");
}

#[test]
fn environment_overrides_server_and_asset_fields() {
    let prefix = "DSCFGTEST_OVERRIDE__";
    let _env = EnvGuard::set(&[
        ("DSCFGTEST_OVERRIDE__SERVER__LISTEN", "127.0.0.1:9999"),
        ("DSCFGTEST_OVERRIDE__SERVER__LOG_FORMAT", "json"),
        ("DSCFGTEST_OVERRIDE__ASSETS__CONTOSO__ENVIRONMENT", "GCC"),
        (
            "DSCFGTEST_OVERRIDE__ASSETS__CONTOSO__DISABLED_ACTIONS",
            "run_script, get_file",
        ),
        (
            "DSCFGTEST_OVERRIDE__ASSETS__CONTOSO__HTTP_TIMEOUT_SECS",
            "90",
        ),
        // The file spells this asset `Mixed`; the override still applies to it.
        ("DSCFGTEST_OVERRIDE__ASSETS__MIXED__TOKEN_ENDPOINT", "v1"),
    ]);
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:1234\"\n{}\n[assets.Mixed]\ntenant_id = \"{TENANT}\"\n\
         client_id = \"{CLIENT}\"\nclient_secret_env = \"CONTOSO_SECRET\"\n",
        asset_toml("environment = \"Public\"")
    );
    let config = Config::resolve_layers(
        Figment::from(Toml::string(&toml)),
        prefix,
        &env_of(SECRET_ENV),
    )
    .unwrap();
    assert_eq!(
        config.server.listen,
        "127.0.0.1:9999".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.server.log_format, LogFormat::Json);
    let contoso = config.asset("contoso").unwrap();
    assert_eq!(contoso.environment, Environment::Gcc);
    assert_eq!(
        contoso.api_url,
        "https://api-gcc.securitycenter.microsoft.us"
    );
    assert_eq!(contoso.http_timeout_secs, 90);
    assert_eq!(
        contoso.disabled_actions.iter().collect::<Vec<_>>(),
        ["get_file", "run_script"]
    );
    assert_eq!(config.assets.len(), 2);
    assert_eq!(
        config.asset("Mixed").unwrap().token_endpoint,
        TokenEndpoint::V1
    );
}

#[test]
fn asset_defined_only_in_the_environment_gets_a_lower_case_id() {
    let prefix = "DSCFGTEST_ENVONLY__";
    let _env = EnvGuard::set(&[
        ("DSCFGTEST_ENVONLY__ASSETS__ENVCORP__TENANT_ID", TENANT),
        ("DSCFGTEST_ENVONLY__ASSETS__ENVCORP__CLIENT_ID", CLIENT),
        (
            "DSCFGTEST_ENVONLY__ASSETS__ENVCORP__CLIENT_SECRET_ENV",
            "CONTOSO_SECRET",
        ),
    ]);
    let config = Config::resolve_layers(Figment::new(), prefix, &env_of(SECRET_ENV)).unwrap();
    let asset = config.asset("envcorp").unwrap();
    assert_eq!(asset.tenant_id, TENANT);
    assert_eq!(
        asset.client_secret.as_ref().unwrap().expose_secret(),
        SECRET
    );
}

#[test]
fn unknown_key_from_the_environment_is_rejected() {
    let prefix = "DSCFGTEST_UNKNOWN__";
    let _env = EnvGuard::set(&[("DSCFGTEST_UNKNOWN__SERVER__LISTN", "127.0.0.1:1")]);
    let err = Config::resolve_layers(Figment::new(), prefix, &env_of(&[])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("configuration: server.listn: unknown key"),
        "{msg}"
    );
}

#[test]
fn load_reads_a_file_and_refuses_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let path = dir.path().join("config.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    write!(
        file,
        "[server]\nstate_dir = \"st\"\n[assets.demo]\ntenant_id = \"{TENANT}\"\n\
         client_id = \"{CLIENT}\"\nclient_secret_file = \"{}\"\n",
        secret_file.display()
    )
    .unwrap();
    drop(file);

    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.server.state_dir, PathBuf::from("st"));
    assert_eq!(
        config
            .asset("demo")
            .unwrap()
            .client_secret
            .as_ref()
            .unwrap()
            .expose_secret(),
        SECRET
    );

    let missing = dir.path().join("nope.toml");
    let msg = Config::load(Some(&missing)).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "configuration: {}: configuration file does not exist",
            missing.display()
        )
    );
}

#[test]
fn from_toml_str_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let toml = format!(
        "[assets.a]\ntenant_id = \"contoso.com\"\nclient_id = \"{CLIENT}\"\n\
         client_secret_file = \"{}\"\n",
        secret_file.display()
    );
    let config = Config::from_toml_str(&toml).unwrap();
    assert_eq!(config.asset("a").unwrap().tenant_id, "contoso.com");
}

#[test]
fn toml_syntax_error_is_reported_without_the_source_line() {
    let msg = error_of("[server\nlisten = 1", &[]);
    assert!(
        msg.starts_with("configuration: TOML source string: TOML parse error at line 1"),
        "{msg}"
    );
    let toml = format!("[assets.a]\nclient_secret = \"{SECRET}");
    let msg = error_of(&toml, &[]);
    assert!(msg.contains("line 2"), "{msg}");
    assert!(!msg.contains(SECRET), "{msg}");
}

#[test]
fn bad_asset_id_is_rejected() {
    let toml = format!(
        "[assets.\"../x\"]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret_env = \"CONTOSO_SECRET\"\n"
    );
    let msg = error_of(&toml, SECRET_ENV);
    assert_eq!(
        msg,
        "configuration: assets.\"../x\": invalid asset id; ids are 1 to 64 characters from \
         A-Z, a-z, 0-9, '_' and '-'"
    );
    let long = "a".repeat(65);
    let toml = format!(
        "[assets.{long}]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret_env = \"CONTOSO_SECRET\"\n"
    );
    assert!(error_of(&toml, SECRET_ENV).contains("invalid asset id"));
    let toml = asset_toml("").replace("contoso", "a-Z_09");
    assert!(parse(&toml, SECRET_ENV).is_ok());
}

#[test]
fn missing_secret_variable_is_named() {
    let msg = error_of(&asset_toml(""), &[]);
    assert_eq!(
        msg,
        "configuration: assets.contoso.client_secret_env: environment variable CONTOSO_SECRET \
         is not set"
    );
    let msg = error_of(&asset_toml(""), &[("CONTOSO_SECRET", "\n")]);
    assert_eq!(
        msg,
        "configuration: assets.contoso.client_secret_env: environment variable CONTOSO_SECRET \
         is empty"
    );
}

#[test]
fn both_secret_sources_are_refused() {
    let msg = error_of(&asset_toml("client_secret_file = \"/x\""), SECRET_ENV);
    assert_eq!(
        msg,
        "configuration: assets.contoso: client_secret_env and client_secret_file are both set; \
         set exactly one"
    );
}

#[test]
fn a_secret_source_is_required() {
    let toml = format!("[assets.contoso]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n");
    let msg = error_of(&toml, &[]);
    assert_eq!(
        msg,
        "configuration: assets.contoso: a client secret is required with auth = \
         \"client_credentials\": set client_secret_env or client_secret_file (or use auth = \
         \"certificate\" or \"managed_identity\")"
    );
}

#[test]
fn device_code_assets_may_go_without_a_secret() {
    let toml = format!(
        "[assets.contoso]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\nauth = \"device_code\"\n"
    );
    let config = parse(&toml, &[]).unwrap();
    let asset = config.asset("contoso").unwrap();
    assert_eq!(asset.auth, AuthKind::DeviceCode);
    assert!(asset.client_secret.is_none());
    assert!(format!("{asset:?}").contains("client_secret: None"));
    // With a secret configured, it is used.
    let config = parse(&asset_toml("auth = \"device-code\""), SECRET_ENV).unwrap();
    let asset = config.asset("contoso").unwrap();
    assert_eq!(asset.auth, AuthKind::DeviceCode);
    assert!(!format!("{asset:?}").contains(SECRET));
    // Unknown kinds name the allowed ones.
    let msg = error_of(&asset_toml("auth = \"device\""), SECRET_ENV);
    assert!(
        msg.contains("client_credentials, authorization_code, device_code"),
        "{msg}"
    );
}

#[test]
fn inline_secret_is_refused_without_echoing_it() {
    let toml = format!(
        "[assets.contoso]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = \"{SECRET}\"\n"
    );
    let msg = error_of(&toml, &[]);
    assert_eq!(
        msg,
        "configuration: assets.contoso.client_secret: inline secrets are not allowed; use \
         client_secret_env (name of an environment variable) or client_secret_file (path of a \
         file holding the secret)"
    );
    assert!(!msg.contains(SECRET));

    let msg = error_of(&format!("[server]\napi_key = \"{SECRET}\""), &[]);
    assert!(
        msg.starts_with("configuration: server.api_key: inline API keys are not allowed"),
        "{msg}"
    );
    assert!(!msg.contains(SECRET));
}

#[test]
fn secret_file_problems_name_the_path_not_the_content() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let msg = error_of(
        &asset_toml("").replace(
            "client_secret_env = \"CONTOSO_SECRET\"",
            &format!("client_secret_file = \"{}\"", missing.display()),
        ),
        &[],
    );
    assert_eq!(
        msg,
        format!(
            "configuration: assets.contoso.client_secret_file: file {} does not exist",
            missing.display()
        )
    );

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let msg = error_of(
        &asset_toml("").replace(
            "client_secret_env = \"CONTOSO_SECRET\"",
            &format!("client_secret_file = \"{}\"", empty.display()),
        ),
        &[],
    );
    assert!(msg.ends_with("is empty"), "{msg}");

    let msg = error_of(
        &asset_toml("").replace(
            "client_secret_env = \"CONTOSO_SECRET\"",
            &format!("client_secret_file = \"{}\"", dir.path().display()),
        ),
        &[],
    );
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
}

#[test]
fn bad_environment_lists_allowed_values() {
    let msg = error_of(&asset_toml("environment = \"Moon\""), SECRET_ENV);
    assert_eq!(
        msg,
        "configuration: assets.contoso.environment: unknown environment \"Moon\"; allowed \
         values: Public, GCC, GCC High, DoD, US, EU, UK, Global"
    );
}

#[test]
fn bad_token_endpoint_lists_allowed_values() {
    let msg = error_of(&asset_toml("token_endpoint = \"v3\""), SECRET_ENV);
    assert_eq!(
        msg,
        "configuration: assets.contoso.token_endpoint: unknown token endpoint \"v3\"; allowed \
         values: v1, v2"
    );
    let msg = error_of(&asset_toml("auth = \"password\""), SECRET_ENV);
    assert!(
        msg.ends_with(
            "allowed values: client_credentials, authorization_code, device_code, certificate, managed_identity"
        ),
        "{msg}"
    );
    let msg = error_of("[server]\nlog_format = \"xml\"", &[]);
    assert!(msg.ends_with("allowed values: text, json"), "{msg}");
}

#[test]
fn bad_urls_are_rejected() {
    let msg = error_of(
        &asset_toml("login_url = \"ftp://login.example\""),
        SECRET_ENV,
    );
    assert_eq!(
        msg,
        "configuration: assets.contoso.login_url: \"ftp://login.example\" is not an http or \
         https URL"
    );
    let msg = error_of(&asset_toml("api_url = \"not a url\""), SECRET_ENV);
    assert!(
        msg.starts_with("configuration: assets.contoso.api_url: \"not a url\" is not a valid URL"),
        "{msg}"
    );
    let msg = error_of(
        &asset_toml("api_url = \"https://x.example/?a=b\""),
        SECRET_ENV,
    );
    assert!(msg.ends_with("must not have a query or fragment"), "{msg}");
    let msg = error_of("[server]\npublic_url = \"plugin.example.com\"", &[]);
    assert!(
        msg.starts_with("configuration: server.public_url: "),
        "{msg}"
    );
}

#[test]
fn bad_listen_address_is_rejected() {
    let msg = error_of("[server]\nlisten = \"localhost:8080\"", &[]);
    assert_eq!(
        msg,
        "configuration: server.listen: \"localhost:8080\" is not a socket address; expected an \
         IP address and port such as 127.0.0.1:8080"
    );
}

#[test]
fn unknown_keys_are_named() {
    let msg = error_of(&asset_toml("tenant = \"x\""), SECRET_ENV);
    assert!(
        msg.starts_with("configuration: assets.contoso.tenant: unknown key; expected one of: "),
        "{msg}"
    );
    let msg = error_of("[serverr]\nlisten = \"127.0.0.1:1\"", &[]);
    assert!(
        msg.starts_with("configuration: serverr: unknown key"),
        "{msg}"
    );
}

#[test]
fn tenant_and_client_ids_are_checked() {
    let bad_tenant = asset_toml("").replace(TENANT, "contoso/../x");
    let msg = error_of(&bad_tenant, SECRET_ENV);
    assert!(
        msg.starts_with("configuration: assets.contoso.tenant_id: \"contoso/../x\" is neither"),
        "{msg}"
    );
    let empty_tenant = asset_toml("").replace(TENANT, "");
    assert_eq!(
        error_of(&empty_tenant, SECRET_ENV),
        "configuration: assets.contoso.tenant_id: must not be empty"
    );
    let bad_client = asset_toml("").replace(CLIENT, "my-app");
    let msg = error_of(&bad_client, SECRET_ENV);
    assert!(
        msg.starts_with("configuration: assets.contoso.client_id: \"my-app\" is not a GUID"),
        "{msg}"
    );
    let missing = "[assets.contoso]\nclient_secret_env = \"CONTOSO_SECRET\"\n";
    let err = parse(missing, SECRET_ENV).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.problems().len(), 2);
    assert!(msg.contains("configuration: assets.contoso.tenant_id: required"));
    assert!(msg.contains("configuration: assets.contoso.client_id: required"));
}

#[test]
fn zero_and_non_numeric_timeouts_are_rejected() {
    let msg = error_of(&asset_toml("http_timeout_secs = 0"), SECRET_ENV);
    assert_eq!(
        msg,
        "configuration: assets.contoso.http_timeout_secs: \"0\" is not a positive whole number"
    );
    let msg = error_of("[server]\nbody_limit_bytes = -1", &[]);
    assert!(
        msg.starts_with("configuration: server.body_limit_bytes: "),
        "{msg}"
    );
}

#[test]
fn several_problems_are_reported_together() {
    let toml = format!(
        "[server]\nlisten = \"nowhere\"\n{}",
        asset_toml("environment = \"Moon\"")
    );
    let err = parse(&toml, &[]).unwrap_err();
    let keys: Vec<String> = err
        .problems()
        .iter()
        .map(|p| match p {
            ConfigError::Invalid { key, .. } => key.clone(),
            ConfigError::Multiple(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        keys,
        [
            "server.listen",
            "assets.contoso.client_secret_env",
            "assets.contoso.environment"
        ]
    );
    assert_eq!(err.to_string().lines().count(), 3);
}

#[test]
fn api_key_sources() {
    let msg = error_of("[server]\napi_key_env = \"MY_KEY\"", &[]);
    assert_eq!(
        msg,
        "configuration: server.api_key_env: environment variable MY_KEY is not set"
    );
    let config = parse("[server]\napi_key_env = \"MY_KEY\"", &[("MY_KEY", "k")]).unwrap();
    assert_eq!(config.server.api_key.unwrap().expose_secret(), "k");
    let msg = error_of(
        "[server]\napi_key_env = \"MY_KEY\"\napi_key_file = \"/k\"",
        &[("MY_KEY", "k")],
    );
    assert!(
        msg.contains("api_key_env and api_key_file are both set"),
        "{msg}"
    );
}

#[test]
fn environment_hosts() {
    let cases = [
        (
            Environment::Public,
            "https://login.microsoftonline.com",
            "https://api.securitycenter.microsoft.com",
            "https://api.securitycenter.microsoft.com",
        ),
        (
            Environment::Gcc,
            "https://login.microsoftonline.com",
            "https://api-gcc.securitycenter.microsoft.us",
            "https://api-gcc.securitycenter.microsoft.us",
        ),
        (
            Environment::GccHigh,
            "https://login.microsoftonline.us",
            "https://api-gov.securitycenter.microsoft.us",
            "https://api-gov.securitycenter.microsoft.us",
        ),
        (
            Environment::Dod,
            "https://login.microsoftonline.us",
            "https://api-gov.securitycenter.microsoft.us",
            "https://api-gov.securitycenter.microsoft.us",
        ),
    ];
    for (env, login, api, resource) in cases {
        assert_eq!(env.graph_url(), graph_of(env), "{env}");
        assert_eq!(env.login_url(), login, "{env}");
        assert_eq!(env.api_url(), api, "{env}");
        assert_eq!(env.resource(), resource, "{env}");
        assert_eq!(env.as_str().parse::<Environment>().unwrap(), env);
    }
}

#[test]
fn environment_spellings() {
    for s in ["GCC High", "GCCHigh", "gcc_high", "gcc-high", "gcchigh"] {
        assert_eq!(
            s.parse::<Environment>().unwrap(),
            Environment::GccHigh,
            "{s}"
        );
    }
    for (s, env) in [
        ("public", Environment::Public),
        ("PUBLIC", Environment::Public),
        ("gcc", Environment::Gcc),
        ("DOD", Environment::Dod),
        ("dod", Environment::Dod),
    ] {
        assert_eq!(s.parse::<Environment>().unwrap(), env, "{s}");
    }
    assert_eq!(
        serde_json_like(Environment::GccHigh),
        "GCC High",
        "serialises with its configuration spelling"
    );
}

/// The Graph host each environment must use.
fn graph_of(env: Environment) -> &'static str {
    match env {
        Environment::GccHigh => "https://graph.microsoft.us",
        Environment::Dod => "https://dod-graph.microsoft.us",
        _ => "https://graph.microsoft.com",
    }
}

#[test]
fn regional_environments() {
    let public = "https://api.securitycenter.microsoft.com";
    for (names, env, api) in [
        (
            ["US", "us", " U-S "],
            Environment::Us,
            "https://us.api.security.microsoft.com",
        ),
        (
            ["EU", "eu", "e_u"],
            Environment::Eu,
            "https://eu.api.security.microsoft.com",
        ),
        (
            ["UK", "uk", "U K"],
            Environment::Uk,
            "https://uk.api.security.microsoft.com",
        ),
        (
            ["Global", "GLOBAL", "glo-bal"],
            Environment::Global,
            "https://api.security.microsoft.com",
        ),
    ] {
        for n in names {
            assert_eq!(n.parse::<Environment>().unwrap(), env, "{n}");
        }
        assert_eq!(env.api_url(), api);
        assert_eq!(
            env.resource(),
            public,
            "regions use the commercial resource"
        );
        assert_eq!(env.login_url(), "https://login.microsoftonline.com");
        assert_eq!(env.graph_url(), "https://graph.microsoft.com");
        assert_eq!(env.as_str().parse::<Environment>().unwrap(), env);
    }
    let config = parse(&asset_toml("environment = \"eu\""), SECRET_ENV).unwrap();
    let a = config.asset("contoso").unwrap();
    assert_eq!(a.api_url, "https://eu.api.security.microsoft.com");
    assert_eq!(a.resource, public);
    assert_eq!(a.graph_url, "https://graph.microsoft.com");
    let config = parse(
        &asset_toml("environment = \"DoD\"\ngraph_url = \"http://127.0.0.1:9/\""),
        SECRET_ENV,
    )
    .unwrap();
    let a = config.asset("contoso").unwrap();
    assert_eq!(
        a.graph_url, "http://127.0.0.1:9",
        "override, no trailing slash"
    );
    let config = parse(&asset_toml("environment = \"DoD\""), SECRET_ENV).unwrap();
    assert_eq!(
        config.asset("contoso").unwrap().graph_url,
        "https://dod-graph.microsoft.us"
    );
    let msg = error_of(&asset_toml("graph_url = \"ftp://x\""), SECRET_ENV);
    assert!(
        msg.starts_with("configuration: assets.contoso.graph_url:"),
        "{msg}"
    );
}

/// Path of a test-only certificate fixture.
fn cert_fixture(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/certificate")
        .join(name)
        .display()
        .to_string()
}

/// A certificate asset with the given key file and extra lines.
fn certificate_toml(key: &str, extra: &str) -> String {
    format!(
        "[assets.contoso]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         auth = \"certificate\"\ncertificate_file = \"{}\"\nprivate_key_file = \"{}\"\n{extra}\n",
        cert_fixture("test-only-cert.pem"),
        cert_fixture(key)
    )
}

#[test]
fn certificate_assets_load_and_name_bad_keys() {
    let config = parse(&certificate_toml("test-only-key.pkcs1.pem", ""), &[]).unwrap();
    let a = config.asset("contoso").unwrap();
    assert_eq!(a.auth, AuthKind::Certificate);
    assert!(a.client_secret.is_none() && a.certificate.is_some());
    let pw = &[("KEY_PW", "test-only-password")];
    let extra = "private_key_password_env = \"KEY_PW\"";
    let config = parse(&certificate_toml("test-only-key.encrypted.pem", extra), pw).unwrap();
    let dbg = format!("{config:?}");
    assert!(
        !dbg.contains("test-only-password") && !dbg.contains("MII"),
        "{dbg}"
    );

    let msg = error_of(&certificate_toml("test-only-key.encrypted.pem", ""), &[]);
    assert!(
        msg.starts_with(
            "configuration: assets.contoso.private_key_file: the private key is encrypted"
        ),
        "{msg}"
    );
    let wrong = &[("KEY_PW", "nope")];
    let msg = error_of(
        &certificate_toml("test-only-key.encrypted.pem", extra),
        wrong,
    );
    assert!(msg.starts_with("configuration: assets.contoso.private_key_password_env: the private key cannot be decrypted"), "{msg}");
    assert!(!msg.contains("nope"));
    let msg = error_of(&certificate_toml("test-only-key.encrypted.pem", extra), &[]);
    assert!(
        msg.contains("private_key_password_env: environment variable KEY_PW is not set"),
        "{msg}"
    );
    let msg = error_of(&certificate_toml("test-only-ec-key.pem", ""), &[]);
    assert!(
        msg.contains("private_key_file: the private key is not an RSA key"),
        "{msg}"
    );
    let msg = error_of(&certificate_toml("other-test-only-key.pem", ""), &[]);
    assert!(
        msg.contains("private_key_file: the private key does not belong"),
        "{msg}"
    );
    let msg = error_of(&certificate_toml("missing.pem", ""), &[]);
    assert!(
        msg.contains("private_key_file: file ") && msg.ends_with("does not exist"),
        "{msg}"
    );
    let toml = certificate_toml("test-only-key.pkcs8.pem", "").replace(
        &cert_fixture("test-only-cert.pem"),
        &cert_fixture("README.md"),
    );
    let msg = error_of(&toml, &[]);
    assert!(msg.contains("certificate_file:"), "{msg}");
    let msg = error_of(
        &format!(
            "[assets.contoso]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\nauth = \"certificate\"\nprivate_key_file = \"x\"\n"
        ),
        &[],
    );
    assert!(
        msg.contains("assets.contoso.certificate_file: required"),
        "{msg}"
    );
    // A secret next to a certificate is refused.
    let toml = certificate_toml(
        "test-only-key.pkcs8.pem",
        "client_secret_env = \"CONTOSO_SECRET\"",
    );
    let msg = error_of(&toml, SECRET_ENV);
    assert!(
        msg.contains("client_secret_env: not used with auth = \"certificate\""),
        "{msg}"
    );
    // Certificate keys on a secret asset are refused.
    let msg = error_of(&asset_toml("certificate_file = \"x\""), SECRET_ENV);
    assert!(
        msg.contains("certificate_file: not used with auth = \"client_credentials\""),
        "{msg}"
    );
}

#[test]
fn managed_identity_assets_need_no_secret() {
    let base = format!("[assets.contoso]\ntenant_id = \"{TENANT}\"\nauth = \"managed-identity\"\n");
    let config = parse(&base, &[]).unwrap();
    let a = config.asset("contoso").unwrap();
    assert_eq!(a.auth, AuthKind::ManagedIdentity);
    let mi = a.managed_identity.as_ref().unwrap();
    assert_eq!(mi.client_id, None);
    assert_eq!(
        mi.url,
        "http://169.254.169.254/metadata/identity/oauth2/token"
    );
    let config = parse(
        &format!("{base}managed_identity_client_id = \"{CLIENT}\"\nmanaged_identity_url = \"http://127.0.0.1:1/metadata/identity/oauth2/token\"\n"),
        &[],
    )
    .unwrap();
    let mi = config
        .asset("contoso")
        .unwrap()
        .managed_identity
        .clone()
        .unwrap();
    assert_eq!(mi.client_id.as_deref(), Some(CLIENT));
    assert_eq!(mi.url, "http://127.0.0.1:1/metadata/identity/oauth2/token");
    let msg = error_of(&format!("{base}managed_identity_client_id = \"x\"\n"), &[]);
    assert!(
        msg.contains("managed_identity_client_id: \"x\" is not a GUID"),
        "{msg}"
    );
    let msg = error_of(&format!("{base}client_id = \"{CLIENT}\"\n"), &[]);
    assert!(msg.contains("client_id: not used with auth = \"managed_identity\"; for a user-assigned identity set managed_identity_client_id"), "{msg}");
    let msg = error_of(
        &format!("{base}client_secret_env = \"CONTOSO_SECRET\"\n"),
        SECRET_ENV,
    );
    assert!(msg.contains("client_secret_env: not used"), "{msg}");
    let msg = error_of(
        &asset_toml("managed_identity_url = \"http://x\""),
        SECRET_ENV,
    );
    assert!(
        msg.contains("managed_identity_url: not used with auth = \"client_credentials\""),
        "{msg}"
    );
}

#[test]
fn secret_file_is_remembered_for_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, "file-secret\n").unwrap();
    let toml = format!(
        "[assets.contoso]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\nclient_secret_file = \"{}\"\n",
        path.display()
    );
    let config = parse(&toml, &[]).unwrap();
    let a = config.asset("contoso").unwrap();
    assert_eq!(a.client_secret_file.as_deref(), Some(path.as_path()));
    assert_eq!(
        a.client_secret.as_ref().unwrap().expose_secret(),
        "file-secret"
    );
    let config = parse(&asset_toml(""), SECRET_ENV).unwrap();
    assert!(
        config
            .asset("contoso")
            .unwrap()
            .client_secret_file
            .is_none()
    );
}

/// Environment's serde spelling, through figment's own serializer.
fn serde_json_like(env: Environment) -> String {
    let value = figment::value::Value::serialize(env).unwrap();
    value.into_string().unwrap()
}

/// An asset built directly (for URL helpers).
fn asset(token_endpoint: TokenEndpoint) -> AssetConfig {
    AssetConfig {
        id: "contoso".into(),
        tenant_id: TENANT.into(),
        client_id: CLIENT.into(),
        client_secret: Some(SecretString::from(SECRET.to_owned())),
        client_secret_file: None,
        certificate: None,
        managed_identity: None,
        auth: AuthKind::ClientCredentials,
        environment: Environment::Public,
        token_endpoint,
        login_url: "https://login.microsoftonline.com".into(),
        api_url: "https://api.securitycenter.microsoft.com".into(),
        graph_url: "https://graph.microsoft.com".into(),
        resource: "https://api.securitycenter.microsoft.com".into(),
        disabled_actions: BTreeSet::new(),
        allow_offboard: false,
        allowed_consenters: Vec::new(),
        triage: Default::default(),
        hunting: Default::default(),
        connect_timeout_secs: 10,
        http_timeout_secs: 60,
        download_hosts: DownloadHosts::for_environment(Environment::Public),
    }
}

#[test]
fn token_and_authorize_urls() {
    let v2 = asset(TokenEndpoint::V2);
    assert_eq!(
        v2.token_url(),
        format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(
        v2.authorize_url(),
        format!("https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/authorize")
    );
    assert_eq!(
        v2.scope(),
        "https://api.securitycenter.microsoft.com/.default"
    );
    let v1 = asset(TokenEndpoint::V1);
    assert_eq!(
        v1.token_url(),
        format!("https://login.microsoftonline.com/{TENANT}/oauth2/token")
    );
    assert_eq!(
        v1.authorize_url(),
        format!("https://login.microsoftonline.com/{TENANT}/oauth2/authorize")
    );
    assert_eq!(
        v1.scope(),
        "https://api.securitycenter.microsoft.com/.default"
    );
}

#[test]
fn overridden_login_url_is_used_in_token_url() {
    let config = parse(
        &asset_toml("login_url = \"http://127.0.0.1:7000/\"\ntoken_endpoint = \"V1\""),
        SECRET_ENV,
    )
    .unwrap();
    let asset = config.asset("contoso").unwrap();
    assert_eq!(
        asset.token_url(),
        format!("http://127.0.0.1:7000/{TENANT}/oauth2/token")
    );
    assert_eq!(
        asset.scope(),
        "https://api.securitycenter.microsoft.com/.default"
    );
}

#[test]
fn debug_never_shows_secrets() {
    let config = parse(
        &asset_toml(""),
        &[
            ("CONTOSO_SECRET", SECRET),
            (DEFAULT_API_KEY_ENV, "api-key-value-42"),
        ],
    )
    .unwrap();
    assert!(config.server.api_key.is_some());
    for text in [format!("{config:?}"), format!("{config:#?}")] {
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("api-key-value-42"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
        assert!(text.contains(TENANT), "{text}");
    }
}

#[test]
fn budget_defaults_are_microsofts_limits() {
    let config = parse(&asset_toml(""), SECRET_ENV).unwrap();
    assert_eq!(config.budget("contoso"), BudgetConfig::STANDARD);
    assert_eq!(config.budgets.get("contoso"), Some(&BudgetConfig::STANDARD));
    // An asset added without a budget entry gets the defaults too.
    assert_eq!(config.budget("other"), BudgetConfig::default());
    let standard = BudgetConfig::STANDARD;
    assert_eq!(standard.default, RateLimit::new(100, Some(1500)));
    assert_eq!(standard.live_response, RateLimit::new(10, None));
    assert_eq!(standard.package_uri, RateLimit::new(2, Some(120)));
    assert_eq!(standard.hunting, RateLimit::new(45, Some(1500)));
    assert_eq!(standard.max_wait_secs, 30);
}

#[test]
fn every_budget_key_is_read() {
    let toml = asset_toml(
        "[assets.contoso.budget]\nper_minute = 50\nper_hour = 700\n\
         live_response_per_minute = 5\nlive_response_per_hour = 100\n\
         package_uri_per_minute = 1\npackage_uri_per_hour = 30\n\
         hunting_per_minute = \"20\"\nhunting_per_hour = 600\nmax_wait_secs = 0\n",
    );
    let config = parse(&toml, SECRET_ENV).unwrap();
    assert_eq!(
        config.budget("contoso"),
        BudgetConfig {
            default: RateLimit::new(50, Some(700)),
            live_response: RateLimit::new(5, Some(100)),
            package_uri: RateLimit::new(1, Some(30)),
            hunting: RateLimit::new(20, Some(600)),
            graph: RateLimit::new(150, Some(9000)),
            max_wait_secs: 0,
        }
    );
}

#[test]
fn unset_budget_keys_keep_their_defaults() {
    let toml = asset_toml("[assets.contoso.budget]\nper_minute = 3\n");
    let config = parse(&toml, SECRET_ENV).unwrap();
    assert_eq!(
        config.budget("contoso"),
        BudgetConfig {
            default: RateLimit::new(3, Some(1500)),
            ..BudgetConfig::STANDARD
        }
    );
}

#[test]
fn bad_budget_values_name_their_key() {
    let toml = asset_toml(
        "[assets.contoso.budget]\nper_minute = 0\nhunting_per_hour = \"lots\"\n\
         max_wait_secs = 3601\nlive_response_per_minute = 100001\n",
    );
    let err = parse(&toml, SECRET_ENV).unwrap_err();
    let lines: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        lines,
        [
            "configuration: assets.contoso.budget.per_minute: \"0\" is not a whole number of calls from 1 to 100000",
            "configuration: assets.contoso.budget.live_response_per_minute: \"100001\" is not a whole number of calls from 1 to 100000",
            "configuration: assets.contoso.budget.hunting_per_hour: \"lots\" is not a whole number of calls from 1 to 100000",
            "configuration: assets.contoso.budget.max_wait_secs: \"3601\" is not a whole number of seconds from 0 to 3600",
        ]
    );
    let msg = error_of(
        &asset_toml("[assets.contoso.budget]\nper_minut = 3\n"),
        SECRET_ENV,
    );
    assert!(
        msg.starts_with("configuration: assets.contoso.budget.per_minut: unknown key"),
        "{msg}"
    );
}

#[test]
fn budget_keys_come_from_the_environment() {
    let prefix = "DSCFGTEST_BUDGET__";
    let _env = EnvGuard::set(&[
        ("DSCFGTEST_BUDGET__ASSETS__CONTOSO__BUDGET__PER_MINUTE", "7"),
        (
            "DSCFGTEST_BUDGET__ASSETS__CONTOSO__BUDGET__MAX_WAIT_SECS",
            "5",
        ),
    ]);
    let config = Config::resolve_layers(
        Figment::from(Toml::string(&asset_toml(
            "[assets.contoso.budget]\nper_hour = 200\n",
        ))),
        prefix,
        &env_of(SECRET_ENV),
    )
    .unwrap();
    let budget = config.budget("contoso");
    assert_eq!(budget.default, RateLimit::new(7, Some(200)));
    assert_eq!(budget.max_wait_secs, 5);
}

#[test]
fn interactive_assets_refuse_multi_tenant_authorities() {
    for (tenant, auth) in [
        ("common", "authorization_code"),
        ("Organizations", "authorization_code"),
        ("consumers", "device_code"),
    ] {
        let toml = format!(
            "[assets.contoso]\ntenant_id = \"{tenant}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret_env = \"CONTOSO_SECRET\"\nauth = \"{auth}\"\n"
        );
        let e = error_of(&toml, SECRET_ENV);
        assert!(e.contains("assets.contoso.tenant_id"), "{e}");
        assert!(e.contains("any tenant"), "{e}");
    }
    // A client-credentials asset names its tenant in the token URL anyway: not refused here.
    let toml = format!(
        "[assets.contoso]\ntenant_id = \"common\"\nclient_id = \"{CLIENT}\"\n\
         client_secret_env = \"CONTOSO_SECRET\"\n"
    );
    assert!(parse(&toml, SECRET_ENV).is_ok());
}

#[test]
fn allowed_consenters_are_upns_or_object_ids() {
    let config = parse(
        &asset_toml(
            "auth = \"authorization_code\"\nallowed_consenters = [\"admin@contoso.com\", \"0d3b1f7e-52a4-4c1e-9a0b-6c2d8e4f1a01\"]",
        ),
        SECRET_ENV,
    )
    .unwrap();
    assert_eq!(config.assets["contoso"].allowed_consenters.len(), 2);
    let e = error_of(
        &asset_toml("allowed_consenters = [\"admin@contoso.com\", \"not a user\"]"),
        SECRET_ENV,
    );
    assert!(e.contains("assets.contoso.allowed_consenters[1]"), "{e}");
    assert!(e.contains("user principal name"), "{e}");
}

#[test]
fn triage_filters_and_lookback() {
    let config = parse(
        &asset_toml(
            "ignore_statuses = [\"Resolved\"]\nignore_severities = [\"Informational\", \"Low\"]\nlookback_days = \"30\"",
        ),
        SECRET_ENV,
    )
    .unwrap();
    let t = &config.assets["contoso"].triage;
    assert_eq!(t.statuses, vec!["Resolved"]);
    assert_eq!(t.severities.len(), 2);
    assert_eq!(t.lookback_days, Some(30));
    assert!(t.classifications.is_empty());
    for bad in ["0", "3651", "soon"] {
        let e = error_of(
            &asset_toml(&format!("lookback_days = \"{bad}\"")),
            SECRET_ENV,
        );
        assert!(e.contains("assets.contoso.lookback_days"), "{e}");
        assert!(e.contains("1 to 3650"), "{e}");
    }
}

#[test]
fn hunting_display_fields() {
    let config = parse(
        &asset_toml(
            "hunting_summary_fields = [\"DeviceName\", \" FileName \"]\nhunting_ignore_fields = \"ReportId, InitiatingProcessId\"",
        ),
        SECRET_ENV,
    )
    .unwrap();
    let h = &config.assets["contoso"].hunting;
    assert_eq!(h.summary_fields, ["DeviceName", "FileName"]);
    assert_eq!(h.ignore_fields, ["ReportId", "InitiatingProcessId"]);
    let e = error_of(
        &asset_toml("hunting_ignore_fields = [\"ok\", \"Report Id\"]"),
        SECRET_ENV,
    );
    assert!(e.contains("assets.contoso.hunting_ignore_fields[1]"), "{e}");
    assert!(e.contains("not a column name"), "{e}");
}

#[test]
fn allow_offboard_is_off_unless_set_true() {
    let off = parse(&asset_toml(""), SECRET_ENV).unwrap();
    assert!(!off.assets["contoso"].allow_offboard);
    let on = parse(&asset_toml("allow_offboard = true"), SECRET_ENV).unwrap();
    assert!(on.assets["contoso"].allow_offboard);
    let e = error_of(&asset_toml("allow_offboard = \"maybe\""), SECRET_ENV);
    assert!(e.contains("assets.contoso.allow_offboard"), "{e}");
    assert!(e.contains("true or false"), "{e}");
}

#[test]
fn ingestion_defaults_and_values() {
    let config = parse(&asset_toml(""), SECRET_ENV).unwrap();
    assert!(config.ingestion("contoso").is_none());
    let config = parse(&asset_toml("[assets.contoso.ingestion]\n"), SECRET_ENV).unwrap();
    assert_eq!(
        config.ingestion.get("contoso"),
        Some(&IngestionConfig::default())
    );
    assert!(config.ingestion("contoso").is_none(), "disabled by default");
    let config = parse(
        &asset_toml(
            "[assets.contoso.ingestion]\nenabled = true\nsource = \"mde\"\ninterval_secs = 10\n\
             statuses = [\"New\", \"inProgress\"]\nseverities = [\"high\"]\n\
             categories = [\"Malware\"]\ndetection_sources = [\"antivirus\"]\n\
             service_sources = [\"microsoftDefenderForEndpoint\"]\ninclude_updates = true\n\
             first_run_lookback = \"7d\"\nmax_per_poll = 10000\nexpand_evidence = true\n",
        ),
        SECRET_ENV,
    )
    .unwrap();
    let i = config.ingestion("contoso").unwrap();
    assert_eq!(i.source, IngestionSource::Mde);
    assert_eq!(i.interval_secs, 10);
    assert_eq!(i.statuses, ["New", "inProgress"]);
    assert_eq!(i.severities, ["high"]);
    assert_eq!(i.categories, ["Malware"]);
    assert_eq!(i.detection_sources, ["antivirus"]);
    assert_eq!(i.service_sources, ["microsoftDefenderForEndpoint"]);
    assert!(i.include_updates && i.expand_evidence);
    assert_eq!(i.first_run_lookback_secs, 7 * 86_400);
    assert_eq!(i.max_per_poll, 10_000);
    let config = parse(
        &asset_toml("[assets.contoso.ingestion]\nenabled = true\nfirst_run_lookback = \"12h\"\n"),
        SECRET_ENV,
    )
    .unwrap();
    assert_eq!(
        config.ingestion("contoso").unwrap().first_run_lookback_secs,
        43_200
    );
}

const HOOK_SECRET: &str = "a-webhook-secret-of-some-length";

#[test]
fn webhooks_are_read_with_their_secrets() {
    let vars = [("CONTOSO_SECRET", SECRET), ("HOOK", HOOK_SECRET)];
    let config = parse(
        &asset_toml(
            "[assets.contoso.ingestion]\nenabled = true\noutbox_max_events = 500\n\
             [[assets.contoso.ingestion.webhooks]]\nurl = \"https://soar.example/hook?token=abc\"\n\
             secret_env = \"HOOK\"\n\
             [[assets.contoso.ingestion.webhooks]]\nurl = \"http://127.0.0.1:9000/in\"\n\
             secret_env = \"HOOK\"\nbatch_size = 5\nretry_max_secs = 30\n",
        ),
        &vars,
    )
    .unwrap();
    let i = config.ingestion("contoso").unwrap();
    assert_eq!(i.outbox_max_events, 500);
    assert_eq!(i.webhooks.len(), 2);
    let (a, b) = (&i.webhooks[0], &i.webhooks[1]);
    assert_eq!(a.batch_size, 100);
    assert_eq!(a.retry_max_secs, 300);
    assert_eq!((b.batch_size, b.retry_max_secs), (5, 30));
    assert_ne!(a.id(), b.id());
    assert_eq!(a.id().len(), 16);
    // Shown and debugged without path, query or secret.
    assert_eq!(a.shown(), "https://soar.example");
    let debug = format!("{config:?}");
    assert!(!debug.contains(HOOK_SECRET), "{debug}");
    assert!(!debug.contains("token=abc"), "{debug}");
}

#[test]
fn bad_webhooks_name_their_key() {
    let vars = [
        ("CONTOSO_SECRET", SECRET),
        ("HOOK", HOOK_SECRET),
        ("SHORT", "too-short"),
    ];
    let at = "assets.contoso.ingestion.webhooks[0]";
    for (entry, key) in [
        ("secret_env = \"HOOK\"", format!("{at}.url")),
        (
            "url = \"ftp://x.example/in\"\nsecret_env = \"HOOK\"",
            format!("{at}.url"),
        ),
        (
            "url = \"not a url\"\nsecret_env = \"HOOK\"",
            format!("{at}.url"),
        ),
        (
            "url = \"https://user:pw@x.example/in\"\nsecret_env = \"HOOK\"",
            format!("{at}.url"),
        ),
        ("url = \"https://x.example/in\"", format!("{at}.secret_env")),
        (
            "url = \"https://x.example/in\"\nsecret_env = \"MISSING\"",
            format!("{at}.secret_env"),
        ),
        (
            "url = \"https://x.example/in\"\nsecret_env = \"SHORT\"",
            format!("{at}.secret_env"),
        ),
        (
            "url = \"https://x.example/in\"\nsecret_env = \"HOOK\"\nbatch_size = 0",
            format!("{at}.batch_size"),
        ),
        (
            "url = \"https://x.example/in\"\nsecret_env = \"HOOK\"\nretry_max_secs = 3601",
            format!("{at}.retry_max_secs"),
        ),
        (
            "url = \"https://x.example/in\"\nsecret_env = \"HOOK\"\nheaders = 1",
            "headers".to_string(),
        ),
    ] {
        let message = error_of(
            &asset_toml(&format!(
                "[assets.contoso.ingestion]\n[[assets.contoso.ingestion.webhooks]]\n{entry}\n"
            )),
            &vars,
        );
        assert!(message.contains(&key), "{entry}: {message}");
        assert!(!message.contains(HOOK_SECRET) && !message.contains("too-short"));
    }
    let twice = "[[assets.contoso.ingestion.webhooks]]\nurl = \"https://x.example/in\"\n\
                 secret_env = \"HOOK\"\n";
    let message = error_of(
        &asset_toml(&format!("[assets.contoso.ingestion]\n{twice}{twice}")),
        &vars,
    );
    assert!(
        message.contains("assets.contoso.ingestion.webhooks[1].url"),
        "{message}"
    );
}

#[test]
fn bad_ingestion_values_name_their_key() {
    for (line, key) in [
        ("enabled = \"yes\"", "assets.contoso.ingestion.enabled"),
        ("source = \"kafka\"", "assets.contoso.ingestion.source"),
        (
            "interval_secs = 9",
            "assets.contoso.ingestion.interval_secs",
        ),
        (
            "interval_secs = \"soon\"",
            "assets.contoso.ingestion.interval_secs",
        ),
        (
            "statuses = [\"Open\"]",
            "assets.contoso.ingestion.statuses[0]",
        ),
        (
            "severities = [\"low\", \"severe\"]",
            "assets.contoso.ingestion.severities[1]",
        ),
        (
            "categories = [\"\"]",
            "assets.contoso.ingestion.categories[0]",
        ),
        (
            "include_updates = 1",
            "assets.contoso.ingestion.include_updates",
        ),
        (
            "first_run_lookback = \"31d\"",
            "assets.contoso.ingestion.first_run_lookback",
        ),
        (
            "first_run_lookback = \"7 weeks\"",
            "assets.contoso.ingestion.first_run_lookback",
        ),
        (
            "first_run_lookback = \"0h\"",
            "assets.contoso.ingestion.first_run_lookback",
        ),
        ("max_per_poll = 0", "assets.contoso.ingestion.max_per_poll"),
        (
            "max_per_poll = 10001",
            "assets.contoso.ingestion.max_per_poll",
        ),
        (
            "expand_evidence = \"maybe\"",
            "assets.contoso.ingestion.expand_evidence",
        ),
        (
            "outbox_max_events = 99",
            "assets.contoso.ingestion.outbox_max_events",
        ),
    ] {
        let message = error_of(
            &asset_toml(&format!("[assets.contoso.ingestion]\n{line}\n")),
            SECRET_ENV,
        );
        assert!(message.contains(key), "{line}: {message}");
    }
    let message = error_of(
        &asset_toml("[assets.contoso.ingestion]\nintervall = 10\n"),
        SECRET_ENV,
    );
    assert!(message.contains("intervall"), "{message}");
}

#[test]
fn ingestion_adaptive_and_actions_floor() {
    let config = parse(
        &asset_toml("[assets.contoso.ingestion]\nenabled = true\n"),
        SECRET_ENV,
    )
    .unwrap();
    let i = config.ingestion("contoso").unwrap();
    assert!(i.adaptive);
    assert_eq!(i.actions_floor_percent, 50);
    for (value, want) in [("10", 10), ("90", 90), ("\"35\"", 35)] {
        let config = parse(
            &asset_toml(&format!(
                "[assets.contoso.ingestion]\nenabled = true\nadaptive = false\n\
                 actions_floor_percent = {value}\n"
            )),
            SECRET_ENV,
        )
        .unwrap();
        let i = config.ingestion("contoso").unwrap();
        assert!(!i.adaptive);
        assert_eq!(i.actions_floor_percent, want, "{value}");
    }
    for line in [
        "actions_floor_percent = 9",
        "actions_floor_percent = 91",
        "actions_floor_percent = -5",
        "actions_floor_percent = \"half\"",
        "actions_floor_percent = 50.5",
    ] {
        let message = error_of(
            &asset_toml(&format!("[assets.contoso.ingestion]\n{line}\n")),
            SECRET_ENV,
        );
        assert!(
            message.contains("assets.contoso.ingestion.actions_floor_percent")
                && message.contains("10 to 90"),
            "{line}: {message}"
        );
    }
    let message = error_of(
        &asset_toml("[assets.contoso.ingestion]\nadaptive = \"often\"\n"),
        SECRET_ENV,
    );
    assert!(
        message.contains("assets.contoso.ingestion.adaptive"),
        "{message}"
    );
}

const LONG_KEY: &str = "0123456789abcdef0123456789abcdef-soc";

fn with_asset(extra: &str) -> String {
    format!(
        "[assets.a]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\nclient_secret_env = \"SECRET_A\"\n\n{extra}"
    )
}

#[test]
fn scoped_api_keys_are_read() {
    let toml = with_asset(
        "[[server.api_keys]]\nname = \"soc-read\"\nkey_env = \"K1\"\nassets = [\"a\"]\nscopes = [\"read\", \"live_response\"]\n\n[[server.api_keys]]\nname = \"admin\"\nkey_env = \"K2\"\nassets = \"*\"\nscopes = [\"admin\"]\n",
    );
    let k2 = format!("{LONG_KEY}-2");
    let config = parse(&toml, &[("SECRET_A", "s"), ("K1", LONG_KEY), ("K2", &k2)]).unwrap();
    let keys = &config.server.api_keys;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0].name, "soc-read");
    assert!(keys[0].assets.allows("a") && !keys[0].assets.allows("b"));
    assert!(keys[0].scopes.contains(&Scope::LiveResponse));
    assert_eq!(keys[1].assets, AssetScope::All);
    let debug = format!("{config:?}");
    assert!(!debug.contains(LONG_KEY), "{debug}");
}

#[test]
fn bad_scoped_api_keys_name_their_key() {
    let vars = [("SECRET_A", "s"), ("K1", LONG_KEY), ("SHORT", "too-short")];
    let entry = |body: &str| with_asset(&format!("[[server.api_keys]]\n{body}\n"));
    let cases = [
        (
            "name = \"soc\"\nkey_env = \"K1\"\nassets = [\"a\", \"zz\"]\nscopes = [\"read\"]",
            "server.api_keys.soc.assets: unknown asset 'zz'",
        ),
        (
            "name = \"soc\"\nkey_env = \"SHORT\"\nassets = \"*\"\nscopes = [\"read\"]",
            "server.api_keys.soc: the key is too short: at least 32",
        ),
        (
            "name = \"soc\"\nkey_env = \"K1\"\nassets = \"*\"\nscopes = [\"write\"]",
            "server.api_keys.soc.scopes: unknown scope 'write'",
        ),
        (
            "name = \"soc\"\nkey_env = \"K1\"\nkey_file = \"/k\"\nassets = \"*\"\nscopes = [\"read\"]",
            "server.api_keys.soc: set exactly one of key_env",
        ),
        (
            "name = \"soc\"\nassets = \"*\"\nscopes = [\"read\"]",
            "server.api_keys.soc: set exactly one of key_env",
        ),
        (
            "name = \"soc key!\"\nkey_env = \"K1\"\nassets = \"*\"\nscopes = [\"read\"]",
            "server.api_keys[0].name: 'soc key!' is not a valid key name",
        ),
        (
            "name = \"soc\"\nkey_env = \"K1\"\nscopes = [\"read\"]",
            "server.api_keys.soc.assets: required",
        ),
        (
            "name = \"soc\"\nkey_env = \"K1\"\nassets = \"*\"",
            "server.api_keys.soc.scopes: required",
        ),
        (
            "name = \"soc\"\nkey = \"inline-secret-value\"\nassets = \"*\"\nscopes = [\"read\"]",
            "server.api_keys.soc.key: inline API keys are not allowed",
        ),
    ];
    for (body, expected) in cases {
        let msg = error_of(&entry(body), &vars);
        assert!(msg.contains(expected), "{body}: {msg}");
        assert!(
            !msg.contains(LONG_KEY)
                && !msg.contains("too-short")
                && !msg.contains("inline-secret-value"),
            "{msg}"
        );
    }
    let twice = with_asset(
        "[[server.api_keys]]\nname = \"soc\"\nkey_env = \"K1\"\nassets = \"*\"\nscopes = [\"read\"]\n\n[[server.api_keys]]\nname = \"soc\"\nkey_env = \"K2\"\nassets = \"*\"\nscopes = [\"read\"]\n",
    );
    let k2 = format!("{LONG_KEY}-2");
    let msg = error_of(&twice, &[("SECRET_A", "s"), ("K1", LONG_KEY), ("K2", &k2)]);
    assert!(
        msg.contains("server.api_keys.soc.name: given more than once"),
        "{msg}"
    );
}

#[test]
fn edge_settings_defaults_values_and_errors() {
    let config = parse(&asset_toml(""), SECRET_ENV).unwrap();
    assert_eq!(config.server.header_read_timeout_secs, 10);
    assert_eq!(config.server.body_read_timeout_secs, 30);
    assert_eq!(config.server.keep_alive_timeout_secs, 60);
    assert_eq!(config.server.max_connections, 1024);
    assert_eq!(config.vault, VaultConfig::default());
    assert_eq!(
        config.assets["contoso"].download_hosts,
        DownloadHosts::for_environment(Environment::Public)
    );
    let toml = format!(
        "[server]\nmax_connections = 64\nheader_read_timeout_secs = 5\n\
         [vault]\nvault_dir = \"/srv/vault\"\nmax_file_bytes = 100\nmax_total_bytes = 1000\n\
         when_full = \"refuse\"\nmin_free_bytes = 0\nretention_days = 30\n{}",
        asset_toml("download_hosts = [\"http://127.0.0.1\", \"*.blob.example.net\"]")
    );
    let config = parse(&toml, SECRET_ENV).unwrap();
    assert_eq!(config.server.max_connections, 64);
    assert_eq!(config.server.header_read_timeout_secs, 5);
    assert_eq!(
        config.vault.dir(Path::new("state")),
        Path::new("/srv/vault")
    );
    assert_eq!(config.vault.when_full, WhenFull::Refuse);
    assert_eq!(config.vault.retention_days, Some(30));
    assert_eq!(config.vault.min_free_bytes, 0);
    assert_eq!(config.assets["contoso"].download_hosts.0.len(), 2);
    for (toml, key) in [
        (
            "[server]\nmax_connections = 0\n".to_string(),
            "server.max_connections",
        ),
        (
            "[vault]\nwhen_full = \"drop\"\n".to_string(),
            "vault.when_full",
        ),
        (
            "[vault]\nmax_file_bytes = 10\nmax_total_bytes = 5\n".to_string(),
            "vault.max_file_bytes",
        ),
        (
            asset_toml("download_hosts = [\"evil.example:8080\"]"),
            "assets.contoso.download_hosts",
        ),
    ] {
        let full = if toml.starts_with("[assets") {
            toml
        } else {
            format!("{toml}{}", asset_toml(""))
        };
        let msg = error_of(&full, SECRET_ENV);
        assert!(msg.contains(key), "{key}: {msg}");
    }
}

#[test]
fn state_backend_defaults_to_files() {
    let c = parse("", &[]).unwrap();
    assert_eq!(c.server.state.backend, crate::config::StateBackend::Files);
    assert_eq!(c.server.state.key_prefix, "defender-soar");
    assert_eq!(c.server.state.fallback_share_percent, 50);
    assert_eq!(c.server.state.lease_secs, 15);
}

#[test]
fn redis_backend_reads_its_url_from_the_environment() {
    let toml = "[server.state]\nbackend = \"redis\"\nredis_url_env = \"REDIS_URL\"\nkey_prefix = \"soar:prod\"\nlease_secs = 10\n";
    let c = parse(
        toml,
        &[("REDIS_URL", "redis://:pw-sekrit@cache.internal:6380/2")],
    )
    .unwrap();
    assert_eq!(c.server.state.backend, crate::config::StateBackend::Redis);
    assert_eq!(
        c.server.state.redis_url.as_ref().unwrap().expose_secret(),
        "redis://:pw-sekrit@cache.internal:6380/2"
    );
    assert_eq!(c.server.state.key_prefix, "soar:prod");
    assert_eq!(c.server.state.lease_secs, 10);
    assert!(
        !format!("{c:?}").contains("pw-sekrit"),
        "the URL's password stays out of Debug"
    );

    let missing = error_of("[server.state]\nbackend = \"redis\"\n", &[]);
    assert!(missing.contains("server.state.redis_url_env"), "{missing}");
    let unset = error_of(toml, &[]);
    assert!(unset.contains("REDIS_URL is not set"), "{unset}");
    let bad = error_of(toml, &[("REDIS_URL", "http://x:1/pw-sekrit")]);
    assert!(bad.contains("does not hold a Redis URL"), "{bad}");
    assert!(!bad.contains("pw-sekrit"), "{bad}");
    let inline = error_of("[server.state]\nredis_url = \"redis://:pw@x\"\n", &[]);
    assert!(inline.contains("server.state.redis_url"), "{inline}");
    assert!(!inline.contains(":pw@"), "{inline}");
    let backend = error_of("[server.state]\nbackend = \"etcd\"\n", &[]);
    assert!(backend.contains("allowed: files, redis"), "{backend}");
    let prefix = error_of("[server.state]\nkey_prefix = \"a b\"\n", &[]);
    assert!(prefix.contains("server.state.key_prefix"), "{prefix}");
    let share = error_of("[server.state]\nfallback_share_percent = 0\n", &[]);
    assert!(
        share.contains("server.state.fallback_share_percent"),
        "{share}"
    );
    let lease = error_of("[server.state]\nlease_secs = 1\n", &[]);
    assert!(lease.contains("server.state.lease_secs"), "{lease}");
}
