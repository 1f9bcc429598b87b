//! The gateway's `/metrics`: its own `ws_gateway_` names, the process metrics and build info.

use crate::helpers::{InProcessGateway, TestEnv, http_get, metric_value};

#[tokio::test]
async fn metrics_include_the_process_and_the_build_beside_the_gateway_names() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;

    let (status, text) = http_get(gateway.port, "/metrics").await;
    assert_eq!(status, 200);
    let samples: Vec<&str> = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    for line in &samples {
        assert!(
            line.starts_with("ws_gateway_") || line.starts_with("process_"),
            "{line}"
        );
    }
    for name in [
        "process_resident_memory_bytes",
        "process_threads",
        "process_open_fds",
    ] {
        assert!(
            metric_value(&text, name, "") > 0.0,
            "{name} missing or 0 in\n{text}"
        );
    }
    assert!(
        samples
            .iter()
            .any(|line| line.starts_with("process_cpu_seconds_total ")),
        "{text}"
    );
    let version = format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        metric_value(&text, "ws_gateway_build_info", &version),
        1.0,
        "{text}"
    );
    // The names the gateway has always exported are still there, unprefixed by anything else.
    assert_eq!(metric_value(&text, "ws_gateway_sockets_open", ""), 0.0);
    assert!(
        text.contains(r#"ws_gateway_nats_subscriptions{kind="conversation"} "#),
        "{text}"
    );
}
