//! docs/websocket.md, "Connecting": the HTTP front and the handshake checks, in their order.

use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
use uuid::Uuid;

use crate::helpers::*;

fn request(port: u16, query: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    format!("ws://127.0.0.1:{port}/ws{query}")
        .into_client_request()
        .unwrap()
}

fn body_of(response: &tokio_tungstenite::tungstenite::handshake::client::Response) -> String {
    String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned()
}

#[tokio::test]
async fn jwt_mode_refuses_missing_or_bad_tokens_with_401_and_accepts_header_or_query_tokens() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let user = Uuid::new_v4();

    let refused = connect_request(request(gateway.port, ""))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(body_of(&refused), "Missing or invalid credentials");

    let mut forged = request(gateway.port, "");
    forged.headers_mut().insert(
        "Authorization",
        HeaderValue::from_static("Bearer not.a.token"),
    );
    let refused = connect_request(forged).await.err().unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(body_of(&refused), "Missing or invalid credentials");

    // X-User-ID is ignored in jwt mode.
    let mut header_only = request(gateway.port, "");
    header_only.headers_mut().insert(
        "X-User-ID",
        HeaderValue::from_str(&user.to_string()).unwrap(),
    );
    assert_eq!(
        connect_request(header_only).await.err().unwrap().status(),
        401
    );

    let (_client, online) = connect(&env, gateway.port, user).await;
    assert!(online.is_empty());
    let query = format!("?token={}", env.token(user));
    let mut by_query = connect_request(request(gateway.port, &query))
        .await
        .expect("a ?token= handshake is accepted");
    assert_eq!(by_query.next_event().await["type"], "presence.snapshot");

    assert_eq!(
        env.metric(gateway.port, "ws_gateway_auth_failures_total", "")
            .await,
        3.0
    );
}

#[tokio::test]
async fn header_mode_requires_a_valid_x_user_id() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[("AUTH_MODE", "header")]).await;

    let refused = connect_request(request(gateway.port, ""))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(body_of(&refused), "Missing X-User-ID header");

    let mut bad = request(gateway.port, "");
    bad.headers_mut()
        .insert("X-User-ID", HeaderValue::from_static("alice"));
    let refused = connect_request(bad).await.err().unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(body_of(&refused), "Invalid user ID");

    let user = Uuid::new_v4();
    let mut good = request(gateway.port, "");
    good.headers_mut().insert(
        "X-User-ID",
        HeaderValue::from_str(&user.simple().to_string().to_uppercase()).unwrap(),
    );
    let mut client = connect_request(good).await.expect("accepted");
    assert_eq!(client.next_event().await["type"], "presence.snapshot");
}

#[tokio::test]
async fn an_origin_outside_the_allow_list_gets_403_and_listed_or_absent_origins_pass() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(
        &env,
        &[(
            "ALLOWED_ORIGINS",
            "https://app.example, http://localhost:3000",
        )],
    )
    .await;
    let user = Uuid::new_v4();
    let with_origin = |origin: &'static str| {
        let mut request = request(gateway.port, &format!("?token={}", env.token(user)));
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_static(origin));
        request
    };

    let refused = connect_request(with_origin("https://evil.example"))
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(body_of(&refused), "Origin not allowed");

    // The origin check comes before identity: no token, still 403.
    let mut anonymous = request(gateway.port, "");
    anonymous
        .headers_mut()
        .insert("Origin", HeaderValue::from_static("https://evil.example"));
    assert_eq!(
        connect_request(anonymous).await.err().unwrap().status(),
        403
    );

    assert!(
        connect_request(with_origin("HTTPS://APP.example"))
            .await
            .is_ok()
    );
    assert!(
        connect_request(with_origin("http://localhost:3000"))
            .await
            .is_ok()
    );
    // No Origin header: a non-browser client.
    connect(&env, gateway.port, user).await;
}

#[tokio::test]
async fn a_bad_upgrade_request_gets_400_and_a_non_get_gets_405_after_identity() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let token = env.token(Uuid::new_v4());
    let send = |head: String| async move {
        raw_request(gateway.port, head.as_bytes())
            .await
            .expect("a response")
    };
    let upgrade_headers = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    let (status, _, body) = send(format!(
        "POST /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{upgrade_headers}\r\n"
    ))
    .await;
    assert_eq!((status, body.as_str()), (405, "Method Not Allowed"));

    // Identity is checked before the method.
    let (status, _, _) = send(format!(
        "POST /ws HTTP/1.1\r\nHost: x\r\n{upgrade_headers}\r\n"
    ))
    .await;
    assert_eq!(status, 401);

    for broken in [
        upgrade_headers.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        upgrade_headers.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
        upgrade_headers.replace("Version: 13", "Version: 8"),
        upgrade_headers.replace("Upgrade: websocket\r\n", ""),
        upgrade_headers.replace("Connection: Upgrade", "Connection: keep-alive"),
    ] {
        let (status, head, _) = send(format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{broken}\r\n"
        ))
        .await;
        assert_eq!(status, 400, "{broken}");
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-version: 13"),
            "{head}"
        );
    }

    // Header tokens are matched case-insensitively inside comma-separated lists.
    let head = response_head(
        gateway.port,
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols"),
        "{head}"
    );
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
}

#[tokio::test]
async fn health_ready_and_metrics_answer_and_other_paths_are_404() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;

    let (status, body) = http_get(gateway.port, "/health").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["service"], "ws-gateway");
    let timestamp = health["timestamp"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok());
    assert!(
        timestamp.ends_with('Z') && !timestamp.contains('.'),
        "{timestamp}"
    );

    let (status, body) = http_get(gateway.port, "/ready").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        r#"{"status":"ready","checks":{"nats":"ok","redis":"ok"}}"#
    );

    let (status, body) = http_get(gateway.port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("ws_gateway_sockets_open 0"), "{body}");

    assert_eq!(http_get(gateway.port, "/nope").await.0, 404);
    assert_eq!(http_get(gateway.port, "/ws/").await.0, 404);
}
