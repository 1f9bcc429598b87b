//! The scenarios. Each takes its clap arguments, runs against services that are already up, and
//! returns a [`crate::report::Report`]; none of them starts or stops a service.
//!
//! - [`send`]: REST-only send throughput, C closed-loop clients over K conversations.
//! - [`fanout`]: G groups × M members on WebSocket, publishers over REST; end-to-end latency and
//!   exactly-once delivery.
//! - [`sockets`]: `idle`, `storm` and `fleet` — many sockets held by worker processes
//!   (`worker`), gateway memory from /proc, reconnect storms, and fan-out across a fleet.
//! - [`pg`]: PostgreSQL's own single-row insert rate (pgbench), the yardstick for `send`.

pub mod fanout;
pub mod pg;
pub mod send;
pub mod sockets;

use std::time::{Duration, Instant};

/// Nanoseconds since `origin`, as stored in atomics shared between publishers and receivers.
pub fn nanos_since(origin: Instant) -> u64 {
    Instant::now().duration_since(origin).as_nanos() as u64
}

/// Seconds as a `Duration` from a CLI float.
pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
