//! REDIS_URL pointing at a Redis Cluster (shared-redis's `TestCluster`: six `redis-server`s of
//! the test's own): presence and typing work across its slots, and come back by themselves
//! after the master holding their keys is killed and its replica promoted.

use std::time::Duration;

use serde_json::{Value, json};
use shared_redis::{
    Keys,
    fred::interfaces::{KeysInterface, SortedSetsInterface},
    testing::TestCluster,
};
use uuid::Uuid;

use crate::helpers::*;

const SKIP: [&str; 2] = ["presence.online", "presence.offline"];

/// Bounds the waits for eventual outcomes (generous: nothing here asserts speed).
const PATIENCE: Duration = Duration::from_secs(120);

/// Reads `ws` until an event satisfies `wanted` (`Some`) or nothing arrives for `quiet` (`None`).
async fn event_where(
    ws: &mut Client,
    quiet: Duration,
    wanted: impl Fn(&Value) -> bool,
) -> Option<Value> {
    while let Some(raw) = ws.next_message(quiet).await {
        let event: Value = serde_json::from_str(&raw).expect("event is JSON");
        if wanted(&event) {
            return Some(event);
        }
    }
    None
}

/// The live typists of `room` recorded in the cluster.
async fn typists(env: &TestEnv, room: Uuid) -> Vec<String> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    env.redis
        .zrangebyscore(env.typing_key(room), now_ms - 1000, "+inf", false, None)
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn presence_and_typing_work_with_redis_url_pointing_at_a_redis_cluster() {
    let cluster = TestCluster::start().await;
    let env = TestEnv::with_redis(&cluster.url()).await;
    let (g1, g2) = tokio::join!(
        InProcessGateway::start(&env, &[]),
        InProcessGateway::start(&env, &[])
    );
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;

    let (mut bob_2, online) = connect(&env, g2.port, bob).await;
    assert!(online.is_empty());
    let (mut alice_1, online) = connect(&env, g1.port, alice).await;
    assert_eq!(online, vec![bob]);
    let event = bob_2.next_event().await;
    assert_eq!(event["type"], "presence.online");
    assert_eq!(event["payload"]["user_id"], alice.to_string());
    let presence_key = Keys::new(env.redis_prefix.as_str()).presence_user(&alice);
    assert!(env.redis.exists::<bool, _>(&presence_key).await.unwrap());

    // Typing across gateways: relayed, listed in the cluster, then the automatic stop.
    alice_1
        .send_typing("typing.start", room, json!({"user_id": alice.to_string()}))
        .await;
    let typing = bob_2.next_event_skipping(&SKIP).await;
    assert_eq!(typing["type"], "typing.start");
    assert_eq!(typing["conversation_id"], room.to_string());
    assert_eq!(typists(&env, room).await, vec![alice.to_string()]);
    let stop = bob_2.next_event_skipping(&SKIP).await;
    assert_eq!(stop["type"], "typing.stop");
    assert_eq!(stop["payload"], json!({"user_id": alice.to_string()}));
    assert!(typists(&env, room).await.is_empty());

    // The last socket: offline, once.
    alice_1.close().await;
    let event = bob_2.next_event().await;
    assert_eq!(event["type"], "presence.offline");
    assert_eq!(event["payload"]["user_id"], alice.to_string());
    assert!(!env.redis.exists::<bool, _>(&presence_key).await.unwrap());
    bob_2.assert_quiet().await;
}

#[tokio::test]
async fn presence_and_typing_come_back_by_themselves_after_the_master_of_their_keys_fails_over() {
    let mut cluster = TestCluster::start().await;
    let env = TestEnv::with_redis(&cluster.url()).await;
    let keys = Keys::new(env.redis_prefix.as_str());
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let doomed = cluster.master_of(&keys.presence_user(&alice)).await;

    // Users whose presence, and a room whose typing keys, live on Alice's master: after the
    // failover they are on its promoted replica.
    let mut later = Vec::new();
    while later.len() < 8 {
        let user = Uuid::new_v4();
        if cluster.master_of(&keys.presence_user(&user)).await == doomed {
            later.push(user);
        }
    }
    let mut members = vec![bob, alice];
    members.extend(&later);
    let room = loop {
        let room = env.conversation("group", &members).await;
        if cluster.master_of(&keys.typing(&room)).await == doomed {
            break room;
        }
    };

    let gateway = InProcessGateway::start(&env, &[]).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;
    let (mut alice_ws, _) = connect(&env, gateway.port, alice).await;
    let online = bob_ws.next_event().await;
    assert_eq!(online["type"], "presence.online");
    alice_ws
        .send_typing("typing.start", room, json!({"user_id": alice.to_string()}))
        .await;
    assert_eq!(
        bob_ws.next_event_skipping(&SKIP).await["type"],
        "typing.start"
    );

    // SIGKILL the master holding those keys; wait for the replica's promotion.
    cluster.fail_over(&keys.presence_user(&alice)).await;

    // Presence comes back: users on the failed-over slots connect in turn until Bob is told.
    let back = within_for(PATIENCE, "presence works again", async {
        for user in later.iter().copied().cycle() {
            let (ws, _) = Box::pin(connect(&env, gateway.port, user)).await;
            let told = event_where(&mut bob_ws, Duration::from_secs(2), |e| {
                e["type"] == "presence.online" && e["payload"]["user_id"] == user.to_string()
            })
            .await;
            if told.is_some() {
                return (user, ws);
            }
            ws.close().await;
        }
        unreachable!("cycle never ends")
    })
    .await;
    let (carol, mut carol_ws) = back;

    // Typing comes back: Carol's start is recorded in the cluster and stopped automatically.
    within_for(PATIENCE, "typing works again", async {
        loop {
            carol_ws
                .send_typing("typing.start", room, json!({"user_id": carol.to_string()}))
                .await;
            if typists(&env, room).await.contains(&carol.to_string()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
    })
    .await;
    let stop = within_for(
        PATIENCE,
        "the automatic typing.stop",
        event_where(&mut bob_ws, Duration::from_secs(30), |e| {
            // Carol never sends a stop: this one is the gateway's.
            e["type"] == "typing.stop" && e["payload"]["user_id"] == carol.to_string()
        }),
    )
    .await;
    assert!(stop.is_some(), "Bob is told Carol stopped typing");
}
