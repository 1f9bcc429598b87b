//! Many sockets: `idle`, `storm`, `fleet`, and the hidden `worker` process that holds them.
//!
//! The parent plans ([`crate::spread`]) and spawns worker processes (this same binary, `worker`
//! subcommand), each holding its share of sockets from its loopback source addresses. Workers
//! talk JSON lines on stdout and take one-word commands on stdin:
//!
//! - on start: connect everything, then print `{"event":"connected",…}`;
//! - `report`: print `{"event":"held",…}` (sockets still open, sockets dropped so far);
//! - `storm`: drop every socket at once and reconnect them all, then print `{"event":"storm",…}`;
//! - `quit` (or end of stdin): close everything and exit.
//!
//! Because the commands reach every worker at the same moment, a storm is one storm across the
//! workers. The gateway's resident memory comes from `/proc/<pid>/status` (`VmRSS`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
    sync::{Semaphore, watch},
};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::{
    client::{self, AuthArgs, AuthMode, Identity, Socket},
    report::Report,
    scenarios::{
        fanout::{self, FanoutArgs, wait_for},
        secs,
    },
    spread::{self, SpreadInput, WorkerPlan},
};

/// Where the sockets go and how they are spread (shared by `idle`, `storm`, `fleet`).
#[derive(Debug, Clone, Args)]
pub struct SocketArgs {
    /// Gateway WebSocket URL; repeat for several gateways (sockets are spread round-robin).
    #[arg(long = "gateway", default_value = "ws://127.0.0.1:8085/ws")]
    pub gateways: Vec<String>,
    /// PID of a gateway process, for its resident memory; repeat in the order of --gateway.
    #[arg(long = "gateway-pid")]
    pub gateway_pids: Vec<u32>,
    /// Sockets to open.
    #[arg(long, default_value_t = 15_000)]
    pub sockets: usize,
    /// Worker processes; 0 = as few as --per-worker-max allows.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,
    /// Most sockets per worker process (each is a file; keep under the open-files limit).
    #[arg(long, default_value_t = 9_000)]
    pub per_worker_max: usize,
    /// Loopback source addresses; 0 = as few as --per-source-max allows.
    #[arg(long, default_value_t = 0)]
    pub sources: usize,
    /// Most sockets per source address (each takes an ephemeral port of that address).
    #[arg(long, default_value_t = 20_000)]
    pub per_source_max: usize,
    /// First source address (the next ones follow).
    #[arg(long, default_value = "127.0.0.2")]
    pub first_source: Ipv4Addr,
    /// Source port of each address's first socket (the next ones follow); default: the low end
    /// of the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range).
    #[arg(long)]
    pub first_port: Option<u16>,
    /// Sockets connecting at the same time, per worker, during setup.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Seconds a socket keeps retrying its first connect (jittered exponential back-off, as a
    /// real client reconnects) before it counts as failed.
    #[arg(long, default_value_t = 60.0)]
    pub connect_retry: f64,
    #[command(flatten)]
    pub auth: AuthArgs,
}

impl SocketArgs {
    fn plan(&self) -> Result<Vec<WorkerPlan>> {
        spread::plan(SpreadInput {
            sockets: self.sockets,
            gateways: self.gateways.len(),
            workers: self.workers,
            per_worker_max: self.per_worker_max,
            sources: self.sources,
            per_source_max: self.per_source_max,
            first_source: self.first_source,
            first_port: self.first_port.unwrap_or_else(ephemeral_ports_start),
        })
    }

