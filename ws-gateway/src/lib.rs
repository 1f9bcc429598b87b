//! ws-gateway: the WebSocket side of ReTiCh Messaging (`docs/websocket.md` is its contract).
//!
//! A tour, from the port inwards:
//! - [`server`]: [`Application`] (startup, accept loop, connection limit, SIGTERM drain);
//! - [`state`]: [`state::AppState`], what every connection and background task shares;
//! - [`http`]: the HTTP front on the raw socket — `/health`, `/ready`, `/metrics`, and the `/ws`
//!   handshake checks (draining, Origin, identity, upgrade) before the 101;
//! - [`connection`]: one socket — setup (conversations, presence, snapshot first), then one
//!   `select!` over the socket, its send queue, keep-alive and close requests;
//! - [`protocol`]: socket buffer sizes, close codes, typing-frame validation, token bucket;
//! - [`fanout`]: the registry of local sockets, reference-counted NATS subscriptions, and the
//!   delivery of each event (rendered once) to exactly the local sockets that should get it; its
//!   modules: `outbox` (a socket's send queue), `subscriptions` (NATS subscriptions, readiness,
//!   personal workers), `decode`, `delivery`, `live_membership`, `presence_index`, and
//!   [`fanout::resync`] (`resync` frames after a NATS interruption or the api-service's notice);
//! - [`intake`]: the thread and runtime the NATS client and the subscriptions run on;
//! - [`membership`]: the SQL of the gateway (a user's conversations at connect; a conversation's
//!   members once it may have become small enough to propagate presence);
//! - [`peers`]: `presence.online` for users who become presence peers while connected;
//! - [`presence`] / [`typing`]: the fleet-wide state in Redis and the events it emits (their keys
//!   and scripts live in `shared_redis::layout` and its modules — api-service reads the typing
//!   one);
//! - [`publish`]: publishing the gateway's own events on NATS;
//! - [`memory`]: gives the heap's freed memory back to the system after a burst;
//! - [`config`], [`metrics`]: settings, Prometheus (logs, the metrics registry and the shutdown
//!   signal: the `shared-ops` crate; Redis: the `shared-redis` crate).

pub mod config;
pub mod connection;
pub mod fanout;
pub mod http;
pub mod intake;
pub mod membership;
pub mod memory;
pub mod metrics;
pub mod peers;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod server;
pub mod state;
pub mod typing;

pub use server::Application;
