//! The request and response plumbing that lets every route apply http-api.md's check order
//! exactly: nothing here fails on its own except the jwt credential check, which the spec puts
//! first. Everything else is captured and judged by the handler at its step:
//!
//! - [`Caller`]: identity. jwt mode verifies the token during extraction (→ 401 before anything
//!   else); header mode keeps the `X-User-ID` outcome for the route's `HDR` step.
//! - [`JsonBody`]: the raw body, read up to 1 MiB (+1 byte to detect overflow), parsed at the
//!   `BODY` step into [`JsonObject`] whose typed getters implement §2.4.
//! - [`params`]: typed path and query parameters, judged by the route at its `PATH-*` and `PAGE`
//!   steps.
//! - [`Data`], [`Page`], [`NoContent`]: the success envelopes, serialised with serde exactly as
//!   §2.2 writes them, and described to the OpenAPI document with an example ([`BodyExample`]).

pub mod params;

use std::marker::PhantomData;

use poem::{IntoResponse, Request, RequestBody, Response, http::StatusCode};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions,
    registry::{
        MetaMediaType, MetaRequest, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef,
        MetaSecurityScheme, Registry,
    },
    types::Type,
};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;
use uuid::Uuid;

use crate::{
    config::AuthMode,
    error::{self, ApiError},
    startup::AppState,
};

/// Largest JSON body accepted (§2.4).
pub const MAX_JSON_BODY: usize = 1024 * 1024;

// ----- identity ---------------------------------------------------------------------------------

/// The caller's identity as far as it is known after extraction.
pub struct Caller {
    /// jwt mode: the verified user. header mode: the parsed `X-User-ID`, or `None` when it is
    /// missing or invalid (reported at the route's `HDR` step).
    user: Option<Uuid>,
    /// The bearer token, forwarded to the user service (jwt mode only; never logged).
    pub token: Option<String>,
}

impl Caller {
    /// The `HDR` step: the caller's id, or 400 in header mode.
    pub fn user(&self) -> Result<Uuid, ApiError> {
        self.user
            .ok_or(ApiError::BadRequest(error::INVALID_USER_HEADER))
    }
}

