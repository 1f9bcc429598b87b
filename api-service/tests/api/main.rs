//! The one integration-test binary of api-service: every test runs against the real PostgreSQL,
//! NATS and Redis of the machine, each in its own database, subject prefix and key prefix.

#![allow(dead_code)] // helpers are shared by every test module; not each uses all of them.

mod helpers;
mod migrations;
mod operations;
mod routing;
mod openapi;
mod receipts;
mod pins;
mod messages;
mod reactions;
mod conversations;
mod participants;
mod attachments;
