//! HTTP routes. `ops`: health, readiness, metrics.

pub mod ops;
