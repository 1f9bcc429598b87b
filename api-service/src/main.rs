//! api-service entry point: `serve` (the default), `migrate`, `token`, `healthcheck`.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use api_service::{config::Settings, startup};
use clap::{Parser, Subcommand};
use retich_migrations as migrate;
use secrecy::ExposeSecret;
use sqlx::Connection;

/// mimalloc instead of glibc's allocator: a request allocates and frees many small blocks on one
/// worker thread and often frees them on another.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "api-service", version, about = "ReTiCh Messaging REST API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (the default).
    Serve,
    /// Apply or inspect schema migrations (golang-migrate compatible).
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Print a development JWT for a user, signed with JWT_SECRET.
    Token {
        /// The user id (a random one when omitted).
        #[arg(long)]
        user: Option<uuid::Uuid>,
        /// Validity in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
    /// Exit 0 when this host's /health answers 200 (container health checks).
    Healthcheck,
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply all pending migrations, or the next N.
    Up { n: Option<usize> },
    /// Revert the last N migrations (`--all` reverts every one).
    Down {
        n: Option<usize>,
        #[arg(long, conflicts_with = "n")]
        all: bool,
    },
    /// Print the current version.
    Version,
    /// Record VERSION as applied and clean without running anything (-1: none).
    Force {
        #[arg(allow_hyphen_values = true)]
        version: i64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("api-service: {e}");
            return ExitCode::from(2);
        }
    };
    shared_ops::telemetry::init(&settings.log_level, settings.log_format);
    // The process's one rustls provider (ring), before any client (sqlx, reqwest, NATS) is built.
    shared_auth::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli.command.unwrap_or(Command::Serve), settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "api-service failed");
            eprintln!("api-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve => {
            let app = startup::Application::build(settings).await?;
            app.run_until(shared_ops::shutdown_signal()).await
        }
        Command::Migrate { action } => {
            migrate::create_database_if_missing(settings.database_url.expose_secret())
                .await
                .context("cannot reach PostgreSQL")?;
            let mut conn = sqlx::PgConnection::connect(settings.database_url.expose_secret())
                .await
                .context("cannot connect to PostgreSQL")?;
            match action {
                MigrateAction::Up { n } => {
                    let applied = migrate::up(&mut conn, n).await?;
                    println!(
                        "applied {applied} migration(s); version {}",
                        migrate::current_version(&mut conn).await?
                    );
                }
                MigrateAction::Down { n, all } => {
                    anyhow::ensure!(
                        all || n.is_some(),
                        "say how many migrations to revert, or --all"
                    );
                    let reverted = migrate::down(&mut conn, if all { None } else { n }).await?;
                    println!(
                        "reverted {reverted} migration(s); version {}",
                        migrate::current_version(&mut conn).await?
                    );
                }
                MigrateAction::Version => {
                    println!("{}", migrate::current_version(&mut conn).await?)
                }
                MigrateAction::Force { version } => {
                    let v = (version >= 0).then_some(version as u64);
                    migrate::force(&mut conn, v).await?;
                    println!("version {}", migrate::current_version(&mut conn).await?);
                }
            }
            Ok(())
        }
        Command::Token { user, hours } => {
            let config = shared_auth::JwtConfig {
                jwks_url: None,
                ..settings.auth.jwt_config()
            };
            let user = user.unwrap_or_else(uuid::Uuid::new_v4);
            let token = shared_auth::mint_token(&config, user, Duration::from_secs(hours * 3600))
                .context("cannot mint a token (is JWT_SECRET set?)")?;
            println!("{token}");
            Ok(())
        }
        Command::Healthcheck => {
            let url = format!("http://127.0.0.1:{}/health", settings.port);
            let resp = reqwest::Client::new()
                .get(&url)
                .timeout(Duration::from_secs(3))
                .send()
                .await?;
            anyhow::ensure!(
                resp.status().is_success(),
                "health answered {}",
                resp.status()
            );
            Ok(())
        }
    }
}