fn query_param<'a>(req: &'a Request, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let query = req.uri().query()?;
    form_pairs(query).find(|(k, _)| k == name).map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` pairs of a query string, percent-decoded (`+` is a space).
pub fn form_pairs(
    query: &str,
) -> impl Iterator<Item = (std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k), decode_component(v))
    })
}

fn decode_component(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return s.into();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

impl<'a> ApiExtractor<'a> for Caller {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        registry.create_security_scheme(
            "bearer",
            MetaSecurityScheme {
                ty: "http",
                description: Some(
                    "AUTH_MODE=jwt: `Authorization: Bearer <JWT>` (or `?token=`). AUTH_MODE=header: `X-User-ID` set by the ReTiCh API gateway.",
                ),
                name: None,
                key_in: None,
                scheme: Some("bearer"),
                bearer_format: Some("JWT"),
                flows: None,
                openid_connect_url: None,
            },
        );
    }

    fn security_schemes() -> Vec<&'static str> {
        vec!["bearer"]
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let state = req
            .data::<AppState>()
            .expect("AppState is attached to every route");
        match state.settings.auth.mode {
            AuthMode::Header => {
                let user = req
                    .headers()
                    .get("x-user-id")
                    .and_then(|v| v.to_str().ok())
                    .and_then(shared_auth::parse_uuid);
                Ok(Caller { user, token: None })
            }
            AuthMode::Jwt => {
                let header = req
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok());
                let query = query_param(req, "token");
                let token = shared_auth::bearer_token(header, query.as_deref())
                    .ok_or(ApiError::Unauthorized)?;
                match state.verifier.verify(token).await {
                    Ok(user) => Ok(Caller {
                        user: Some(user),
                        token: Some(token.to_owned()),
                    }),
                    Err(e) => {
                        tracing::debug!(reason = %e, "credential rejected");
                        Err(ApiError::Unauthorized.into())
                    }
                }
            }
        }
    }
}

// ----- JSON bodies ------------------------------------------------------------------------------

/// What was read of the body.
enum RawBody {
    Bytes(Vec<u8>),
    TooLarge,
    Unreadable,
}

/// A JSON request body, read but not yet judged. `T` only describes the body in the OpenAPI
/// document; parsing follows §2.4 through [`JsonObject`].
pub struct JsonBody<T> {
    raw: RawBody,
    _doc: PhantomData<fn() -> T>,
}

impl<T> JsonBody<T> {
    /// The `BODY` step: 413 when over 1 MiB, else the top-level object (`null` counts as `{}`),
    /// else 400 `Invalid JSON body`. Only the first JSON value is read.
    pub fn parse(&self) -> Result<JsonObject, ApiError> {
        let bytes = match &self.raw {
            RawBody::Bytes(b) => b,
            RawBody::TooLarge => return Err(ApiError::PayloadTooLarge),
            RawBody::Unreadable => return Err(ApiError::BadRequest(error::INVALID_JSON)),
        };
        let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<Value>();
        let object = match stream.next() {
            Some(Ok(Value::Object(map))) => map,
            Some(Ok(Value::Null)) => Map::new(),
            _ => return Err(ApiError::BadRequest(error::INVALID_JSON)),
        };
        Ok(JsonObject {
            map: object,
            raw: bytes.clone(),
        })
    }
}

/// Whether a JSON value holds U+0000 in any key or string, at any depth.
fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// The URI rule that applies before routing: a path with an empty segment (`//`, or a trailing
/// `/`) matches no route — path variables are non-empty — so it is the plain 404 of §2.3. The
/// one exception is `/demo/`, the demo's index page when `DEMO_DIR` is set (without it, `/demo/`
/// matches no route and is the same 404).
///
/// Values that PostgreSQL cannot hold (U+0000, in a path segment or a query value) are not
/// refused here: the credential check comes first (§2.1), and then each route judges them like
/// any other value — an id containing one is not a UUID, an emoji or search term containing one
/// matches nothing stored (see [`has_nul`]).
pub fn guard_uri(uri: &poem::http::Uri) -> Option<Response> {
    const DEMO_INDEX: &str = "/demo/";
    let path = uri.path();
    if path.len() > 1 && (path.contains("//") || (path.ends_with('/') && path != DEMO_INDEX)) {
        return Some(not_found());
    }
    None
}

/// The router drops a path variable whose percent-decoding is not UTF-8, and the operation then
/// fails with a plain-text 400 before the credential check. Such a segment can be no id, object
/// name or stored emoji, so it is replaced by `%00` (U+0000, which is equally none of them) and
/// the request takes the route's ordinary check order. `None` when nothing needs replacing.
pub fn sanitize_path(uri: &poem::http::Uri) -> Option<poem::http::Uri> {
    let path = uri.path();
    let bad = |seg: &str| seg.contains('%') && std::str::from_utf8(&percent_decode(seg)).is_err();
    if !path.split('/').any(bad) {
        return None;
    }
    let fixed: Vec<&str> = path
        .split('/')
        .map(|seg| if bad(seg) { "%00" } else { seg })
        .collect();
    let mut path_and_query = fixed.join("/");
    if let Some(q) = uri.query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    poem::http::Uri::from_parts(parts).ok()
}

/// The bytes of a percent-encoded path segment (`%` not followed by two hex digits is kept).
fn percent_decode(seg: &str) -> Vec<u8> {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Whether a value taken from the path or query holds U+0000, which no stored text can contain
/// (PostgreSQL refuses it): such an emoji or search term matches nothing.
pub fn has_nul(s: &str) -> bool {
    s.contains('\0')
}

/// The plain-text 404 of an unknown path (§2.3).
pub fn not_found() -> Response {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .content_type("text/plain; charset=utf-8")
        .body("404 page not found")
}

/// Reads at most `limit` bytes of the body; more is reported as too large without reading on.
pub async fn read_limited(
    req: &Request,
    body: &mut RequestBody,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let Ok(body) = body.take() else {
        return Ok(Vec::new());
    };
    let mut reader = body.into_async_read().take(limit as u64 + 1);
    let mut buf = Vec::with_capacity(declared.map_or(1024, |n| n as usize));
    reader
        .read_to_end(&mut buf)
        .await
        .map_err(|_| ApiError::BadRequest(error::INVALID_JSON))?;
    if buf.len() > limit {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(buf)
}

impl<'a, T: Type> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        let raw = match read_limited(req, body, MAX_JSON_BODY).await {
            Ok(b) => RawBody::Bytes(b),
            Err(ApiError::PayloadTooLarge) => RawBody::TooLarge,
            Err(_) => RawBody::Unreadable,
        };
        Ok(Self {
            raw,
            _doc: PhantomData,
        })
    }
}

