//! JSON request bodies: [`JsonBody`] reads the body (at most [`MAX_JSON_BODY`]) during
//! extraction without judging it, so the route reports a bad body at its own `BODY` step;
//! [`JsonObject`] is the parsed object with typed getters that apply the body rules of
//! docs/api.md ("Requests"), including the refusal of U+0000, which PostgreSQL cannot store.

use std::marker::PhantomData;

use poem::{Request, RequestBody};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    registry::{MetaMediaType, MetaRequest, Registry},
    types::Type,
};
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

use crate::error::{self, ApiError};

/// Largest JSON body accepted: 1 MiB (docs/api.md, "Requests").
pub const MAX_JSON_BODY: usize = 1024 * 1024;

/// What was read of the body.
enum RawBody {
    Bytes(Vec<u8>),
    TooLarge,
    Unreadable,
}

/// A JSON request body, read but not yet judged. `T` only describes the body in the OpenAPI
/// document; parsing follows docs/api.md ("Requests") through [`JsonObject`].
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

/// A parsed JSON object with the typed getters of docs/api.md ("Requests"): a present value of the wrong JSON type
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
    /// the wrong type. Only the fields a route reads are judged; unknown keys are ignored (docs/api.md, "Requests").
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

    /// Any JSON value (`null`/absent → `None`); U+0000 in any of its keys or strings is refused
    /// as in [`Self::opt_str`].
    pub fn opt_value(&self, key: &str) -> Result<Option<&Value>, ApiError> {
        match self.map.get(key).filter(|v| !v.is_null()) {
            Some(v) if contains_nul(v) => Err(bad_json()),
            other => Ok(other),
        }
    }
}
