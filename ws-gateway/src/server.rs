//! Startup, the accept loop, connection limits and the drain (mini-redis' `Listener`).
//!
//! [`Application::build`] connects everything (PostgreSQL must answer; NATS and Redis may come
//! later: NATS connects in the background and `/ready` says 503 until it does), binds the port
//! (0 in tests, then [`Application::port`] tells the real one) and raises the open-files limit.
//! [`Application::run_until`] accepts until its future resolves, then drains (`docs/websocket.md`,
//! "Keep-alive, limits and close codes": 1012; `docs/deployment.md`, "Scaling the gateways"):
//!
//! 1. `draining` is set: `/ready` and new upgrades answer 503 (the accept loop keeps running so
//!    they can be answered);
//! 2. the sockets open at that moment are asked to close with 1012, one after another, spread
//!    evenly over `WS_DRAIN_SECONDS`;
//! 3. the `shutdown` token is cancelled and every socket still open is asked to close with 1012
//!    at once (sockets still in setup close when their setup ends);
//! 4. once every connection task has ended (bounded), presence leaves Redis, NATS is flushed, and
//!    `run_until` returns.
//!
//! Connections are bounded by a semaphore of `MAX_CONNECTIONS` permits (default: the open-files
//! limit minus a reserve); a permit is taken before `accept`, so beyond the limit connections
//! wait in the kernel's backlog instead of failing with `EMFILE`.

