//! A Redis connection that may not exist yet, shared by api-service and ws-gateway, and the
//! layout of everything the two keep in Redis. Both keep only ephemeral data there (rate-limit
//! buckets, presence, typing), so both start and serve without it and degrade instead:
//! [`RedisConn::get`] answers `None` rather than blocking, and every command is bounded by the
//! handle's command timeout.
//!
//! - this module: the handle and its circuit breaker, on a [`fred`] client;
//! - [`layout`]: every key name and the hash tags that put each script's keys in one slot of a
//!   Redis Cluster; [`presence`], [`typing`], [`rate_limit`]: the Lua scripts and the commands
//!   around them, the only code that touches those keys (both services call these);
//! - [`testing`] (feature `test-support`): a `redis-server` or a 6-node Redis Cluster of a
//!   test's own;
//! - `tests` (unit tests only): the circuit against `redis-server`s of the tests' own.
//!
//! # Servers
//!
//! `REDIS_URL` chooses the deployment, in fred's syntax ([`check_url`]): `redis://` or
//! `rediss://` (TLS) for one server, `redis-cluster://host:port?node=host:port&…` for a Redis
//! Cluster (fred reads the slot map from any of the listed nodes and follows `MOVED`/`ASK`),
//! `redis-sentinel://…?sentinelServiceName=…` for a primary found through Sentinel, and
//! `redis+unix:///path` for a Unix socket.
//!
//! # The circuit
//!
//! A [`RedisConn`] has a circuit breaker, [`Circuit::Closed`] or [`Circuit::Open`].
//!
//! - **Closed**: [`RedisConn::get`] hands out a [`Conn`] on the shared connection (the first call
//!   connects, bounded by the command timeout; callers arriving meanwhile wait for that one
//!   attempt).
//! - **Opening**: the first sign that Redis is unreachable opens the circuit: a failed connection
//!   attempt, or a command that fails with an I/O error (connection refused, reset or dropped),
//!   runs out of the command timeout, or finds no live node for its slot (`CLUSTERDOWN`, a
//!   master lost in a Redis Cluster). A command error *from* Redis (`WRONGTYPE`, `NOSCRIPT`, a
//!   script error, …) shows that Redis is up and leaves the circuit closed. Opening drops the
//!   connection.
//! - **Open**: [`RedisConn::get`], [`run`] and [`RedisConn::ping`] answer `None` / `false` at once,
//!   without touching the network or waiting on a lock or a connection attempt, so a request path
//!   pays nothing for Redis being down (rate limiting fails open, presence and typing are empty).
//! - **Closing**: while open, one background probe (a tokio task, at most one per handle) connects
//!   and sends `PING` every probe interval ([`PROBE_INTERVAL`], or as given to
//!   [`RedisConn::with_probe_interval`]). The first answer installs that connection and closes the
//!   circuit, so callers get Redis back without doing anything. The probe holds only a [`Weak`]
//!   reference to the handle and is aborted when the [`RedisConn`] is dropped.
//!
//! A "connection" is one fred client (for a cluster: its connections to every primary). fred's
//! own reconnect policy is not used: a client that lost a connection is dropped with the circuit
//! opening, and the probe builds a fresh one, which reads the cluster's slot map anew — after a
//! failover it finds the promoted replica. fred would otherwise queue commands while it
//! reconnects; here a caller never waits for a reconnection.
//!
//! Callers therefore never connect after the first attempt: [`RedisConn::connection_attempts`]
//! counts the attempts made on a caller's behalf, [`RedisConn::probe_attempts`] the probe's.
//! A failure is only held against the connection it happened on, so a command still running on
//! a connection from before an outage cannot reopen the circuit once the probe has closed it.

use std::{
    fmt,
    future::Future,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

pub use fred;
use fred::{
    clients::Client,
    error::{Error, ErrorKind},
    interfaces::ClientLike,
    types::{Builder, ConnectHandle, config::Config},
};
use tokio::task::AbortHandle;

pub mod layout;
pub mod presence;
pub mod rate_limit;
pub mod typing;

pub use layout::Keys;

/// How often the probe of an open circuit tries to reach Redis, unless the handle was made with
/// [`RedisConn::with_probe_interval`].
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// URL schemes `REDIS_URL` may use (the TLS and Unix-socket forms included).
const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
    "redis+unix",
];

