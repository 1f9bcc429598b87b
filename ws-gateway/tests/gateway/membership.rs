//! docs/websocket.md, "Live membership": without reconnecting.

use uuid::Uuid;

use crate::helpers::*;

const SKIP: [&str; 2] = ["presence.online", "presence.offline"];

#[tokio::test]
async fn a_user_who_joins_a_conversation_receives_its_events_without_reconnecting() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;

    // Created after Bob connected: only the event tells the gateway.
    let room = env.conversation("group", &[alice, bob]).await;
    env.publish_to_user(
        bob,
        conversation_joined(room, "group", alice, bob, &[alice, bob]),
    )
    .await;
    let joined = bob_ws.next_event_skipping(&SKIP).await;
    assert_eq!(joined["type"], "conversation.joined");

    env.publish_to_conversation(room, message_new(room, alice, 1, "welcome"))
        .await;
    let message = bob_ws.next_event_skipping(&SKIP).await;
    assert_eq!(message["type"], "message.new");
    assert_eq!(message["payload"]["content"], "welcome");
}

#[tokio::test]
async fn one_join_addressed_to_many_users_reaches_and_subscribes_each_of_them_and_no_one_else() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let alice = Uuid::new_v4();
    // Enough users that every personal worker has some of them.
    let members: Vec<Uuid> = (0..24).map(|_| Uuid::new_v4()).collect();
    let mut sockets = Vec::new();
    for member in &members {
        sockets.push(connect(&env, gateway.port, *member).await.0);
    }
    // Connected, but not among the event's targets (nor in the conversation).
    let outsider = Uuid::new_v4();
    let (mut outsider_ws, _) = connect(&env, gateway.port, outsider).await;
    // A target without a socket here: nothing to do for it.
    let elsewhere = Uuid::new_v4();

    let mut everyone = vec![alice, elsewhere];
    everyone.extend(&members);
    let room = env.conversation("group", &everyone).await;
    let personal_in = || env.metric(gateway.port, "ws_gateway_events_in_total", "kind=\"user\"");
    let before = personal_in().await;
    env.publish_to_users(
        room,
        &everyone,
        conversation_joined(room, "group", alice, alice, &everyone),
    )
    .await;
    for ws in &mut sockets {
        let joined = ws.next_event_skipping(&SKIP).await;
        assert_eq!(joined["type"], "conversation.joined");
        assert_eq!(joined["conversation_id"], room.to_string());
        assert_eq!(
            joined["payload"]["participants"].as_array().unwrap().len(),
            26
        );
    }
    // Handed to every personal worker, but received, decoded and counted once.
    assert_eq!(personal_in().await - before, 1.0);

    // Each of them was subscribed before their frame went out.
    env.publish_to_conversation(room, message_new(room, alice, 1, "welcome all"))
        .await;
    for ws in &mut sockets {
        let message = ws.next_event_skipping(&SKIP).await;
        assert_eq!(message["type"], "message.new");
        assert_eq!(message["payload"]["content"], "welcome all");
    }
    outsider_ws.assert_quiet().await;
}

#[tokio::test]
async fn a_participant_added_event_listing_a_connected_user_subscribes_them_at_once() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice]).await;
    let (mut alice_ws, _) = connect(&env, gateway.port, alice).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;

    env.add_participant(room, bob).await;
    env.publish_to_conversation(room, participant_added(room, alice, &[bob]))
        .await;
    assert_eq!(
        alice_ws.next_event_skipping(&SKIP).await["type"],
        "participant.added"
    );
    // The gateway handled participant.added before anything published after it.
    env.publish_to_conversation(room, message_new(room, alice, 1, "hi bob"))
        .await;
    let mut seen = bob_ws.next_event_skipping(&SKIP).await;
    if seen["type"] == "participant.added" {
        seen = bob_ws.next_event_skipping(&SKIP).await;
    }
    assert_eq!(seen["type"], "message.new");
    assert_eq!(seen["payload"]["content"], "hi bob");
}

#[tokio::test]
async fn a_removed_participant_receives_nothing_more_of_the_conversation_and_their_typing_is_ignored()
 {
    let env = TestEnv::new().await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob, carol]).await;
    let elsewhere = env.conversation("group", &[bob]).await;
    let (mut alice_ws, _) = connect(&env, g1.port, alice).await;
    let (mut carol_ws, _) = connect(&env, g2.port, carol).await;
    let (mut bob_1, _) = connect(&env, g1.port, bob).await;
    let (mut bob_2, _) = connect(&env, g2.port, bob).await;

    // DELETE /conversations/{room}/participants/{bob}, as the API publishes it.
    env.remove_participant(room, bob).await;
    env.publish_to_conversation(room, participant_removed(room, alice, bob))
        .await;
    env.publish_to_conversation(room, message_new(room, alice, 1, "after the removal"))
        .await;
    env.publish_to_user(bob, conversation_left(room, alice, bob))
        .await;

    for remaining in [&mut alice_ws, &mut carol_ws] {
        assert_eq!(
            remaining.next_event_skipping(&SKIP).await["type"],
            "participant.removed"
        );
        let message = remaining.next_event_skipping(&SKIP).await;
        assert_eq!(message["payload"]["content"], "after the removal");
    }

    // Bob may see participant.removed, then conversation.left — never the message.
    env.publish_to_conversation(elsewhere, message_new(elsewhere, bob, 1, "sentinel"))
        .await;
    for bob_ws in [&mut bob_1, &mut bob_2] {
        let (mut left, mut sentinel) = (false, false);
        while !(left && sentinel) {
            let event = bob_ws.next_event_skipping(&SKIP).await;
            match event["type"].as_str().unwrap() {
                "participant.removed" => assert!(!left, "removal after conversation.left"),
                "conversation.left" => left = true,
                // The sentinel of another conversation still arrives, and nothing of the room.
                "message.new" => {
                    assert_eq!(event["payload"]["content"], "sentinel", "{event}");
                    sentinel = true;
                }
                other => panic!("unexpected {other}: {event}"),
            }
        }
        bob_ws.assert_quiet().await;
    }

    // Bob's typing frames for the room are ignored from now on.
    bob_1
        .send_typing("typing.start", room, serde_json::json!({}))
        .await;
    carol_ws
        .send_typing("typing.start", room, serde_json::json!({}))
        .await;
    let typing = alice_ws.next_event_skipping(&SKIP).await;
    assert_eq!(typing["type"], "typing.start");
    assert_eq!(typing["payload"]["user_id"], carol.to_string());
    alice_ws.assert_quiet().await;
}
