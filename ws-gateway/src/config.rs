//! Settings from the environment: every variable the gateway reads, its default and its check
//! (the operator's list: `docs/deployment.md`, "Environment variables"; those clients notice:
//! `docs/websocket.md`, "Configuration that affects clients").
//!
//! [`Variables`] declares each variable once, as a clap argument with its `env` name, default and
//! value parser; [`Settings`] is what the rest of the gateway uses, built from it with the checks
//! and values that involve several variables. Every variable has a default pointing at the
//! standard local ports, so the gateway starts with no configuration at all. Values are trimmed
//! and an empty value counts as unset. A value that cannot be used is a [`ConfigError`] naming
//! the variable; `main` prints it on one line and exits with code 2.
//!
//! The variables come from a lookup function, not from clap's own reading of the process
//! environment: [`shared_ops::config::read_variables`] turns each declared variable the lookup finds into a
//! `--<name>=<value>` argument for clap. The binary looks up the process environment, tests their
//! own map, and both go through the same parsers; the process's command line plays no part.
//!
//! Credentials (`DATABASE_URL`, `NATS_URL`, `REDIS_URL`, `JWT_SECRET`) are [`SecretString`]s: the
//! `Debug` of [`Settings`] shows them as `[REDACTED]` and they have no `Display`; the code that
//! connects calls `expose_secret()`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `HOST` | `0.0.0.0` | listen address |
//! | `PORT` | 8085 | listen port for `/ws`, `/health`, `/ready`, `/metrics` |
//! | `LOG_LEVEL` | `info` | a tracing `EnvFilter` directive |
//! | `LOG_FORMAT` | `json` | `json` or `text` |
//! | `NATS_URL` | `nats://127.0.0.1:4222` | one server, or a comma-separated list (a cluster) |
//! | `NATS_SUBJECT_PREFIX` | `retich` | first token(s) of every subject |
//! | `REDIS_URL` | `redis://127.0.0.1:6379` | presence and typing: `redis://`, `rediss://`, `redis-cluster://host:port?node=host:port&…`, `redis-sentinel://…`, `redis+unix://` ([`shared_redis::check_url`]) |
//! | `REDIS_KEY_PREFIX` | `retich` | first part of every Redis key |
//! | `DATABASE_URL` | `postgres://postgres:postgres@127.0.0.1:5432/retich` | read-only use |
//! | `DATABASE_MAX_CONNECTIONS` | 10 | pool size |
//! | `AUTH_MODE` | `jwt` | `jwt` or `header` |
//! | `JWT_SECRET`, `JWKS_URL`, `JWT_ISSUER`, `JWT_AUDIENCE` | unset | token verification (`docs/api.md`, "Identity") |
//! | `ALLOWED_ORIGINS` | unset (any) | comma-separated exact origins, `*` = any |
//! | `PRESENCE_MAX_MEMBERS` | 100 | largest conversation that propagates presence |
//! | `WS_SEND_QUEUE` | 256 | per-socket outbound queue, in events |
//! | `WS_DRAIN_SECONDS` | 20 | window over which sockets are closed on SIGTERM |
//! | `WS_RESYNC_WINDOW_MS` | 2000 | window over which the sockets concerned receive `resync` |
//! | `TYPING_RATE_PER_SEC`, `TYPING_BURST` | 2, 4 | typing relay limit per (user, conversation) |
//! | `GATEWAY_ID` | random | this process in the fleet-wide presence store |
//! | `MAX_CONNECTIONS` | open-files limit − 256 | concurrent TCP connections (semaphore) |
//! | `PRESENCE_HEARTBEAT_SECONDS` | 10 | how often this gateway proves it is alive |
//! | `PRESENCE_EXPIRY_SECONDS` | 30 | a gateway silent this long is dead; its users are reaped |
//! | `WS_PING_SECONDS` | 20 | keep-alive ping interval |
//! | `WS_IDLE_SECONDS` | 60 | close (1001) a socket silent this long |
//!
//! With the production presence defaults a SIGKILLed gateway's users are offline at most
//! expiry + heartbeat = 40 s after its last heartbeat (`docs/websocket.md`, "Presence", promises
//! never more than 60 s); tests shorten both to run in seconds.

