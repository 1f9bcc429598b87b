//! Settings from the environment (websocket.md §12, architecture.md "Configuration").
//!
//! Every variable has a default pointing at the standard local ports, so the gateway starts with
//! no configuration at all. An empty value counts as unset. A value that does not parse is a
//! [`ConfigError`] naming the variable; `main` prints it on one line and exits with code 2.
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
//! | `JWT_SECRET`, `JWKS_URL`, `JWT_ISSUER`, `JWT_AUDIENCE` | unset | http-api.md §2.1 |
//! | `ALLOWED_ORIGINS` | unset (any) | comma-separated exact origins, `*` = any |
//! | `PRESENCE_MAX_MEMBERS` | 100 | largest conversation that propagates presence |
//! | `WS_SEND_QUEUE` | 256 | per-socket outbound queue, in events |
//! | `WS_DRAIN_SECONDS` | 20 | window over which sockets are closed on SIGTERM |
//! | `TYPING_RATE_PER_SEC`, `TYPING_BURST` | 2, 4 | typing relay limit per (user, conversation) |
//! | `GATEWAY_ID` | random | this process in the fleet-wide presence store |
//! | `MAX_CONNECTIONS` | open-files limit − 256 | concurrent TCP connections (semaphore) |
//! | `PRESENCE_HEARTBEAT_SECONDS` | 10 | how often this gateway proves it is alive |
//! | `PRESENCE_EXPIRY_SECONDS` | 30 | a gateway silent this long is dead; its users are reaped |
//! | `WS_PING_SECONDS` | 20 | keep-alive ping interval |
//! | `WS_IDLE_SECONDS` | 60 | close (1001) a socket silent this long |
//!
//! With the production presence defaults a SIGKILLed gateway's users are offline at most
//! expiry + heartbeat = 40 s after its last heartbeat (websocket.md §9 asks for 60 s); tests
//! shorten both to run in seconds.

use std::{fmt, time::Duration};

use shared_auth::JwtConfig;
use shared_proto::nats::{NatsServers, NatsServersError};

/// A variable that could not be used; `main` prints it as one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

impl ConfigError {
    fn new(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            reason: reason.into(),
        }
    }
}

pub use shared_ops::LogFormat;

/// How the user of a handshake is identified (websocket.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A JWT from `Authorization: Bearer` or `?token=`.
    Jwt,
    /// The UUID in `X-User-ID`, set by a trusted API gateway.
    Header,
}

