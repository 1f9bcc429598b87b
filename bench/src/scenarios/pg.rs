//! `pg-baseline`: PostgreSQL's own single-row insert rate on this machine, measured with
//! pgbench (32 clients by default) in a scratch database that is dropped afterwards. `send`
//! results read as a fraction of this number: one message send is at least one such insert.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use crate::report::Report;

#[derive(Debug, Clone, Args)]
pub struct PgArgs {
    /// A database to connect to for creating and dropping the scratch database.
    #[arg(
        long,
        default_value = "postgres://postgres:postgres@127.0.0.1:5432/postgres"
    )]
    pub admin_url: String,
    /// The scratch database (dropped and re-created).
    #[arg(long, default_value = "retich_bench_pgbench")]
    pub database: String,
    #[arg(long, default_value_t = 32)]
    pub clients: u32,
    /// pgbench threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// The one statement every pgbench transaction runs: a row shaped like a small message.
pub const INSERT_SCRIPT: &str = "insert into bench_insert (conversation_id, content) \
    values (gen_random_uuid(), 'pgbench single-row insert');\n";

const TABLE: &str = "create table bench_insert (\
    id bigint generated always as identity primary key, \
    conversation_id uuid not null, \
    content text not null, \
    created_at timestamptz not null default now())";

/// `tps = …` and `latency average = … ms` from pgbench's summary.
pub fn parse_pgbench(output: &str) -> Option<(f64, Option<f64>)> {
    let tps = output
        .lines()
        .find(|l| l.starts_with("tps = "))?
        .trim_start_matches("tps = ")
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let latency = output
        .lines()
        .find(|l| l.starts_with("latency average = "))
        .and_then(|l| {
            l.trim_start_matches("latency average = ")
                .split_whitespace()
                .next()
        })
        .and_then(|v| v.parse().ok());
    Some((tps, latency))
}

/// The URL of `database` on the server of `admin_url`.
pub fn database_url(admin_url: &str, database: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    format!("{base}/{database}{query}")
}

fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", sql])
        .output()
        .context("run psql (Debian: postgresql-client)")?;
    if !out.status.success() {
        bail!("psql: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

pub fn run(args: PgArgs) -> Result<Report> {
    if !args
        .database
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("--database must be a plain identifier");
    }
    let mut report = Report::new(
        "pg-baseline",
        json!({"protocol": "prepared", "clients": args.clients, "threads": args.threads, "seconds": args.seconds,
               "statement": INSERT_SCRIPT.trim()}),
    );
    let started = Instant::now();
    let db = &args.database;
    psql(
        &args.admin_url,
        &format!("drop database if exists {db} with (force)"),
    )?;
    psql(&args.admin_url, &format!("create database {db}"))?;
    let url = database_url(&args.admin_url, db);
    let result = (|| {
        psql(&url, TABLE)?;
        let script = std::env::temp_dir().join(format!("retich-bench-{}.sql", std::process::id()));
        std::fs::write(&script, INSERT_SCRIPT)?;
        let out = Command::new("pgbench")
            .args([
                "-n",
                // Prepared statements, as the services use them (sqlx).
                "-M",
                "prepared",
                "-c",
                &args.clients.to_string(),
                "-j",
                &args.threads.to_string(),
            ])
            .args(["-T", &args.seconds.to_string(), "-f"])
            .arg(&script)
            .arg(&url)
            .output()
            .context("run pgbench (Debian: postgresql-contrib)")?;
        let _ = std::fs::remove_file(&script);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "pgbench failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        parse_pgbench(&stdout).ok_or_else(|| anyhow::anyhow!("unexpected pgbench output: {stdout}"))
    })();
    let _ = psql(
        &args.admin_url,
        &format!("drop database if exists {db} with (force)"),
    );
    let (tps, latency) = result?;
    report.metric("single-row inserts/s", tps, "1/s");
    if let Some(l) = latency {
        report.metric("latency average", l, "ms");
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_summary_lines_are_parsed() {
        let out = "number of failed transactions: 0 (0.000%)\nlatency average = 1.372 ms\ninitial connection time = 27.282 ms\ntps = 23321.912345 (without initial connection time)\n";
        assert_eq!(parse_pgbench(out), Some((23321.912345, Some(1.372))));
        assert_eq!(parse_pgbench("nothing"), None);
    }

    #[test]
    fn the_scratch_database_url_keeps_server_and_options() {
        assert_eq!(
            database_url("postgres://u:p@127.0.0.1:5432/postgres", "scratch"),
            "postgres://u:p@127.0.0.1:5432/scratch"
        );
        assert_eq!(
            database_url("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
