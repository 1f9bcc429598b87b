//! A Redis connection that may not exist yet, shared by api-service and ws-gateway. Both keep
//! only ephemeral data in Redis (rate-limit buckets, presence, typing), so both start and serve
//! without it and degrade instead: [`RedisConn::get`] answers `None` rather than blocking, and
//! every command is bounded by the handle's command timeout.
//!
//! # The circuit
//!
//! A [`RedisConn`] has a circuit breaker, [`Circuit::Closed`] or [`Circuit::Open`].
//!
//! - **Closed**: [`RedisConn::get`] hands out a [`Conn`] on the shared connection (the first call
//!   connects, bounded by the command timeout; callers arriving meanwhile wait for that one
//!   attempt).
//! - **Opening**: the first sign that Redis is unreachable opens the circuit: a failed connection
//!   attempt, or a command that fails with an I/O error (connection refused, reset or dropped) or
//!   runs out of the command timeout. A command error *from* Redis (`WRONGTYPE`, `NOSCRIPT`, a
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
//! Callers therefore never connect after the first attempt: [`RedisConn::connection_attempts`]
//! counts the attempts made on a caller's behalf, [`RedisConn::probe_attempts`] the probe's.
//! A failure is only held against the connection it happened on, so a command still running on
//! a connection from before an outage cannot reopen the circuit once the probe has closed it.

use std::{
    fmt,
    future::Future,
    io,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use redis::{
    Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
};
use tokio::task::AbortHandle;

/// How often the probe of an open circuit tries to reach Redis, unless the handle was made with
/// [`RedisConn::with_probe_interval`].
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

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
    client: redis::Client,
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
    manager: Option<ConnectionManager>,
    /// Bumped each time a connection is installed; a [`Conn`] carries the generation it was
    /// handed out in, and a failure on an older one is ignored.
    generation: u64,
    /// The running probe task (which holds the other end: a [`Weak`] of this `Shared`), aborted
    /// when the handle is dropped.
    probe: Option<AbortHandle>,
}

impl RedisConn {
    /// A handle for `url` (parsed now, connected on first use) whose commands may take at most
    /// `command_timeout`; its probe runs every [`PROBE_INTERVAL`].
    pub fn new(url: &str, command_timeout: Duration) -> redis::RedisResult<Self> {
        Self::with_probe_interval(url, command_timeout, PROBE_INTERVAL)
    }

