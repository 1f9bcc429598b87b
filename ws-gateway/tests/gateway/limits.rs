//! docs/websocket.md, "Keep-alive, limits and close codes": bounded send queues and keep-alive.

use std::time::Duration;

use uuid::Uuid;

use crate::helpers::*;

#[tokio::test]
async fn a_socket_that_stops_reading_is_closed_with_1013_and_other_sockets_are_undisturbed() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[("WS_SEND_QUEUE", "8")]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let (mut slow, _) = connect(&env, gateway.port, alice).await;
    let (mut fast, _) = connect(&env, gateway.port, bob).await;

    // Large events until the slow socket's kernel buffers and then its queue are full. The
    // fast socket reads each one before the next is published, so its queue never fills.
    let content = "m".repeat(200 * 1024);
    let mut seq = 0;
    while env
        .metric(gateway.port, "ws_gateway_send_queue_overflows_total", "")
        .await
        < 1.0
    {
        seq += 1;
        assert!(seq < 500, "the slow socket never overflowed");
        env.publish_to_conversation(room, message_new(room, bob, seq, &content))
            .await;
        let event = fast.next_event_skipping(&["presence.online"]).await;
        assert_eq!(event["payload"]["seq"], seq);
    }

    // The slow client reads again: what was written, then close 1013.
    assert_eq!(slow.close_code().await, 1013);
    eventually("the close to be counted", || async {
        env.metric(gateway.port, "ws_gateway_closes_total", r#"code="1013""#)
            .await
            == 1.0
    })
    .await;

    seq += 1;
    env.publish_to_conversation(room, message_new(room, bob, seq, "after"))
        .await;
    let event = fast
        .next_event_skipping(&["presence.online", "presence.offline"])
        .await;
    assert_eq!(event["payload"]["content"], "after");
}

/// A frame only partly written when the write timeout passes: a close frame after those bytes
/// would be read as the rest of that frame's payload, so the gateway ends the stream without
/// one. The client gets every complete frame intact, then the end of the stream; the socket
/// is counted closed with 1013 and the others are not disturbed.
#[tokio::test]
async fn a_write_blocked_halfway_through_a_frame_ends_the_stream_without_a_close_frame() {
    let env = TestEnv::new().await;
    let mut settings = env.settings(&[]);
    settings.write_timeout = Duration::from_millis(300);
    let gateway = InProcessGateway::start_with(settings).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let (mut stalled, _) = connect(&env, gateway.port, alice).await;
    let (mut reader, _) = connect(&env, gateway.port, bob).await;

    // Events of ~900 KB, one per frame, until the stalled socket's kernel buffers are full and
    // a write blocks: it then stops in the middle of a frame (a frame boundary landing exactly
    // on the buffers' end is as good as impossible at this size).
    let content = "w".repeat(900 * 1024);
    let mut seq = 0;
    while env
        .metric(gateway.port, "ws_gateway_closes_total", r#"code="1013""#)
        .await
        < 1.0
    {
        seq += 1;
        assert!(seq < 200, "the stalled socket's write never timed out");
        env.publish_to_conversation(room, message_new(room, bob, seq, &content))
            .await;
        let event = reader.next_event_skipping(&["presence.online"]).await;
        assert_eq!(event["payload"]["seq"], seq);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        env.metric(gateway.port, "ws_gateway_send_queue_overflows_total", "")
            .await,
        0.0,
        "closed by the write timeout, not by its queue"
    );

    let (events, ending) = stalled.read_to_end().await;
    assert!(
        ending.is_err(),
        "no close frame after a partly written frame: {ending:?}"
    );
    let seqs: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "message.new")
        .map(|e| e["payload"]["seq"].as_i64().unwrap())
        .collect();
    assert!(!seqs.is_empty(), "complete frames arrived before the end");
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "in order, none torn"
    );
    assert!(
        (seqs.len() as i64) < seq,
        "the last frames were not all delivered"
    );
    for event in events.iter().filter(|e| e["type"] == "message.new") {
        assert_eq!(
            event["payload"]["content"].as_str().unwrap().len(),
            content.len()
        );
    }

    seq += 1;
    env.publish_to_conversation(room, message_new(room, bob, seq, "after"))
        .await;
    let event = reader
        .next_event_skipping(&["presence.online", "presence.offline"])
        .await;
    assert_eq!(event["payload"]["content"], "after");
    eventually("the stalled socket to be gone", || async {
        env.metric(gateway.port, "ws_gateway_sockets_open", "")
            .await
            == 1.0
    })
    .await;
}

