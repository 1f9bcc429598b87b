//! The request and response plumbing that lets every route apply its check order exactly:
//! nothing here fails on its own except the jwt credential check, which comes first
//! (docs/api.md, "Identity"). Everything else is captured and judged by the handler at its step:
//!
//! - [`identity`]: [`Caller`]. jwt mode verifies the token during extraction (→ 401 before
//!   anything else); header mode keeps the `X-User-ID` outcome for the route's `HDR` step.
//! - [`params`]: typed path and query parameters, judged by the route at its `PATH-*` and `PAGE`
//!   steps (docs/api.md, "Paging").
//! - [`body`]: [`JsonBody`], the raw body read up to 1 MiB (+1 byte to detect overflow), parsed
//!   at the `BODY` step into [`JsonObject`] whose typed getters apply docs/api.md ("Requests").
//! - [`envelope`]: [`Data`], [`Page`], [`NoContent`], the success envelopes of docs/api.md
//!   ("Responses"), described to the OpenAPI document with an example ([`BodyExample`]).
//! - [`uri`]: the URI rules applied before routing ([`guard_uri`], [`sanitize_path`]).

pub mod body;
pub mod envelope;
pub mod identity;
pub mod params;
pub mod uri;

pub use body::{JsonBody, JsonObject, MAX_JSON_BODY, read_limited};
pub use envelope::{
    BodyExample, Data, NoContent, Page, Pagination, json_response, not_found, with_example,
};
pub use identity::{Caller, form_pairs};
pub use uri::{guard_uri, has_nul, sanitize_path};
