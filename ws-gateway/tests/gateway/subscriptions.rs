//! architecture.md "Events and subjects": one NATS subscription per subject per gateway,
//! however many local sockets need it, gone when the last one goes.

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
    assert_eq!(user_subs().await, 2.0);
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
    eventually("alice's user subscription to go", || async {
        user_subs().await == 1.0
    })
    .await;
    assert_eq!(conversation_subs().await, 1.0, "bob still needs the room");
    bob_a.close().await;
    eventually("every subscription to go", || async {
        conversation_subs().await == 0.0 && user_subs().await == 0.0
    })
    .await;
    assert_eq!(
        env.metric(
            gateway.port,
            "ws_gateway_nats_subscriptions",
            r#"kind="presence""#
        )
        .await,
        1.0,
        "the presence.* subscription lives as long as the gateway"
    );
}
