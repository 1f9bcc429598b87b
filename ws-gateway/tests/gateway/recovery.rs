//! What real clients need so that nothing is lost without them knowing (docs/websocket.md:
//! "Messages and the envelope", "Presence", "Staying consistent: seq and catch-up";
//! docs/delivery.md): one event per WebSocket message, presence for peers made while connected, and
//! `resync` after a NATS interruption or a notice of the api-service.

use std::{collections::BTreeSet, time::Duration};

use futures_util::future::join_all;
use serde_json::Value;
use shared_proto::{events::ResyncNotice, prost::Message as _, subjects};
use uuid::Uuid;

use crate::helpers::*;

/// Reads like the ReTiCh web client: one `JSON.parse` per WebSocket message, and whatever does
/// not parse is dropped without a word. Returns the `seq` of every `message.new` of
/// `conversation` seen until `count` of them arrived or nothing came for [`WAIT`].
async fn web_client_seqs(client: &mut Client, conversation: Uuid, count: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    while seqs.len() < count {
        let Some(message) = client.next_message(WAIT).await else {
            break;
        };
        let Ok(event) = serde_json::from_str::<Value>(&message) else {
            continue;
        };
        if event["type"] == "message.new" && event["conversation_id"] == conversation.to_string() {
            seqs.push(event["payload"]["seq"].as_i64().unwrap());
        }
    }
    seqs
}

#[tokio::test]
async fn a_web_client_parsing_each_message_once_receives_every_event_of_a_concurrent_burst() {
    const BURST: i64 = 60;
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;

    // Sixty publishers at once, then one flush: the gateway queues them faster than the socket
    // drains, so they leave in batches.
    let publishers = (1..=BURST).map(|seq| {
        let event = message_new(room, alice, seq, &format!("burst {seq}"));
        let subject = subjects::conversation(&env.subject_prefix, &room);
        env.nats.publish(subject, event.encode_to_vec().into())
    });
    for published in join_all(publishers).await {
        published.expect("publish");
    }
    env.nats.flush().await.expect("flush");

    let seqs = web_client_seqs(&mut bob_ws, room, BURST as usize).await;
    assert_eq!(
        seqs,
        (1..=BURST).collect::<Vec<_>>(),
        "every event, in order"
    );
    let writes = env
        .metric(gateway.port, "ws_gateway_socket_writes_total", "")
        .await;
    let events = env
        .metric(gateway.port, "ws_gateway_events_out_total", "")
        .await;
    assert!(events >= (BURST + 1) as f64, "{events} events written");
    assert!(writes >= 1.0 && writes <= events, "{writes} writes");
}

#[tokio::test]
async fn users_who_become_peers_when_a_large_group_shrinks_learn_each_others_presence() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[("PRESENCE_MAX_MEMBERS", "2")]).await;
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // Three members: too large to propagate presence with a maximum of 2.
    let group = env.conversation("group", &[alice, bob, carol]).await;
    let (mut alice_ws, online) = connect(&env, gateway.port, alice).await;
    assert!(online.is_empty());
    let (mut bob_ws, online) = connect(&env, gateway.port, bob).await;
    assert!(online.is_empty(), "not peers yet");

    env.remove_participant(group, carol).await;
    env.publish_to_conversation(group, participant_removed(group, carol, carol))
        .await;
    for (ws, peer) in [(&mut alice_ws, bob), (&mut bob_ws, alice)] {
        assert_eq!(ws.next_event().await["type"], "participant.removed");
        let event = ws.next_event().await;
        assert_eq!(event["type"], "presence.online", "{event}");
        assert_eq!(event["payload"]["user_id"], peer.to_string());
    }
    // From now on their presence changes reach each other.
    bob_ws.close().await;
    let event = alice_ws.next_event().await;
    assert_eq!(event["type"], "presence.offline");
    assert_eq!(event["payload"]["user_id"], bob.to_string());
}

