//! The one integration-test binary of api-service: every test runs against the real PostgreSQL,
//! NATS and Redis of the machine, each in its own database, subject prefix and key prefix.

#![allow(dead_code)] // helpers are shared by every test module; not each uses all of them.

mod attachments;
mod conversations;
mod events;
mod helpers;
mod ingest;
mod messages;
mod migrations;
mod openapi;
mod operations;
mod participants;
mod pins;
mod reactions;
mod receipts;
mod redis_cluster;
mod redis_outage;
mod routing;
