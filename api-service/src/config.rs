//! Configuration from the environment (architecture.md, "Configuration"). Every variable has a
//! default pointing at the standard local ports, so a developer runs with no configuration.
//! Parsing fails with one readable line naming the variable; it never panics.

use std::{collections::HashMap, time::Duration};

use shared_proto::nats::{NatsServers, NatsServersError};
use thiserror::Error;

/// How callers are identified (http-api.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// `Authorization: Bearer` / `?token=` JWT, verified on every request.
    Jwt,
    /// `X-User-ID` trusted as set by the ReTiCh API gateway.
    Header,
}

pub use shared_ops::LogFormat;

/// Where attachment bytes are stored (`STORAGE_BACKEND`). Credentials for the cloud backends
/// are never part of the settings (which are `Debug`): they are read by the object-store client
/// from the standard variables of each provider (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, web identity / instance metadata; `AZURE_STORAGE_ACCOUNT_KEY`,
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

impl StorageBackend {
    /// Reads `STORAGE_BACKEND` and the variables of the chosen backend.
    fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            env.get(name)
                .ok_or_else(|| bad(name, "required by this STORAGE_BACKEND"))
        };
        match env
            .string("STORAGE_BACKEND", "local")
            .to_ascii_lowercase()
            .as_str()
        {
            "local" => Ok(Self::Local),
            "s3" => {
                let endpoint = env.get("S3_ENDPOINT");
                if let Some(url) = &endpoint {
                    check_url("S3_ENDPOINT", url, &["http", "https"])?;
                }
                Ok(Self::S3 {
                    bucket: required("S3_BUCKET")?,
                    region: env.get("S3_REGION"),
                    endpoint,
                })
            }
            "azure" => Ok(Self::Azure {
                account: required("AZURE_STORAGE_ACCOUNT")?,
                container: required("AZURE_CONTAINER")?,
            }),
            other => Err(bad(
                "STORAGE_BACKEND",
                format!("expected local, s3 or azure, got {other:?}"),
            )),
        }
    }
}

/// Identity settings shared by the REST and WebSocket sides.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// HS256 secret; never logged.
    pub jwt_secret: Option<String>,
    pub jwks_url: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
}

/// Everything api-service reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Listen port; 0 picks a free one (tests).
    pub port: u16,
    pub host: String,
    pub log_level: String,
    pub log_format: LogFormat,
    pub database_url: String,
    pub database_max_connections: u32,
    /// Message-send batch writers (`ingest`): each holds at most one pool connection at a time.
    pub send_writers: usize,
    /// `NATS_URL` as written: one server or a comma-separated list (may hold credentials).
    pub nats_url: String,
    /// The servers of `NATS_URL`, checked, and the credentials written in them.
    pub nats_servers: NatsServers,
    /// First token of every NATS subject (`<prefix>.conv.<id>`); tests use their own.
    pub nats_subject_prefix: String,
    /// Events kept while NATS is unreachable, published when it is back (events.rs); 0 keeps
    /// none.
    pub event_buffer_size: usize,
    pub redis_url: String,
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
    pub name: &'static str,
    pub reason: String,
}

fn bad(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        name,
        reason: reason.into(),
    }
}

/// Reads one variable, treating an empty value as unset.
struct Env<'a>(&'a HashMap<String, String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    fn parse<T: std::str::FromStr>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| bad(name, format!("cannot parse {v:?}"))),
        }
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(bad(name, format!("expected true or false, got {v:?}"))),
        }
    }
}

/// Checks that `url` has one of the given schemes, without echoing credentials in errors.
pub fn check_url(name: &'static str, url: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme {
        Some(s) if schemes.contains(&s.as_str()) => Ok(()),
        _ => Err(bad(
            name,
            format!(
                "expected a URL starting with {}",
                schemes.join("://, ") + "://"
            ),
        )),
    }
}

