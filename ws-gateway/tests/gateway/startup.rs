//! Starting the binary: configuration errors, an unreachable database, a missing NATS.

use std::process::Stdio;

use crate::helpers::*;

async fn run_binary(env: &TestEnv, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = within(
        "the gateway to exit",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-gateway"))
            .env_clear()
            .envs(env.vars(extra))
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_bad_variable_exits_with_code_2_and_one_line_naming_it() {
    let env = TestEnv::new().await;
    for (name, value) in [
        ("PORT", "eighty"),
        ("WS_SEND_QUEUE", "0"),
        ("AUTH_MODE", "none"),
        ("NATS_SUBJECT_PREFIX", "a..b"),
    ] {
        let (code, stderr) = run_binary(&env, &[(name, value)]).await;
        assert_eq!(code, Some(2), "{name}={value}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(name), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error_and_a_non_zero_exit() {
    let env = TestEnv::new().await;
    let url = format!("postgres://root@127.0.0.1:{}/nowhere", free_port());
    let (code, stderr) = run_binary(&env, &[("DATABASE_URL", url.as_str())]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn without_nats_the_gateway_still_starts_and_reports_not_ready() {
    let env = TestEnv::new().await;
    let nats_url = format!("nats://127.0.0.1:{}", free_port());
    let gateway = ProcessGateway::start(&env, &[("NATS_URL", nats_url.as_str())]).await;
    let (status, body) = http_get(gateway.port, "/ready").await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        r#"{"status":"not ready","checks":{"nats":"fail","redis":"ok"}}"#
    );
    assert_eq!(http_get(gateway.port, "/health").await.0, 200);
}

#[tokio::test]
async fn the_healthcheck_subcommand_exits_0_when_health_answers() {
    let env = TestEnv::new().await;
    let gateway = ProcessGateway::start(&env, &[]).await;
    let port = gateway.port.to_string();
    let status = within(
        "the healthcheck",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-gateway"))
            .arg("healthcheck")
            .env_clear()
            .env("PORT", &port)
            .status(),
    )
    .await
    .unwrap();
    assert!(status.success());
    let unused = free_port().to_string();
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-gateway"))
        .arg("healthcheck")
        .env_clear()
        .env("PORT", &unused)
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(!status.success());
}

#[tokio::test]
async fn ready_turns_503_when_nats_goes_away_and_back_to_200_when_it_returns() {
    let env = TestEnv::new().await;
    let proxy = CuttableProxy::start(4222).await;
    let nats_url = format!("nats://127.0.0.1:{}", proxy.port);
    let gateway = InProcessGateway::start(&env, &[("NATS_URL", nats_url.as_str())]).await;
    assert_eq!(http_get(gateway.port, "/ready").await.0, 200);
    proxy.cut();
    let mut status = 200;
    for _ in 0..100 {
        status = http_get(gateway.port, "/ready").await.0;
        if status == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 503, "/ready still 200 after NATS went away");
    let (_, body) = http_get(gateway.port, "/ready").await;
    assert!(body.contains(r#""nats":"fail""#), "{body}");
    // Service is restored on the same address: the client reconnects and /ready recovers.
    let port = proxy.port;
    drop(proxy);
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    };
    let _restored = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", 4222)).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    for _ in 0..150 {
        status = http_get(gateway.port, "/ready").await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "/ready did not recover after NATS came back");
}