use std::{fmt::Display, str::FromStr, time::Duration};

use clap::Parser;
use secrecy::{ExposeSecret, SecretString};
use shared_auth::JwtConfig;
use shared_ops::config::{InvalidVariable, read_variables};
use shared_proto::nats::NatsServers;

/// A variable that could not be used; `main` prints it as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}: {reason}")]
pub struct ConfigError {
    /// The variable, e.g. `PORT`.
    pub name: String,
    /// What is wrong, without the value when it may hold a credential.
    pub reason: String,
}

impl ConfigError {
    fn new(name: &str, reason: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

pub use shared_ops::LogFormat;

/// How the user of a handshake is identified (`docs/websocket.md`, "Identity").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A JWT from `Authorization: Bearer` or `?token=`.
    Jwt,
    /// The UUID in `X-User-ID`, set by a trusted API gateway.
    Header,
}

/// Everything the gateway reads from its environment. Its `Debug` shows no credential.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub log_level: String,
    pub log_format: LogFormat,
    /// `NATS_URL` as written: one server or a comma-separated list (may hold credentials).
    pub nats_url: SecretString,
    /// The servers of `NATS_URL`, checked, and the credentials written in them.
    pub nats_servers: NatsServers,
    pub subject_prefix: String,
    /// May hold a password.
    pub redis_url: SecretString,
    pub redis_prefix: String,
    /// A `postgres://` URL; it may hold a password.
    pub database_url: SecretString,
    pub database_max_connections: u32,
    pub auth_mode: AuthMode,
    /// HS256 secret.
    pub jwt_secret: Option<SecretString>,
    pub jwks_url: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// Lowercased allowed origins; `None` accepts every origin.
    pub allowed_origins: Option<Vec<String>>,
    pub presence_max_members: usize,
    pub send_queue: usize,
    pub drain_window: Duration,
    /// Window over which the sockets concerned receive `resync` (`docs/websocket.md`, "When the
    /// server asks for a resync").
    pub resync_window: Duration,
    pub typing_rate_per_sec: f64,
    pub typing_burst: u32,
    pub gateway_id: String,
    /// `None`: derived from the open-files limit at start.
    pub max_connections: Option<usize>,
    pub presence_heartbeat: Duration,
    pub presence_expiry: Duration,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    /// A write blocked this long closes the socket with 1013 (`docs/websocket.md`, "Keep-alive,
    /// limits and close codes").
    pub write_timeout: Duration,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests), which returns a
    /// variable's value if it is set.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars: Variables = read_variables(lookup)
            .map_err(|InvalidVariable { name, reason }| ConfigError::new(&name, reason))?;
        if vars.presence_expiry <= vars.presence_heartbeat {
            return Err(ConfigError::new(
                "PRESENCE_EXPIRY_SECONDS",
                "must be longer than PRESENCE_HEARTBEAT_SECONDS",
            ));
        }
        Ok(Self {
            host: vars.host,
            port: vars.port,
            log_level: vars.log_level,
            log_format: vars.log_format,
            nats_url: vars.nats_url.written,
            nats_servers: vars.nats_url.servers,
            subject_prefix: vars.subject_prefix,
            redis_url: vars.redis_url,
            redis_prefix: vars.redis_prefix,
            database_url: vars.database_url,
            database_max_connections: vars.database_max_connections,
            auth_mode: vars.auth_mode,
            jwt_secret: vars.jwt_secret,
            jwks_url: vars.jwks_url,
            jwt_issuer: vars.jwt_issuer,
            jwt_audience: vars.jwt_audience,
            allowed_origins: vars.allowed_origins.as_deref().and_then(allowed_origins),
            presence_max_members: vars.presence_max_members,
            send_queue: vars.send_queue,
            drain_window: vars.drain_window,
            resync_window: vars.resync_window,
            typing_rate_per_sec: vars.typing_rate_per_sec,
            typing_burst: vars.typing_burst,
            gateway_id: vars
                .gateway_id
                .unwrap_or_else(|| format!("gw-{}", uuid::Uuid::new_v4().simple())),
            max_connections: vars.max_connections,
            presence_heartbeat: vars.presence_heartbeat,
            presence_expiry: vars.presence_expiry,
            ping_interval: vars.ping_interval,
            idle_timeout: vars.idle_timeout,
            write_timeout: Duration::from_secs(10),
        })
    }

    /// The `host:port` to bind.
    pub fn bind_address(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The token verifier's configuration: where the JWT secret leaves its wrapper.
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

/// Every variable the gateway reads: its name (`env`), default and value parser. A parser's
/// error becomes the reason of a [`ConfigError`] naming the variable.
#[derive(Parser)]
#[command(name = "ws-gateway", disable_help_flag = true)]
struct Variables {
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: String,
    #[arg(long, env = "PORT", default_value = "8085", value_parser = number::<u16>)]
    port: u16,
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = log_level)]
    log_level: String,
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = log_format)]
    log_format: LogFormat,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222", value_parser = nats_url)]
    nats_url: NatsUrl,
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "retich", value_parser = subject_prefix)]
    subject_prefix: String,
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379", value_parser = redis_url)]
    redis_url: SecretString,
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "retich", value_parser = redis_prefix)]
    redis_prefix: String,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/retich",
        value_parser = database_url
    )]
    database_url: SecretString,
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value = "10", value_parser = positive::<u32>)]
    database_max_connections: u32,
    #[arg(long, env = "AUTH_MODE", default_value = "jwt", value_parser = auth_mode)]
    auth_mode: AuthMode,
    #[arg(long, env = "JWT_SECRET", value_parser = secret)]
    jwt_secret: Option<SecretString>,
    #[arg(long, env = "JWKS_URL", value_parser = jwks_url)]
    jwks_url: Option<String>,
    #[arg(long, env = "JWT_ISSUER")]
    jwt_issuer: Option<String>,
    #[arg(long, env = "JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Read by [`allowed_origins`].
    #[arg(long, env = "ALLOWED_ORIGINS")]
    allowed_origins: Option<String>,
    #[arg(long, env = "PRESENCE_MAX_MEMBERS", default_value = "100", value_parser = positive::<usize>)]
    presence_max_members: usize,
    #[arg(long, env = "WS_SEND_QUEUE", default_value = "256", value_parser = positive::<usize>)]
    send_queue: usize,
    #[arg(long, env = "WS_DRAIN_SECONDS", default_value = "20", value_parser = seconds)]
    drain_window: Duration,
    #[arg(long, env = "WS_RESYNC_WINDOW_MS", default_value = "2000", value_parser = milliseconds)]
    resync_window: Duration,
    #[arg(long, env = "TYPING_RATE_PER_SEC", default_value = "2", value_parser = positive_rate)]
    typing_rate_per_sec: f64,
    #[arg(long, env = "TYPING_BURST", default_value = "4", value_parser = positive::<u32>)]
    typing_burst: u32,
    /// Unset: a random `gw-<uuid>`.
    #[arg(long, env = "GATEWAY_ID", value_parser = gateway_id)]
    gateway_id: Option<String>,
    #[arg(long, env = "MAX_CONNECTIONS", value_parser = positive::<usize>)]
    max_connections: Option<usize>,
    #[arg(long, env = "PRESENCE_HEARTBEAT_SECONDS", default_value = "10", value_parser = positive_seconds)]
    presence_heartbeat: Duration,
    /// Must be longer than the heartbeat (checked by [`Settings::from_lookup`]).
    #[arg(long, env = "PRESENCE_EXPIRY_SECONDS", default_value = "30", value_parser = positive_seconds)]
    presence_expiry: Duration,
    #[arg(long, env = "WS_PING_SECONDS", default_value = "20", value_parser = positive_seconds)]
    ping_interval: Duration,
    #[arg(long, env = "WS_IDLE_SECONDS", default_value = "60", value_parser = positive_seconds)]
    idle_timeout: Duration,
}

