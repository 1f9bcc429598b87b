//! api-service: the REST side of ReTiCh Messaging (http-api.md).
//!
//! - [`config`]: settings from the environment, with local defaults.
//! - [`startup`]: connections, route tree, graceful shutdown ([`startup::Application`]).
//! - [`migrate`]: golang-migrate compatible schema migrations, embedded in the binary.
//! - [`partitions`]: monthly `messages` partitions created ahead of time.
//! - [`routes`]: HTTP endpoints.
//! - [`metrics`]: Prometheus counters and the request middleware.
//! - [`redis_conn`]: a lazily connected Redis handle (Redis is optional at run time).
//! - [`telemetry`]: structured logging.

pub mod config;
pub mod metrics;
pub mod migrate;
pub mod partitions;
pub mod redis_conn;
pub mod routes;
pub mod startup;
pub mod telemetry;
