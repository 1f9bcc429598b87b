//! Structured logging: JSON lines by default (`LOG_FORMAT=text` for humans), level from
//! `LOG_LEVEL` (an `EnvFilter` directive). Fields are dotted (`user.id`, `conversation.id`);
//! nothing logs a token, a cookie, a header value, a request body or an event payload.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written (`LOG_FORMAT`; each service's settings parse the value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// Checks that `level` is a valid `LOG_LEVEL` filter directive (`info`, `warn,ws_gateway=debug`).
///
/// # Errors
/// The parser's description of the first invalid directive.
pub fn check_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Installs the global subscriber; later calls (several services in one test process) are
/// ignored. A `level` that is not a valid filter directive falls back to `info`.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_target(false)).try_init(),
    };
}
