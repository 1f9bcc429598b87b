//! The one integration-test binary of api-service: every test runs against the real PostgreSQL,
//! NATS and Redis of the machine, each in its own database, subject prefix and key prefix.

mod helpers;
mod migrations;
mod operations;
