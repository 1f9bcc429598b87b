//! REDIS_URL pointing at a Redis Cluster (shared-redis's `TestCluster`: six `redis-server`s of
//! the test's own): rate limiting works across slots, and a master failing over costs no
//! message while limiting comes back by itself.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use shared_redis::{Circuit, Keys, testing::TestCluster};
use uuid::Uuid;

use crate::helpers::{As, Reply, TestApp, spawn_app_with};

/// Three tokens, one more per 1000 s: nothing refills during a test.
const THREE_TOKENS: [(&str, &str); 2] = [
    ("RATE_LIMIT_MESSAGES_PER_SEC", "0.001"),
    ("RATE_LIMIT_MESSAGES_BURST", "3"),
];

/// Bounds the waits for eventual outcomes (generous: nothing here asserts speed).
const PATIENCE: Duration = Duration::from_secs(120);

async fn send(app: &TestApp, conversation: Uuid, who: Uuid, text: &str) -> Reply {
    app.post_json(
        &format!("/conversations/{conversation}/messages"),
        As::User(who),
        json!({ "content": text }),
    )
    .await
}

async fn stored(app: &TestApp, ids: &[Uuid]) -> i64 {
    sqlx::query_scalar("select count(*) from messages where id = any($1)")
        .bind(ids)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// A fresh user in a fresh group sends four messages: `true` when the fourth is refused (the
/// limiter answered for three tokens), `false` when Redis did not answer (all allowed).
async fn limited_after_the_burst(app: &TestApp) -> bool {
    let (user, peer) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(user, &[peer]).await;
    for i in 0..3 {
        let r = send(app, conv, user, &format!("burst {i}")).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let fourth = send(app, conv, user, "one too many").await;
    match fourth.status {
        429 => {
            fourth.assert_error(429, "RATE_LIMITED", "Too many requests");
            true
        }
        201 => false,
        other => panic!("unexpected {other}: {}", fourth.text),
    }
}

#[tokio::test]
async fn the_send_limit_applies_against_a_redis_cluster_for_users_on_every_master() {
    let cluster = TestCluster::start().await;
    let url = cluster.url();
    let app = spawn_app_with(&[
        THREE_TOKENS[0],
        THREE_TOKENS[1],
        ("REDIS_URL", url.as_str()),
    ])
    .await;
    let keys = Keys::new(app.redis_prefix.as_str());

    // Users until their buckets sit on at least two masters; one batch of sends each.
    let mut masters = std::collections::HashSet::new();
    let mut users = Vec::new();
    while masters.len() < 2 || users.len() < 3 {
        let user = Uuid::new_v4();
        masters.insert(cluster.master_of(&keys.send_bucket(&user)).await);
        users.push(user);
    }
    for user in users {
        let conv = app.create_group(user, &[Uuid::new_v4()]).await;
        for i in 0..3 {
            let r = send(&app, conv, user, &format!("{i}")).await;
            assert_eq!(r.status, 201, "{}", r.text);
        }
        send(&app, conv, user, "over")
            .await
            .assert_error(429, "RATE_LIMITED", "Too many requests");
    }
    assert_eq!(app.redis.circuit(), Circuit::Closed);
}

#[tokio::test]
async fn sends_survive_a_master_failover_and_rate_limiting_comes_back_by_itself() {
    let mut cluster = TestCluster::start().await;
    let url = cluster.url();
    let app = Arc::new(
        spawn_app_with(&[
            THREE_TOKENS[0],
            THREE_TOKENS[1],
            ("REDIS_URL", url.as_str()),
        ])
        .await,
    );
    let keys = Keys::new(app.redis_prefix.as_str());
    assert!(limited_after_the_burst(&app).await, "limiting works first");

    // Traffic: users taking turns, two sends each (never limited), until told to stop.
    let alice = Uuid::new_v4();
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (app, stop) = (Arc::clone(&app), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut accepted: Vec<Uuid> = Vec::new();
            let mut first = Some(alice);
            while !stop.load(Ordering::Relaxed) {
                let user = first.take().unwrap_or_else(Uuid::new_v4);
                let conv = app.create_group(user, &[Uuid::new_v4()]).await;
                for i in 0..2 {
                    let r = send(&app, conv, user, &format!("traffic {i}")).await;
                    assert_eq!(
                        r.status, 201,
                        "a send failed during the failover: {}",
                        r.text
                    );
                    let id = r.data()["id"].as_str().unwrap().parse().unwrap();
                    accepted.push(id);
                }
            }
            accepted
        })
    };

    // Kill the master that owns the slot of a bucket in use, while the traffic runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = cluster.fail_over(&keys.send_bucket(&alice)).await;
    assert_ne!(cluster.master_of(&keys.send_bucket(&alice)).await, killed);

    // Limiting returns by itself: poll with fresh users until one is refused after its burst.
    tokio::time::timeout(PATIENCE, async {
        while !limited_after_the_burst(&app).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("rate limiting works again after the failover");
    assert_eq!(app.redis.circuit(), Circuit::Closed);

    stop.store(true, Ordering::Relaxed);
    let accepted = traffic.await.expect("no send failed");
    assert!(accepted.len() >= 2);
    assert_eq!(
        stored(&app, &accepted).await,
        accepted.len() as i64,
        "every 201 is in PostgreSQL"
    );
}