/// A parsed JSON object with the typed getters of §2.4: a present value of the wrong JSON type
/// is `Invalid JSON body`; `null` is the same as absent.
pub struct JsonObject {
    map: Map<String, Value>,
    /// The body as received, for values that must keep their exact text ([`Self::opt_raw`]).
    raw: Vec<u8>,
}

fn bad_json() -> ApiError {
    ApiError::BadRequest(error::INVALID_JSON)
}

impl JsonObject {
    /// An optional string (`null`/absent → `None`).
    ///
    /// PostgreSQL text and jsonb cannot hold U+0000, so a field carrying one (`"\u0000"`, valid
    /// JSON) could never be stored as sent: it is refused as `Invalid JSON body`, like a value of
    /// the wrong type. Only the fields a route reads are judged; unknown keys are ignored (§2.4).
    pub fn opt_str(&self, key: &str) -> Result<Option<String>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.contains('\0') => Ok(Some(s.clone())),
            Some(_) => Err(bad_json()),
        }
    }

    /// A required string: `null`/absent count as `""` (and then fail the route's "required" rule).
    pub fn req_str(&self, key: &str) -> Result<String, ApiError> {
        Ok(self.opt_str(key)?.unwrap_or_default())
    }

    /// An optional array of strings (`null`/absent → `None`); any non-string entry is bad JSON.
    pub fn opt_str_array(&self, key: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) if !s.contains('\0') => Ok(s.clone()),
                    _ => Err(bad_json()),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad_json()),
        }
    }

    /// Any JSON value (`null`/absent → `None`); U+0000 in any of its keys or strings is refused
    /// as in [`Self::opt_str`].
    /// Any JSON value as the client wrote it, white space outside strings removed
    /// (`null`/absent → `None`). Numbers keep their exact text (`1.50`, 30-digit integers): the
    /// value goes to PostgreSQL as JSON text, never through f64. Duplicate keys: the last wins,
    /// as in [`Self::opt_value`].
    pub fn opt_raw(&self, key: &str) -> Result<Option<String>, ApiError> {
        if self.opt_value(key)?.is_none() {
            return Ok(None);
        }
        let mut stream = serde_json::Deserializer::from_slice(&self.raw)
            .into_iter::<std::collections::HashMap<String, Box<serde_json::value::RawValue>>>();
        match stream.next() {
            Some(Ok(mut fields)) => Ok(fields
                .remove(key)
                .map(|raw| shared_proto::json::compact_json(raw.get()))),
            _ => Err(bad_json()),
        }
    }

    pub fn opt_value(&self, key: &str) -> Result<Option<&Value>, ApiError> {
        match self.map.get(key).filter(|v| !v.is_null()) {
            Some(v) if contains_nul(v) => Err(bad_json()),
            other => Ok(other),
        }
    }
}

// ----- success envelopes ------------------------------------------------------------------------

fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => Response::builder()
            .status(status)
            .content_type("application/json")
            .body(bytes),
        Err(e) => ApiError::Internal(anyhow::Error::new(e).context("serialising a response"))
            .into_response(),
    }
}

/// A value shown in the OpenAPI document as the example of a success body's `data`: what the
/// route would send, serialised exactly as on the wire.
pub trait BodyExample {
    fn body_example() -> Value;
}

impl<T: BodyExample> BodyExample for Vec<T> {
    fn body_example() -> Value {
        Value::Array(vec![T::body_example()])
    }
}

fn object_schema(properties: Vec<(&'static str, MetaSchemaRef)>, example: Value) -> MetaSchemaRef {
    let required = properties.iter().map(|(k, _)| *k).collect();
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        required,
        properties,
        example: Some(example),
        ..MetaSchema::new("object")
    }))
}

/// `schema` with an example of its own, for a response whose example differs from the one its
/// schema carries (`allOf` with one member: a reference cannot have siblings in OpenAPI 3.0).
pub fn with_example(schema: MetaSchemaRef, example: Value) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        all_of: vec![schema],
        example: Some(example),
        ..MetaSchema::ANY
    }))
}

