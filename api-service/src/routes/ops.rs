//! Operational endpoints (docs/api.md, "Operational endpoints"): public and not enveloped.
//! `/health` and `/ready` are operations of the OpenAPI service ([`OpsApi`]) so that the document
//! describes them; `/test` (an alias of `/health`) and `/metrics` are plain routes.

use std::time::Duration;

use poem::{IntoResponse, Response, handler, http::StatusCode, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::{Example, ToJSON, Type},
};
use serde_json::json;

use crate::{
    http::{json_response, with_example},
    resources::Timestamp,
    routes::ApiTags,
    state::AppState,
};

/// The liveness body: no dependency is touched.
fn health_response() -> Response {
    let body = json!({
        "status": "healthy",
        "service": "messaging",
        "timestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /test`: the alias of `GET /health`.
#[handler]
pub fn health() -> Response {
    health_response()
}

/// The readiness body: 503 when PostgreSQL does not answer; NATS and Redis are reported but
/// degrade.
async fn ready_response(state: &AppState) -> Response {
    let (database, redis) = tokio::join!(
        async {
            tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query_scalar!(r#"select 1 as "ok!""#).fetch_one(&state.pool),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        },
        state.redis.ping(),
    );
    let nats = state.nats.connection_state() == async_nats::connection::State::Connected;
    let word = |ok: bool| if ok { "ok" } else { "fail" };
    let body = json!({
        "status": if database { "ready" } else { "not ready" },
        "checks": { "database": word(database), "nats": word(nats), "redis": word(redis) },
    });
    let status = if database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

/// `GET /metrics`: Prometheus text exposition.
#[handler]
pub fn metrics(state: Data<&AppState>) -> Response {
    Response::builder()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

// ----- the OpenAPI operations ---------------------------------------------------------------------

/// The liveness and readiness operations.
pub struct OpsApi;

#[OpenApi(tag = "ApiTags::Operations")]
impl OpsApi {
    /// Liveness (public, not enveloped): answers while the process serves HTTP, touching no
    /// dependency. `GET /test` is an alias.
    #[oai(path = "/health", method = "get", operation_id = "getHealth")]
    async fn health(&self) -> HealthResponse {
        HealthResponse(health_response())
    }

    /// Readiness (public, not enveloped): 503 when PostgreSQL does not answer. NATS and Redis
    /// are reported but never make the service unready (events are then dropped and counted,
    /// rate limiting fails open, typing lists are empty).
    #[oai(path = "/ready", method = "get", operation_id = "getReadiness")]
    async fn ready(&self, state: Data<&AppState>) -> ReadyResponse {
        ReadyResponse(ready_response(state.0).await)
    }
}

/// Body of `GET /health`.
#[derive(Object)]
#[oai(rename = "Health", example)]
struct HealthDoc {
    status: HealthStatus,
    /// Always `messaging`.
    service: String,
    /// The current time, in whole seconds.
    timestamp: Timestamp,
}

#[derive(Enum)]
enum HealthStatus {
    #[oai(rename = "healthy")]
    Healthy,
}

impl Example for HealthDoc {
    fn example() -> Self {
        Self {
            status: HealthStatus::Healthy,
            service: "messaging".to_owned(),
            timestamp: Timestamp(1_768_469_412_000_000),
        }
    }
}

/// Body of `GET /ready`.
#[derive(Object)]
#[oai(rename = "Readiness", example)]
struct ReadinessDoc {
    status: ReadyStatus,
    checks: ReadinessChecks,
}

#[derive(Enum)]
enum ReadyStatus {
    #[oai(rename = "ready")]
    Ready,
    #[oai(rename = "not ready")]
    NotReady,
}

/// Each dependency's state (never a driver error text).
#[derive(Object)]
struct ReadinessChecks {
    /// PostgreSQL: `fail` makes the service not ready.
    database: CheckState,
    nats: CheckState,
    redis: CheckState,
}

#[derive(Enum)]
enum CheckState {
    #[oai(rename = "ok")]
    Ok,
    #[oai(rename = "fail")]
    Fail,
}

impl Example for ReadinessDoc {
    fn example() -> Self {
        Self {
            status: ReadyStatus::Ready,
            checks: ReadinessChecks {
                database: CheckState::Ok,
                nats: CheckState::Ok,
                redis: CheckState::Ok,
            },
        }
    }
}

fn json_content(schema: poem_openapi::registry::MetaSchemaRef) -> Vec<MetaMediaType> {
    vec![MetaMediaType {
        content_type: "application/json",
        schema,
    }]
}

/// The answer of `GET /health`, built by [`health_response`] exactly as for `GET /test`.
pub struct HealthResponse(Response);

impl IntoResponse for HealthResponse {
    fn into_response(self) -> Response {
        self.0
    }
}

impl ApiResponse for HealthResponse {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "Healthy",
                status: Some(200),
                status_range: None,
                content: json_content(HealthDoc::schema_ref()),
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        HealthDoc::register(registry);
    }
}

/// The answer of `GET /ready`, built by [`ready_response`].
pub struct ReadyResponse(Response);

impl IntoResponse for ReadyResponse {
    fn into_response(self) -> Response {
        self.0
    }
}

impl ApiResponse for ReadyResponse {
    fn meta() -> MetaResponses {
        let not_ready = ReadinessDoc {
            status: ReadyStatus::NotReady,
            checks: ReadinessChecks {
                database: CheckState::Fail,
                nats: CheckState::Ok,
                redis: CheckState::Fail,
            },
        };
        MetaResponses {
            responses: vec![
                MetaResponse {
                    description: "Ready: PostgreSQL answers (NATS or Redis may be `fail`)",
                    status: Some(200),
                    status_range: None,
                    content: json_content(ReadinessDoc::schema_ref()),
                    headers: vec![],
                },
                MetaResponse {
                    description: "Not ready: PostgreSQL does not answer",
                    status: Some(503),
                    status_range: None,
                    content: json_content(with_example(
                        ReadinessDoc::schema_ref(),
                        not_ready.to_json().expect("the example serialises"),
                    )),
                    headers: vec![],
                },
            ],
        }
    }

    fn register(registry: &mut Registry) {
        ReadinessDoc::register(registry);
    }
}