use std::{
    future::Future,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::postgres::PgPoolOptions;
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::Semaphore,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use shared_ops::Chain;
use shared_redis::RedisConn;

use crate::{
    config::{AuthMode, Settings},
    fanout::Fanout,
    membership,
    metrics::Metrics,
    presence::PresenceStore,
    protocol::close,
    state::AppState,
    typing::TypingStore,
};

/// Open files kept for everything that is not a client connection (NATS, Redis, PostgreSQL,
/// logs, …).
const RESERVED_FILES: u64 = 256;
/// How long the end of a drain waits for connection tasks.
const FINAL_WAIT: Duration = Duration::from_secs(10);
/// Listen backlog asked for; the kernel caps it at `net.core.somaxconn` (4096 by default on
/// current kernels).
///
/// `TcpListener::bind` asks for 128. In a reconnect storm thousands of SYNs arrive within
/// milliseconds, far more than the accept loop takes in that time: with 128, most of them would
/// overflow the accept queue and be dropped, and the clients' SYN retransmissions (after 1, 3,
/// 7 s) — not the gateway's work — would set how long the storm takes.
const LISTEN_BACKLOG: u32 = 65_535;
/// Longest a Redis command (presence, typing) may take before the gateway goes on without it.
const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// A built gateway, bound but not yet accepting.
pub struct Application {
    listener: TcpListener,
    port: u16,
    state: Arc<AppState>,
    max_connections: usize,
    /// The NATS client's connection events; its event callback holds the sender.
    nats_events: tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>,
}

impl Application {
    /// Connects to PostgreSQL (required), NATS and Redis (both may come later), binds the port.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let open_files = raise_open_files_limit();
        let max_connections = settings.max_connections.unwrap_or_else(|| {
            open_files
                .saturating_sub(RESERVED_FILES)
                .max(RESERVED_FILES) as usize
        });

        // Boxed: these connect futures are large and would make every caller's future large.
        let db = Box::pin(
            PgPoolOptions::new()
                .max_connections(settings.database_max_connections)
                .acquire_timeout(Duration::from_secs(5))
                .connect(settings.database_url.expose_secret()),
        )
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")?;

        // The NATS client lives on the intake thread (crate::intake): its connection task is
        // spawned where it connects.
        let intake = crate::intake::Intake::start().context("cannot start the intake thread")?;
        // Connection events for `resync` after an interruption (crate::fanout::resync).
        let (nats_events, nats_event_receiver) = tokio::sync::mpsc::unbounded_channel();
        // Every server of NATS_URL, plus those the cluster announces (discovery is on): when the
        // connected node dies the client moves to another at its first reconnection attempts.
        let connect = settings
            .nats_servers
            .apply_credentials(async_nats::ConnectOptions::new())
            .name(format!("ws-gateway {}", settings.gateway_id))
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(nats_reconnect_delay)
            .event_callback(move |event| {
                let _ = nats_events.send(event);
                std::future::ready(())
            })
            .connect(settings.nats_servers.addrs().to_vec());
        let nats = intake
            .handle()
            .spawn(connect)
            .await
            .context("the intake thread stopped")?
            .context("cannot start the NATS client (NATS_URL)")?;
        let redis = Arc::new(
            RedisConn::new(settings.redis_url.expose_secret(), REDIS_COMMAND_TIMEOUT)
                .context("REDIS_URL")?,
        );

        let metrics = Arc::new(Metrics::new());
        let fanout = Fanout::new(
            nats.clone(),
            intake,
            settings.subject_prefix.clone(),
            Arc::clone(&metrics),
            settings.presence_max_members,
            settings.typing_rate_per_sec,
            settings.typing_burst,
            settings.resync_window,
        );
        let presence = Arc::new(PresenceStore::new(
            Arc::clone(&redis),
            nats.clone(),
            settings.subject_prefix.clone(),
            &settings.redis_prefix,
            settings.gateway_id.clone(),
            settings.presence_heartbeat,
            settings.presence_expiry,
            Arc::clone(&metrics),
        ));
        let typing = Arc::new(TypingStore::new(
            Arc::clone(&redis),
            nats.clone(),
            settings.subject_prefix.clone(),
            &settings.redis_prefix,
            Arc::clone(&metrics),
            settings.typing_rate_per_sec,
            settings.typing_burst,
        ));
        let verifier = shared_auth::Verifier::new(settings.jwt_config());
        match settings.auth_mode {
            AuthMode::Header => tracing::warn!(
                "AUTH_MODE=header: X-User-ID is trusted as is. Only run this way behind the API \
                 gateway, where nothing else can reach this port"
            ),
            AuthMode::Jwt if !verifier.has_keys() => tracing::warn!(
                "AUTH_MODE=jwt without JWT_SECRET or JWKS_URL: every handshake will be refused"
            ),
            AuthMode::Jwt => {}
        }

        let listener = listen(&settings.bind_address())
            .await
            .with_context(|| format!("cannot listen on {}", settings.bind_address()))?;
        let port = listener.local_addr()?.port();

        let loader = membership::Loader::start(
            db.clone(),
            settings.presence_max_members,
            settings.database_max_connections as usize,
        );
        let state = Arc::new(AppState {
            loader,
            settings,
            metrics,
            fanout,
            presence,
            typing,
            db,
            verifier,
            nats,
            redis,
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
        });
        state.fanout.start().await;
        // A previous process with this GATEWAY_ID (a restarted pod) may have left users behind.
        state.presence.leave().await;
        tracing::info!(
            port,
            gateway.id = %state.settings.gateway_id,
            max_connections,
            open_files,
            "ws-gateway listening"
        );
        Ok(Self {
            listener,
            port,
            state,
            max_connections,
            nats_events: nats_event_receiver,
        })
    }

    /// The bound port (the real one when `PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `stop` resolves, then drains and returns.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let state = self.state;
        let background = CancellationToken::new();
        let presence_task = tokio::spawn(
            Arc::clone(&state.presence).run(Arc::clone(&state.fanout), background.clone()),
        );
        let typing_task = tokio::spawn(Arc::clone(&state.typing).run_sweeper(background.clone()));
        let memory_task = tokio::spawn(crate::memory::run(
            Arc::clone(&state.metrics),
            crate::memory::CHECK_EVERY,
            background.clone(),
        ));
        // Folds histogram samples into their buckets even when nothing scrapes (metrics.rs).
        let metrics_task = tokio::spawn(
            Arc::clone(&state.metrics).run_upkeep(crate::metrics::UPKEEP_EVERY, background.clone()),
        );
        let connection_task = tokio::spawn(crate::fanout::resync::watch_connection(
            Arc::clone(&state.fanout),
            self.nats_events,
            background.clone(),
        ));
        let peers_task = state.fanout.take_peer_work().map(|work| {
            tokio::spawn(crate::peers::run(
                Arc::clone(&state.fanout),
                Arc::clone(&state.presence),
                state.db.clone(),
                state.settings.presence_max_members,
                work,
                background.clone(),
            ))
        });

        let tracker = TaskTracker::new();
        let listener = Listener {
            listener: self.listener,
            limit: Arc::new(Semaphore::new(self.max_connections)),
            state: Arc::clone(&state),
            tracker: tracker.clone(),
        };
        let mut accept = tokio::spawn(listener.run());
        tokio::select! {
            result = &mut accept => {
                background.cancel();
                return match result {
                    Ok(Err(error)) => Err(error),
                    Ok(Ok(())) => Ok(()),
                    Err(error) => Err(error.into()),
                };
            }
            _ = stop => {}
        }

        drain(&state).await;
        tracker.close();
        if tokio::time::timeout(FINAL_WAIT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the drain; exiting anyway");
        }
        accept.abort();
        background.cancel();
        let _ = presence_task.await;
        let _ = typing_task.await;
        let _ = memory_task.await;
        let _ = metrics_task.await;
        let _ = connection_task.await;
        if let Some(task) = peers_task {
            let _ = task.await;
        }
        state.presence.leave().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), state.nats.flush()).await;
        state.fanout.stop_intake();
        tracing::info!("drained; bye");
        Ok(())
    }
}