/// `NATS_URL` as written (it may hold credentials) and its checked servers.
#[derive(Clone)]
struct NatsUrl {
    written: SecretString,
    servers: NatsServers,
}

fn number<T: FromStr>(raw: &str) -> Result<T, String>
where
    T::Err: Display,
{
    raw.parse().map_err(|e| format!("{raw:?}: {e}"))
}

/// A number of at least 1.
fn positive<T>(raw: &str) -> Result<T, String>
where
    T: FromStr + PartialOrd + Default,
    T::Err: Display,
{
    let value: T = number(raw)?;
    if value <= T::default() {
        return Err("must be at least 1".into());
    }
    Ok(value)
}

fn seconds(raw: &str) -> Result<Duration, String> {
    number(raw).map(Duration::from_secs)
}

fn positive_seconds(raw: &str) -> Result<Duration, String> {
    positive(raw).map(Duration::from_secs)
}

fn milliseconds(raw: &str) -> Result<Duration, String> {
    number(raw).map(Duration::from_millis)
}

fn positive_rate(raw: &str) -> Result<f64, String> {
    let rate: f64 = number(raw)?;
    if !(rate.is_finite() && rate > 0.0) {
        return Err("expected a positive number".into());
    }
    Ok(rate)
}

fn secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(raw.into())
}