impl AuthSettings {
    /// Reads `AUTH_MODE`, `JWT_*`, `JWKS_URL`.
    fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let mode = match env.string("AUTH_MODE", "jwt").to_ascii_lowercase().as_str() {
            "jwt" => AuthMode::Jwt,
            "header" => AuthMode::Header,
            other => {
                return Err(bad(
                    "AUTH_MODE",
                    format!("expected jwt or header, got {other:?}"),
                ));
            }
        };
        let jwks_url = env.get("JWKS_URL");
        if let Some(url) = &jwks_url {
            check_url("JWKS_URL", url, &["http", "https"])?;
        }
        Ok(Self {
            mode,
            jwt_secret: env.get("JWT_SECRET"),
            jwks_url,
            jwt_issuer: env.get("JWT_ISSUER"),
            jwt_audience: env.get("JWT_AUDIENCE"),
        })
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads settings from a map of variables (the environment, or a test's own map).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        let env = Env(vars);
        let database_url = env.string(
            "DATABASE_URL",
            "postgres://postgres:postgres@127.0.0.1:5432/retich",
        );
        check_url("DATABASE_URL", &database_url, &["postgres", "postgresql"])?;
        let nats_url = env.string("NATS_URL", "nats://127.0.0.1:4222");
        let nats_servers: NatsServers = nats_url
            .parse()
            .map_err(|e: NatsServersError| bad("NATS_URL", e.to_string()))?;
        let redis_url = env.string("REDIS_URL", "redis://127.0.0.1:6379");
        shared_redis::check_url(&redis_url).map_err(|e| bad("REDIS_URL", e))?;
        let nats_subject_prefix = env.string("NATS_SUBJECT_PREFIX", "retich");
        shared_proto::subjects::validate_prefix(&nats_subject_prefix)
            .map_err(|e| bad("NATS_SUBJECT_PREFIX", e.to_string()))?;
        let user_service_url = env.get("USER_SERVICE_URL");
        if let Some(url) = &user_service_url {
            check_url("USER_SERVICE_URL", url, &["http", "https"])?;
        }
        let log_format = match env
            .string("LOG_FORMAT", "json")
            .to_ascii_lowercase()
            .as_str()
        {
            "json" => LogFormat::Json,
            "text" | "pretty" => LogFormat::Text,
            other => {
                return Err(bad(
                    "LOG_FORMAT",
                    format!("expected json or text, got {other:?}"),
                ));
            }
        };
        let rate_limit_per_sec: f64 = env.parse("RATE_LIMIT_MESSAGES_PER_SEC", 20.0)?;
        if !(rate_limit_per_sec.is_finite() && rate_limit_per_sec > 0.0) {
            return Err(bad(
                "RATE_LIMIT_MESSAGES_PER_SEC",
                "must be a positive number",
            ));
        }
        let rate_limit_burst: u32 = env.parse("RATE_LIMIT_MESSAGES_BURST", 40)?;
        if rate_limit_burst == 0 {
            return Err(bad("RATE_LIMIT_MESSAGES_BURST", "must be at least 1"));
        }
        let event_buffer_size: usize = env.parse("EVENT_BUFFER_SIZE", 10_000)?;
        if event_buffer_size > 1_000_000 {
            return Err(bad("EVENT_BUFFER_SIZE", "must be between 0 and 1000000"));
        }
        let send_writers: usize = env.parse("SEND_WRITERS", 1)?;
        if !(1..=64).contains(&send_writers) {
            return Err(bad("SEND_WRITERS", "must be between 1 and 64"));
        }
        Ok(Self {
            port: env.parse("PORT", 8082)?,
            host: env.string("HOST", "0.0.0.0"),
            log_level: env.string("LOG_LEVEL", "info"),
            log_format,
            database_url,
            database_max_connections: env.parse("DATABASE_MAX_CONNECTIONS", 32)?,
            send_writers,
            nats_url,
            nats_servers,
            nats_subject_prefix,
            event_buffer_size,
            redis_url,
            redis_key_prefix: env.string("REDIS_KEY_PREFIX", "retich"),
            auth: AuthSettings::from_env(&env)?,
            auto_migrate: env.bool("AUTO_MIGRATE", false)?,
            user_service_url,
            storage_backend: StorageBackend::from_env(&env)?,
            upload_dir: env.string("UPLOAD_DIR", "./uploads"),
            demo_dir: env.get("DEMO_DIR"),
            upload_base_url: env
                .get("UPLOAD_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_owned()),
            rate_limit_per_sec,
            rate_limit_burst,
            partition_months_ahead: env.parse("PARTITION_MONTHS_AHEAD", 3)?,
            partition_check_interval: Duration::from_secs(
                env.parse("PARTITION_CHECK_SECONDS", 3600)?,
            ),
            shutdown_timeout: Duration::from_secs(env.parse("SHUTDOWN_TIMEOUT_SECONDS", 25)?),
        })
    }
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
        assert!(s.database_url.contains("127.0.0.1:5432"));
        assert_eq!(s.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(s.redis_url, "redis://127.0.0.1:6379");
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
            assert_eq!(s.redis_url, url);
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
}
