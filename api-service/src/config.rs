//! Settings from the environment: every variable api-service reads, its default and its check
//! (the operator's list with meanings: `docs/deployment.md`, "Environment variables").
//!
//! [`Variables`] declares each variable once, as a clap argument with its `env` name, default and
//! value parser; [`Settings`] is what the rest of the service uses, built from it with the checks
//! and values that involve several variables. Every variable has a default pointing at the
//! standard local ports, so a developer runs with no configuration. Values are trimmed and an
//! empty value counts as unset. A value that cannot be used is a [`ConfigError`] naming the
//! variable, never echoing a URL (which may hold a password); `main` prints it on one line and
//! exits with code 2. Reading never panics.
//!
//! The variables come from a lookup function, not from clap's own reading of the process
//! environment: [`shared_ops::config::read_variables`] turns each declared variable the lookup finds into a
//! `--<name>=<value>` argument for clap. The binary looks up the process environment, tests their
//! own map, and both go through the same parsers; the process's command line plays no part.
//!
//! Credentials (`DATABASE_URL`, `NATS_URL`, `REDIS_URL`, `JWT_SECRET`) are [`SecretString`]s: the
//! `Debug` of [`Settings`] shows them as `[REDACTED]` and they have no `Display`; the code that
//! connects calls `expose_secret()`.

use std::{collections::HashMap, str::FromStr, time::Duration};

use clap::Parser;
use secrecy::{ExposeSecret, SecretString};
use shared_auth::JwtConfig;
use shared_ops::config::{InvalidVariable, read_variables};
use shared_proto::nats::NatsServers;
use thiserror::Error;

/// How callers are identified (`docs/api.md`, "Identity").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `Authorization: Bearer` / `?token=` JWT, verified on every request.
    Jwt,
    /// `X-User-ID` trusted as set by the ReTiCh API gateway.
    Header,
}

pub use shared_ops::LogFormat;

/// Where attachment bytes are stored (`STORAGE_BACKEND`). Credentials for the cloud backends
/// are never part of the settings: they are read by the object-store client from the standard
/// variables of each provider (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// web identity / instance metadata; `AZURE_STORAGE_ACCOUNT_KEY`,
/// `AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`/`AZURE_TENANT_ID`, managed identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageBackend {
    /// `local` (default): the directory `UPLOAD_DIR`, created if missing.
    Local,
    /// `s3`: an S3 or S3-compatible bucket (`S3_BUCKET`, `S3_REGION`, `S3_ENDPOINT`).
    S3 {
        bucket: String,
        region: Option<String>,
        /// For S3-compatible servers (MinIO, …); `http://` allows plain HTTP.
        endpoint: Option<String>,
    },
    /// `azure`: an Azure Blob Storage container (`AZURE_STORAGE_ACCOUNT`, `AZURE_CONTAINER`).
    Azure { account: String, container: String },
}

/// Identity settings shared by the REST and WebSocket sides.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// HS256 secret.
    pub jwt_secret: Option<SecretString>,
    pub jwks_url: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
}

impl AuthSettings {
    /// The token verifier's (and minter's) configuration: where the JWT secret leaves its
    /// wrapper.
    pub fn jwt_config(&self) -> JwtConfig {
        JwtConfig {
            secret: self
                .jwt_secret
                .as_ref()
                .map(|secret| secret.expose_secret().to_owned()),
            jwks_url: self.jwks_url.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
        }
    }
}

/// Everything api-service reads from its environment. Its `Debug` shows no credential.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen port; 0 picks a free one (tests).
    pub port: u16,
    pub host: String,
    pub log_level: String,
    pub log_format: LogFormat,
    /// A `postgres://` URL; it may hold a password.
    pub database_url: SecretString,
    pub database_max_connections: u32,
    /// Message-send batch writers (`ingest`): each holds at most one pool connection at a time.
    pub send_writers: usize,
    /// `NATS_URL` as written: one server or a comma-separated list (may hold credentials).
    pub nats_url: SecretString,
    /// The servers of `NATS_URL`, checked, and the credentials written in them.
    pub nats_servers: NatsServers,
    /// First token of every NATS subject (`<prefix>.conv.<id>`); tests use their own.
    pub nats_subject_prefix: String,
    /// Events kept while NATS is unreachable, published when it is back (events.rs); 0 keeps
    /// none.
    pub event_buffer_size: usize,
    /// May hold a password.
    pub redis_url: SecretString,
    /// Prefix of every Redis key; tests use their own.
    pub redis_key_prefix: String,
    pub auth: AuthSettings,
    pub auto_migrate: bool,
    pub user_service_url: Option<String>,
    /// Where attachments are stored; `upload_dir` is used by the `local` backend.
    pub storage_backend: StorageBackend,
    pub upload_dir: String,
    /// `file_url` base; `None` means `http://localhost:<PORT>/uploads`.
    pub upload_base_url: Option<String>,
    /// A folder served as static files under `/demo/` (the demo web app of `make dev`); `None`
    /// (the default, and production) serves nothing there.
    pub demo_dir: Option<String>,
    pub rate_limit_per_sec: f64,
    pub rate_limit_burst: u32,
    /// How many months ahead the messages partitions are created.
    pub partition_months_ahead: u32,
    pub partition_check_interval: Duration,
    pub shutdown_timeout: Duration,
}

