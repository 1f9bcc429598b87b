//! Integration tests of ws-gateway against real PostgreSQL, NATS and Redis on localhost. Each
//! test has its own database, subject prefix and key prefix, so they run in parallel. The
//! cross-gateway, kill and drain tests run the real binary as separate processes; the cluster tests
//! start a NATS cluster of their own.

mod delivery;
mod drain;
mod end_to_end;
mod handshake;
mod helpers;
mod limits;
mod membership;
mod metrics;
mod nats_cluster;
mod presence;
mod recovery;
mod redis_cluster;
mod startup;
mod subscriptions;
mod typing;
