//! ws-gateway entry point: `serve` (the default) and `healthcheck`.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use shared_ops::{shutdown_signal, telemetry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ws_gateway::{Application, config::Settings};

#[derive(Parser)]
#[command(
    name = "ws-gateway",
    version,
    about = "ReTiCh Messaging WebSocket gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve WebSockets, /health, /ready and /metrics (the default).
    Serve,
    /// Exit 0 when this host's /health answers 200 (container health checks).
    Healthcheck,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("ws-gateway: {error}");
            return ExitCode::from(2);
        }
    };
    // The process's one rustls provider (ring), before any client (sqlx, reqwest, NATS) is built.
    shared_auth::install_crypto_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ws-gateway: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            telemetry::init(&settings.log_level, settings.log_format);
            runtime.block_on(async {
                let app = Application::build(settings).await?;
                app.run_until(shutdown_signal()).await
            })
        }
        Command::Healthcheck => runtime.block_on(healthcheck(settings.port)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "ws-gateway failed");
            eprintln!("ws-gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /health` on this host; Ok when it answers 200.
async fn healthcheck(port: u16) -> anyhow::Result<()> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(3), exchange).await??;
    let status_line = response.split(|b| *b == b'\r').next().unwrap_or_default();
    anyhow::ensure!(
        status_line.starts_with(b"HTTP/1.1 200"),
        "health answered {:?}",
        String::from_utf8_lossy(status_line)
    );
    Ok(())
}