/// A configuration value that cannot be used.
#[derive(Debug, Error)]
#[error("invalid configuration: {name}: {reason}")]
pub struct ConfigError {
    /// The variable, e.g. `DATABASE_URL`.
    pub name: String,
    /// What is wrong, without the value when it may hold a credential.
    pub reason: String,
}

fn bad(name: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings from a map of variables (a test's own).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    /// Reads settings through `lookup`, which returns a variable's value if it is set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars: Variables = read_variables(lookup)
            .map_err(|InvalidVariable { name, reason }| bad(&name, reason))?;
        let storage_backend = vars.storage_backend()?;
        Ok(Self {
            port: vars.port,
            host: vars.host,
            log_level: vars.log_level,
            log_format: vars.log_format,
            database_url: vars.database_url,
            database_max_connections: vars.database_max_connections,
            send_writers: vars.send_writers,
            nats_url: vars.nats_url.written,
            nats_servers: vars.nats_url.servers,
            nats_subject_prefix: vars.nats_subject_prefix,
            event_buffer_size: vars.event_buffer_size,
            redis_url: vars.redis_url,
            redis_key_prefix: vars.redis_key_prefix,
            auth: AuthSettings {
                mode: vars.auth_mode,
                jwt_secret: vars.jwt_secret,
                jwks_url: vars.jwks_url,
                jwt_issuer: vars.jwt_issuer,
                jwt_audience: vars.jwt_audience,
            },
            auto_migrate: vars.auto_migrate,
            user_service_url: vars.user_service_url,
            storage_backend,
            upload_dir: vars.upload_dir,
            upload_base_url: vars
                .upload_base_url
                .map(|url| url.trim_end_matches('/').to_owned()),
            demo_dir: vars.demo_dir,
            rate_limit_per_sec: vars.rate_limit_per_sec,
            rate_limit_burst: vars.rate_limit_burst,
            partition_months_ahead: vars.partition_months_ahead,
            partition_check_interval: vars.partition_check_interval,
            shutdown_timeout: vars.shutdown_timeout,
        })
    }
}

