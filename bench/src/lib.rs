//! `retich-bench`: the load tool of ReTiCh Messaging. It drives the real api-service and
//! ws-gateway processes over REST and WebSocket and reports numbers; it asserts nothing.
//!
//! - [`stats`]: latency recording (HDR histogram) and the p50/p90/p99/max summary.
//! - [`ledger`]: which message reached which socket — missing and duplicate deliveries.
//! - [`spread`]: how N client sockets are split over worker processes and loopback source
//!   addresses so that no process opens more than its file limit and no source address runs out
//!   of ephemeral ports.
//! - [`client`]: the identity of a simulated user (jwt or header mode), the REST calls the
//!   scenarios need and the WebSocket connect (optionally bound to a source address).
//! - [`prom`]: a histogram read off a service's `/metrics` (the gateway's NATS leg of delivery).
//! - [`report`]: one scenario's result (metrics + parameters) as a table and as JSON, the
//!   machine it ran on, and the merge of several results into one file.
//! - [`scenarios`]: `send`, `fanout`, `idle`, `storm`, `fleet`, `pg-baseline` and the hidden
//!   socket-holding `worker` used by `idle`, `storm` and `fleet`.

pub mod client;
pub mod ledger;
pub mod prom;
pub mod report;
pub mod scenarios;
pub mod spread;
pub mod stats;
