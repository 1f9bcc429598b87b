//! `retich-bench`: see `lib.rs` for the tour and BENCHMARKS.md ("Commands") for how to run it.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use retich_bench::{
    report::{self, Report, RunFile},
    scenarios::{fanout, pg, send, sockets},
};

/// mimalloc instead of glibc's allocator: the tool's socket buffers are released and taken again
/// at a high rate from two threads, and with glibc they come back as fresh pages whose zeroing
/// took about a fifth of the tool's CPU in a 10 × 1,000 fan-out, CPU the gateway it measures
/// shares on a small machine.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Load tool for ReTiCh Messaging (api-service + ws-gateway)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// REST-only send throughput: C concurrent clients over K conversations.
    Send(send::SendArgs),
    /// G groups × M members on WebSocket; publishers over REST; end-to-end latency, missing and
    /// duplicate deliveries.
    Fanout(fanout::FanoutArgs),
    /// N sockets held over worker processes; connect rate, drops, gateway memory per socket.
    Idle(sockets::IdleArgs),
    /// N sockets reconnecting at once: time until all are back, errors.
    Storm(sockets::StormArgs),
    /// Idle sockets over several gateways plus a fan-out that crosses them.
    Fleet(sockets::FleetArgs),
    /// PostgreSQL's own single-row insert rate (pgbench), the yardstick for `send`.
    PgBaseline(pg::PgArgs),
    /// Merge result files into one JSON file (and Markdown tables).
    Report {
        /// Result files written by --json-out.
        inputs: Vec<PathBuf>,
        #[arg(long, default_value = "run")]
        label: String,
        #[arg(long)]
        json_out: PathBuf,
        #[arg(long)]
        markdown_out: Option<PathBuf>,
    },
    /// Internal: holds sockets for idle / storm / fleet.
    #[command(hide = true)]
    Worker(sockets::WorkerArgs),
}

fn main() -> Result<()> {
    // Every socket is a file: use the whole hard limit.
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
    let command = Cli::parse().command;
    // A socket worker is one of many processes (a dozen for 100,000 sockets) sharing the
    // machine's cores: a single-threaded runtime each, instead of a runtime thread per core in
    // every one of them waking and stealing from each other.
    let runtime = match command {
        Command::Worker(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async {
        let (report, json_out): (Report, Option<PathBuf>) = match command {
            Command::Send(a) => {
                let out = a.json_out.clone();
                (send::run(a).await?, out)
            }
            Command::Fanout(a) => {
                let out = a.json_out.clone();
                (fanout::run(a).await?, out)
            }
            Command::Idle(a) => {
                let out = a.json_out.clone();
                (sockets::idle(a).await?, out)
            }
            Command::Storm(a) => {
                let out = a.json_out.clone();
                (sockets::storm(a).await?, out)
            }
            Command::Fleet(a) => {
                let out = a.json_out.clone();
                (sockets::fleet(a).await?, out)
            }
            Command::PgBaseline(a) => {
                let out = a.json_out.clone();
                (tokio::task::spawn_blocking(move || pg::run(a)).await??, out)
            }
            Command::Report {
                inputs,
                label,
                json_out,
                markdown_out,
            } => {
                let run = RunFile::new(&label, report::read_reports(&inputs)?);
                report::write_json(&json_out, &run)?;
                let md = run.markdown();
                if let Some(path) = markdown_out {
                    std::fs::write(path, &md)?;
                }
                println!("{md}");
                return Ok(());
            }
            Command::Worker(a) => return sockets::worker(a).await,
        };
        report.emit(json_out.as_deref())
    })
}
