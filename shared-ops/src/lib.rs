//! What operators see and do, written once for both ReTiCh services.
//!
//! - [`Chain`]: an error and its causes on one log line (log an error once, where it is handled).
//! - [`config`]: settings from environment variables declared with clap ([`config::read_variables`]).
//! - [`telemetry`]: structured logs ([`LogFormat`], the `LOG_LEVEL` filter).
//! - [`metrics`]: a per-instance Prometheus registry ([`metrics::Registry`]) with the
//!   `process_*` metrics and a build-info gauge, and the typed handles both services register on
//!   it (counters, gauges, histograms and their labelled families).
//! - [`shutdown_signal`]: SIGTERM or Ctrl-C, the start of a graceful shutdown.

pub mod config;
mod error_chain;
pub mod metrics;
pub mod telemetry;

pub use error_chain::Chain;
pub use telemetry::LogFormat;

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler only Ctrl-C ends the wait.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
