//! api-service: the REST side of ReTiCh Messaging (docs/api.md).
//!
//! - [`config`]: settings from the environment, with local defaults.
//! - [`startup`]: connections, route tree, graceful shutdown ([`startup::Application`]).
//! - [`state`]: [`state::AppState`], the handles every request handler may use.
//! - [`migrate`]: golang-migrate compatible schema migrations, embedded in the binary.
//! - [`partitions`]: monthly `messages` partitions created ahead of time.
//! - [`routes`]: HTTP endpoints, one module per resource, assembled into one OpenAPI service.
//! - [`http`]: extractors and envelopes that let each route apply its check order exactly.
//! - [`error`]: the error envelope, and the conversion of the other modules' errors to it.
//! - [`resources`]: the wire shapes. [`db`]: all SQL.
//! - [`ingest`]: the send pipeline (checks, rate limit and write of message sends, batched).
//! - [`rate_limit`]: the fleet-wide per-user send token buckets in Redis.
//! - [`events`]: publishing protobuf events on NATS after commit, buffered while NATS is away.
//! - [`user_service`]: optional existence checks against the user service.
//! - [`storage`]: the attachment object store (local directory, S3 or Azure Blob).
//! - [`sniff`]: what an uploaded file is (allowed types, magic bytes).
//! - [`media`]: thumbnails and durations of uploads.
//! - [`metrics`]: Prometheus counters and the request middleware.

pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod http;
pub mod ingest;
pub mod media;
pub mod metrics;
pub mod partitions;
pub mod rate_limit;
pub mod resources;
pub mod routes;
pub mod sniff;
pub mod startup;
pub mod state;
pub mod storage;
pub mod user_service;
