//! Sends while Redis is unreachable (shared-redis's circuit): they are written and answered
//! without a Redis connection attempt each, and rate limiting comes back by itself once Redis
//! answers again. Each test runs a `redis-server` of its own (the shared one is never touched).

use std::time::Duration;

use serde_json::json;
use shared_redis::{
    Circuit, Keys,
    fred::interfaces::KeysInterface,
    testing::{TestRedis, free_port},
};
use uuid::Uuid;

use crate::helpers::{As, TestApp, spawn_app_with};

/// Every wait of these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(10);

/// Whether `key` exists in the test's own Redis.
async fn exists(redis: &TestRedis, key: &str) -> bool {
    let conn = redis.connect().await.expect("the test's redis answers");
    conn.exists(key).await.unwrap()
}

/// Two tokens, one more per 20 s: nothing refills during a test.
const TWO_TOKENS: [(&str, &str); 2] = [
    ("RATE_LIMIT_MESSAGES_PER_SEC", "0.05"),
    ("RATE_LIMIT_MESSAGES_BURST", "2"),
];

async fn send(app: &TestApp, conversation: Uuid, who: Uuid, text: &str) -> crate::helpers::Reply {
    app.post_json(
        &format!("/conversations/{conversation}/messages"),
        As::User(who),
        json!({ "content": text }),
    )
    .await
}

async fn stored(app: &TestApp, conversation: Uuid) -> i64 {
    sqlx::query_scalar("select count(*) from messages where conversation_id = $1")
        .bind(conversation)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// The value of one sample of `/metrics`; 0 when absent.
async fn metric(app: &TestApp, sample: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

async fn ready_redis(app: &TestApp) -> serde_json::Value {
    let body: serde_json::Value = app.get("/ready").await.json().await.expect("JSON");
    body["checks"]["redis"].clone()
}

#[tokio::test]
async fn sends_while_redis_is_down_make_no_connection_attempt_and_limiting_returns_with_redis() {
    let mut redis = TestRedis::start().await;
    let url = redis.url();
    let app = spawn_app_with(&[TWO_TOKENS[0], TWO_TOKENS[1], ("REDIS_URL", url.as_str())]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let bucket = Keys::new(app.redis_prefix.as_str()).send_bucket(&alice);

    // Redis up: the send takes a token from alice's bucket in the test's Redis.
    assert_eq!(send(&app, conv, alice, "before").await.status, 201);
    assert!(exists(&redis, &bucket).await, "{bucket}");
    assert_eq!(app.redis.circuit(), Circuit::Closed);
    assert_eq!(ready_redis(&app).await, "ok");

    // Redis down: the first send's failed command opens the circuit; every send is written and
    // answered (the limiter fails open, beyond alice's burst too) without a connection attempt.
    redis.kill();
    let r = send(&app, conv, alice, "down 0").await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(app.redis.circuit(), Circuit::Open);
    let attempts = app.redis.connection_attempts();
    for i in 1..=5 {
        let r = send(&app, conv, alice, &format!("down {i}")).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    assert_eq!(app.redis.connection_attempts(), attempts);
    assert_eq!(app.redis.circuit(), Circuit::Open);
    assert_eq!(stored(&app, conv).await, 7);
    assert_eq!(
        metric(&app, "api_service_rate_limiter_errors_total").await,
        6.0
    );
    assert_eq!(ready_redis(&app).await, "fail");

    // Redis back (empty): the circuit closes by itself and alice's new bucket limits her again.
    redis.restart().await;
    tokio::time::timeout(PATIENCE, async {
        while app.redis.circuit() != Circuit::Closed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the circuit closes once Redis answers");
    assert_eq!(
        app.redis.connection_attempts(),
        attempts,
        "the probe did it"
    );
    assert_eq!(send(&app, conv, alice, "back 1").await.status, 201);
    assert!(exists(&redis, &bucket).await, "{bucket}");
    assert_eq!(send(&app, conv, alice, "back 2").await.status, 201);
    send(&app, conv, alice, "back 3")
        .await
        .assert_error(429, "RATE_LIMITED", "Too many requests");
    assert_eq!(stored(&app, conv).await, 9);
    assert_eq!(
        metric(&app, "api_service_rate_limiter_errors_total").await,
        6.0,
        "no more sends fail open"
    );
    assert_eq!(ready_redis(&app).await, "ok");
}

#[tokio::test]
async fn sends_to_an_app_whose_redis_never_answered_cost_one_connection_attempt_in_all() {
    let nobody = format!("redis://127.0.0.1:{}", free_port());
    let app = spawn_app_with(&[TWO_TOKENS[0], TWO_TOKENS[1], ("REDIS_URL", nobody.as_str())]).await;
    let alice = Uuid::new_v4();
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;

    for i in 0..6 {
        let r = send(&app, conv, alice, &format!("{i}")).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }

    assert_eq!(app.redis.circuit(), Circuit::Open);
    assert_eq!(app.redis.connection_attempts(), 1);
    assert_eq!(stored(&app, conv).await, 6);
    assert_eq!(ready_redis(&app).await, "fail");
    assert_eq!(app.redis.connection_attempts(), 1);
}