/// Every variable api-service reads: its name (`env`), default and value parser. A parser's
/// error becomes the reason of a [`ConfigError`] naming the variable.
#[derive(Parser)]
#[command(name = "api-service", disable_help_flag = true)]
struct Variables {
    #[arg(long, env = "PORT", default_value = "8082", value_parser = number::<u16>)]
    port: u16,
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: String,
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// `json`, or `text` (also spelled `pretty`).
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = log_format)]
    log_format: LogFormat,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/retich",
        value_parser = database_url
    )]
    database_url: SecretString,
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value = "32", value_parser = number::<u32>)]
    database_max_connections: u32,
    /// 1 to 64.
    #[arg(long, env = "SEND_WRITERS", default_value = "1", value_parser = send_writers)]
    send_writers: usize,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222", value_parser = nats_url)]
    nats_url: NatsUrl,
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "retich", value_parser = subject_prefix)]
    nats_subject_prefix: String,
    /// 0 to 1,000,000.
    #[arg(long, env = "EVENT_BUFFER_SIZE", default_value = "10000", value_parser = event_buffer_size)]
    event_buffer_size: usize,
    /// One server, a Redis Cluster or Sentinel ([`shared_redis::check_url`]).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", value_parser = redis_url)]
    redis_url: SecretString,
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "retich")]
    redis_key_prefix: String,
    #[arg(long, env = "AUTH_MODE", default_value = "jwt", value_parser = auth_mode)]
    auth_mode: AuthMode,
    #[arg(long, env = "JWT_SECRET", value_parser = secret)]
    jwt_secret: Option<SecretString>,
    #[arg(long, env = "JWKS_URL", value_parser = http_url)]
    jwks_url: Option<String>,
    #[arg(long, env = "JWT_ISSUER")]
    jwt_issuer: Option<String>,
    #[arg(long, env = "JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    #[arg(
        long,
        env = "AUTO_MIGRATE",
        default_value = "false",
        action = clap::ArgAction::Set,
        value_parser = boolean
    )]
    auto_migrate: bool,
    #[arg(long, env = "USER_SERVICE_URL", value_parser = http_url)]
    user_service_url: Option<String>,
    /// `local`, `s3` or `azure`; the variables each needs are checked by
    /// [`Variables::storage_backend`].
    #[arg(long, env = "STORAGE_BACKEND", default_value = "local", value_parser = storage_kind)]
    storage_backend: StorageKind,
    #[arg(long, env = "S3_BUCKET")]
    s3_bucket: Option<String>,
    #[arg(long, env = "S3_REGION")]
    s3_region: Option<String>,
    /// Checked only when `STORAGE_BACKEND=s3`.
    #[arg(long, env = "S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "AZURE_STORAGE_ACCOUNT")]
    azure_storage_account: Option<String>,
    #[arg(long, env = "AZURE_CONTAINER")]
    azure_container: Option<String>,
    #[arg(long, env = "UPLOAD_DIR", default_value = "./uploads")]
    upload_dir: String,
    #[arg(long, env = "UPLOAD_BASE_URL")]
    upload_base_url: Option<String>,
    #[arg(long, env = "DEMO_DIR")]
    demo_dir: Option<String>,
    #[arg(
        long,
        env = "RATE_LIMIT_MESSAGES_PER_SEC",
        default_value = "20",
        value_parser = positive_rate
    )]
    rate_limit_per_sec: f64,
    #[arg(long, env = "RATE_LIMIT_MESSAGES_BURST", default_value = "40", value_parser = at_least_one)]
    rate_limit_burst: u32,
    #[arg(long, env = "PARTITION_MONTHS_AHEAD", default_value = "3", value_parser = number::<u32>)]
    partition_months_ahead: u32,
    #[arg(long, env = "PARTITION_CHECK_SECONDS", default_value = "3600", value_parser = seconds)]
    partition_check_interval: Duration,
    #[arg(long, env = "SHUTDOWN_TIMEOUT_SECONDS", default_value = "25", value_parser = seconds)]
    shutdown_timeout: Duration,
}

/// `STORAGE_BACKEND` alone; [`StorageBackend`] once its variables are checked.
#[derive(Debug, Clone, Copy)]
enum StorageKind {
    Local,
    S3,
    Azure,
}

/// `NATS_URL` as written (it may hold credentials) and its checked servers.
#[derive(Clone)]
struct NatsUrl {
    written: SecretString,
    servers: NatsServers,
}

impl Variables {
    /// The backend `STORAGE_BACKEND` names, with the variables it requires.
    fn storage_backend(&self) -> Result<StorageBackend, ConfigError> {
        let required = |name: &str, value: &Option<String>| {
            value
                .clone()
                .ok_or_else(|| bad(name, "required by this STORAGE_BACKEND"))
        };
        match self.storage_backend {
            StorageKind::Local => Ok(StorageBackend::Local),
            StorageKind::S3 => {
                if let Some(url) = &self.s3_endpoint {
                    check_url(url, &["http", "https"]).map_err(|e| bad("S3_ENDPOINT", e))?;
                }
                Ok(StorageBackend::S3 {
                    bucket: required("S3_BUCKET", &self.s3_bucket)?,
                    region: self.s3_region.clone(),
                    endpoint: self.s3_endpoint.clone(),
                })
            }
            StorageKind::Azure => Ok(StorageBackend::Azure {
                account: required("AZURE_STORAGE_ACCOUNT", &self.azure_storage_account)?,
                container: required("AZURE_CONTAINER", &self.azure_container)?,
            }),
        }
    }
}

fn number<T: FromStr>(value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("cannot parse {value:?}"))
}

fn seconds(value: &str) -> Result<Duration, String> {
    number(value).map(Duration::from_secs)
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(value.into())
}

/// Checks that `url` has one of the given schemes; the message never echoes the URL.
fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme {
        Some(s) if schemes.contains(&s.as_str()) => Ok(()),
        _ => Err(format!(
            "expected a URL starting with {}",
            schemes.join("://, ") + "://"
        )),
    }
}

fn http_url(value: &str) -> Result<String, String> {
    check_url(value, &["http", "https"])?;
    Ok(value.to_owned())
}

fn database_url(value: &str) -> Result<SecretString, String> {
    check_url(value, &["postgres", "postgresql"])?;
    Ok(value.into())
}

