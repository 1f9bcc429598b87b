//! What api-service and ws-gateway share about events and NATS, and nothing else.
//!
//! - [`events`]: the protobuf types generated from `proto/retich/events/v1/*.proto` — the
//!   [`events::Event`] envelope published on NATS, its [`events::EventKind`] and one typed body
//!   per kind. The `.proto` files are the source of truth, usable from any language.
//! - [`subjects`]: the only place NATS subject names are built and parsed
//!   (`<prefix>.conv.<id>`, `<prefix>.user.<id>`, `<prefix>.presence.<id>`).
//! - [`nats`]: `NATS_URL`, one server or the comma-separated nodes of a cluster, checked at start,
//!   with the credentials a URL holds moved into the client's options.
//! - [`json`]: turns an [`events::Event`] into the exact client frame bytes of `docs/websocket.md`
//!   ("Messages and the envelope", "Server events"; payloads in the resource shapes of the
//!   OpenAPI document), plus the gateway-local `presence.snapshot` and `resync` frames and the
//!   API's timestamp format.
//!
//! [`prost`] is re-exported so both services encode and decode with the same version
//! (`use shared_proto::prost::Message as _;` brings `encode_to_vec` / `decode` into scope).

pub mod events;
pub mod json;
pub mod nats;
pub mod subjects;

pub use prost;
