//! docs/websocket.md, "Presence": fleet-wide presence, its transitions, its bounded audience, and
//! expiry after a gateway dies.

use shared_redis::fred::interfaces::KeysInterface;
use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn online_and_offline_follow_the_fleet_wide_first_and_last_socket_only() {
    let env = TestEnv::new().await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let dm = env.conversation("direct", &[alice, bob]).await;

    let (mut bob_2, online) = connect(&env, g2.port, bob).await;
    assert!(online.is_empty());

    // Alice's first socket anywhere: Bob is told once; Alice's snapshot lists Bob.
    let (alice_1, online) = connect(&env, g1.port, alice).await;
    assert_eq!(online, vec![bob]);
    let event = bob_2.next_event().await;
    assert_eq!(event["type"], "presence.online");
    assert_eq!(event["conversation_id"], "");
    assert_eq!(event["payload"]["user_id"], alice.to_string());

    // A second tab on the other gateway, then closing the first: nothing is emitted.
    let (alice_2, online) = connect(&env, g2.port, alice).await;
    assert_eq!(online, vec![bob]);
    let closing = alice_1;
    closing.close().await;
    // Alice's own sockets never get her presence; the sentinel is next for both.
    env.publish_to_conversation(dm, message_new(dm, alice, 1, "sentinel"))
        .await;
    assert_eq!(bob_2.next_event().await["type"], "message.new");

    // The last socket: offline, once.
    alice_2.close().await;
    let event = bob_2.next_event().await;
    assert_eq!(event["type"], "presence.offline");
    assert_eq!(event["payload"]["user_id"], alice.to_string());
    bob_2.assert_quiet().await;

    // And Alice's own tabs never received their own online event.
    let (mut alice_3, online) = connect(&env, g1.port, alice).await;
    assert_eq!(online, vec![bob]);
    assert_eq!(bob_2.next_event().await["type"], "presence.online");
    env.publish_to_conversation(dm, message_new(dm, bob, 2, "sentinel 2"))
        .await;
    assert_eq!(alice_3.next_event().await["type"], "message.new");
}

#[tokio::test]
async fn presence_reaches_peers_of_small_conversations_only_once_per_socket() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[("PRESENCE_MAX_MEMBERS", "3")]).await;
    let (alice, bob, carol, dave, erin) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    // Bob shares two small conversations with Alice; Erin only a 4-member one (too large);
    // a direct conversation always counts.
    let small = env.conversation("group", &[alice, bob, carol]).await;
    let _direct = env.conversation("direct", &[alice, bob]).await;
    let large = env.conversation("group", &[alice, carol, dave, erin]).await;

    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;
    let (mut erin_ws, _) = connect(&env, gateway.port, erin).await;
    let (_alice_ws, online) = connect(&env, gateway.port, alice).await;
    let mut online = online;
    online.sort();
    let mut expected = vec![bob];
    expected.sort();
    assert_eq!(online, expected, "Erin is online but not a presence peer");

    let event = bob_ws.next_event().await;
    assert_eq!(event["type"], "presence.online");
    assert_eq!(event["payload"]["user_id"], alice.to_string());
    // Once, although they share two conversations: the sentinel comes next.
    env.publish_to_conversation(small, message_new(small, carol, 1, "sentinel"))
        .await;
    assert_eq!(bob_ws.next_event().await["type"], "message.new");

    env.publish_to_conversation(large, message_new(large, carol, 1, "sentinel"))
        .await;
    let next = erin_ws.next_event().await;
    assert_eq!(next["type"], "message.new", "{next}");
}

#[tokio::test]
async fn a_killed_gateways_users_go_offline_and_their_peers_are_told_once() {
    let env = TestEnv::new().await;
    let (mut g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let dm = env.conversation("direct", &[alice, bob]).await;
    let (mut bob_2, _) = connect(&env, g2.port, bob).await;
    let (_alice_1, _) = connect(&env, g1.port, alice).await;
    assert_eq!(bob_2.next_event().await["type"], "presence.online");

    g1.kill().await;

    // Heartbeat 1 s, expiry 3 s in tests (production: 10 s and 30 s).
    let event = within_for(
        std::time::Duration::from_secs(60),
        "presence.offline after the kill",
        bob_2.next_event(),
    )
    .await;
    assert_eq!(event["type"], "presence.offline");
    assert_eq!(event["payload"]["user_id"], alice.to_string());
    let redis = env.redis.clone();
    let key = shared_redis::Keys::new(env.redis_prefix.as_str()).presence_user(&alice);
    assert!(!redis.exists::<bool, _>(&key).await.unwrap());

    // Exactly once: the next event is the sentinel.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    env.publish_to_conversation(dm, message_new(dm, bob, 1, "sentinel"))
        .await;
    let next = bob_2.next_event().await;
    assert_eq!(next["type"], "message.new", "{next}");
}