/// Checks a Redis URL as [`RedisConn::new`] will read it; the error says what is wrong (never
/// the URL, which may hold a password).
pub fn check_url(url: &str) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
    if !SCHEMES.contains(&scheme) {
        return Err(format!("scheme must be one of {}", SCHEMES.join(", ")));
    }
    Config::from_url(url)
        .map(|_| ())
        .map_err(|e| e.details().to_string())
}

/// The state of a handle's circuit breaker (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    /// Redis is taken to be up: callers get connections.
    Closed,
    /// Redis is taken to be down: callers get `None` at once while a probe waits for it.
    Open,
}

/// Lazily connected Redis handle with a circuit breaker; share it in an `Arc`.
pub struct RedisConn {
    /// The only strong reference: the probe task and every [`Conn`] hold a [`Weak`] one.
    shared: Arc<Shared>,
}

/// The state of one handle, shared (weakly) with its probe and its connections.
struct Shared {
    config: Config,
    /// How long one command (or a connection attempt) may take before it counts as Redis down.
    command_timeout: Duration,
    probe_interval: Duration,
    /// The circuit is open. Read without a lock; written only with `state` held.
    open: AtomicBool,
    /// A probe task exists; cleared, with `state` held, as the probe closes the circuit or when
    /// its task ends otherwise. Read without a lock; written only with `state` held.
    probing: AtomicBool,
    state: std::sync::Mutex<State>,
    /// Serialises the callers' connection attempts (only before the first connection).
    connecting: tokio::sync::Mutex<()>,
    connection_attempts: AtomicU64,
    probe_attempts: AtomicU64,
}

struct State {
    /// The connection while the circuit is closed; `None` before the first one and while open.
    link: Option<Arc<Link>>,
    /// Bumped each time a connection is installed; a [`Conn`] carries the generation it was
    /// handed out in, and a failure on an older one is ignored.
    generation: u64,
    /// The running probe task (which holds the other end: a [`Weak`] of this `Shared`), aborted
    /// when the handle is dropped.
    probe: Option<AbortHandle>,
}

