//! Operational endpoints and process behaviour: health, readiness, metrics, configuration
//! errors and graceful shutdown of the real binary.

use std::{process::Stdio, time::Duration};

use uuid::Uuid;

use crate::helpers::{As, TestDb, spawn_app, spawn_app_with};

#[tokio::test]
async fn health_and_test_answer_healthy_with_a_whole_second_timestamp() {
    let app = spawn_app().await;
    for path in ["/health", "/test"] {
        let resp = app.get(path).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "healthy");
        assert_eq!(body["service"], "messaging");
        let ts = body["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 20, "{ts}");
        assert!(ts.ends_with('Z'));
    }
}

#[tokio::test]
async fn ready_reports_every_dependency_ok() {
    let app = spawn_app().await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"status":"ready","checks":{"database":"ok","nats":"ok","redis":"ok"}})
    );
}

#[tokio::test]
async fn ready_turns_503_when_the_database_goes_away() {
    let app = spawn_app().await;
    app.db.drop_now().await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), 503);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "not ready");
    assert_eq!(body["checks"]["database"], "fail");
}

#[tokio::test]
async fn ready_degrades_without_failing_when_nats_and_redis_are_unreachable() {
    let app = spawn_app_with(&[
        ("NATS_URL", "nats://127.0.0.1:1"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
    ])
    .await;
    let resp = app.get("/ready").await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["checks"],
        serde_json::json!({"database":"ok","nats":"fail","redis":"fail"})
    );
}

#[tokio::test]
async fn metrics_are_prometheus_text_labelled_by_route_pattern() {
    let app = spawn_app().await;
    app.get("/health").await;
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(
            r#"api_service_http_requests_total{method="GET",route="/health",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains("# TYPE api_service_http_request_duration_seconds histogram"));
}

#[tokio::test]
async fn metrics_share_one_prefix_and_include_the_process_and_the_build() {
    let app = spawn_app().await;
    app.get("/health").await;
    let resp = app.get("/metrics").await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let samples: Vec<&str> = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    assert!(samples.len() > 20, "{text}");
    for line in &samples {
        assert!(
            line.starts_with("api_service_") || line.starts_with("process_"),
            "{line}"
        );
    }
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        assert!(
            family.starts_with("api_service_") || family.starts_with("process_"),
            "{family}"
        );
    }
    let value = |name: &str| -> f64 {
        samples
            .iter()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    assert!(value("process_resident_memory_bytes") > 0.0);
    assert!(value("process_threads") > 0.0);
    assert!(value("process_open_fds") > 0.0);
    assert!(value("process_cpu_seconds_total") >= 0.0);
    let version = env!("CARGO_PKG_VERSION");
    let build = samples
        .iter()
        .find(|line| line.starts_with("api_service_build_info{"))
        .unwrap_or_else(|| panic!("no build info in\n{text}"));
    assert!(
        build.contains(&format!(r#"version="{version}""#)),
        "{build}"
    );
    assert!(build.ends_with(" 1"), "{build}");
}

#[tokio::test]
async fn a_nats_outage_never_fails_or_rolls_back_a_committed_write() {
    // docs/delivery.md, "During a NATS outage": NATS is fan-out, not storage.
    let app = spawn_app_with(&[("NATS_URL", "nats://127.0.0.1:1")]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let r = app
        .post_json(
            &format!("/conversations/{conv}/messages"),
            As::User(alice),
            serde_json::json!({"content": "still stored"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id: Uuid = r.data()["id"].as_str().unwrap().parse().unwrap();
    let (content, seq): (Option<String>, i64) =
        sqlx::query_as("select content, seq from messages where id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .expect("the message is in PostgreSQL");
    assert_eq!((content.as_deref(), seq), (Some("still stored"), 1));
    // A removal flushes NATS before answering: it is answered all the same.
    let r = app
        .delete_as(
            &format!("/conversations/{conv}/participants/{bob}"),
            As::User(bob),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"api_service_event_publish_failures_total{type="message.new"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"api_service_event_publish_failures_total{type="participant.removed"} 1"#),
        "{metrics}"
    );
}

fn binary() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_api-service"));
    cmd.env_clear()
        .env("LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn a_bad_configuration_value_exits_non_zero_with_one_clear_line() {
    let out = binary()
        .env("DATABASE_URL", "mysql://user:pw@localhost/db")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
    assert!(!stderr.contains("pw"), "credentials echoed: {stderr}");
    assert!(!stderr.contains("panicked"));
}

#[tokio::test]
async fn an_unreachable_database_at_start_exits_non_zero_without_panicking() {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        binary()
            .env("DATABASE_URL", "postgres://root@127.0.0.1:1/nowhere")
            .env("PORT", "0")
            .output(),
    )
    .await
    .expect("exits")
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("cannot connect to PostgreSQL"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn the_binary_migrates_serves_and_stops_cleanly_on_sigterm() {
    let db = TestDb::create().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = binary()
        .env("DATABASE_URL", &db.url)
        .env("AUTO_MIGRATE", "true")
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env(
            "NATS_SUBJECT_PREFIX",
            format!("t{}", uuid::Uuid::new_v4().simple()),
        )
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
        {
            assert_eq!(r.status(), 200);
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "service did not come up");
    let version: i64 = sqlx::query_scalar("select version from schema_migrations")
        .fetch_one(&mut db.connect().await)
        .await
        .unwrap();
    assert_eq!(version as u64, retich_migrations::latest_version());
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("stops")
        .unwrap();
    assert!(status.success(), "{status:?}");
}