/// Steps 1–3 of the drain (module docs).
async fn drain(state: &AppState) {
    state.start_draining();
    let outboxes = state.fanout.outboxes();
    let window = state.settings.drain_window;
    tracing::info!(
        sockets = outboxes.len(),
        window.seconds = window.as_secs(),
        "draining"
    );
    let start = tokio::time::Instant::now();
    let count = outboxes.len() as u32;
    for (index, outbox) in outboxes.iter().enumerate() {
        tokio::time::sleep_until(start + window * index as u32 / count.max(1)).await;
        outbox.request_close(close::RESTART);
    }
    // Then everything still open: sockets registered after the list above was taken are asked
    // through their outboxes, and a socket registered after this sweep reads the cancelled
    // token when its setup ends (connection.rs), as do those still in setup.
    state.shutdown.cancel();
    for outbox in state.fanout.outboxes() {
        outbox.request_close(close::RESTART);
    }
}

/// The accept loop.
struct Listener {
    listener: TcpListener,
    /// Bounds open connections. Each connection task holds one permit until it ends; dropping
    /// the permit lets the loop accept again.
    limit: Arc<Semaphore>,
    state: Arc<AppState>,
    /// Tracks connection tasks so the drain can wait for all of them.
    tracker: TaskTracker,
}

impl Listener {
    async fn run(self) -> anyhow::Result<()> {
        loop {
            let permit = Arc::clone(&self.limit)
                .acquire_owned()
                .await
                .context("connection semaphore closed")?;
            let stream = self.accept().await;
            let state = Arc::clone(&self.state);
            self.tracker.spawn(async move {
                // Two boxes in turn, so an open socket keeps only the second one.
                let upgraded = Box::pin(crate::http::serve(stream, Arc::clone(&state))).await;
                if let Some(upgraded) = upgraded {
                    Box::pin(crate::connection::serve(upgraded, state)).await;
                }
                drop(permit);
            });
        }
    }

    /// Accepts one connection; transient errors (`EMFILE`, aborted handshakes) back off and
    /// retry, as mini-redis does.
    async fn accept(&self) -> TcpStream {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => return stream,
                Err(error) => {
                    tracing::warn!(error = %Chain(&error), "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// How long the NATS client waits before its `attempts`-th reconnection attempt: 50 ms more per
/// attempt up to 250 ms, plus up to 50 ms of jitter. A gateway is back within about a quarter of
/// a second of NATS accepting connections again (async-nats' default doubles up to seconds),
/// and a fleet reconnecting at once is spread over the jitter; an attempt to a server that is
/// down is one refused connection, so the steady retry costs little.
fn nats_reconnect_delay(attempts: usize) -> Duration {
    let step = Duration::from_millis(50 * attempts.min(5) as u64);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos() % 50_000_000);
    step + Duration::from_nanos(u64::from(jitter))
}

/// Binds `address` (`host:port`, the host may be a name) with a [`LISTEN_BACKLOG`] backlog.
async fn listen(address: &str) -> anyhow::Result<TcpListener> {
    let address = tokio::net::lookup_host(address)
        .await?
        .next()
        .context("the address resolves to nothing")?;
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As std's `TcpListener::bind` does on Unix: a restarted gateway rebinds at once even
    // while its old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    Ok(socket.listen(LISTEN_BACKLOG)?)
}

/// Raises the open-files soft limit to the hard limit, so the gateway can hold as many sockets as
/// the container allows (`docs/capacity.md`); returns the limit in force.
fn raise_open_files_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(error = %Chain(&error), "cannot raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}
