//! The shared state of the HTTP application: one [`AppState`], built by
//! [`crate::startup::Application::build`] and attached to every route, so handlers and extractors
//! read it without importing the module that builds it.

use std::sync::Arc;

use shared_redis::RedisConn;
use sqlx::PgPool;

use crate::{
    config::Settings, events::Publisher, ingest::Ingest, media::Inspector, metrics::Metrics,
    storage::Storage, user_service::UserService,
};

/// Everything a request handler may need. Cloned per request (all fields are handles).
#[derive(Clone)]
pub struct AppState {
    /// The settings read at start.
    pub settings: Arc<Settings>,
    /// The main PostgreSQL pool (the message writers have their own, held by [`Ingest`]).
    pub pool: PgPool,
    /// The NATS client events are published with (also flushed on shutdown).
    pub nats: async_nats::Client,
    /// Redis, for typing lists (rate limiting holds its own handle through [`Ingest`]).
    pub redis: Arc<RedisConn>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// The jwt-mode credential check.
    pub verifier: shared_auth::Verifier,
    /// Publishing events after commit, buffered while NATS is away.
    pub events: Publisher,
    /// Existence checks against the optional user service.
    pub users: UserService,
    /// The attachment object store.
    pub storage: Storage,
    /// Thumbnails and durations of uploads, off the async runtime.
    pub media: Inspector,
    /// The send pipeline (checks, rate limit and write of message sends, batched).
    pub ingest: Ingest,
}
