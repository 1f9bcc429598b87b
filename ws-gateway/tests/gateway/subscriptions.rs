//! NATS subscriptions (subjects: `shared_proto::subjects`): one per conversation subject per
//! gateway, however many local sockets need it, gone when the last one goes; personal subjects
//! through one `user.>` subscription for the gateway's life.

use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn sockets_sharing_a_conversation_share_one_subscription_and_none_remain_after_they_close() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let conversation_subs = || {
        env.metric(
            gateway.port,
            "ws_gateway_nats_subscriptions",
            r#"kind="conversation""#,
        )
    };
    let user_subs = || {
        env.metric(
            gateway.port,
            "ws_gateway_nats_subscriptions",
            r#"kind="user""#,
        )
    };

    let (alice_a, _) = connect(&env, gateway.port, alice).await;
    let (alice_b, _) = connect(&env, gateway.port, alice).await;
    let (mut bob_a, _) = connect(&env, gateway.port, bob).await;
    assert_eq!(conversation_subs().await, 1.0);
    assert_eq!(
        user_subs().await,
        1.0,
        "one user.* subscription, not one per user"
    );
    assert_eq!(
        env.metric(gateway.port, "ws_gateway_sockets_open", "")
            .await,
        3.0
    );

    // One event in, one rendering, three frames out.
    env.publish_to_conversation(room, message_new(room, alice, 1, "hi"))
        .await;
    bob_a
        .next_event_skipping(&["presence.online", "presence.offline"])
        .await;

    alice_a.close().await;
    alice_b.close().await;
    eventually("alice's sockets to go", || async {
        env.metric(gateway.port, "ws_gateway_sockets_open", "")
            .await
            == 1.0
    })
    .await;
    assert_eq!(conversation_subs().await, 1.0, "bob still needs the room");
    bob_a.close().await;
    eventually("the conversation subscription to go", || async {
        conversation_subs().await == 0.0
    })
    .await;
    for kind in ["presence", "user"] {
        assert_eq!(
            env.metric(
                gateway.port,
                "ws_gateway_nats_subscriptions",
                &format!(r#"kind="{kind}""#)
            )
            .await,
            1.0,
            "the {kind}.* subscription lives as long as the gateway"
        );
    }
}

/// docs/websocket.md, "After the upgrade" (subscribe, then snapshot) and "Live membership": a
/// socket's setup, or a join, that finds the subscription already created by another socket but not
/// yet confirmed by the NATS server must wait for it too — otherwise the snapshot (or
/// `conversation.joined`) goes out before the gateway receives the conversation, and what is
/// published meanwhile is lost without a gap.
#[tokio::test]
async fn a_second_socket_finding_a_pending_subscription_waits_until_it_is_confirmed() {
    use std::sync::Arc;
    use ws_gateway::{
        fanout::{Fanout, LoadedConversation},
        metrics::Metrics,
    };

    let env = TestEnv::new().await;
    let nats = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("NATS");
    let fanout = Fanout::new(
        nats,
        ws_gateway::intake::Intake::start().expect("intake thread"),
        env.subject_prefix.clone(),
        Arc::new(Metrics::new()),
        100,
        2.0,
        4,
        std::time::Duration::from_secs(2),
    );
    for round in 0..3 {
        let (alice, bob, room) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let loaded = || LoadedConversation {
            id: room,
            direct: false,
            presence_members: None,
        };
        let alice_socket = fanout.register(alice, 16);
        let bob_socket = fanout.register(bob, 16);
        // Alice's socket created the subscription; her setup has not settled yet.
        let _pending = fanout.add_conversations(alice, alice_socket.socket, vec![loaded()]);
        // Bob's socket finds it and settles: from now on the room's events must reach him.
        let readies = fanout.add_conversations(bob, bob_socket.socket, vec![loaded()]);
        fanout.settle(readies).await;
        env.publish_to_conversation(room, message_new(room, alice, 1, "published after setup"))
            .await;
        let frame = within(
            &format!("round {round}: the event"),
            bob_socket.outbox.next(),
        )
        .await
        .expect("no close requested");
        assert!(frame.as_str().contains("published after setup"), "{frame}");
    }
}

/// docs/websocket.md, "Live membership": a removal processed while a new socket of the user is
/// still loading its conversation list from PostgreSQL must not be undone by that (now stale) list
/// — otherwise the removed user would receive the conversation's events again until they reconnect.
#[tokio::test]
async fn a_removal_processed_while_a_socket_loads_its_list_is_not_undone_by_that_list() {
    use std::sync::Arc;
    use ws_gateway::{
        fanout::{Fanout, LoadedConversation},
        metrics::Metrics,
    };

    let env = TestEnv::new().await;
    let nats = async_nats::connect("nats://127.0.0.1:4222")
        .await
        .expect("NATS");
    let fanout = Fanout::new(
        nats,
        ws_gateway::intake::Intake::start().expect("intake thread"),
        env.subject_prefix.clone(),
        Arc::new(Metrics::new()),
        100,
        2.0,
        4,
        std::time::Duration::from_secs(2),
    );
    let (alice, owner, room, other) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let loaded = |id| LoadedConversation {
        id,
        direct: false,
        presence_members: None,
    };
    // The gateway's personal subscription (`user.>`) is up; the socket registers and its list
    // is being loaded.
    fanout.start().await;
    let socket = fanout.register(alice, 16);
    // Meanwhile Alice is removed from `room`: the gateway processes conversation.left.
    env.publish_to_user(alice, conversation_left(room, owner, alice))
        .await;
    let frame = within("conversation.left reaches the queue", socket.outbox.next())
        .await
        .expect("no close requested");
    assert!(frame.as_str().contains("conversation.left"), "{frame}");
    // The list, read before the removal committed, still names `room`.
    let readies = fanout.add_conversations(alice, socket.socket, vec![loaded(room), loaded(other)]);
    fanout.settle(readies).await;
    assert!(
        fanout.typing_member(alice, room).is_err(),
        "the stale list re-subscribed a removed participant"
    );
    assert!(
        fanout.typing_member(alice, other).is_ok(),
        "other conversations are joined"
    );
    // The record is dropped once nothing is loading: a later genuine re-add works.
    let second = fanout.register(alice, 16);
    let readies = fanout.add_conversations(alice, second.socket, vec![loaded(room)]);
    fanout.settle(readies).await;
    assert!(
        fanout.typing_member(alice, room).is_ok(),
        "a fresh list is trusted again"
    );
}