/// Everything the gateway reads from its environment.
#[derive(Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub log_level: String,
    pub log_format: LogFormat,
    /// `NATS_URL` as written: one server or a comma-separated list (may hold credentials).
    pub nats_url: String,
    /// The servers of `NATS_URL`, checked, and the credentials written in them.
    pub nats_servers: NatsServers,
    pub subject_prefix: String,
    pub redis_url: String,
    pub redis_prefix: String,
    pub database_url: String,
    pub database_max_connections: u32,
    pub auth_mode: AuthMode,
    pub jwt: JwtConfig,
    /// Lowercased allowed origins; `None` accepts every origin.
    pub allowed_origins: Option<Vec<String>>,
    pub presence_max_members: usize,
    pub send_queue: usize,
    pub drain_window: Duration,
    /// Window over which the sockets concerned receive `resync` (websocket.md §10).
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
    /// A write blocked this long closes the socket with 1013 (websocket.md §7).
    pub write_timeout: Duration,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so the JWT secret and URLs with passwords never reach a log line.
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("subject_prefix", &self.subject_prefix)
            .field("redis_prefix", &self.redis_prefix)
            .field("auth_mode", &self.auth_mode)
            .field("gateway_id", &self.gateway_id)
            .field("nats_servers", &self.nats_servers)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let auth_mode = match env.string("AUTH_MODE", "jwt").to_ascii_lowercase().as_str() {
            "jwt" => AuthMode::Jwt,
            "header" => AuthMode::Header,
            other => {
                return Err(ConfigError::new(
                    "AUTH_MODE",
                    format!("expected jwt or header, got {other:?}"),
                ));
            }
        };
        let log_format = match env
            .string("LOG_FORMAT", "json")
            .to_ascii_lowercase()
            .as_str()
        {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                return Err(ConfigError::new(
                    "LOG_FORMAT",
                    format!("expected json or text, got {other:?}"),
                ));
            }
        };
        let log_level = env.string("LOG_LEVEL", "info");
        shared_ops::telemetry::check_level(&log_level)
            .map_err(|e| ConfigError::new("LOG_LEVEL", e))?;

        let subject_prefix = env.string("NATS_SUBJECT_PREFIX", "retich");
        shared_proto::subjects::validate_prefix(&subject_prefix)
            .map_err(|e| ConfigError::new("NATS_SUBJECT_PREFIX", e.to_string()))?;
        let nats_url = env.string("NATS_URL", "nats://127.0.0.1:4222");
        let nats_servers: NatsServers = nats_url
            .parse()
            .map_err(|e: NatsServersError| ConfigError::new("NATS_URL", e.to_string()))?;

        let redis_url = env.string("REDIS_URL", "redis://127.0.0.1:6379");
        shared_redis::check_url(&redis_url).map_err(|e| ConfigError::new("REDIS_URL", e))?;
        let redis_prefix = env.string("REDIS_KEY_PREFIX", "retich");
        if redis_prefix.chars().any(char::is_whitespace) {
            return Err(ConfigError::new(
                "REDIS_KEY_PREFIX",
                "must not contain whitespace",
            ));
        }

        let database_url = env.string(
            "DATABASE_URL",
            "postgres://postgres:postgres@127.0.0.1:5432/retich",
        );
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                "DATABASE_URL",
                "expected a postgres:// or postgresql:// URL",
            ));
        }
        database_url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(|e| ConfigError::new("DATABASE_URL", e.to_string()))?;

        let allowed_origins = env.get("ALLOWED_ORIGINS").and_then(|raw| {
            let origins: Vec<String> = raw
                .split(',')
                .map(|o| o.trim().to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect();
            // `*` anywhere in the list allows every origin; an all-blank list is "unset".
            (!origins.is_empty() && !origins.iter().any(|o| o == "*")).then_some(origins)
        });

        let jwks_url = env.get("JWKS_URL");
        if jwks_url
            .as_deref()
            .is_some_and(|url| !(url.starts_with("http://") || url.starts_with("https://")))
        {
            return Err(ConfigError::new("JWKS_URL", "expected an http(s) URL"));
        }

        let typing_rate_per_sec: f64 = env.parse("TYPING_RATE_PER_SEC", 2.0)?;
        if !(typing_rate_per_sec.is_finite() && typing_rate_per_sec > 0.0) {
            return Err(ConfigError::new(
                "TYPING_RATE_PER_SEC",
                "expected a positive number",
            ));
        }
        let presence_heartbeat = env.seconds("PRESENCE_HEARTBEAT_SECONDS", 10, 1)?;
        let presence_expiry = env.seconds("PRESENCE_EXPIRY_SECONDS", 30, 1)?;
        if presence_expiry <= presence_heartbeat {
            return Err(ConfigError::new(
                "PRESENCE_EXPIRY_SECONDS",
                "must be longer than PRESENCE_HEARTBEAT_SECONDS",
            ));
        }
        let ping_interval = env.seconds("WS_PING_SECONDS", 20, 1)?;
        let idle_timeout = env.seconds("WS_IDLE_SECONDS", 60, 1)?;

        Ok(Self {
            host: env.string("HOST", "0.0.0.0"),
            port: env.parse("PORT", 8085u16)?,
            log_level,
            log_format,
            nats_url,
            nats_servers,
            subject_prefix,
            redis_url,
            redis_prefix,
            database_url,
            database_max_connections: env.positive("DATABASE_MAX_CONNECTIONS", 10u32)?,
            auth_mode,
            jwt: JwtConfig {
                secret: env.get("JWT_SECRET"),
                jwks_url,
                issuer: env.get("JWT_ISSUER"),
                audience: env.get("JWT_AUDIENCE"),
            },
            allowed_origins,
            presence_max_members: env.positive("PRESENCE_MAX_MEMBERS", 100usize)?,
            send_queue: env.positive("WS_SEND_QUEUE", 256usize)?,
            drain_window: Duration::from_secs(env.parse("WS_DRAIN_SECONDS", 20u64)?),
            resync_window: Duration::from_millis(env.parse("WS_RESYNC_WINDOW_MS", 2000u64)?),
            typing_rate_per_sec,
            typing_burst: env.positive("TYPING_BURST", 4u32)?,
            gateway_id: match env.get("GATEWAY_ID") {
                Some(id) if id.chars().any(|c| c.is_whitespace() || c == ':') => {
                    return Err(ConfigError::new(
                        "GATEWAY_ID",
                        "must not contain whitespace or ':'",
                    ));
                }
                Some(id) => id,
                None => format!("gw-{}", uuid::Uuid::new_v4().simple()),
            },
            max_connections: match env.get("MAX_CONNECTIONS") {
                None => None,
                Some(_) => Some(env.positive("MAX_CONNECTIONS", 1usize)?),
            },
            presence_heartbeat,
            presence_expiry,
            ping_interval,
            idle_timeout,
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
}

/// Variable lookup with the "empty means unset" rule.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    fn parse<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|e| ConfigError::new(name, format!("{raw:?}: {e}"))),
        }
    }

    fn positive<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Default,
        T::Err: fmt::Display,
    {
        let value = self.parse(name, default)?;
        if value <= T::default() {
            return Err(ConfigError::new(name, "must be at least 1"));
        }
        Ok(value)
    }

    fn seconds(&self, name: &'static str, default: u64, min: u64) -> Result<Duration, ConfigError> {
        let value: u64 = self.parse(name, default)?;
        if value < min {
            return Err(ConfigError::new(name, format!("must be at least {min}")));
        }
        Ok(Duration::from_secs(value))
    }
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
        assert!(s.jwt.secret.is_none());
    }
}