fn auth_mode(raw: &str) -> Result<AuthMode, String> {
    match raw.to_ascii_lowercase().as_str() {
        "jwt" => Ok(AuthMode::Jwt),
        "header" => Ok(AuthMode::Header),
        other => Err(format!("expected jwt or header, got {other:?}")),
    }
}

fn log_format(raw: &str) -> Result<LogFormat, String> {
    match raw.to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "text" => Ok(LogFormat::Text),
        other => Err(format!("expected json or text, got {other:?}")),
    }
}

fn log_level(raw: &str) -> Result<String, String> {
    shared_ops::telemetry::check_level(raw)?;
    Ok(raw.to_owned())
}

fn subject_prefix(raw: &str) -> Result<String, String> {
    shared_proto::subjects::validate_prefix(raw).map_err(|e| e.to_string())?;
    Ok(raw.to_owned())
}

fn nats_url(raw: &str) -> Result<NatsUrl, String> {
    let servers = raw.parse::<NatsServers>().map_err(|e| e.to_string())?;
    Ok(NatsUrl {
        written: raw.into(),
        servers,
    })
}

fn redis_url(raw: &str) -> Result<SecretString, String> {
    shared_redis::check_url(raw)?;
    Ok(raw.into())
}

fn redis_prefix(raw: &str) -> Result<String, String> {
    if raw.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace".into());
    }
    Ok(raw.to_owned())
}

/// A `postgres://` or `postgresql://` URL the driver accepts.
fn database_url(raw: &str) -> Result<SecretString, String> {
    if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
        return Err("expected a postgres:// or postgresql:// URL".into());
    }
    raw.parse::<sqlx::postgres::PgConnectOptions>()
        .map_err(|e| e.to_string())?;
    Ok(raw.into())
}

fn jwks_url(raw: &str) -> Result<String, String> {
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        return Err("expected an http(s) URL".into());
    }
    Ok(raw.to_owned())
}

fn gateway_id(raw: &str) -> Result<String, String> {
    if raw.chars().any(|c| c.is_whitespace() || c == ':') {
        return Err("must not contain whitespace or ':'".into());
    }
    Ok(raw.to_owned())
}

