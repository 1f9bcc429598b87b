//! Both services on a NATS cluster of three nodes (`NATS_URL` lists all three): the real
//! api-service in-process and two real gateway processes. While a sender sends continuously, the
//! node that the api-service — or a gateway — is connected to is killed (SIGKILL). No message
//! answered `201` is lost from PostgreSQL, no socket silently misses one (it receives every
//! message or a `resync`), and live delivery resumes on every gateway once the client has moved
//! to a live node.
//!
//! The client picks its node at random, so the api-service and the gateways may share the killed
//! node (both kinds of recovery at once) or not; each test prints the placement, and how long
//! after the kill live delivery resumed on every socket (a figure for docs/deployment.md, not an
//! assertion): `cargo test -p ws-gateway --test gateway nats_cluster -- --nocapture`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{Value, json};
use tokio::time::Instant;
use uuid::Uuid;

use crate::{end_to_end::Api, helpers::*};

/// Sends before the kill, and in all (a bounded loop).
const SENDS_BEFORE_KILL: usize = 15;
const SENDS: usize = 60;
/// Pause between two sends: a steady flow, well under the rate limit set below.
const SEND_PAUSE: Duration = Duration::from_millis(25);

/// Whose node is killed.
#[derive(Clone, Copy, Debug)]
enum Victim {
    Api,
    Gateway,
}

/// A send the API answered.
struct Sent {
    started: Instant,
    status: u16,
    id: Option<String>,
}

/// What a socket received, with arrival times; filled by a reader task.
type Log = Arc<Mutex<Vec<(Instant, Value)>>>;

/// Reads `ws` into a log until aborted.
fn record(mut ws: Client) -> (Log, tokio::task::JoinHandle<()>) {
    let log: Log = Arc::default();
    let task = tokio::spawn({
        let log = log.clone();
        async move {
            while let Some(message) = ws.next_message(Duration::from_secs(3600)).await {
                let event: Value = serde_json::from_str(one_event(&message)).unwrap();
                log.lock().unwrap().push((Instant::now(), event));
            }
        }
    });
    (log, task)
}

/// The `content` of a `message.new` event.
fn content(event: &Value) -> Option<&str> {
    (event["type"] == "message.new")
        .then(|| event["payload"]["content"].as_str())
        .flatten()
}

async fn send(api: &Api, sender: Uuid, room: Uuid, text: &str) -> Sent {
    let started = Instant::now();
    let reply = api
        .post(
            &format!("/conversations/{room}/messages"),
            sender,
            json!({ "content": text }),
        )
        .await;
    let id = (reply.status == 201).then(|| reply.data()["id"].as_str().unwrap().to_owned());
    Sent {
        started,
        status: reply.status,
        id,
    }
}