    fn params(&self) -> Value {
        json!({"sockets": self.sockets, "gateways": self.gateways.len(),
               "auth": self.auth.auth, "per_worker_max": self.per_worker_max,
               "per_source_max": self.per_source_max})
    }
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub sockets: SocketArgs,
    /// Seconds to hold the sockets once all are connected.
    #[arg(long, default_value_t = 60.0)]
    pub hold: f64,
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub sockets: SocketArgs,
    /// Seconds to hold before the storm.
    #[arg(long, default_value_t = 3.0)]
    pub hold: f64,
    /// Seconds after which sockets still not back count as failed.
    #[arg(long, default_value_t = 60.0)]
    pub storm_timeout: f64,
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub sockets: SocketArgs,
    /// api-service base URL (for the fan-out part).
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    pub api: String,
    /// Fan-out groups (members spread round-robin over the gateways, so fan-out crosses them).
    #[arg(long, default_value_t = 100)]
    pub groups: usize,
    /// Members per fan-out group.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Fan-out messages per second (0 = max).
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Fan-out publishers.
    #[arg(long, default_value_t = 64)]
    pub publishers: usize,
    /// Seconds of fan-out while the idle sockets are held.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Fan-out grace period.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// This worker's plan ([`WorkerPlan`] as JSON).
    #[arg(long)]
    pub plan: String,
    #[arg(long = "gateway", required = true)]
    pub gateways: Vec<String>,
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    #[arg(long, default_value_t = 60.0)]
    pub connect_retry: f64,
    #[arg(long, default_value_t = 60.0)]
    pub storm_timeout: f64,
    #[command(flatten)]
    pub auth: AuthArgs,
}

// ---------------------------------------------------------------------------------------------
// Parent side

/// The low end of the kernel's ephemeral port range (32768 when unreadable).
fn ephemeral_ports_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Resident memory of a process in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The `VmRSS:` line of a /proc status file, in KiB.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The running worker processes.
struct Workers {
    children: Vec<(Child, ChildStdin, Lines<BufReader<ChildStdout>>)>,
}

impl Workers {
    fn start(args: &SocketArgs, plans: &[WorkerPlan], storm_timeout: f64) -> Result<Self> {
        let exe = std::env::current_exe().context("own executable")?;
        let mut children = Vec::new();
        for plan in plans {
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.arg("worker")
                .arg("--plan")
                .arg(serde_json::to_string(plan)?)
                .arg("--connect-concurrency")
                .arg(args.connect_concurrency.to_string())
                .arg("--connect-retry")
                .arg(args.connect_retry.to_string())
                .arg("--storm-timeout")
                .arg(storm_timeout.to_string())
                .arg("--auth")
                .arg(match args.auth.auth {
                    AuthMode::Jwt => "jwt",
                    AuthMode::Header => "header",
                });
            for g in &args.gateways {
                cmd.arg("--gateway").arg(g);
            }
            // The secret goes by environment, not on a command line other users can read.
            if let Some(secret) = &args.auth.jwt_secret {
                cmd.env("JWT_SECRET", secret);
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("spawn worker")?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
            children.push((child, stdin, stdout));
        }
        Ok(Self { children })
    }

    /// Sends `command` to every worker (at once), then reads one event line from each.
    async fn command(&mut self, command: Option<&str>, limit: Duration) -> Result<Vec<Value>> {
        if let Some(command) = command {
            for (_, stdin, _) in &mut self.children {
                stdin.write_all(format!("{command}\n").as_bytes()).await?;
                stdin.flush().await?;
            }
        }
        let reads = self.children.iter_mut().map(|(_, _, lines)| async move {
            let line = tokio::time::timeout(limit, lines.next_line())
                .await
                .map_err(|_| anyhow!("a worker did not answer within {limit:?}"))??
                .ok_or_else(|| anyhow!("a worker exited early"))?;
            serde_json::from_str::<Value>(&line).with_context(|| format!("worker said {line}"))
        });
        futures_util::future::try_join_all(reads).await
    }

    async fn quit(mut self) {
        for (_, stdin, _) in &mut self.children {
            let _ = stdin.write_all(b"quit\n").await;
        }
        for (child, _, _) in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
            }
        }
    }
}

fn sum(events: &[Value], key: &str) -> u64 {
    events.iter().map(|e| e[key].as_u64().unwrap_or(0)).sum()
}

fn max_f(events: &[Value], key: &str) -> f64 {
    events
        .iter()
        .map(|e| e[key].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max)
}