/// `ALLOWED_ORIGINS` as a lowercased list; `None` (every origin) when the list holds `*` or
/// nothing but blanks.
fn allowed_origins(raw: &str) -> Option<Vec<String>> {
    let origins: Vec<String> = raw
        .split(',')
        .map(|o| o.trim().to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .collect();
    (!origins.is_empty() && !origins.iter().any(|o| o == "*")).then_some(origins)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn no_configuration_gives_the_documented_defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.port, 8085);
        assert_eq!(s.subject_prefix, "retich");
        assert_eq!(s.redis_prefix, "retich");
        assert_eq!(s.auth_mode, AuthMode::Jwt);
        assert_eq!(s.send_queue, 256);
        assert_eq!(s.drain_window, Duration::from_secs(20));
        assert_eq!(s.resync_window, Duration::from_secs(2));
        assert_eq!(s.presence_max_members, 100);
        assert_eq!(s.typing_burst, 4);
        assert!(s.allowed_origins.is_none());
        assert!(s.gateway_id.starts_with("gw-"));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (name, value) in [
            ("PORT", "http"),
            ("AUTH_MODE", "none"),
            ("LOG_FORMAT", "xml"),
            ("WS_SEND_QUEUE", "0"),
            ("NATS_SUBJECT_PREFIX", "a.*"),
            ("REDIS_URL", "nope://x"),
            ("DATABASE_URL", "mysql://x"),
            ("TYPING_RATE_PER_SEC", "-1"),
            ("PRESENCE_EXPIRY_SECONDS", "5"),
        ] {
            let vars = [(name, value), ("PRESENCE_HEARTBEAT_SECONDS", "10")];
            let err = settings(&vars)
                .err()
                .unwrap_or_else(|| panic!("{name}={value}"));
            assert_eq!(err.name, name, "{name}={value}: {err}");
        }
    }

    #[test]
    fn nats_url_takes_a_comma_separated_list_and_a_bad_element_names_the_variable() {
        let s = settings(&[(
            "NATS_URL",
            "nats://a:4222 , nats://b:4223,  nats://token@c:4224",
        )])
        .unwrap();
        let ports: Vec<u16> = s.nats_servers.addrs().iter().map(|a| a.port()).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert!(s.nats_servers.has_credentials());
        for bad in [
            "nats://a:4222, ,nats://b:4222",
            "nats://a:4222,http://u:secret@b:80",
            "nats://a:4222,nats://b:port",
        ] {
            let err = settings(&[("NATS_URL", bad)]).expect_err(bad);
            assert_eq!(err.name, "NATS_URL", "{bad}");
            assert!(!err.to_string().contains("secret"));
        }
    }

    #[test]
    fn origins_are_lowercased_and_a_star_allows_all() {
        let s = settings(&[("ALLOWED_ORIGINS", "https://A.example, http://b:8080")]).unwrap();
        assert_eq!(
            s.allowed_origins.unwrap(),
            vec!["https://a.example", "http://b:8080"]
        );
        let s = settings(&[("ALLOWED_ORIGINS", "https://a.example,*")]).unwrap();
        assert!(s.allowed_origins.is_none());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = settings(&[("PORT", ""), ("JWT_SECRET", "  ")]).unwrap();
        assert_eq!(s.port, 8085);
        assert!(s.jwt_secret.is_none());
    }

    #[test]
    fn the_debug_output_shows_no_credential() {
        let s = settings(&[
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
        ])
        .unwrap();
        let debug = format!("{s:?}");
        for secret in ["db-pass-1", "nats-pass-2", "redis-pass-3", "jwt-secret-4"] {
            assert!(!debug.contains(secret), "{secret} in {debug}");
        }
        assert!(debug.contains("REDACTED"), "{debug}");
    }

    #[test]
    fn an_error_is_one_line_with_the_variable_and_the_parsers_reason() {
        let err = settings(&[("PORT", " eighty ")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid PORT: "eighty": invalid digit found in string"#
        );
        let err = settings(&[("WS_SEND_QUEUE", "-1")]).unwrap_err();
        assert_eq!(err.name, "WS_SEND_QUEUE");
        let err = settings(&[("MAX_CONNECTIONS", "0")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid MAX_CONNECTIONS: must be at least 1"
        );
    }
}