async fn killing_a_node_mid_traffic(victim: Victim) {
    let env = TestEnv::new().await;
    let mut cluster = NatsCluster::start().await;
    let url = cluster.url();
    let api = Box::pin(Api::start_with(
        &env,
        &[
            ("NATS_URL", url.as_str()),
            ("RATE_LIMIT_MESSAGES_PER_SEC", "1000"),
            ("RATE_LIMIT_MESSAGES_BURST", "1000"),
        ],
    ))
    .await;
    let ids = [1, 2].map(|n| format!("cluster-{n}-{}", Uuid::new_v4().simple()));
    let vars = ids.each_ref().map(|id| {
        [
            ("NATS_URL", url.as_str()),
            ("GATEWAY_ID", id.as_str()),
            ("WS_RESYNC_WINDOW_MS", "200"),
        ]
    });
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &vars[0]),
        ProcessGateway::start(&env, &vars[1])
    );
    let names = [
        "api-service".to_owned(),
        format!("ws-gateway {}", ids[0]),
        format!("ws-gateway {}", ids[1]),
    ];
    let mut nodes = Vec::new();
    for name in &names {
        nodes.push(cluster.wait_for_client(name).await);
    }
    println!("{victim:?}: api-service, gateway 1, gateway 2 on nodes {nodes:?}");

    // Alice sends; she has a socket on each gateway, Bob one on g1, Carol one on g2.
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob, carol]).await;
    let mut sockets = vec![
        connect(&env, g1.port, alice).await.0,
        connect(&env, g2.port, alice).await.0,
        connect(&env, g1.port, bob).await.0,
        connect(&env, g2.port, carol).await.0,
    ];
    // Until a message reaches every socket, the gateways' subscriptions may not have reached
    // the API's node through the routes yet.
    let mut warm = vec![false; sockets.len()];
    within("a first message to reach every socket", async {
        for round in 0.. {
            send(&api, alice, room, &format!("warm-up {round}")).await;
            for (ws, warm) in sockets.iter_mut().zip(&mut warm) {
                while !*warm {
                    let Some(message) = ws.next_message(Duration::from_millis(500)).await else {
                        break;
                    };
                    let event: Value = serde_json::from_str(&message).unwrap();
                    *warm = content(&event).is_some_and(|c| c.starts_with("warm-up"));
                }
            }
            if warm.iter().all(|w| *w) {
                break;
            }
        }
    })
    .await;
    let (logs, readers): (Vec<Log>, Vec<_>) = sockets.into_iter().map(record).unzip();

    // The sender goes on while the node is killed: the kill lands between or during its sends,
    // with the events of the previous ones still on their way.
    let (kill_now, time_to_kill) = tokio::sync::oneshot::channel();
    let sender = {
        let api = &api;
        async move {
            let mut kill_now = Some(kill_now);
            let mut sent = Vec::new();
            for n in 0..SENDS {
                if n == SENDS_BEFORE_KILL {
                    let _ = kill_now.take().map(|k| k.send(()));
                }
                sent.push(send(api, alice, room, &format!("traffic {n}")).await);
                tokio::time::sleep(SEND_PAUSE).await;
            }
            sent
        }
    };
    let killer = async {
        time_to_kill.await.unwrap();
        let victim_name = match victim {
            Victim::Api => names[0].clone(),
            // The gateway whose node the API does not share, if there is one.
            Victim::Gateway => {
                let api_node = cluster.node_of(&names[0]).await;
                let g1_node = cluster.node_of(&names[1]).await;
                if g1_node != api_node {
                    names[1].clone()
                } else {
                    names[2].clone()
                }
            }
        };
        let node = cluster.node_of(&victim_name).await.expect("victim's node");
        cluster.kill(node);
        (Instant::now(), victim_name, node)
    };
    let (sent, (killed_at, victim_name, killed_node)) = tokio::join!(sender, killer);

    // Every client is (still, or again) connected to a running node.
    for name in &names {
        let node = cluster.wait_for_client(name).await;
        assert_ne!(node, killed_node, "{name}");
    }
    println!("{victim:?}: killed node {killed_node} ({victim_name})");

    // (c) Live delivery resumes on every gateway: messages sent from now on reach every socket.
    // Sent until each socket has one: a message published while a gateway's subscriptions are
    // still on their way through the routes is covered by its `resync`, not delivered live.
    let has_live = |log: &Log| {
        log.lock()
            .unwrap()
            .iter()
            .any(|(_, event)| content(event).is_some_and(|c| c.starts_with("live")))
    };
    let mut live = Vec::new();
    within(
        "a message sent after the failover to reach every socket",
        async {
            while !logs.iter().all(has_live) {
                live.push(send(&api, alice, room, &format!("live {}", live.len())).await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .await;
    for reader in &readers {
        reader.abort();
    }
    println!(
        "{victim:?}: {} message(s) sent after the failover until every socket had one",
        live.len()
    );

    // (a) Every message answered 201 is stored.
    let acknowledged: HashSet<String> = sent
        .iter()
        .chain(&live)
        .filter_map(|s| s.id.clone())
        .collect();
    let statuses: Vec<u16> = sent.iter().map(|s| s.status).collect();
    println!("{victim:?}: send statuses {statuses:?}");
    let stored: HashSet<String> =
        sqlx::query_scalar("select id::text from messages where conversation_id = $1")
            .bind(room)
            .fetch_all(&env.db)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    let traffic: HashSet<String> = sent.iter().filter_map(|s| s.id.clone()).collect();
    assert!(
        traffic.len() > SENDS_BEFORE_KILL,
        "sends went on after the kill: {statuses:?}"
    );

    // (b) Every socket received every acknowledged traffic message, or a resync after the kill.
    let mut resumed = Duration::ZERO;
    for (index, log) in logs.iter().enumerate() {
        let log = log.lock().unwrap();
        let received: HashSet<String> = log
            .iter()
            .filter(|(_, event)| content(event).is_some())
            .filter_map(|(_, event)| event["payload"]["id"].as_str().map(str::to_owned))
            .collect();
        let missed = traffic.difference(&received).count();
        let resynced = log
            .iter()
            .any(|(at, event)| event["type"] == "resync" && *at > killed_at);
        println!(
            "{victim:?}: socket {index}: {} of {} traffic messages, resync: {resynced}",
            traffic.len() - missed,
            traffic.len()
        );
        assert!(
            missed == 0 || resynced,
            "socket {index} missed {missed} acknowledged messages without a resync"
        );
        // The first message sent after the kill to arrive here.
        let sent_after_kill: HashSet<&str> = sent
            .iter()
            .chain(&live)
            .filter(|s| s.started > killed_at)
            .filter_map(|s| s.id.as_deref())
            .collect();
        let first = log
            .iter()
            .find(|(_, event)| {
                event["payload"]["id"]
                    .as_str()
                    .is_some_and(|id| sent_after_kill.contains(id))
            })
            .map(|(at, _)| *at - killed_at)
            .expect("a message sent after the kill arrived");
        resumed = resumed.max(first);
    }
    println!(
        "{victim:?}: live delivery resumed on every socket {} ms after the kill",
        resumed.as_millis()
    );
}

#[tokio::test]
async fn killing_the_api_services_nats_node_mid_traffic_loses_nothing_silently() {
    Box::pin(killing_a_node_mid_traffic(Victim::Api)).await;
}

#[tokio::test]
async fn killing_a_gateways_nats_node_mid_traffic_loses_nothing_silently() {
    Box::pin(killing_a_node_mid_traffic(Victim::Gateway)).await;
}

#[tokio::test]
async fn a_cluster_node_can_be_killed_and_a_client_told_where_it_is_connected() {
    let mut cluster = NatsCluster::start().await;
    let client = within(
        "a client of the cluster",
        Box::pin(
            async_nats::ConnectOptions::new()
                .name("probe")
                .connect(cluster.url().split(", ").collect::<Vec<_>>()),
        ),
    )
    .await
    .expect("connect to the cluster");
    let node = cluster
        .node_with_port(client.server_info().port)
        .expect("one of the nodes");
    assert_eq!(cluster.node_of("probe").await, Some(node));
    cluster.kill(node);
    let moved = cluster.wait_for_client("probe").await;
    assert_ne!(moved, node);
    eventually("the client to report its new node", || async {
        client.connection_state() == async_nats::connection::State::Connected
            && cluster.node_with_port(client.server_info().port) == Some(moved)
    })
    .await;
}

#[tokio::test]
async fn credentials_written_in_nats_url_are_sent_by_both_services() {
    let env = TestEnv::new().await;
    let nats = OwnNats::start_with_password("retich", "p@ss:w,rd").await;
    // The server refuses a client without them.
    let plain = format!("nats://127.0.0.1:{}", nats.port);
    let refused = within(
        "a client without credentials",
        Box::pin(async_nats::ConnectOptions::new().connect(plain.as_str())),
    )
    .await;
    assert!(refused.is_err(), "the server requires credentials");

    let url = format!("nats://127.0.0.1:{}, {}", free_port(), nats.url);
    let api = Box::pin(Api::start_with(&env, &[("NATS_URL", url.as_str())])).await;
    let gateway = InProcessGateway::start(&env, &[("NATS_URL", url.as_str())]).await;
    api.wait_for_nats("ok").await;
    eventually("the gateway to be ready (NATS connected)", || async {
        http_get(gateway.port, "/ready").await.0 == 200
    })
    .await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = env.conversation("group", &[alice, bob]).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;
    let sent = send(&api, alice, room, "through an authenticated server").await;
    assert_eq!(sent.status, 201);
    let event = bob_ws
        .next_event_skipping(&["presence.online", "presence.offline"])
        .await;
    assert_eq!(
        event["payload"]["id"].as_str(),
        sent.id.as_deref(),
        "{event}"
    );
}