fn merge_errors(events: &[Value], key: &str, report: &mut Report, what: &str) {
    let mut all: BTreeMap<String, u64> = BTreeMap::new();
    for e in events {
        if let Some(map) = e[key].as_object() {
            for (k, v) in map {
                *all.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    for (k, v) in all {
        report.note(format!("{what} ×{v}: {k}"));
    }
}

/// Sockets per gateway in the plans.
fn per_gateway(plans: &[WorkerPlan], gateways: usize) -> Vec<usize> {
    let mut counts = vec![0; gateways];
    for s in plans.iter().flat_map(|p| &p.segments) {
        counts[s.gateway] += s.count;
    }
    counts
}

/// Starts workers for `args` and waits until they report their sockets connected.
async fn connect_all(
    args: &SocketArgs,
    storm_timeout: f64,
    report: &mut Report,
) -> Result<(Workers, Vec<WorkerPlan>, u64)> {
    let plans = args.plan()?;
    report.note(format!(
        "{} worker processes; source addresses from {}",
        plans.len(),
        args.first_source
    ));
    let started = Instant::now();
    let mut workers = Workers::start(args, &plans, storm_timeout)?;
    let events = workers.command(None, Duration::from_secs(600)).await?;
    let secs_taken = started.elapsed().as_secs_f64();
    let connected = sum(&events, "connected");
    report.metric("sockets connected", connected as f64, "");
    report.metric("connect failures", sum(&events, "failed") as f64, "");
    report.metric(
        "connect attempts failed and retried",
        sum(&events, "attempt_errors") as f64,
        "",
    );
    report.metric("connect time (all)", secs_taken, "s");
    report.metric(
        "connect rate",
        connected as f64 / secs_taken.max(1e-9),
        "sockets/s",
    );
    merge_errors(&events, "errors", report, "connect error");
    Ok((workers, plans, connected))
}

/// RSS of each given gateway pid (0 when unreadable).
fn rss_all(pids: &[u32]) -> Vec<u64> {
    pids.iter().map(|&p| rss_kib(p).unwrap_or(0)).collect()
}

fn memory_metrics(
    report: &mut Report,
    pids: &[u32],
    before: &[u64],
    after: &[u64],
    sockets: &[usize],
) {
    if pids.is_empty() {
        report.note("no --gateway-pid given: gateway memory not measured");
        return;
    }
    let (mut delta, mut n) = (0u64, 0usize);
    for (i, pid) in pids.iter().enumerate() {
        let s = sockets.get(i).copied().unwrap_or(0);
        report.metric(
            &format!("gateway {pid} RSS before"),
            before[i] as f64 / 1024.0,
            "MiB",
        );
        report.metric(
            &format!("gateway {pid} RSS holding"),
            after[i] as f64 / 1024.0,
            "MiB",
        );
        report.metric(&format!("gateway {pid} sockets"), s as f64, "");
        delta += after[i].saturating_sub(before[i]);
        n += s;
    }
    if n > 0 {
        report.metric(
            "gateway RSS growth per socket",
            delta as f64 / n as f64,
            "KiB",
        );
        let total: u64 = after.iter().sum();
        report.metric(
            "gateway RSS per socket (total RSS / sockets)",
            total as f64 / n as f64,
            "KiB",
        );
    }
}

pub async fn idle(args: IdleArgs) -> Result<Report> {
    let s = &args.sockets;
    Identity::new(&s.auth)?;
    let mut params = s.params();
    params["hold_s"] = json!(args.hold);
    let mut report = Report::new("idle", params);
    let started = Instant::now();
    let before = rss_all(&s.gateway_pids);
    let (mut workers, plans, _) = connect_all(s, 60.0, &mut report).await?;
    let mut peak = rss_all(&s.gateway_pids);
    let hold_until = Instant::now() + secs(args.hold);
    while Instant::now() < hold_until {
        tokio::time::sleep(Duration::from_millis(500).min(hold_until - Instant::now())).await;
        for (p, now) in peak.iter_mut().zip(rss_all(&s.gateway_pids)) {
            *p = (*p).max(now);
        }
    }
    let held = workers
        .command(Some("report"), Duration::from_secs(60))
        .await?;
    let after = rss_all(&s.gateway_pids);
    report.metric(
        "sockets still open after hold",
        sum(&held, "alive") as f64,
        "",
    );
    report.metric("drops during hold", sum(&held, "dropped") as f64, "");
    memory_metrics(
        &mut report,
        &s.gateway_pids,
        &before,
        &after,
        &per_gateway(&plans, s.gateways.len()),
    );
    if !s.gateway_pids.is_empty() {
        let peak_total: u64 = peak.iter().sum();
        report.metric("gateway RSS peak (sum)", peak_total as f64 / 1024.0, "MiB");
    }
    workers.quit().await;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

pub async fn storm(args: StormArgs) -> Result<Report> {
    let s = &args.sockets;
    Identity::new(&s.auth)?;
    let mut params = s.params();
    params["hold_s"] = json!(args.hold);
    let mut report = Report::new("storm", params);
    let started = Instant::now();
    let (mut workers, _, _) = connect_all(s, args.storm_timeout, &mut report).await?;
    tokio::time::sleep(secs(args.hold)).await;
    let held = workers
        .command(Some("report"), Duration::from_secs(60))
        .await?;
    report.metric(
        "sockets open before the storm",
        sum(&held, "alive") as f64,
        "",
    );
    let limit = secs(args.storm_timeout) + Duration::from_secs(30);
    let storm = workers.command(Some("storm"), limit).await?;
    report.metric("sockets back", sum(&storm, "back") as f64, "");
    report.metric("sockets not back", sum(&storm, "failed") as f64, "");
    report.metric("time until all back", max_f(&storm, "secs"), "s");
    report.metric(
        "failed connect attempts (errors)",
        sum(&storm, "attempt_errors") as f64,
        "",
    );
    merge_errors(&storm, "errors", &mut report, "storm error");
    workers.quit().await;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `fleet`: idle sockets held by workers over all the gateways, plus an in-process fan-out whose
/// group members are spread over the same gateways, so every group's deliveries cross gateways.
pub async fn fleet(args: FleetArgs) -> Result<Report> {
    let s = &args.sockets;
    Identity::new(&s.auth)?;
    let mut params = s.params();
    params["fanout"] = json!({"groups": args.groups, "members": args.members,
                              "rate_per_s": args.rate, "duration_s": args.duration});
    let mut report = Report::new("fleet", params);
    let started = Instant::now();
    let before = rss_all(&s.gateway_pids);
    let (mut workers, plans, connected) = connect_all(s, 60.0, &mut report).await?;
    let fan = fanout::run(FanoutArgs {
        api: args.api.clone(),
        gateways: s.gateways.clone(),
        groups: args.groups,
        members: args.members,
        rate: args.rate,
        publishers: args.publishers,
        duration: args.duration,
        grace: args.grace,
        create_first: false,
        connect_concurrency: 200,
        max_messages: 2_000_000,
        auth: s.auth.clone(),
        json_out: None,
    })
    .await?;
    let held = workers
        .command(Some("report"), Duration::from_secs(60))
        .await?;
    let after = rss_all(&s.gateway_pids);
    let alive = sum(&held, "alive");
    let fan_sockets = fan.get("sockets connected").unwrap_or(0.0);
    report.metric(
        "sockets held (idle workers + fan-out)",
        alive as f64 + fan_sockets,
        "",
    );
    report.metric("idle sockets dropped", sum(&held, "dropped") as f64, "");
    report.metric("idle sockets connected", connected as f64, "");
    let mut sockets = per_gateway(&plans, s.gateways.len());
    for (i, n) in sockets.iter_mut().enumerate() {
        // The fan-out members are spread over the gateways the same way.
        *n += (args.groups * args.members) / s.gateways.len()
            + usize::from(i < (args.groups * args.members) % s.gateways.len());
    }
    memory_metrics(&mut report, &s.gateway_pids, &before, &after, &sockets);
    for m in fan.metrics {
        report.metric(&format!("fanout: {}", m.name), m.value, &m.unit);
    }
    for n in fan.notes {
        report.note(format!("fanout: {n}"));
    }
    workers.quit().await;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// Worker side

/// What the sockets of a worker are asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hold,
    Storm,
    Quit,
}

/// Counters shared by a worker's sockets.
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    failed: AtomicU64,
    /// Failed first-connect attempts (each retried until `--connect-retry` runs out).
    attempt_errors: AtomicU64,
    alive: AtomicU64,
    dropped: AtomicU64,
    storm_back: AtomicU64,
    storm_failed: AtomicU64,
    storm_attempt_errors: AtomicU64,
    /// ns after the storm command at which the last socket came back.
    storm_last_ns: AtomicU64,
    connect_errors: Mutex<BTreeMap<String, u64>>,
    storm_errors: Mutex<BTreeMap<String, u64>>,
}

fn count_error(map: &Mutex<BTreeMap<String, u64>>, e: &anyhow::Error) {
    *map.lock()
        .expect("not poisoned")
        .entry(client::error_kind(e))
        .or_default() += 1;
}

/// Connects and waits for the first event (the presence snapshot): a socket counts as up only
/// once the gateway has loaded and subscribed it (`docs/websocket.md`, "After the upgrade").
async fn open(url: &str, identity: &Identity, user: Uuid, source: SocketAddr) -> Result<Socket> {
    let mut ws = client::connect(url, identity, user, Some(source)).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Err(_) => bail!("no first event within 30 s"),
            Ok(Some(Ok(Message::Text(_)))) => return Ok(ws),
            Ok(Some(Ok(Message::Close(_))) | None) => bail!("closed before the first event"),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(anyhow!(e).context("read the first event")),
        }
    }
}

/// Jittered exponential back-off before connect attempt `attempt + 1` (`jitter` in [0, 1)):
/// 100 ms doubling per failed attempt up to 5 s, of which a random half — so a crowd of clients
/// refused together does not come back together.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1u32 << attempt.min(10))
        .min(Duration::from_secs(5));
    base / 2 + base.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// A random number in [0, 1) for [`backoff`].
pub fn jitter() -> f64 {
    (Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1e6
}

/// The first connect of a socket: retried with [`backoff`] until `retry_for` has passed since
/// the first attempt (the connect permit is given back while waiting). A transient refusal — a
/// gateway busy for a moment — is what a real client retries; only a socket that cannot connect
/// for the whole window counts as failed.
async fn open_with_retry(
    url: &str,
    identity: &Identity,
    user: Uuid,
    source: SocketAddr,
    limit: &Semaphore,
    retry_for: Duration,
    counters: &Counters,
) -> Option<Socket> {
    let deadline = Instant::now() + retry_for;
    let mut attempt = 0;
    loop {
        let permit = limit.acquire().await.expect("never closed");
        let result = open(url, identity, user, source).await;
        drop(permit);
        match result {
            Ok(ws) => return Some(ws),
            Err(e) => {
                count_error(&counters.connect_errors, &e);
                if Instant::now() >= deadline {
                    return None;
                }
                counters.attempt_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(attempt, jitter())).await;
                attempt += 1;
            }
        }
    }
}

/// One socket for the worker's whole life.
#[allow(clippy::too_many_arguments)]
async fn hold_socket(
    url: String,
    source: SocketAddr,
    identity: Identity,
    counters: Arc<Counters>,
    limit: Arc<Semaphore>,
    mut phase: watch::Receiver<(Phase, Instant)>,
    connect_retry: Duration,
    storm_timeout: Duration,
) {
    let user = Uuid::new_v4();
    let opened = open_with_retry(
        &url,
        &identity,
        user,
        source,
        &limit,
        connect_retry,
        &counters,
    )
    .await;
    let mut ws = match opened {
        Some(ws) => {
            counters.connected.fetch_add(1, Ordering::Relaxed);
            counters.alive.fetch_add(1, Ordering::Relaxed);
            Some(ws)
        }
        None => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            None
        }
    };
    loop {
        // Read (answering pings) until the socket ends or the phase changes.
        let changed = match &mut ws {
            Some(socket) => tokio::select! {
                changed = phase.changed() => changed,
                frame = socket.next() => {
                    if matches!(frame, None | Some(Err(_)) | Some(Ok(Message::Close(_)))) {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        counters.alive.fetch_sub(1, Ordering::Relaxed);
                        ws = None;
                    }
                    continue;
                }
            },
            None => phase.changed().await,
        };
        if changed.is_err() {
            return;
        }
        let (now, storm_started) = *phase.borrow_and_update();
        match now {
            Phase::Hold => {}
            Phase::Quit => {
                if let Some(mut socket) = ws.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
                }
                return;
            }
            Phase::Storm => {
                // Abrupt: the TCP connection goes away as when a gateway dies.
                if ws.take().is_some() {
                    counters.alive.fetch_sub(1, Ordering::Relaxed);
                }
                let deadline = storm_started + storm_timeout;
                // The old connections' ports sit in TIME_WAIT on `source`; a bound connect
                // cannot reuse them, so the storm reconnects from a sibling address.
                let storm_source = SocketAddr::new(storm_source(source.ip()), source.port());
                loop {
                    match open(&url, &identity, user, storm_source).await {
                        Ok(socket) => {
                            ws = Some(socket);
                            counters.alive.fetch_add(1, Ordering::Relaxed);
                            counters.storm_back.fetch_add(1, Ordering::Relaxed);
                            let ns = storm_started.elapsed().as_nanos() as u64;
                            counters.storm_last_ns.fetch_max(ns, Ordering::Relaxed);
                            break;
                        }
                        Err(e) => {
                            counters
                                .storm_attempt_errors
                                .fetch_add(1, Ordering::Relaxed);
                            count_error(&counters.storm_errors, &e);
                            if Instant::now() >= deadline {
                                counters.storm_failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            // Jittered back-off, as real clients do.
                            let jitter = 50 + (jitter() * 200.0) as u64;
                            tokio::time::sleep(Duration::from_millis(jitter)).await;
                        }
                    }
                }
            }
        }
    }
}

/// The address a socket reconnects from in a storm: 128 addresses above its own (still in
/// 127.0.0.0/8), so the old connections' TIME_WAIT ports do not block the new ones.
pub fn storm_source(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_add(128))),
        other => other,
    }
}