/// One connected fred client and the task that drives its connections; the task is aborted
/// (closing its sockets) when the last [`Conn`] on it and the handle's own reference are gone.
struct Link {
    client: Client,
    task: ConnectHandle,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RedisConn {
    /// A handle for `url` (parsed now, connected on first use) whose commands may take at most
    /// `command_timeout`; its probe runs every [`PROBE_INTERVAL`].
    pub fn new(url: &str, command_timeout: Duration) -> Result<Self, Error> {
        Self::with_probe_interval(url, command_timeout, PROBE_INTERVAL)
    }

    /// [`new`](Self::new) with a probe that tries to reach Redis every `probe_interval` while
    /// the circuit is open.
    pub fn with_probe_interval(
        url: &str,
        command_timeout: Duration,
        probe_interval: Duration,
    ) -> Result<Self, Error> {
        check_url(url).map_err(|e| Error::new(ErrorKind::Url, e))?;
        Ok(Self {
            shared: Arc::new(Shared {
                config: Config::from_url(url)?,
                command_timeout,
                probe_interval,
                open: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                state: std::sync::Mutex::new(State {
                    link: None,
                    generation: 0,
                    probe: None,
                }),
                connecting: tokio::sync::Mutex::new(()),
                connection_attempts: AtomicU64::new(0),
                probe_attempts: AtomicU64::new(0),
            }),
        })
    }

    /// The bound on one command.
    pub fn command_timeout(&self) -> Duration {
        self.shared.command_timeout
    }

    /// The state of the circuit breaker.
    pub fn circuit(&self) -> Circuit {
        if self.shared.open.load(Ordering::Acquire) {
            Circuit::Open
        } else {
            Circuit::Closed
        }
    }

    /// Connection attempts made on a caller's behalf ([`get`](Self::get), [`run`],
    /// [`ping`](Self::ping)): at most one per closed spell without a connection, none while the
    /// circuit is open.
    pub fn connection_attempts(&self) -> u64 {
        self.shared.connection_attempts.load(Ordering::Relaxed)
    }

    /// Connection attempts made by the probe while the circuit was open.
    pub fn probe_attempts(&self) -> u64 {
        self.shared.probe_attempts.load(Ordering::Relaxed)
    }

    /// A connection, connecting first if there is none yet (bounded by the command timeout);
    /// `None` at once while the circuit is open. Commands sent on it directly are bounded by
    /// the command timeout but only [`run`] reports their failures to the circuit.
    pub async fn get(&self) -> Option<Conn> {
        let shared = &self.shared;
        if shared.open.load(Ordering::Acquire) {
            // The probe ends only by closing the circuit, unless its runtime went away: only then
            // does a caller take the state lock, to start a new one.
            if !shared.probing.load(Ordering::Acquire) {
                shared.ensure_probe();
            }
            return None;
        }
        if let Some(conn) = shared.current() {
            return Some(conn);
        }
        let _attempt = shared.connecting.lock().await;
        // Another caller's attempt may have connected or failed while this one waited.
        if shared.open.load(Ordering::Acquire) {
            return None;
        }
        if let Some(conn) = shared.current() {
            return Some(conn);
        }
        shared.connection_attempts.fetch_add(1, Ordering::Relaxed);
        // Boxed: fred's connection futures are large and this runs once per closed spell.
        match Box::pin(establish(&shared.config, shared.command_timeout)).await {
            Ok(link) => Some(shared.install(link)),
            Err(error) => {
                shared.open_circuit(None, &error);
                None
            }
        }
    }

    /// `PING` answered within the timeout; `false` at once while the circuit is open.
    pub async fn ping(&self) -> bool {
        run(
            self,
            "ping",
            |c| async move { c.ping::<String>(None).await },
        )
        .await
        .is_some()
    }

    /// The running probe task, if any.
    #[cfg(test)]
    fn probe_task(&self) -> Option<AbortHandle> {
        self.shared.lock().probe.clone()
    }
}

impl Drop for RedisConn {
    fn drop(&mut self) {
        if let Some(probe) = self.shared.lock().probe.take() {
            probe.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection on the installed client, if any.
    fn current(self: &Arc<Self>) -> Option<Conn> {
        let state = self.lock();
        let link = state.link.clone()?;
        Some(Conn {
            link,
            generation: state.generation,
            shared: Arc::downgrade(self),
        })
    }

    /// Installs `link` as the connection and closes the circuit.
    fn install(self: &Arc<Self>, link: Link) -> Conn {
        self.install_locked(&mut self.lock(), link)
    }

    fn install_locked(self: &Arc<Self>, state: &mut State, link: Link) -> Conn {
        let link = Arc::new(link);
        state.generation += 1;
        state.link = Some(Arc::clone(&link));
        if self.open.swap(false, Ordering::AcqRel) {
            tracing::info!("redis answers again; circuit closed");
        }
        Conn {
            link,
            generation: state.generation,
            shared: Arc::downgrade(self),
        }
    }

    /// Opens the circuit because of `why` (on the connection of `generation`, or of a connection
    /// attempt when `None`) and makes sure a probe runs.
    fn open_circuit(self: &Arc<Self>, generation: Option<u64>, why: &dyn fmt::Display) {
        let mut state = self.lock();
        if generation.is_some_and(|g| g != state.generation) {
            return;
        }
        if !self.open.swap(true, Ordering::AcqRel) {
            state.link = None;
            tracing::warn!(
                error = %why,
                "redis unavailable; circuit open, commands are skipped until a probe gets an answer"
            );
        }
        self.spawn_probe(&mut state);
    }

    /// Starts a probe if the circuit is open and none runs.
    fn ensure_probe(self: &Arc<Self>) {
        let mut state = self.lock();
        if self.open.load(Ordering::Acquire) {
            self.spawn_probe(&mut state);
        }
    }

    fn spawn_probe(self: &Arc<Self>, state: &mut State) {
        if self.probing.load(Ordering::Acquire) {
            return;
        }
        // Outside a runtime there is nothing to spawn on; the next caller inside one will.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.probing.store(true, Ordering::Release);
        let task = runtime.spawn(probe(
            Arc::downgrade(self),
            self.config.clone(),
            self.command_timeout,
            self.probe_interval,
        ));
        state.probe = Some(task.abort_handle());
    }
}

/// Clears [`Shared::probing`] when the probe task ends without closing the circuit (its handle
/// dropped, or its runtime shut down), so that the next caller starts a new one.
struct ProbeRunning(Weak<Shared>);

impl Drop for ProbeRunning {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            let mut state = shared.lock();
            shared.probing.store(false, Ordering::Release);
            state.probe = None;
        }
    }
}

/// The probe of an open circuit: every `interval`, connects and pings; the first answer closes
/// the circuit. Holds only a weak reference, so it ends once the handle is gone.
async fn probe(
    shared: Weak<Shared>,
    config: Config,
    command_timeout: Duration,
    interval: Duration,
) {
    let mut running = ProbeRunning(shared.clone());
    loop {
        tokio::time::sleep(interval).await;
        {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            if !shared.open.load(Ordering::Acquire) {
                return;
            }
            shared.probe_attempts.fetch_add(1, Ordering::Relaxed);
        }
        let attempt = establish(&config, command_timeout).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match attempt {
            Ok(link) => {
                // The probe ends as the circuit closes (one critical section), so a failure
                // right after this starts a new probe instead of finding this one about to end.
                running.0 = Weak::new();
                let mut state = shared.lock();
                shared.probing.store(false, Ordering::Release);
                state.probe = None;
                shared.install_locked(&mut state, link);
                return;
            }
            Err(error) => tracing::debug!(error = %error, "redis probe: still unavailable"),
        }
    }
}

/// A new client for `config`, connected and answering `PING`, bounded by the command timeout
/// (twice for the connection, once for the `PING`).
///
/// The client has no reconnect policy (a lost connection opens the circuit instead, and the
/// probe builds a new client), sends each command once, and fred bounds each command by the
/// command timeout as well.
async fn establish(config: &Config, command_timeout: Duration) -> Result<Link, Error> {
    let client = Builder::from_config(config.clone())
        .with_config(|c| c.fail_fast = true)
        .with_performance_config(|p| p.default_command_timeout = command_timeout)
        .with_connection_config(|c| {
            c.connection_timeout = command_timeout;
            c.internal_command_timeout = command_timeout;
            c.max_command_attempts = 1;
        })
        .build()?;
    let task = tokio::time::timeout(command_timeout * 2, client.init())
        .await
        .map_err(|_| timed_out())??;
    // From here on the link aborts the connection task if the `PING` fails.
    let link = Link { client, task };
    tokio::time::timeout(command_timeout, link.client.ping::<String>(None))
        .await
        .map_err(|_| timed_out())??;
    Ok(link)
}

fn timed_out() -> Error {
    Error::new(ErrorKind::Timeout, "redis did not answer in time")
}

/// `error` says Redis (or the node owning a key) cannot be reached, rather than Redis refusing
/// a command: an I/O error, a timeout, a command cancelled by a closing connection, no node for
/// a slot, or a cluster that is down or still moving slots after fred's redirections.
fn means_unreachable(error: &Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::IO
            | ErrorKind::Timeout
            | ErrorKind::Canceled
            | ErrorKind::Routing
            | ErrorKind::Cluster
    )
}

