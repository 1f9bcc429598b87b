//! Building and running the HTTP application: connections to PostgreSQL, NATS and Redis, the
//! route tree, background maintenance, and graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use poem::{
    Endpoint, EndpointExt, IntoResponse, Response, Route, Server,
    endpoint::StaticFilesEndpoint,
    error::{MethodNotAllowedError, NotFoundError},
    get,
    http::StatusCode,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};
use retich_migrations as migrate;
use secrecy::ExposeSecret;
use shared_redis::RedisConn;
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{AuthMode, Settings},
    error::ApiError,
    events::{Backlog, Publisher},
    ingest::Ingest,
    metrics::{HttpMetrics, Metrics},
    partitions,
    rate_limit::RateLimiter,
    routes,
    state::AppState,
    storage::Storage,
    user_service::UserService,
};

/// Longest a Redis command may take on a request path before the request goes on without it
/// (rate limiting fails open, typing lists are empty).
const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest one NATS connection attempt may take (TCP, INFO, TLS, CONNECT, PONG). A handshake
/// takes milliseconds on a healthy network; 2 s leaves room for TLS on a loaded link while an
/// attempt stuck on an address that no longer answers (a node gone without a reset) gives way to
/// the next one within 2 s rather than the client's default 5 s.
const NATS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Delay before NATS reconnection attempt `attempts` (1 for the first after a loss, back to 0
/// once connected). The first is immediate: in a cluster another server takes the connection at
/// once. Then 50 ms more per attempt up to 250 ms, plus 0–50 ms of jitter so the replicas do not
/// reconnect in step. A server that comes back is thus reached within about 300 ms (the client's
/// default delay doubles with every attempt up to 4 s: after a 2 s outage it waits about another
/// second), while a failed attempt
/// against a closed port costs one refused TCP connection, so three or four a second per replica
/// put no load on NATS during a long outage.
fn nats_reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let step = Duration::from_millis(50)
        .saturating_mul(u32::try_from(attempts - 1).unwrap_or(u32::MAX))
        .min(Duration::from_millis(250));
    // Any random bits do; uuid's generator is already here.
    let jitter = Duration::from_millis((uuid::Uuid::new_v4().as_u128() % 51) as u64);
    step + jitter
}

/// A built application: bound to its port, connected, not yet serving.
pub struct Application {
    acceptor: TcpAcceptor,
    port: u16,
    state: AppState,
    /// Cancelled on shutdown; background tasks (partition maintenance) select on it.
    stop: CancellationToken,
}

/// Opens the PostgreSQL pool, failing fast with a clear error when the server cannot be reached.
pub async fn connect_database(settings: &Settings) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(settings.database_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(settings.database_url.expose_secret())
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")
}

/// `application_name` of the message writers' connections.
pub const SEND_WRITER_APPLICATION: &str = "api-service send writer";

/// The message writers' own connections (`SEND_WRITERS`, one each): their send statement is the
/// same every time and finds its rows by key whatever the batch holds, so they keep one generic
/// plan (`plan_cache_mode = force_generic_plan`) instead of planning it again for every small
/// batch — at one message per batch, planning takes longer than running it.
/// Connected lazily: the main pool has already shown the server is there. They show in
/// `pg_stat_activity` as [`SEND_WRITER_APPLICATION`].
pub fn ingest_database(settings: &Settings) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = settings
        .database_url
        .expose_secret()
        .parse()
        .context("DATABASE_URL")?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.send_writers.max(1) as u32)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(
            options
                .application_name(SEND_WRITER_APPLICATION)
                .options([("plan_cache_mode", "force_generic_plan")]),
        ))
}

