//! docs/websocket.md, "Server events": each event reaches exactly its audience, across gateway
//! processes.

use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn room_events_reach_every_participant_socket_on_every_gateway_including_the_callers_and_nobody_else()
 {
    let env = TestEnv::new().await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let carols_own = env.conversation("group", &[carol]).await;

    // Alice (the REST caller) has a tab on each gateway; Bob is on g2; Carol, not a
    // participant, is on g1.
    let (mut alice_1, _) = connect(&env, g1.port, alice).await;
    let (mut alice_2, _) = connect(&env, g2.port, alice).await;
    let (mut bob_2, _) = connect(&env, g2.port, bob).await;
    let (mut carol_1, _) = connect(&env, g1.port, carol).await;
    let skip = ["presence.online", "presence.offline"];

    for event in [
        message_new(room, alice, 1, "hello"),
        message_deleted(room, alice),
        reaction_removed(room, alice),
    ] {
        let kind = shared_proto::events::EventKind::try_from(event.kind)
            .unwrap()
            .client_type()
            .unwrap();
        env.publish_to_conversation(room, event).await;
        let received = [
            alice_1.next_event_skipping(&skip).await,
            alice_2.next_event_skipping(&skip).await,
            bob_2.next_event_skipping(&skip).await,
        ];
        for event in &received {
            assert_eq!(event["type"], kind);
            assert_eq!(event["conversation_id"], room.to_string());
        }
        assert_eq!(received[0], received[1]);
        assert_eq!(received[0], received[2]);
    }
    // Carol never saw any of it: the next thing she receives is her own conversation's event.
    env.publish_to_conversation(carols_own, message_new(carols_own, carol, 1, "mine"))
        .await;
    let next = carol_1.next_event_skipping(&skip).await;
    assert_eq!(next["conversation_id"], carols_own.to_string());
    assert_eq!(next["payload"]["content"], "mine");
    carol_1.assert_quiet().await;
}

#[tokio::test]
async fn personal_events_reach_every_socket_of_their_user_only() {
    let env = TestEnv::new().await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let shared = env.conversation("group", &[alice, bob]).await;
    let (mut bob_1, _) = connect(&env, g1.port, bob).await;
    let (mut bob_2, _) = connect(&env, g2.port, bob).await;
    let (mut alice_1, _) = connect(&env, g1.port, alice).await;
    let skip = ["presence.online", "presence.offline"];

    // Alice creates a conversation with Bob: conversation.joined goes to each participant's
    // personal subject (creator included).
    let created = env.conversation("group", &[alice, bob]).await;
    for user in [alice, bob] {
        env.publish_to_user(
            user,
            conversation_joined(created, "group", alice, user, &[alice, bob]),
        )
        .await;
    }
    for client in [&mut bob_1, &mut bob_2, &mut alice_1] {
        let joined = client.next_event_skipping(&skip).await;
        assert_eq!(joined["type"], "conversation.joined");
        assert_eq!(joined["conversation_id"], created.to_string());
        assert_eq!(joined["payload"]["unread_count"], 0);
        assert_eq!(
            joined["payload"]["participants"].as_array().unwrap().len(),
            2
        );
    }

    // A personal event for Bob alone never reaches Alice.
    env.publish_to_user(bob, conversation_left(shared, bob, bob))
        .await;
    assert_eq!(
        bob_1.next_event_skipping(&skip).await["type"],
        "conversation.left"
    );
    assert_eq!(
        bob_2.next_event_skipping(&skip).await["type"],
        "conversation.left"
    );
    env.publish_to_conversation(created, message_new(created, alice, 1, "sentinel"))
        .await;
    let next = alice_1.next_event_skipping(&skip).await;
    assert_eq!(next["type"], "message.new", "{next}");
}

#[tokio::test]
async fn the_nats_leg_of_each_event_is_measured_from_its_occurred_at() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let (mut alice_socket, _) = connect(&env, gateway.port, alice).await;
    let skip = ["presence.online", "presence.offline"];
    let lag = |le: &'static str| {
        let env = &env;
        async move {
            let labels = format!(r#"le="{le}""#);
            env.metric(gateway.port, "ws_gateway_event_lag_seconds_bucket", &labels)
                .await
        }
    };

    // Published 300 ms after it occurred (as if NATS or the gateway had held it that long).
    let mut late = message_new(room, bob, 1, "late");
    late.occurred_at_us -= 300_000;
    env.publish_to_conversation(room, late).await;
    assert_eq!(
        alice_socket.next_event_skipping(&skip).await["payload"]["content"],
        "late"
    );
    // Without an occurred_at there is nothing to measure: not observed.
    let mut undated = message_new(room, bob, 2, "undated");
    undated.occurred_at_us = 0;
    env.publish_to_conversation(room, undated).await;
    assert_eq!(
        alice_socket.next_event_skipping(&skip).await["payload"]["content"],
        "undated"
    );

    // Other events (the presence of these sockets) are measured too, all well under 250 ms.
    let count = env
        .metric(gateway.port, "ws_gateway_event_lag_seconds_count", "")
        .await;
    assert_eq!(count - lag("0.25").await, 1.0, "one event over 250 ms");
    assert_eq!(
        lag("0.5").await - lag("0.25").await,
        1.0,
        "and under 500 ms"
    );
    // Measured, the undated one would have lagged 56 years.
    assert_eq!(count, lag("2.5").await, "nothing over 2.5 s");
}
