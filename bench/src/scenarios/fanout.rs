//! `fanout`: G groups of M members, each member one WebSocket (spread round-robin over the given
//! gateways, so a group's members sit on different gateways when there are several). By default
//! the sockets connect **before** the groups exist, so they only receive the groups' messages if
//! the gateway subscribes them live on `conversation.joined` (`docs/websocket.md`, "Live
//! membership").
//!
//! Publishers then POST messages (each with `client_msg_id = <run prefix><n>`, the bench number
//! n) at a fixed total rate or as fast as P closed-loop publishers can. Message n goes to group
//! `n mod G`, sent by its member `(n / G) mod M`. The send time of n is stored just before the
//! POST; each receiving socket computes the end-to-end latency from it on receipt. After a grace
//! period every socket's receipts are compared with the accepted messages of its group
//! ([`crate::ledger`]): missing and duplicate deliveries.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    client::{self, Api, AuthArgs, Identity},
    ledger::{self, Tally},
    prom::{self, Buckets},
    report::Report,
    scenarios::{
        nanos_since, secs,
        sockets::{backoff, jitter},
    },
    stats::Latencies,
};

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// api-service base URL.
    #[arg(long, default_value = "http://127.0.0.1:8082")]
    pub api: String,
    /// Gateway WebSocket URL; repeat for several gateways (members are spread round-robin).
    #[arg(long = "gateway", default_value = "ws://127.0.0.1:8085/ws")]
    pub gateways: Vec<String>,
    /// Groups.
    #[arg(long, default_value_t = 100)]
    pub groups: usize,
    /// Members per group (each one user with one socket).
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Total messages per second over all groups; 0 = as fast as the publishers go.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Publishers: closed-loop tasks at full speed; at a fixed rate, the most requests in flight.
    #[arg(long, default_value_t = 64)]
    pub publishers: usize,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait after the last answer for deliveries still on their way.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
    /// Create the groups before connecting (default: connect first, then create, which needs
    /// live membership in the gateway).
    #[arg(long)]
    pub create_first: bool,
    /// Sockets connecting at the same time during setup.
    #[arg(long, default_value_t = 200)]
    pub connect_concurrency: usize,
    /// Upper bound on messages (memory of the send-time table: 9 bytes per message).
    #[arg(long, default_value_t = 2_000_000)]
    pub max_messages: usize,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Write the JSON result here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// How long a member keeps retrying a refused connect.
const CONNECT_RETRY: Duration = Duration::from_secs(60);

/// State of a message number in [`Shared::state`].
const UNSENT: u8 = 0;
const IN_FLIGHT: u8 = 1;
const ACCEPTED: u8 = 2;
const FAILED: u8 = 3;

/// What publishers and receiving sockets share.
struct Shared {
    origin: Instant,
    /// Send time of message n (ns since `origin`), written just before its POST.
    sent_ns: Vec<AtomicU64>,
    /// [`UNSENT`] → [`IN_FLIGHT`] → [`ACCEPTED`] | [`FAILED`].
    state: Vec<AtomicU8>,
    /// `client_msg_id` prefix of this run: other runs' messages are not counted.
    prefix: String,
    connected: AtomicUsize,
    connect_failed: AtomicUsize,
    /// Connect attempts that failed and were retried.
    connect_retries: AtomicUsize,
    joined: AtomicUsize,
    deliveries: AtomicU64,
    /// Set just before the stop token is cancelled. Receiving sockets read this flag after each
    /// burst: `CancellationToken::is_cancelled` and a poll of a waiting `cancelled()` each take a
    /// mutex that every socket of the process shares.
    stopping: AtomicBool,
}

/// What one member socket saw.
#[derive(Default)]
struct MemberResult {
    /// (message number, end-to-end latency in µs) per receipt.
    receipts: Vec<(u64, u32)>,
    last_receipt_ns: u64,
    dropped: bool,
    first_not_snapshot: bool,
    error: Option<String>,
}