fn print_event(value: Value) {
    println!("{value}");
}

fn errors_json(map: &Mutex<BTreeMap<String, u64>>) -> Value {
    json!(*map.lock().expect("not poisoned"))
}

pub async fn worker(args: WorkerArgs) -> Result<()> {
    let plan: WorkerPlan = serde_json::from_str(&args.plan).context("--plan")?;
    let identity = Identity::new(&args.auth)?;
    let counters = Arc::new(Counters::default());
    let limit = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (phase_tx, phase_rx) = watch::channel((Phase::Hold, Instant::now()));
    let total = plan.sockets() as u64;
    let mut tasks = Vec::with_capacity(plan.sockets());
    for segment in &plan.segments {
        let url = args
            .gateways
            .get(segment.gateway)
            .ok_or_else(|| anyhow!("plan names gateway {}", segment.gateway))?;
        for k in 0..segment.count {
            let port = usize::from(segment.first_port) + k;
            let port = u16::try_from(port).context("the plan's ports pass 65535")?;
            tasks.push(tokio::spawn(hold_socket(
                url.clone(),
                SocketAddr::new(IpAddr::V4(segment.source), port),
                identity.clone(),
                counters.clone(),
                limit.clone(),
                phase_rx.clone(),
                secs(args.connect_retry),
                secs(args.storm_timeout),
            )));
        }
    }
    let started = Instant::now();
    wait_for(Duration::from_secs(550), || {
        counters.connected.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed)
            >= total
    })
    .await;
    print_event(json!({"event": "connected",
        "connected": counters.connected.load(Ordering::Relaxed),
        "failed": counters.failed.load(Ordering::Relaxed),
        "attempt_errors": counters.attempt_errors.load(Ordering::Relaxed),
        "secs": started.elapsed().as_secs_f64(),
        "errors": errors_json(&counters.connect_errors)}));

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        match line.trim() {
            "report" => print_event(json!({"event": "held",
                "alive": counters.alive.load(Ordering::Relaxed),
                "dropped": counters.dropped.load(Ordering::Relaxed)})),
            "storm" => {
                let at = Instant::now();
                phase_tx.send_replace((Phase::Storm, at));
                wait_for(secs(args.storm_timeout) + Duration::from_secs(10), || {
                    counters.storm_back.load(Ordering::Relaxed)
                        + counters.storm_failed.load(Ordering::Relaxed)
                        >= total
                })
                .await;
                print_event(json!({"event": "storm",
                    "back": counters.storm_back.load(Ordering::Relaxed),
                    "failed": total - counters.storm_back.load(Ordering::Relaxed),
                    "secs": counters.storm_last_ns.load(Ordering::Relaxed) as f64 / 1e9,
                    "attempt_errors": counters.storm_attempt_errors.load(Ordering::Relaxed),
                    "errors": errors_json(&counters.storm_errors)}));
                phase_tx.send_replace((Phase::Hold, Instant::now()));
            }
            "quit" => break,
            _ => {}
        }
    }
    phase_tx.send_replace((Phase::Quit, Instant::now()));
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_a_proc_status_file() {
        let status =
            "Name:\tws-gateway\nVmPeak:\t  900000 kB\nVmRSS:\t   86016 kB\nRssAnon:\t 80000 kB\n";
        assert_eq!(parse_vm_rss(status), Some(86_016));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn storm_reconnects_come_from_a_sibling_loopback_address() {
        let s = storm_source(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(s, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 130)));
        let s = storm_source(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 200)));
        assert_eq!(s, IpAddr::V4(Ipv4Addr::new(127, 0, 1, 72)));
    }

    #[test]
    fn connect_retries_back_off_exponentially_with_jitter_up_to_five_seconds() {
        // Without jitter: half the base; with full jitter: the whole base.
        assert_eq!(backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(backoff(0, 1.0), Duration::from_millis(100));
        assert_eq!(backoff(3, 0.0), Duration::from_millis(400));
        assert_eq!(backoff(3, 1.0), Duration::from_millis(800));
        // Capped, also for attempt counts whose shift would overflow.
        assert_eq!(backoff(6, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(40, 0.0), Duration::from_millis(2_500));
        for attempt in 0..12 {
            assert!(backoff(attempt, 0.3) <= backoff(attempt + 1, 0.3));
        }
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[tokio::test]
    async fn a_refused_first_connect_is_retried_until_the_window_ends_and_counted() {
        // Nothing listens on this port: every attempt is refused at once.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("ws://127.0.0.1:{port}/ws");
        let identity = Identity::new(&AuthArgs {
            auth: AuthMode::Header,
            jwt_secret: None,
        })
        .unwrap();
        let counters = Counters::default();
        let limit = Semaphore::new(1);
        let started = Instant::now();
        let opened = tokio::time::timeout(
            Duration::from_secs(10),
            open_with_retry(
                &url,
                &identity,
                Uuid::new_v4(),
                "127.0.0.1:0".parse().unwrap(),
                &limit,
                Duration::from_millis(400),
                &counters,
            ),
        )
        .await
        .expect("bounded by the retry window");
        assert!(opened.is_none());
        assert!(started.elapsed() >= Duration::from_millis(400));
        // 50–100, 100–200, 200–400 ms of back-off fit in the window: at least 3 retries.
        let retried = counters.attempt_errors.load(Ordering::Relaxed);
        assert!(retried >= 3, "{retried} retries");
        // Every attempt's error is counted by kind, the last one included.
        let errors = counters.connect_errors.lock().unwrap();
        assert_eq!(errors.values().sum::<u64>(), retried + 1);
        assert!(
            errors.keys().all(|k| k.contains("TCP connect")),
            "{errors:?}"
        );
        // The permit was given back.
        assert_eq!(limit.available_permits(), 1);
    }

    #[tokio::test]
    async fn a_planned_source_port_is_used_and_a_taken_one_falls_back_to_any_port() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/ws", listener.local_addr().unwrap());
        let accept = tokio::spawn(async move {
            let mut peers = Vec::new();
            for _ in 0..2 {
                let (stream, peer) = listener.accept().await.unwrap();
                peers.push(peer);
                // Answer nothing: the client's upgrade waits; only the TCP side matters here.
                std::mem::forget(stream);
            }
            peers
        });
        let identity = Identity::new(&AuthArgs {
            auth: AuthMode::Header,
            jwt_secret: None,
        })
        .unwrap();
        // A free port of 127.0.0.3, planned for both: the second finds it taken.
        let probe = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
        let planned = probe.local_addr().unwrap();
        drop(probe);
        let first = tokio::spawn({
            let (url, identity) = (url.clone(), identity.clone());
            async move { client::connect(&url, &identity, Uuid::new_v4(), Some(planned)).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = tokio::spawn(async move {
            client::connect(&url, &identity, Uuid::new_v4(), Some(planned)).await
        });
        let peers = tokio::time::timeout(Duration::from_secs(5), accept)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(peers[0], planned);
        assert_eq!(peers[1].ip(), planned.ip());
        assert_ne!(peers[1].port(), planned.port());
        first.abort();
        second.abort();
    }

    #[test]
    fn the_own_process_has_a_resident_size() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn sockets_per_gateway_add_up_from_the_plans() {
        let plans = spread::plan(SpreadInput {
            sockets: 7,
            gateways: 2,
            workers: 2,
            per_worker_max: 10,
            sources: 0,
            per_source_max: 10,
            first_source: Ipv4Addr::new(127, 0, 0, 2),
            first_port: 32_768,
        })
        .unwrap();
        assert_eq!(per_gateway(&plans, 2), vec![4, 3]);
    }
}