impl Application {
    /// Connects everything, migrates when `AUTO_MIGRATE` is set, and binds the listener
    /// (`PORT=0` binds a free port; see [`Application::port`]).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        if settings.auth.mode == AuthMode::Header {
            tracing::warn!(
                "AUTH_MODE=header: X-User-ID is trusted as the caller's identity. Run this only behind the ReTiCh API gateway, where nothing else can reach the service."
            );
        }
        if settings.auto_migrate
            && migrate::create_database_if_missing(settings.database_url.expose_secret())
                .await
                .context("cannot reach PostgreSQL (DATABASE_URL)")?
        {
            tracing::info!("created the database named in DATABASE_URL");
        }
        let pool = connect_database(&settings).await?;
        if settings.auto_migrate {
            let mut conn = pool
                .acquire()
                .await
                .context("cannot connect to PostgreSQL")?;
            let applied = migrate::up(&mut conn, None)
                .await
                .context("AUTO_MIGRATE failed")?;
            tracing::info!(
                migrations.applied = applied,
                "database schema is up to date"
            );
        }
        {
            let mut conn = pool
                .acquire()
                .await
                .context("cannot connect to PostgreSQL")?;
            let state = migrate::current_version(&mut conn)
                .await
                .context("cannot read schema_migrations")?;
            anyhow::ensure!(
                !state.dirty,
                "the database schema is dirty at version {state}: fix it, then run `api-service migrate force <version>`"
            );
            if state.version.unwrap_or(0) < migrate::latest_version() {
                tracing::warn!(
                    schema.version = %state,
                    schema.latest = migrate::latest_version(),
                    "the database schema is behind this build: run `api-service migrate up` or set AUTO_MIGRATE=true"
                );
            }
        }
        let metrics = Metrics::new();
        let backlog = Backlog::new(settings.event_buffer_size, metrics.clone());
        // Every server of NATS_URL, plus those the cluster announces (discovery is on): when the
        // connected node dies the client moves to another at its first reconnection attempts.
        let nats = settings
            .nats_servers
            .apply_credentials(async_nats::ConnectOptions::new())
            .name("api-service")
            .retry_on_initial_connect()
            .reconnect_delay_callback(nats_reconnect_delay)
            .connection_timeout(NATS_CONNECTION_TIMEOUT)
            .event_callback(backlog.on_nats_event())
            .connect(settings.nats_servers.addrs())
            .await
            .context("invalid NATS_URL")?;
        let redis = Arc::new(
            RedisConn::new(settings.redis_url.expose_secret(), REDIS_COMMAND_TIMEOUT)
                .context("invalid REDIS_URL")?,
        );
        let verifier = shared_auth::Verifier::new(settings.auth.jwt_config());
        if settings.auth.mode == AuthMode::Jwt && !verifier.has_keys() {
            tracing::warn!(
                "AUTH_MODE=jwt with neither JWT_SECRET nor JWKS_URL: every authenticated request will get 401"
            );
        }
        let addr = format!("{}:{}", settings.host, settings.port);
        let acceptor = TcpListener::bind(addr.clone())
            .into_acceptor()
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let port = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().map(SocketAddr::port))
            .context("listener has no TCP address")?;
        let events = Publisher::new(
            nats.clone(),
            settings.nats_subject_prefix.clone(),
            metrics.clone(),
            backlog,
        );
        let users = UserService::new(settings.user_service_url.clone());
        let storage = Storage::from_settings(&settings, port).context("attachment storage")?;
        let settings = Arc::new(settings);
        let ingest = Ingest::start(
            settings.send_writers,
            ingest_database(&settings)?,
            RateLimiter::new(redis.clone(), settings.clone(), metrics.clone()),
            events.clone(),
            metrics.clone(),
        );
        let state = AppState {
            settings,
            pool,
            nats,
            redis,
            metrics,
            verifier,
            events,
            users,
            storage,
            media: crate::media::Inspector::default(),
            ingest,
        };
        Ok(Self {
            acceptor,
            port,
            state,
            stop: CancellationToken::new(),
        })
    }

    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The shared state (tests use its pool and settings).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains in-flight requests (bounded by
    /// `SHUTDOWN_TIMEOUT_SECONDS`) and stops background tasks.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            acceptor,
            port,
            state,
            stop,
        } = self;
        let settings = state.settings.clone();
        let maintenance = tokio::spawn(partitions::maintain(
            state.pool.clone(),
            settings.partition_months_ahead,
            settings.partition_check_interval,
            stop.clone(),
        ));
        // Publishes what NATS could not take at once, when it is back (events.rs).
        let publisher = tokio::spawn(state.events.clone().run(stop.clone()));
        // Folds histogram samples into their buckets even when nothing scrapes (metrics.rs).
        let metrics = tokio::spawn(
            state
                .metrics
                .clone()
                .run_upkeep(crate::metrics::UPKEEP_EVERY, stop.clone()),
        );
        tracing::info!(port, "api-service listening");
        let app = build_routes(state.clone());
        let result = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(app, shutdown, Some(settings.shutdown_timeout))
            .await;
        stop.cancel();
        let _ = maintenance.await;
        let _ = publisher.await;
        let _ = metrics.await;
        // Deliver whatever events are still buffered before the process ends.
        let _ = tokio::time::timeout(Duration::from_secs(2), state.nats.flush()).await;
        state.pool.close().await;
        tracing::info!("api-service stopped");
        result.context("HTTP server failed")
    }
}

/// The whole route tree with its middleware. Unknown paths answer 404 `404 page not found`
/// (text/plain) and known paths with another method 405 with an empty body (docs/api.md,
/// "Requests").
pub fn build_routes(state: AppState) -> impl poem::Endpoint {
    let metrics = state.metrics.clone();
    let api = routes::api_service();
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    // `/health` and `/ready` are operations of the OpenAPI service, which documents them.
    let route = Route::new()
        .at("/test", get(routes::ops::health))
        .at("/metrics", get(routes::ops::metrics))
        .at("/openapi.json", get(spec))
        .nest("/docs", docs);
    // The demo is served on the API's origin because the API sends no CORS headers.
    let route = match &state.settings.demo_dir {
        Some(dir) => route.nest(
            "/demo",
            StaticFilesEndpoint::new(dir)
                .index_file("index.html")
                .redirect_to_slash_directory(),
        ),
        None => route,
    };
    route
        .nest("/", api)
        .data(state)
        .catch_error(|_: NotFoundError| async { crate::http::not_found() })
        .catch_error(|_: MethodNotAllowedError| async {
            Response::builder()
                .status(StatusCode::METHOD_NOT_ALLOWED)
                .finish()
        })
        .catch_error(|_: poem_openapi::error::ParseParamError| async {
            ApiError::BadRequest("Invalid request parameters").into_response()
        })
        .around(|ep, mut req| async move {
            if let Some(resp) = crate::http::guard_uri(req.uri()) {
                return Ok(resp);
            }
            if let Some(uri) = crate::http::sanitize_path(req.uri()) {
                *req.uri_mut() = uri;
            }
            ep.call(req).await.map(IntoResponse::into_response)
        })
        .with(HttpMetrics(metrics))
}