pub async fn run(args: FanoutArgs) -> Result<Report> {
    let (g, m) = (args.groups, args.members);
    if g == 0 || m < 2 || args.gateways.is_empty() {
        bail!("need at least 1 group, 2 members per group and 1 gateway");
    }
    let identity = Identity::new(&args.auth)?;
    let api = Api::new(&args.api, identity.clone(), args.publishers + 16)?;
    let mut report = Report::new(
        "fanout",
        json!({"groups": g, "members": m, "rate_per_s": if args.rate > 0.0 { json!(args.rate) } else { json!("max") },
               "publishers": args.publishers, "duration_s": args.duration, "grace_s": args.grace,
               "gateways": args.gateways.len(), "connect_first": !args.create_first,
               "auth": args.auth.auth}),
    );
    let started = Instant::now();
    let run_id = Uuid::new_v4().simple().to_string();
    let cap = args.max_messages.min(if args.rate > 0.0 {
        (args.rate * args.duration * 1.5) as usize + 1000
    } else {
        usize::MAX
    });
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        sent_ns: (0..cap).map(|_| AtomicU64::new(0)).collect(),
        state: (0..cap).map(|_| AtomicU8::new(UNSENT)).collect(),
        prefix: format!("f{}-", &run_id[..10]),
        connected: AtomicUsize::new(0),
        connect_failed: AtomicUsize::new(0),
        connect_retries: AtomicUsize::new(0),
        joined: AtomicUsize::new(0),
        deliveries: AtomicU64::new(0),
        stopping: AtomicBool::new(false),
    });
    let users: Vec<Uuid> = (0..g * m).map(|_| Uuid::new_v4()).collect();
    let total = users.len();

    let create = |api: Api, users: Vec<Uuid>| async move {
        let mut ids = Vec::with_capacity(g);
        // Groups are created a few at a time: setup is not what is measured.
        for chunk in (0..g).collect::<Vec<_>>().chunks(8) {
            let calls = chunk.iter().map(|&gi| {
                let members = &users[gi * m..(gi + 1) * m];
                let api = api.clone();
                async move {
                    api.create_group(members[0], &members[1..], &format!("bench fanout {gi}"))
                        .await
                }
            });
            for r in futures_util::future::join_all(calls).await {
                ids.push(r?);
            }
        }
        anyhow::Ok(ids)
    };

    let mut conversation_ids = Vec::new();
    if args.create_first {
        conversation_ids = create(api.clone(), users.clone()).await?;
    }

    // Connect every member.
    let stop = CancellationToken::new();
    let connect_limit = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let connect_started = Instant::now();
    let mut sockets = Vec::with_capacity(total);
    for (i, &user) in users.iter().enumerate() {
        let url = args.gateways[i % args.gateways.len()].clone();
        sockets.push(tokio::spawn(member(
            shared.clone(),
            url,
            identity.clone(),
            user,
            !args.create_first,
            connect_limit.clone(),
            stop.clone(),
        )));
    }
    let connected = wait_for(Duration::from_secs(180), || {
        shared.connected.load(Ordering::Relaxed) + shared.connect_failed.load(Ordering::Relaxed)
            >= total
    })
    .await;
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let n_connected = shared.connected.load(Ordering::Relaxed);
    report.metric("sockets connected", n_connected as f64, "");
    report.metric(
        "socket connect failures",
        shared.connect_failed.load(Ordering::Relaxed) as f64,
        "",
    );
    report.metric(
        "socket connect attempts failed and retried",
        shared.connect_retries.load(Ordering::Relaxed) as f64,
        "",
    );
    report.metric(
        "connect rate",
        n_connected as f64 / connect_secs.max(1e-9),
        "sockets/s",
    );
    if !connected {
        report.note("not every socket finished connecting within 180 s");
    }

    if !args.create_first {
        conversation_ids = create(api.clone(), users.clone()).await?;
        let all_joined = wait_for(Duration::from_secs(60), || {
            shared.joined.load(Ordering::Relaxed) >= n_connected
        })
        .await;
        let joined = shared.joined.load(Ordering::Relaxed);
        report.metric("sockets that saw conversation.joined", joined as f64, "");
        if !all_joined {
            report.note(format!(
                "{} connected sockets never saw conversation.joined within 60 s (live membership)",
                n_connected - joined
            ));
        }
    }

    // The gateways' own count of the NATS leg, read before and after the run (the difference is
    // this run's); a gateway that does not answer only loses that split.
    let metrics_http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let lag_before = gateway_lag(&metrics_http, &args.gateways).await;

    // Publish.
    let headers: Arc<Vec<(&'static str, String)>> =
        Arc::new(users.iter().map(|&u| identity.header(u)).collect());
    let conversation_ids = Arc::new(conversation_ids);
    let http = Arc::new(Mutex::new((
        Latencies::new(),
        BTreeMap::<String, u64>::new(),
    )));
    let next = Arc::new(AtomicU64::new(0));
    let publish_started = Instant::now();
    let first_send_ns = nanos_since(shared.origin);
    let stop_at = publish_started + secs(args.duration);
    let publish_one = {
        let (shared, api, headers, conversation_ids, http) = (
            shared.clone(),
            api.clone(),
            headers.clone(),
            conversation_ids.clone(),
            http.clone(),
        );
        move |n: u64| {
            let (shared, api, headers, conversation_ids, http) = (
                shared.clone(),
                api.clone(),
                headers.clone(),
                conversation_ids.clone(),
                http.clone(),
            );
            async move {
                let gi = n as usize % g;
                let sender = gi * m + (n as usize / g) % m;
                let (h, v) = &headers[sender];
                let client_msg_id = format!("{}{n}", shared.prefix);
                shared.state[n as usize].store(IN_FLIGHT, Ordering::Relaxed);
                let t0 = Instant::now();
                shared.sent_ns[n as usize].store(nanos_since(shared.origin), Ordering::Release);
                let result = api.send((h, v), conversation_ids[gi], &client_msg_id).await;
                let latency = t0.elapsed();
                let key = match &result {
                    Ok(sent) => sent.status.to_string(),
                    Err(e) => format!("transport: {e}").chars().take(80).collect(),
                };
                let accepted = matches!(&result, Ok(s) if s.status == 201);
                shared.state[n as usize]
                    .store(if accepted { ACCEPTED } else { FAILED }, Ordering::Release);
                let mut guard = http.lock().expect("not poisoned");
                guard.0.record(latency);
                *guard.1.entry(key).or_default() += 1;
            }
        }
    };
    let mut late_ticks = 0u64;
    if args.rate > 0.0 {
        // Open loop: one request per tick whatever the answers do, so a slow answer does not
        // hide the requests that would have followed it (coordinated omission).
        let in_flight = Arc::new(Semaphore::new(args.publishers.max(1)));
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut tasks = Vec::new();
        loop {
            tick.tick().await;
            let n = next.fetch_add(1, Ordering::Relaxed);
            if Instant::now() >= stop_at || n as usize >= cap {
                break;
            }
            let permit = match in_flight.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    late_ticks += 1;
                    in_flight.clone().acquire_owned().await?
                }
            };
            let f = publish_one(n);
            tasks.push(tokio::spawn(async move {
                f.await;
                drop(permit);
            }));
        }
        for t in tasks {
            t.await?;
        }
    } else {
        let mut tasks = Vec::new();
        for _ in 0..args.publishers.max(1) {
            let (next, publish_one) = (next.clone(), publish_one.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if Instant::now() >= stop_at || n as usize >= cap {
                        break;
                    }
                    publish_one(n).await;
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
    }
    let publish_secs = publish_started.elapsed().as_secs_f64();

    // Accepted messages per group, and how many deliveries that makes.
    let mut expected: Vec<Vec<u64>> = vec![Vec::new(); g];
    let (mut accepted, mut failed) = (0u64, 0u64);
    for (n, state) in shared.state.iter().enumerate() {
        match state.load(Ordering::Acquire) {
            ACCEPTED => {
                accepted += 1;
                expected[n % g].push(n as u64);
            }
            FAILED => failed += 1,
            _ => {}
        }
    }
    let expected_deliveries = accepted * m as u64;
    let grace_started = Instant::now();
    wait_for(secs(args.grace), || {
        shared.deliveries.load(Ordering::Relaxed) >= expected_deliveries
    })
    .await;
    // A little longer in any case, so late duplicates are seen too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grace_used = grace_started.elapsed().as_secs_f64();
    shared.stopping.store(true, Ordering::Relaxed);
    stop.cancel();
    let lag_after = gateway_lag(&metrics_http, &args.gateways).await;

    let mut e2e = Latencies::new();
    let mut total_tally = Tally::default();
    let (mut dropped, mut first_not_snapshot, mut last_ns) = (0u64, 0u64, first_send_ns);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let r = socket.await?;
        if let Some(e) = r.error {
            *errors.entry(e).or_default() += 1;
        }
        dropped += u64::from(r.dropped);
        first_not_snapshot += u64::from(r.first_not_snapshot);
        last_ns = last_ns.max(r.last_receipt_ns);
        let mut numbers = Vec::with_capacity(r.receipts.len());
        for &(n, micros) in &r.receipts {
            e2e.record_micros(u64::from(micros));
            numbers.push(n);
        }
        total_tally.add(ledger::tally(&expected[i / m], &numbers));
    }
    let delivery_window = (last_ns.saturating_sub(first_send_ns)) as f64 / 1e9;
    let (latencies, statuses) = {
        let guard = http.lock().expect("not poisoned");
        (guard.0.clone(), guard.1.clone())
    };

    report.duration_secs = started.elapsed().as_secs_f64();
    report.metric("messages accepted (201)", accepted as f64, "");
    report.metric("messages failed", failed as f64, "");
    report.metric("messages sent/s", accepted as f64 / publish_secs, "1/s");
    report.metric("deliveries expected", expected_deliveries as f64, "");
    report.metric("deliveries", total_tally.delivered as f64, "");
    report.metric(
        "deliveries/s",
        total_tally.delivered as f64 / delivery_window.max(1e-9),
        "1/s",
    );
    report.metric("missing deliveries", total_tally.missing as f64, "");
    report.metric("duplicate deliveries", total_tally.duplicates as f64, "");
    report.metric("unexpected deliveries", total_tally.unexpected as f64, "");
    report.latency("end-to-end", &e2e.summary());
    report.latency("http", &latencies.summary());
    match (lag_before, lag_after) {
        (Ok(before), Ok(after)) => report_nats_leg(&mut report, &before, &after),
        (Err(e), _) | (_, Err(e)) => {
            report.note(format!("no NATS-leg split: {e:#}"));
        }
    }
    report.metric("sockets dropped during the run", dropped as f64, "");
    report.metric("grace used", grace_used, "s");
    if first_not_snapshot > 0 {
        report.note(format!(
            "{first_not_snapshot} sockets got another event before presence.snapshot \
             (docs/websocket.md, \"After the upgrade\")"
        ));
    }
    if late_ticks > 0 {
        report.note(format!(
            "{late_ticks} sends started late: {} requests were already in flight",
            args.publishers
        ));
    }
    for (k, v) in statuses.iter().filter(|(k, _)| *k != "201") {
        report.note(format!("send status {k}: {v}"));
    }
    for (k, v) in errors {
        report.note(format!("socket error ×{v}: {k}"));
    }
    Ok(report)
}

