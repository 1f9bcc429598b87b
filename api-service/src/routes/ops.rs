//! Operational endpoints (http-api.md §4): public and not enveloped.

use std::time::Duration;

use poem::{IntoResponse, Response, handler, http::StatusCode, web::Data};
use serde_json::json;

use crate::startup::AppState;

/// `GET /health`, `GET /test`: liveness only, no dependency is touched.
#[handler]
pub fn health() -> Response {
    let body = json!({
        "status": "healthy",
        "service": "messaging",
        "timestamp": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    json_response(StatusCode::OK, &body)
}

/// `GET /ready`: 503 when PostgreSQL does not answer; NATS and Redis are reported but degrade.
#[handler]
pub async fn ready(state: Data<&AppState>) -> Response {
    let (database, redis) = tokio::join!(
        async {
            tokio::time::timeout(
                Duration::from_secs(2),
                sqlx::query("select 1").execute(&state.pool),
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

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(serde_json::to_vec(body).expect("json"))
        .into_response()
}
