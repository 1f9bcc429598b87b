//! SIGTERM drains the gateway (docs/websocket.md, "Keep-alive, limits and close codes": 1012;
//! docs/deployment.md, "Scaling the gateways").

use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn sigterm_makes_ready_and_upgrades_answer_503_closes_sockets_with_1012_and_exits_0() {
    let env = TestEnv::new().await;
    let mut gateway = ProcessGateway::start(&env, &[("WS_DRAIN_SECONDS", "3")]).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(connect(&env, gateway.port, Uuid::new_v4()).await.0);
    }

    gateway.terminate();
    eventually("/ready to answer 503", || async {
        http_get(gateway.port, "/ready").await
            == (
                503,
                r#"{"status":"not ready","checks":{"nats":"ok","redis":"ok"}}"#.to_owned(),
            )
    })
    .await;
    let refused = connect_request({
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        format!(
            "ws://127.0.0.1:{}/ws?token={}",
            gateway.port,
            env.token(Uuid::new_v4())
        )
        .into_client_request()
        .unwrap()
    })
    .await
    .err()
    .expect("no upgrade while draining");
    assert_eq!(refused.status(), 503);

    for client in &mut clients {
        assert_eq!(client.close_code().await, 1012);
    }
    assert_eq!(gateway.exit_code().await, Some(0));
}

#[tokio::test]
async fn an_in_process_drain_closes_its_sockets_with_1012() {
    let env = TestEnv::new().await;
    let mut gateway = InProcessGateway::start(&env, &[]).await;
    let (mut client, _) = connect(&env, gateway.port, Uuid::new_v4()).await;
    gateway.drain();
    assert_eq!(client.close_code().await, 1012);
    gateway.stopped().await;
}