/// Each gateway's [`prom::EVENT_LAG`] histogram, in `gateways` order (duplicates read once).
async fn gateway_lag(http: &reqwest::Client, gateways: &[String]) -> Result<Vec<Buckets>> {
    let mut seen: Vec<&String> = Vec::new();
    let mut all = Vec::new();
    for url in gateways {
        if seen.contains(&url) {
            continue;
        }
        seen.push(url);
        all.push(prom::fetch(http, url, prom::EVENT_LAG).await?);
    }
    Ok(all)
}

/// The NATS leg of this run (publish to the gateway's receipt, one event per message and gateway
/// holding a member): bucket bounds of its quantiles, summed over the gateways.
fn report_nats_leg(report: &mut Report, before: &[Buckets], after: &[Buckets]) {
    let mut run = Buckets::default();
    for (after, before) in after.iter().zip(before) {
        run.add(&after.since(before));
    }
    report.metric("gateway NATS-leg events", run.count(), "");
    for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        match run.quantile_bound(q) {
            Some(bound) if bound.is_finite() => {
                report.metric(&format!("gateway NATS leg {label} ≤"), bound * 1e3, "ms")
            }
            Some(_) => report.note(format!(
                "gateway NATS leg {label} above the histogram's last bound"
            )),
            None => {}
        }
    }
}