/// A connection handed out by [`RedisConn::get`]: derefs to the fred [`Client`] (commands,
/// scripts, pipelines). Cheap to clone; it keeps its client alive even after the circuit moved
/// on to a newer one.
#[derive(Clone)]
pub struct Conn {
    link: Arc<Link>,
    /// The `State::generation` this connection was handed out in.
    generation: u64,
    /// The handle's state, upgraded only to report a failure.
    shared: Weak<Shared>,
}

impl std::ops::Deref for Conn {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.link.client
    }
}

impl Conn {
    /// Opens the circuit (unless a newer connection replaced this one meanwhile) because of
    /// `why`.
    fn report(&self, why: &dyn fmt::Display) {
        if let Some(shared) = self.shared.upgrade() {
            shared.open_circuit(Some(self.generation), why);
        }
    }
}

/// Runs `f` on a connection, bounded by the handle's command timeout; `None` when the circuit is
/// open or the command failed (logged here, once). A failure that says Redis cannot be reached,
/// or running out of time, opens the circuit.
pub async fn run<T, F, Fut>(redis: &RedisConn, what: &'static str, f: F) -> Option<T>
where
    F: FnOnce(Conn) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let conn = redis.get().await?;
    let reporter = conn.clone();
    // Boxed: fred's command futures are large, and a caller's future would otherwise carry
    // every one it may await inline (one allocation per operation, next to a network round trip).
    match tokio::time::timeout(redis.command_timeout(), Box::pin(f(conn))).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, redis.operation = what, "redis command failed");
            if means_unreachable(&error) {
                reporter.report(&error);
            }
            None
        }
        Err(_) => {
            tracing::warn!(redis.operation = what, "redis command timed out");
            reporter.report(&"redis command timed out");
            None
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

#[cfg(test)]
mod tests;