/// `{"data": T}` with status `STATUS` (200 or 201).
pub struct Data<T, const STATUS: u16 = 200>(pub T);

#[derive(Serialize)]
struct DataEnvelope<'a, T> {
    data: &'a T,
}

impl<T: Serialize + Send, const STATUS: u16> IntoResponse for Data<T, STATUS> {
    fn into_response(self) -> Response {
        json_response(
            StatusCode::from_u16(STATUS).expect("valid status"),
            &DataEnvelope { data: &self.0 },
        )
    }
}

impl<T: Type + BodyExample, const STATUS: u16> ApiResponse for Data<T, STATUS> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: if STATUS == 201 { "Created" } else { "OK" },
                status: Some(STATUS),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json",
                    schema: object_schema(
                        vec![("data", T::schema_ref())],
                        json!({ "data": T::body_example() }),
                    ),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// `{"data": [T], "pagination": {"total", "limit", "offset"}}`.
pub struct Page<T> {
    pub data: Vec<T>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

impl<T> Page<T> {
    /// A page of a result set known to be empty.
    pub fn empty(limit: i64, offset: i64) -> Self {
        Self {
            data: Vec::new(),
            total: 0,
            limit,
            offset,
        }
    }
}

#[derive(Serialize, poem_openapi::Object)]
#[oai(example)]
pub struct Pagination {
    /// Size of the whole result set.
    pub total: i64,
    /// The effective `limit` (default 20).
    pub limit: i64,
    /// The effective `offset` (default 0; always 0 on history paged by `seq`).
    pub offset: i64,
}

impl poem_openapi::types::Example for Pagination {
    fn example() -> Self {
        Self {
            total: 1,
            limit: 20,
            offset: 0,
        }
    }
}

#[derive(Serialize)]
struct PageEnvelope<'a, T> {
    data: &'a [T],
    pagination: Pagination,
}

impl<T: Serialize + Send> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        json_response(
            StatusCode::OK,
            &PageEnvelope {
                data: &self.data,
                pagination: Pagination {
                    total: self.total,
                    limit: self.limit,
                    offset: self.offset,
                },
            },
        )
    }
}

impl<T: Type + BodyExample> ApiResponse for Page<T> {
    fn meta() -> MetaResponses {
        let example = json!({
            "data": Vec::<T>::body_example(),
            "pagination": <Pagination as poem_openapi::types::Example>::example(),
        });
        MetaResponses {
            responses: vec![MetaResponse {
                description: "OK (paginated)",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json",
                    schema: object_schema(
                        vec![
                            ("data", Vec::<T>::schema_ref()),
                            ("pagination", Pagination::schema_ref()),
                        ],
                        example,
                    ),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
        Pagination::register(registry);
    }
}

/// 204 with no body and no Content-Type.
pub struct NoContent;

impl IntoResponse for NoContent {
    fn into_response(self) -> Response {
        Response::builder().status(StatusCode::NO_CONTENT).finish()
    }
}

impl ApiResponse for NoContent {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "No Content",
                status: Some(204),
                status_range: None,
                content: vec![],
                headers: vec![],
            }],
        }
    }

    fn register(_registry: &mut Registry) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_that_do_not_decode_to_utf8_become_nul() {
        let fix = |s: &str| sanitize_path(&s.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(fix("/conversations/abc"), None);
        assert_eq!(fix("/messages/x/reactions/%F0%9F%91%8D"), None);
        assert_eq!(fix("/messages/x/reactions/100%"), None);
        assert_eq!(fix("/conversations/%FF"), Some("/conversations/%00".into()));
        assert_eq!(
            fix("/conversations/%e9x/messages?limit=%FF"),
            Some("/conversations/%00/messages?limit=%FF".into())
        );
        assert_eq!(fix("/uploads/a%F0%9F"), Some("/uploads/%00".into()));
    }

    #[test]
    fn query_components_are_percent_decoded() {
        assert_eq!(decode_component("a%20b+c"), "a b c");
        assert_eq!(decode_component("%F0%9F%91%8D"), "👍");
        assert_eq!(decode_component("100%"), "100%");
        assert_eq!(decode_component("%zz"), "%zz");
    }
}