/// The next event that is not `presence.online` for `peer`. A peer that connected to another
/// gateway just before this socket can be announced to it twice: in its snapshot, and by the
/// other gateway's connect notice arriving after the snapshot was taken.
async fn next_event_not_online(ws: &mut Client, peer: Uuid) -> Value {
    loop {
        let event = ws.next_event().await;
        if !(event["type"] == "presence.online" && event["payload"]["user_id"] == peer.to_string())
        {
            return event;
        }
    }
}

#[tokio::test]
async fn members_meet_added_users_after_participant_added_and_old_peers_hear_nothing() {
    let env = TestEnv::new().await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    // Alice and Bob are peers already (a DM); Carol shares nothing with them.
    let _dm = env.conversation("direct", &[alice, bob]).await;
    let group = env.conversation("group", &[alice, bob]).await;
    let (mut alice_ws, _) = connect(&env, g1.port, alice).await;
    let (mut bob_ws, _) = connect(&env, g2.port, bob).await;
    let (mut carol_ws, _) = connect(&env, g2.port, carol).await;
    assert_eq!(alice_ws.next_event().await["type"], "presence.online");

    // Carol is added: the room hears participant.added, Carol her conversation.joined.
    env.add_participant(group, carol).await;
    env.publish_to_conversation(group, participant_added(group, alice, &[carol]))
        .await;
    env.publish_to_users(
        group,
        &[carol],
        conversation_joined(group, "group", alice, carol, &[alice, bob, carol]),
    )
    .await;
    for (ws, who, peer) in [(&mut alice_ws, "alice", bob), (&mut bob_ws, "bob", alice)] {
        let event = next_event_not_online(ws, peer).await;
        assert_eq!(event["type"], "participant.added", "{who}: {event}");
        let event = next_event_not_online(ws, peer).await;
        assert_eq!(event["type"], "presence.online", "{who}: {event}");
        assert_eq!(event["payload"]["user_id"], carol.to_string(), "{who}");
    }
    let mut seen = BTreeSet::new();
    let mut kinds = Vec::new();
    while seen.len() < 2 {
        let event = carol_ws.next_event_skipping(&["participant.added"]).await;
        kinds.push(event["type"].as_str().unwrap().to_owned());
        if event["type"] == "presence.online" {
            seen.insert(event["payload"]["user_id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(kinds[0], "conversation.joined", "{kinds:?}");
    assert_eq!(seen, BTreeSet::from([alice.to_string(), bob.to_string()]));

    // A sentinel: Alice and Bob, peers all along, heard nothing about each other.
    env.publish_to_conversation(group, message_new(group, carol, 1, "sentinel"))
        .await;
    for ws in [&mut alice_ws, &mut bob_ws, &mut carol_ws] {
        assert_eq!(ws.next_event().await["type"], "message.new");
        ws.assert_quiet().await;
    }
}

#[tokio::test]
async fn every_socket_gets_exactly_one_resync_spread_over_the_window_after_nats_comes_back() {
    const SOCKETS: usize = 8;
    let env = TestEnv::new().await;
    let mut nats = OwnNats::start().await;
    let gateway = InProcessGateway::start(
        &env,
        &[
            ("NATS_URL", nats.url.as_str()),
            ("WS_RESYNC_WINDOW_MS", "1600"),
        ],
    )
    .await;
    let users: Vec<Uuid> = (0..SOCKETS).map(|_| Uuid::new_v4()).collect();
    let room = env.conversation("group", &users).await;
    let mut sockets = Vec::new();
    for user in &users {
        sockets.push(connect(&env, gateway.port, *user).await.0);
    }
    // Peers of each other: their presence.online events come first; skip them.
    nats.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.restart().await;

    // Every socket is read at once, so each arrival is timed when it happens (the round goes
    // through the sockets in no particular order).
    let arrivals = join_all(sockets.iter_mut().map(|ws| async move {
        let event = ws
            .next_event_skipping(&["presence.online", "presence.offline"])
            .await;
        assert_eq!(
            event,
            serde_json::json!({"type": "resync", "conversation_id": "",
                               "payload": {"reason": "event_stream_interrupted"}})
        );
        tokio::time::Instant::now()
    }))
    .await;
    // Spread: the last one left at least half the window after the first one.
    let first = arrivals.iter().min().unwrap();
    let last = arrivals.iter().max().unwrap();
    assert!(
        *last - *first >= Duration::from_millis(700),
        "resyncs spread over {:?}",
        *last - *first
    );
    // Live delivery works again, and nobody got a second resync.
    let publisher = nats.client().await;
    let event = message_new(room, users[0], 1, "after the outage");
    publisher
        .publish(
            subjects::conversation(&env.subject_prefix, &room),
            event.encode_to_vec().into(),
        )
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    for ws in &mut sockets {
        let event = ws.next_event_skipping(&["presence.online"]).await;
        assert_eq!(event["type"], "message.new", "{event}");
    }
    for ws in &mut sockets {
        ws.assert_quiet().await;
    }
    assert_eq!(
        env.metric(gateway.port, "ws_gateway_nats_reconnects_total", "")
            .await,
        1.0
    );
    assert_eq!(
        env.metric(
            gateway.port,
            "ws_gateway_resyncs_total",
            "reason=\"event_stream_interrupted\""
        )
        .await,
        SOCKETS as f64
    );
}

/// Publishes a resync notice as the api-service does.
async fn publish_notice(env: &TestEnv, notice: &ResyncNotice) {
    let subject = subjects::resync(&env.subject_prefix);
    env.nats
        .publish(subject, notice.encode_to_vec().into())
        .await
        .unwrap();
    env.nats.flush().await.unwrap();
}

#[tokio::test]
async fn a_notice_of_unpublished_events_reaches_exactly_the_sockets_it_names() {
    let env = TestEnv::new().await;
    let gateway = InProcessGateway::start(&env, &[("WS_RESYNC_WINDOW_MS", "200")]).await;
    let (alice, bob, carol, dave) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let room = env.conversation("group", &[alice, bob]).await;
    let other = env.conversation("group", &[carol, dave]).await;
    let (mut alice_ws, _) = connect(&env, gateway.port, alice).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;
    let (mut carol_ws, _) = connect(&env, gateway.port, carol).await;
    let (mut dave_ws, _) = connect(&env, gateway.port, dave).await;
    // Presence among them settles first.
    for ws in [&mut alice_ws, &mut carol_ws] {
        assert_eq!(ws.next_event().await["type"], "presence.online");
    }

    // The room's members (a conversation's events were lost) and Dave (a personal event was).
    let notice = ResyncNotice {
        conversation_ids: vec![room.to_string()],
        user_ids: vec![dave.to_string(), Uuid::new_v4().to_string()],
        everyone: false,
        reason: "events_not_published".into(),
    };
    publish_notice(&env, &notice).await;
    let expected = serde_json::json!({"type": "resync", "conversation_id": "",
                                      "payload": {"reason": "events_not_published"}});
    for ws in [&mut alice_ws, &mut bob_ws, &mut dave_ws] {
        assert_eq!(ws.next_event().await, expected);
    }
    // Carol is in neither: a sentinel in her conversation comes first, and then nothing.
    env.publish_to_conversation(other, message_new(other, dave, 1, "sentinel"))
        .await;
    assert_eq!(carol_ws.next_event().await["type"], "message.new");
    carol_ws.assert_quiet().await;
    alice_ws.assert_quiet().await;

    // `everyone`: every socket.
    let notice = ResyncNotice {
        everyone: true,
        reason: "events_not_published".into(),
        ..Default::default()
    };
    publish_notice(&env, &notice).await;
    for ws in [&mut alice_ws, &mut bob_ws, &mut carol_ws, &mut dave_ws] {
        assert_eq!(ws.next_event_skipping(&["message.new"]).await, expected);
    }
}