/// One member: connect, check the snapshot comes first, (optionally) wait for its group's
/// `conversation.joined`, then record every `message.new` of this run until `stop`.
async fn member(
    shared: Arc<Shared>,
    url: String,
    identity: Identity,
    user: Uuid,
    wait_joined: bool,
    connect_limit: Arc<Semaphore>,
    stop: CancellationToken,
) -> MemberResult {
    let mut result = MemberResult::default();
    // Held until the first event (or a failure): bounds sockets in setup, not sockets open.
    let mut permit = Some(connect_limit.acquire_owned().await.expect("never closed"));
    // A refused connect is retried with back-off for up to a minute, as a real client would.
    let retry_until = Instant::now() + CONNECT_RETRY;
    let mut attempt = 0;
    let mut ws = loop {
        match client::DrainSocket::connect(&url, &identity, user).await {
            Ok(ws) => break ws,
            Err(e) if Instant::now() >= retry_until => {
                result.error = Some(client::error_kind(&e));
                shared.connect_failed.fetch_add(1, Ordering::Relaxed);
                return result;
            }
            Err(_) => {
                shared.connect_retries.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(backoff(attempt, jitter())).await;
                attempt += 1;
            }
        }
    };
    let mut seen_first = false;
    let mut joined = !wait_joined;
    // One waiter on the token for the whole run, polled only while the socket has nothing to
    // read: each poll of a waiting `cancelled()` takes a mutex every socket of this process
    // shares. While messages keep coming, the `stopping` flag ends the loop.
    let mut stopped = std::pin::pin!(stop.cancelled());
    'run: loop {
        // Every message already received, then one wait (client::DrainSocket).
        let mut delivered = 0u64;
        loop {
            let text = match ws.read() {
                client::Drained::Text(text) => text,
                client::Drained::Empty => break,
                client::Drained::Closed(error) => {
                    result.dropped = seen_first;
                    if !seen_first {
                        result.error =
                            Some(error.map_or("closed before the first event".into(), |e| {
                                format!("read: {e}").chars().take(120).collect()
                            }));
                        shared.connect_failed.fetch_add(1, Ordering::Relaxed);
                    } else if let Some(e) = error {
                        result.error = Some(format!("read: {e}").chars().take(120).collect());
                    }
                    shared.deliveries.fetch_add(delivered, Ordering::Relaxed);
                    break 'run;
                }
            };
            let now_ns = nanos_since(shared.origin);
            // One event per message; a message holding several lines is still counted whole.
            for line in text.as_str().split('\n').filter(|l| !l.is_empty()) {
                if !seen_first {
                    seen_first = true;
                    result.first_not_snapshot = !line.contains("\"type\":\"presence.snapshot\"");
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                    permit.take();
                }
                if let Some(n) = ledger::message_number(line, &shared.prefix) {
                    let Some(sent) = shared.sent_ns.get(n as usize) else {
                        continue;
                    };
                    let sent = sent.load(Ordering::Acquire);
                    let micros = now_ns.saturating_sub(sent) / 1000;
                    result
                        .receipts
                        .push((n, micros.min(u64::from(u32::MAX)) as u32));
                    result.last_receipt_ns = now_ns;
                    delivered += 1;
                } else if !joined && line.contains("\"type\":\"conversation.joined\"") {
                    joined = true;
                    shared.joined.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // The shared counter once per burst: every receiving task updates it, and an add per
        // event from every task made the two cores trade its cache line for each of them.
        if delivered > 0 {
            shared.deliveries.fetch_add(delivered, Ordering::Relaxed);
        }
        if shared.stopping.load(Ordering::Relaxed) {
            break;
        }
        tokio::select! {
            biased;
            ready = ws.readable() => {
                if let Err(e) = ready {
                    result.dropped = seen_first;
                    result.error = Some(format!("read: {e}").chars().take(120).collect());
                    break;
                }
            }
            _ = &mut stopped => break,
        }
    }
    drop(permit);
    result
}

/// Polls `done` every 20 ms until it holds (true) or `limit` passes (false).
pub async fn wait_for(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
