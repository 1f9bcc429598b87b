//! The success envelopes of docs/api.md ("Responses"): [`Data`], [`Page`] and [`NoContent`],
//! serialised with serde exactly as documented and described to the OpenAPI document with an
//! example ([`BodyExample`]); the plain JSON answer ([`json_response`]) of these and of the
//! operational endpoints; the plain-text 404 of an unknown path.

use poem::{IntoResponse, Response, http::StatusCode};
use poem_openapi::{
    ApiResponse,
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry},
    types::Type,
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;
pub use crate::resources::BodyExample;

/// `body` as JSON with `status`; a value that cannot be serialised is a 500.
pub fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => Response::builder()
            .status(status)
            .content_type("application/json")
            .body(bytes),
        Err(e) => ApiError::Internal(anyhow::Error::new(e).context("serialising a response"))
            .into_response(),
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

/// The plain-text 404 of an unknown path (docs/api.md, "Requests").
pub fn not_found() -> Response {
    Response::builder()
        .status(StatusCode::NOT_FOUND)
        .content_type("text/plain; charset=utf-8")
        .body("404 page not found")
}
