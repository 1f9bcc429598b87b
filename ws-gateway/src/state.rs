//! [`AppState`]: what every connection and background task of a gateway shares. [`crate::server`]
//! builds it and drives the drain; [`crate::http`] and [`crate::connection`] read it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use shared_redis::RedisConn;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Settings, fanout::Fanout, membership, metrics::Metrics, presence::PresenceStore,
    typing::TypingStore,
};

/// What every connection and background task shares.
pub struct AppState {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub fanout: Arc<Fanout>,
    pub presence: Arc<PresenceStore>,
    pub typing: Arc<TypingStore>,
    pub db: PgPool,
    /// Loads users' conversations at connect, batching concurrent connects.
    pub loader: membership::Loader,
    pub verifier: shared_auth::Verifier,
    pub nats: async_nats::Client,
    pub redis: Arc<RedisConn>,
    /// Set once the drain starts ([`AppState::start_draining`]): `/ready` and new upgrades
    /// answer 503.
    pub(crate) draining: AtomicBool,
    /// Cancelled at the end of the drain window; a socket whose setup ends after that closes
    /// with 1012 (open sockets are asked through their outboxes).
    pub shutdown: CancellationToken,
}

impl AppState {
    /// Whether the drain has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Starts the drain: from now on `/ready` and new upgrades answer 503.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