fn redis_url(value: &str) -> Result<SecretString, String> {
    shared_redis::check_url(value)?;
    Ok(value.into())
}

fn nats_url(value: &str) -> Result<NatsUrl, String> {
    let servers = value.parse::<NatsServers>().map_err(|e| e.to_string())?;
    Ok(NatsUrl {
        written: value.into(),
        servers,
    })
}

fn subject_prefix(value: &str) -> Result<String, String> {
    shared_proto::subjects::validate_prefix(value).map_err(|e| e.to_string())?;
    Ok(value.to_owned())
}

fn log_format(value: &str) -> Result<LogFormat, String> {
    match value.to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" | "pretty" => Ok(LogFormat::Text),
        other => Err(format!("expected json or text, got {other:?}")),
    }
}

fn auth_mode(value: &str) -> Result<AuthMode, String> {
    match value.to_ascii_lowercase().as_str() {
        "jwt" => Ok(AuthMode::Jwt),
        "header" => Ok(AuthMode::Header),
        other => Err(format!("expected jwt or header, got {other:?}")),
    }
}

fn storage_kind(value: &str) -> Result<StorageKind, String> {
    match value.to_ascii_lowercase().as_str() {
        "local" => Ok(StorageKind::Local),
        "s3" => Ok(StorageKind::S3),
        "azure" => Ok(StorageKind::Azure),
        other => Err(format!("expected local, s3 or azure, got {other:?}")),
    }
}

fn positive_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = number(value)?;
    if !(rate.is_finite() && rate > 0.0) {
        return Err("must be a positive number".into());
    }
    Ok(rate)
}

