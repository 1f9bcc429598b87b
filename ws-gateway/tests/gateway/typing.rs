//! docs/websocket.md, "Sending typing frames": typing frames, validated, stamped, relayed to the
//! room minus the typist, and the automatic typing.stop, exactly once across the fleet.

use serde_json::json;
use shared_redis::fred::interfaces::SortedSetsInterface;
use uuid::Uuid;

use crate::helpers::*;

const SKIP: [&str; 2] = ["presence.online", "presence.offline"];

#[tokio::test]
async fn typing_is_relayed_with_the_server_stamped_user_but_never_to_the_typists_own_sockets() {
    let env = TestEnv::new().await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let (mut alice_1, _) = connect(&env, g1.port, alice).await;
    let (mut alice_2, _) = connect(&env, g2.port, alice).await;
    let (mut bob_2, _) = connect(&env, g2.port, bob).await;

    alice_1
        .send_typing(
            "typing.start",
            room,
            json!({"user_id": bob.to_string(), "draft": "kept as sent"}),
        )
        .await;
    let typing = bob_2.next_event_skipping(&SKIP).await;
    assert_eq!(typing["type"], "typing.start");
    assert_eq!(typing["conversation_id"], room.to_string());
    assert_eq!(
        typing["payload"],
        json!({"user_id": alice.to_string(), "draft": "kept as sent"})
    );

    // The API lists live typists with one ZRANGEBYSCORE on the documented key.
    let redis = env.redis.clone();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let typists: Vec<String> = redis
        .zrangebyscore(env.typing_key(room), now_ms, "+inf", false, None)
        .await
        .unwrap();
    assert_eq!(typists, vec![alice.to_string()]);

    // Neither of Alice's sockets saw her own typing: the next thing each gets is the sentinel.
    env.publish_to_conversation(room, message_new(room, bob, 1, "sentinel"))
        .await;
    for alice_ws in [&mut alice_1, &mut alice_2] {
        let next = alice_ws.next_event_skipping(&SKIP).await;
        assert_eq!(next["type"], "message.new", "{next}");
    }
    assert_eq!(
        bob_2.next_event_skipping(&SKIP).await["type"],
        "message.new"
    );

    // typing.stop from the client: relayed, and the entry is gone.
    alice_2
        .send_typing("typing.stop", room, serde_json::Value::Null)
        .await;
    let stop = bob_2.next_event_skipping(&SKIP).await;
    assert_eq!(stop["type"], "typing.stop");
    assert_eq!(stop["payload"], json!({"user_id": alice.to_string()}));
    let typists: Vec<String> = redis
        .zrangebyscore(env.typing_key(room), 0, "+inf", false, None)
        .await
        .unwrap();
    assert!(typists.is_empty());
}

#[tokio::test]
async fn hostile_frames_are_ignored_and_an_oversized_one_closes_that_socket_with_1009() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let foreign = env.conversation("group", &[bob]).await;
    let (mut alice_ws, _) = connect(&env, gateway.port, alice).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;

    for hostile in [
        "{not json".to_owned(),
        "[]".to_owned(),
        json!({"type": "message.new", "conversation_id": room, "payload": {"content": "forged"}})
            .to_string(),
        json!({"type": "presence.online", "conversation_id": "", "payload": {"user_id": alice}})
            .to_string(),
        json!({"type": "typing.start", "conversation_id": "not-a-uuid"}).to_string(),
        json!({"type": "typing.start", "conversation_id": foreign}).to_string(),
        json!({"type": "typing.start", "conversation_id": room, "payload": [1, 2]}).to_string(),
        json!({"type": "typing.start", "conversation_id": room, "payload": "text"}).to_string(),
    ] {
        alice_ws.send_text(hostile).await;
    }
    // The socket is still open and its next valid frame is the first thing Bob receives.
    alice_ws.send_typing("typing.start", room, json!({})).await;
    let first = bob_ws.next_event_skipping(&SKIP).await;
    assert_eq!(first["type"], "typing.start");
    assert_eq!(first["conversation_id"], room.to_string());
    bob_ws.assert_quiet().await;
    assert!(
        env.metric(gateway.port, "ws_gateway_client_frames_ignored_total", "")
            .await
            >= 8.0
    );

    // 4096 bytes is the limit: one byte more closes with 1009.
    let padding = "x".repeat(5000);
    alice_ws
        .send_text(
            json!({"type": "typing.start", "conversation_id": room, "payload": {"p": padding}})
                .to_string(),
        )
        .await;
    assert_eq!(alice_ws.close_code().await, 1009);

    // Bob is undisturbed.
    env.publish_to_conversation(room, message_new(room, bob, 1, "still here"))
        .await;
    assert_eq!(
        bob_ws.next_event_skipping(&SKIP).await["payload"]["content"],
        "still here"
    );
}