#[tokio::test]
async fn a_socket_silent_past_the_idle_timeout_is_closed_with_1001() {
    let env = TestEnv::new().await;
    let gateway =
        InProcessGateway::start(&env, &[("WS_PING_SECONDS", "1"), ("WS_IDLE_SECONDS", "2")]).await;
    let (mut silent, _) = connect(&env, gateway.port, Uuid::new_v4()).await;
    // Not reading means not answering pings either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(silent.close_code().await, 1001);
}

#[tokio::test]
async fn a_client_close_is_answered_and_counted_with_its_code() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (client, _) = connect(&env, gateway.port, Uuid::new_v4()).await;
    assert_eq!(client.close_handshake(1000).await, 1000);
    eventually("the close to be counted", || async {
        env.metric(gateway.port, "ws_gateway_closes_total", r#"code="1000""#)
            .await
            == 1.0
            && env
                .metric(gateway.port, "ws_gateway_sockets_open", "")
                .await
                == 0.0
    })
    .await;
}

#[tokio::test]
async fn events_arriving_while_a_socket_is_set_up_are_queued_behind_the_snapshot() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;

    // A steady stream of messages while Alice connects, again and again.
    let publisher = {
        let nats = env.nats.clone();
        let subject = shared_proto::subjects::conversation(&env.subject_prefix, &room);
        tokio::spawn(async move {
            use shared_proto::prost::Message as _;
            for seq in 1.. {
                let event = message_new(room, bob, seq, "stream");
                let _ = nats
                    .publish(subject.clone(), event.encode_to_vec().into())
                    .await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    for _ in 0..5 {
        // connect() asserts that presence.snapshot is the very first event.
        let (mut alice_ws, _) = connect(&env, gateway.port, alice).await;
        let event = alice_ws
            .next_event_skipping(&["presence.online", "presence.offline"])
            .await;
        assert_eq!(event["type"], "message.new");
        alice_ws.close().await;
    }
    publisher.abort();
    let _ = bob_ws.next_event().await;
}

#[tokio::test]
async fn the_4096_byte_limit_holds_for_binary_and_fragmented_messages_and_4096_itself_passes() {
    use tokio_tungstenite::tungstenite::{
        Message,
        protocol::frame::{
            Frame,
            coding::{Data, OpCode},
        },
    };
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;

    // Exactly 4096 bytes (padded with JSON whitespace), as one binary message: relayed.
    let frame = serde_json::json!({"type": "typing.start", "conversation_id": room}).to_string();
    let padded = format!("{frame}{}", " ".repeat(4096 - frame.len()));
    assert_eq!(padded.len(), 4096);
    let (mut alice_ws, _) = connect(&env, gateway.port, alice).await;
    alice_ws
        .send(Message::Binary(padded.into_bytes().into()))
        .await;
    let typing = bob_ws
        .next_event_skipping(&["presence.online", "presence.offline"])
        .await;
    assert_eq!(typing["type"], "typing.start");

    // One byte more in a binary message: 1009.
    alice_ws
        .send(Message::Binary(vec![b' '; 4097].into()))
        .await;
    assert_eq!(alice_ws.close_code().await, 1009);

    // A text message in three fragments of 2000 bytes, each under the limit: 1009 as well.
    let (mut fragmented, _) = connect(&env, gateway.port, alice).await;
    for (index, opcode) in [Data::Text, Data::Continue, Data::Continue]
        .into_iter()
        .enumerate()
    {
        let frame = Frame::message(vec![b' '; 2000], OpCode::Data(opcode), index == 2);
        fragmented.send(Message::Frame(frame)).await;
    }
    assert_eq!(fragmented.close_code().await, 1009);
}