fn at_least_one(value: &str) -> Result<u32, String> {
    let n: u32 = number(value)?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

fn event_buffer_size(value: &str) -> Result<usize, String> {
    let n: usize = number(value)?;
    if n > 1_000_000 {
        return Err("must be between 0 and 1000000".into());
    }
    Ok(n)
}

fn send_writers(value: &str) -> Result<usize, String> {
    let n: usize = number(value)?;
    if !(1..=64).contains(&n) {
        return Err("must be between 1 and 64".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_point_at_the_local_services() {
        let s = Settings::from_map(&HashMap::new()).unwrap();
        assert_eq!(s.port, 8082);
        assert_eq!(s.auth.mode, AuthMode::Jwt);
        assert!(s.database_url.expose_secret().contains("127.0.0.1:5432"));
        assert_eq!(s.nats_url.expose_secret(), "nats://127.0.0.1:4222");
        assert_eq!(s.redis_url.expose_secret(), "redis://127.0.0.1:6379");
        assert!(!s.auto_migrate);
    }

    #[test]
    fn a_bad_database_url_names_the_variable_without_echoing_it() {
        let err =
            Settings::from_map(&vars(&[("DATABASE_URL", "mysql://u:secret@h/db")])).unwrap_err();
        assert_eq!(err.name, "DATABASE_URL");
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn redis_url_takes_a_single_server_a_cluster_or_sentinel_and_names_itself_when_bad() {
        for url in [
            "redis://127.0.0.1:6379",
            "rediss://user:pass@redis.example:6380/1",
            "redis-cluster://10.0.0.1:7000?node=10.0.0.2:7000&node=10.0.0.3:7000",
            "redis-sentinel://10.0.0.1:26379/0?sentinelServiceName=primary&node=10.0.0.2:26379",
            "redis+unix:///run/redis.sock",
        ] {
            let s = Settings::from_map(&vars(&[("REDIS_URL", url)])).unwrap();
            assert_eq!(s.redis_url.expose_secret(), url);
        }
        for bad in [
            "unix:///run/redis.sock",
            "http://x",
            "redis://",
            "redis-sentinel://x:26379",
        ] {
            let err = Settings::from_map(&vars(&[("REDIS_URL", bad)])).unwrap_err();
            assert_eq!(err.name, "REDIS_URL", "{bad}");
        }
    }

    #[test]
    fn an_unknown_auth_mode_is_rejected() {
        let err = Settings::from_map(&vars(&[("AUTH_MODE", "none")])).unwrap_err();
        assert_eq!(err.name, "AUTH_MODE");
    }

    #[test]
    fn storage_defaults_to_the_local_directory() {
        let s = Settings::from_map(&HashMap::new()).unwrap();
        assert_eq!(s.storage_backend, StorageBackend::Local);
        assert_eq!(s.upload_dir, "./uploads");
    }

    #[test]
    fn cloud_storage_backends_need_their_bucket_or_container() {
        let err = Settings::from_map(&vars(&[("STORAGE_BACKEND", "s3")])).unwrap_err();
        assert_eq!(err.name, "S3_BUCKET");
        let err = Settings::from_map(&vars(&[
            ("STORAGE_BACKEND", "azure"),
            ("AZURE_STORAGE_ACCOUNT", "acct"),
        ]))
        .unwrap_err();
        assert_eq!(err.name, "AZURE_CONTAINER");
        let err = Settings::from_map(&vars(&[
            ("STORAGE_BACKEND", "s3"),
            ("S3_BUCKET", "b"),
            ("S3_ENDPOINT", "minio:9000"),
        ]))
        .unwrap_err();
        assert_eq!(err.name, "S3_ENDPOINT");
        let err = Settings::from_map(&vars(&[("STORAGE_BACKEND", "gcs")])).unwrap_err();
        assert_eq!(err.name, "STORAGE_BACKEND");
        let s = Settings::from_map(&vars(&[
            ("STORAGE_BACKEND", "S3"),
            ("S3_BUCKET", "media"),
            ("S3_ENDPOINT", "http://127.0.0.1:9000"),
        ]))
        .unwrap();
        assert_eq!(
            s.storage_backend,
            StorageBackend::S3 {
                bucket: "media".into(),
                region: None,
                endpoint: Some("http://127.0.0.1:9000".into()),
            }
        );
    }

    #[test]
    fn the_event_buffer_defaults_to_ten_thousand_and_may_be_zero_but_not_huge() {
        let s = Settings::from_map(&HashMap::new()).unwrap();
        assert_eq!(s.event_buffer_size, 10_000);
        let s = Settings::from_map(&vars(&[("EVENT_BUFFER_SIZE", "0")])).unwrap();
        assert_eq!(s.event_buffer_size, 0);
        for bad in ["-1", "lots", "1000001"] {
            let err = Settings::from_map(&vars(&[("EVENT_BUFFER_SIZE", bad)])).unwrap_err();
            assert_eq!(err.name, "EVENT_BUFFER_SIZE");
        }
    }

    #[test]
    fn nats_url_takes_a_comma_separated_list_and_a_bad_element_names_the_variable() {
        let s = Settings::from_map(&vars(&[(
            "NATS_URL",
            "nats://a:4222, nats://u:secret@b:4223 ,nats://c:4224",
        )]))
        .unwrap();
        let ports: Vec<u16> = s.nats_servers.addrs().iter().map(|a| a.port()).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert!(s.nats_servers.has_credentials());
        for bad in [
            "nats://a:4222,,nats://b:4222",
            "nats://a:4222,redis://u:secret@b:6379",
            "nats://a:4222,nats://b:99999",
        ] {
            let err = Settings::from_map(&vars(&[("NATS_URL", bad)])).unwrap_err();
            assert_eq!(err.name, "NATS_URL", "{bad}");
            assert!(!err.to_string().contains("secret"));
        }
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = Settings::from_map(&vars(&[("PORT", ""), ("JWT_SECRET", "  ")])).unwrap();
        assert_eq!(s.port, 8082);
        assert!(s.auth.jwt_secret.is_none());
    }

    #[test]
    fn the_debug_output_shows_no_credential() {
        let s = Settings::from_map(&vars(&[
            (
                "DATABASE_URL",
                "postgres://app:db-pass-1@db.internal:5432/retich",
            ),
            ("NATS_URL", "nats://events:nats-pass-2@nats.internal:4222"),
            (
                "REDIS_URL",
                "redis://cache:redis-pass-3@redis.internal:6379",
            ),
            ("JWT_SECRET", "jwt-secret-4"),
        ]))
        .unwrap();
        let debug = format!("{s:?}");
        for secret in ["db-pass-1", "nats-pass-2", "redis-pass-3", "jwt-secret-4"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("REDACTED"), "{debug}");
    }

    #[test]
    fn an_error_is_one_line_with_the_variable_and_the_parsers_reason() {
        let err = Settings::from_map(&vars(&[("PORT", " abc ")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid configuration: PORT: cannot parse "abc""#
        );
        let err = Settings::from_map(&vars(&[("RATE_LIMIT_MESSAGES_BURST", "-1")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid configuration: RATE_LIMIT_MESSAGES_BURST: cannot parse "-1""#
        );
        let err = Settings::from_map(&vars(&[("AUTO_MIGRATE", "Maybe")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid configuration: AUTO_MIGRATE: expected true or false, got "maybe""#
        );
    }
}