    /// [`new`](Self::new) with a probe that tries to reach Redis every `probe_interval` while
    /// the circuit is open.
    pub fn with_probe_interval(
        url: &str,
        command_timeout: Duration,
        probe_interval: Duration,
    ) -> redis::RedisResult<Self> {
        Ok(Self {
            shared: Arc::new(Shared {
                client: redis::Client::open(url)?,
                command_timeout,
                probe_interval,
                open: AtomicBool::new(false),
                probing: AtomicBool::new(false),
                state: std::sync::Mutex::new(State {
                    manager: None,
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
    /// `None` at once while the circuit is open.
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
        match establish(&shared.client, shared.command_timeout).await {
            Ok(manager) => Some(shared.install(manager)),
            Err(error) => {
                shared.open_circuit(None, &error);
                None
            }
        }
    }

    /// `PING` answered within the timeout; `false` at once while the circuit is open.
    pub async fn ping(&self) -> bool {
        let Some(mut conn) = self.get().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
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

    /// A connection on the installed manager, if any.
    fn current(self: &Arc<Self>) -> Option<Conn> {
        let state = self.lock();
        let manager = state.manager.clone()?;
        Some(Conn {
            manager,
            generation: state.generation,
            shared: Arc::downgrade(self),
            command_timeout: self.command_timeout,
        })
    }

    /// Installs `manager` as the connection and closes the circuit.
    fn install(self: &Arc<Self>, manager: ConnectionManager) -> Conn {
        self.install_locked(&mut self.lock(), manager)
    }

    fn install_locked(self: &Arc<Self>, state: &mut State, manager: ConnectionManager) -> Conn {
        state.generation += 1;
        state.manager = Some(manager.clone());
        if self.open.swap(false, Ordering::AcqRel) {
            tracing::info!("redis answers again; circuit closed");
        }
        Conn {
            manager,
            generation: state.generation,
            shared: Arc::downgrade(self),
            command_timeout: self.command_timeout,
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
            state.manager = None;
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
            self.client.clone(),
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
    client: redis::Client,
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
        let attempt = establish(&client, command_timeout).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match attempt {
            Ok(manager) => {
                // The probe ends as the circuit closes (one critical section), so a failure
                // right after this starts a new probe instead of finding this one about to end.
                running.0 = Weak::new();
                let mut state = shared.lock();
                shared.probing.store(false, Ordering::Release);
                state.probe = None;
                shared.install_locked(&mut state, manager);
                return;
            }
            Err(error) => tracing::debug!(error = %error, "redis probe: still unavailable"),
        }
    }
}

/// A new connection to `client` that has answered `PING`, bounded by the command timeout (twice
/// for the connection, once for the `PING`).
async fn establish(
    client: &redis::Client,
    command_timeout: Duration,
) -> RedisResult<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(command_timeout))
        .set_response_timeout(Some(command_timeout))
        .set_number_of_retries(1);
    let mut manager = tokio::time::timeout(
        command_timeout * 2,
        ConnectionManager::new_with_config(client.clone(), config),
    )
    .await
    .map_err(|_| timed_out())??;
    tokio::time::timeout(
        command_timeout,
        redis::cmd("PING").query_async::<String>(&mut manager),
    )
    .await
    .map_err(|_| timed_out())??;
    Ok(manager)
}

fn timed_out() -> RedisError {
    io::Error::from(io::ErrorKind::TimedOut).into()
}

/// `error` says Redis cannot be reached (rather than Redis refusing a command).
fn means_unreachable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
}

/// A connection handed out by [`RedisConn::get`]: use it like any async Redis connection. Each
/// command is bounded by the command timeout, and one that fails because Redis cannot be reached
/// opens the circuit of the handle it came from.
#[derive(Clone)]
pub struct Conn {
    manager: ConnectionManager,
    /// The `State::generation` this connection was handed out in.
    generation: u64,
    /// The handle's state, upgraded only to report a failure.
    shared: Weak<Shared>,
    command_timeout: Duration,
}

impl Conn {
    /// Opens the circuit if `result` says Redis cannot be reached.
    fn observe<T>(&self, result: &RedisResult<T>) {
        let Err(error) = result else {
            return;
        };
        if !means_unreachable(error) {
            return;
        }
        if let Some(shared) = self.shared.upgrade() {
            shared.open_circuit(Some(self.generation), error);
        }
    }

    /// Opens the circuit (unless a newer connection replaced this one meanwhile) because
    /// commands on it ran out of time.
    fn timed_out(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.open_circuit(Some(self.generation), &"redis command timed out");
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result =
                tokio::time::timeout(self.command_timeout, self.manager.req_packed_command(cmd))
                    .await
                    .unwrap_or_else(|_| Err(timed_out()));
            self.observe(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = tokio::time::timeout(
                self.command_timeout,
                self.manager.req_packed_commands(pipeline, offset, count),
            )
            .await
            .unwrap_or_else(|_| Err(timed_out()));
            self.observe(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}

/// Runs `f` on a connection, bounded by the handle's command timeout; `None` when the circuit is
/// open or the command failed (logged here, once). A failure that says Redis cannot be reached,
/// or running out of time, opens the circuit.
pub async fn run<T, F, Fut>(redis: &RedisConn, what: &'static str, f: F) -> Option<T>
where
    F: FnOnce(Conn) -> Fut,
    Fut: Future<Output = redis::RedisResult<T>>,
{
    let conn = redis.get().await?;
    let reporter = conn.clone();
    match tokio::time::timeout(redis.command_timeout(), f(conn)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, redis.operation = what, "redis command failed");
            None
        }
        Err(_) => {
            tracing::warn!(redis.operation = what, "redis command timed out");
            reporter.timed_out();
            None
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
pub mod testing;

#[cfg(test)]
mod tests;