#[tokio::test]
async fn typing_frames_beyond_the_rate_limit_are_dropped() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let other = env.conversation("group", &[alice, bob]).await;
    let (mut alice_ws, _) = connect(&env, gateway.port, alice).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;

    for n in 0..12 {
        alice_ws
            .send_typing("typing.start", room, json!({"n": n}))
            .await;
    }
    // The limit is per (user, conversation): a frame for another conversation passes, and it is
    // handled after the twelve.
    alice_ws
        .send_typing("typing.start", other, json!({"sentinel": true}))
        .await;
    let mut relayed = 0;
    loop {
        let event = bob_ws.next_event_skipping(&SKIP).await;
        if event["conversation_id"] == other.to_string() {
            break;
        }
        relayed += 1;
    }
    bob_ws.assert_quiet().await;
    // A burst of 4, plus what refilled at 2/s while the frames were sent.
    assert!((4..=6).contains(&relayed), "{relayed} frames relayed");
    assert!(
        env.metric(
            gateway.port,
            "ws_gateway_typing_operations_total",
            r#"op="rate_limited""#
        )
        .await
            >= 6.0
    );
}

/// Rule 7 is per user, fleet-wide: a typist with one socket on each of two gateways shares one
/// (user, conversation) bucket, held in Redis with the typing entry.
#[tokio::test]
async fn the_typing_rate_limit_is_shared_by_a_typists_sockets_on_every_gateway() {
    let env = TestEnv::new().await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let other = env.conversation("group", &[alice, bob]).await;
    let (mut alice_1, _) = connect(&env, g1.port, alice).await;
    let (mut alice_2, _) = connect(&env, g2.port, alice).await;
    let (mut bob_ws, _) = connect(&env, g1.port, bob).await;

    // Twelve frames, alternating gateways: per-gateway buckets would relay 8 or more.
    for n in 0..6 {
        alice_1
            .send_typing("typing.start", room, json!({"n": 2 * n}))
            .await;
        alice_2
            .send_typing("typing.start", room, json!({"n": 2 * n + 1}))
            .await;
    }
    // Sentinels on another conversation, one through each gateway, mark the end of both streams.
    alice_1
        .send_typing("typing.start", other, json!({"sentinel": 1}))
        .await;
    alice_2
        .send_typing("typing.start", other, json!({"sentinel": 2}))
        .await;
    let (mut relayed, mut sentinels) = (0, 0);
    while sentinels < 2 {
        let event = bob_ws.next_event_skipping(&SKIP).await;
        if event["conversation_id"] == other.to_string() {
            sentinels += 1;
        } else {
            relayed += 1;
        }
    }
    bob_ws.assert_quiet().await;
    // One burst of 4 for the whole fleet, plus what refilled at 2/s while the frames were sent.
    assert!((4..=6).contains(&relayed), "{relayed} frames relayed");
}

/// Without Redis the gateway still bounds what a typist relays through it, with its own bucket.
#[tokio::test]
async fn without_redis_each_gateway_still_limits_typing_on_its_own() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[("REDIS_URL", "redis://127.0.0.1:1")]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let other = env.conversation("group", &[alice, bob]).await;
    let (mut alice_ws, _) = connect(&env, gateway.port, alice).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;
    for n in 0..12 {
        alice_ws
            .send_typing("typing.start", room, json!({"n": n}))
            .await;
    }
    alice_ws
        .send_typing("typing.start", other, json!({"sentinel": true}))
        .await;
    let mut relayed = 0;
    loop {
        let event = bob_ws.next_event_skipping(&SKIP).await;
        if event["conversation_id"] == other.to_string() {
            break;
        }
        relayed += 1;
    }
    assert!((4..=6).contains(&relayed), "{relayed} frames relayed");
}

#[tokio::test]
async fn a_silent_typist_gets_one_automatic_typing_stop_across_two_gateways() {
    let env = TestEnv::new().await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let (mut alice_1, _) = connect(&env, g1.port, alice).await;
    let (mut bob_1, _) = connect(&env, g1.port, bob).await;
    let (mut bob_2, _) = connect(&env, g2.port, bob).await;

    alice_1.send_typing("typing.start", room, json!({})).await;
    for bob_ws in [&mut bob_1, &mut bob_2] {
        assert_eq!(
            bob_ws.next_event_skipping(&SKIP).await["type"],
            "typing.start"
        );
    }
    // Silence: each of Bob's sockets gets exactly one typing.stop {"user_id"} from the fleet.
    for bob_ws in [&mut bob_1, &mut bob_2] {
        let stop = bob_ws.next_event_skipping(&SKIP).await;
        assert_eq!(stop["type"], "typing.stop");
        assert_eq!(stop["payload"], json!({"user_id": alice.to_string()}));
    }
    let redis = env.redis.clone();
    let typists: Vec<String> = redis
        .zrangebyscore(env.typing_key(room), 0, "+inf", false, None)
        .await
        .unwrap();
    assert!(typists.is_empty(), "the entry is gone with the stop");

    // Both gateways keep sweeping; no second stop comes before a later sentinel.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    env.publish_to_conversation(room, message_new(room, alice, 1, "sentinel"))
        .await;
    for bob_ws in [&mut bob_1, &mut bob_2] {
        let next = bob_ws.next_event_skipping(&SKIP).await;
        assert_eq!(next["type"], "message.new", "{next}");
    }
    // Nor did Alice get her own automatic stop.
    assert_eq!(
        alice_1.next_event_skipping(&SKIP).await["type"],
        "message.new"
    );
}
