//! End to end: the real api-service (in-process) and two real ws-gateway processes sharing one
//! database, NATS subject prefix, Redis key prefix and JWT secret. REST calls are made to the API;
//! the assertions are on what the WebSocket clients receive (docs/websocket.md: "Server events",
//! "Sending typing frames", "Live membership").

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::*;

const SKIP: [&str; 2] = ["presence.online", "presence.offline"];

/// The real api-service, running in this test process until dropped.
pub struct Api {
    base: String,
    http: reqwest::Client,
    env_secret: String,
    stop: CancellationToken,
    _uploads: TempDir,
}

/// A REST answer: status and body.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The exact bytes of `data` in the envelope.
    fn raw_data(&self) -> String {
        #[derive(Deserialize)]
        struct Envelope<'a> {
            #[serde(borrow)]
            data: &'a RawValue,
        }
        let envelope: Envelope<'_> = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an envelope ({e}): {}", self.body));
        envelope.data.get().to_owned()
    }

    pub fn data(&self) -> Value {
        serde_json::from_str(&self.raw_data()).unwrap()
    }
}

/// A temporary directory removed on drop (the API's local attachment store).
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Api {
    async fn start(env: &TestEnv) -> Self {
        Self::start_with(env, &[]).await
    }

    /// With variables of its own (`extra` overrides the defaults).
    pub async fn start_with(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        let uploads = std::env::temp_dir().join(format!("retich-e2e-{}", Uuid::new_v4().simple()));
        let vars: HashMap<String, String> = [
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("LOG_LEVEL", "warn"),
            ("DATABASE_URL", env.database_url.as_str()),
            ("DATABASE_MAX_CONNECTIONS", "4"),
            ("NATS_URL", "nats://127.0.0.1:4222"),
            ("NATS_SUBJECT_PREFIX", env.subject_prefix.as_str()),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("REDIS_KEY_PREFIX", env.redis_prefix.as_str()),
            ("AUTH_MODE", "jwt"),
            ("JWT_SECRET", env.secret.as_str()),
            ("UPLOAD_DIR", &uploads.to_string_lossy()),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let settings = api_service::config::Settings::from_map(&vars).expect("API settings");
        let app = within(
            "the API to build",
            Box::pin(api_service::startup::Application::build(settings)),
        )
        .await
        .expect("the API builds");
        let base = format!("http://127.0.0.1:{}", app.port());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(app.run_until(async move { token.cancelled().await }));
        Self {
            base,
            http: reqwest::Client::builder().timeout(WAIT).build().unwrap(),
            env_secret: env.secret.clone(),
            stop,
            _uploads: TempDir(uploads),
        }
    }

    fn token(&self, user: Uuid) -> String {
        let config = shared_auth::JwtConfig {
            secret: Some(self.env_secret.clone()),
            ..Default::default()
        };
        shared_auth::mint_token(&config, user, std::time::Duration::from_secs(600)).unwrap()
    }

    async fn call(&self, method: &str, path: &str, user: Uuid, body: Option<Value>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token(user));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = within(path, request.send()).await.expect("API request");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        Reply { status, body }
    }

    /// Waits until the API's `/ready` reports its NATS connection as `state` (`ok` / `fail`).
    pub async fn wait_for_nats(&self, state: &str) {
        let url = format!("{}/ready", self.base);
        eventually(&format!("the API to see NATS {state}"), || async {
            let body = match self.http.get(&url).send().await {
                Ok(response) => response.text().await.unwrap_or_default(),
                Err(_) => return false,
            };
            serde_json::from_str::<Value>(&body).is_ok_and(|ready| ready["checks"]["nats"] == state)
        })
        .await;
    }

    pub async fn post(&self, path: &str, user: Uuid, body: Value) -> Reply {
        self.call("POST", path, user, Some(body)).await
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The exact bytes of an event line's `payload`.
fn raw_payload(line: &str) -> String {
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        payload: &'a RawValue,
    }
    let frame: Frame<'_> = serde_json::from_str(line).expect("an event line");
    frame.payload.get().to_owned()
}

/// Each client's next event (presence skipped) is `kind` for `conversation`, and its payload
/// is byte-for-byte `raw` (the REST `data`).
async fn assert_each_receives(
    clients: &mut [&mut Client],
    kind: &str,
    conversation: Uuid,
    raw: &str,
) {
    for (index, client) in clients.iter_mut().enumerate() {
        let (line, event) = client.next_raw_event_skipping(&SKIP).await;
        assert_eq!(event["type"], kind, "client {index}: {line}");
        assert_eq!(
            event["conversation_id"],
            conversation.to_string(),
            "client {index}: {line}"
        );
        assert_eq!(raw_payload(&line), raw, "client {index}: payload differs");
    }
}

#[tokio::test]
async fn rest_calls_on_the_real_api_reach_exactly_the_participants_sockets_on_both_gateways() {
    let env = TestEnv::new().await;
    let api = Box::pin(Api::start(&env)).await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob, carol, dave) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    // Alice (the creator) has a tab on each gateway; Bob is on g2, Carol on g1; Dave, who is
    // in none of it, on both.
    let (mut alice_1, _) = connect(&env, g1.port, alice).await;
    let (mut alice_2, _) = connect(&env, g2.port, alice).await;
    let (mut bob_2, _) = connect(&env, g2.port, bob).await;
    let (mut carol_1, _) = connect(&env, g1.port, carol).await;
    let (mut dave_1, _) = connect(&env, g1.port, dave).await;
    let (mut dave_2, _) = connect(&env, g2.port, dave).await;

    // A side conversation of Alice and Carol, created first: its messages are sentinels.
    let side = api
        .post(
            "/conversations",
            alice,
            json!({"type": "group", "name": "side", "participant_ids": [carol]}),
        )
        .await;
    assert_eq!(side.status, 201, "{}", side.body);
    let side: Uuid = side.data()["id"].as_str().unwrap().parse().unwrap();
    for client in [&mut alice_1, &mut alice_2, &mut carol_1] {
        let joined = client.next_event_skipping(&SKIP).await;
        assert_eq!(joined["type"], "conversation.joined", "{joined}");
        assert_eq!(joined["conversation_id"], side.to_string());
    }

    // Create: conversation.joined to every participant's sockets, the creator's included, live.
    let created = api
        .post(
            "/conversations",
            alice,
            json!({"type": "group", "name": "room", "participant_ids": [bob, carol]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let detail = created.data();
    let room: Uuid = detail["id"].as_str().unwrap().parse().unwrap();
    for (index, client) in [&mut alice_1, &mut alice_2, &mut bob_2, &mut carol_1]
        .into_iter()
        .enumerate()
    {
        let joined = client.next_event_skipping(&SKIP).await;
        assert_eq!(
            joined["type"], "conversation.joined",
            "client {index}: {joined}"
        );
        assert_eq!(joined["conversation_id"], room.to_string());
        assert_eq!(joined["payload"], detail, "client {index}");
    }

    // Send: message.new to every participant socket, the sender's included, = REST data.
    let sent = api
        .post(
            &format!("/conversations/{room}/messages"),
            bob,
            json!({"content": "hello from the API"}),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let message_id = sent.data()["id"].as_str().unwrap().to_owned();
    assert_each_receives(
        &mut [&mut alice_1, &mut alice_2, &mut bob_2, &mut carol_1],
        "message.new",
        room,
        &sent.raw_data(),
    )
    .await;

    // Edit: message.updated.
    let edited = api
        .call(
            "PUT",
            &format!("/messages/{message_id}"),
            bob,
            Some(json!({"content": "edited"})),
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    assert_each_receives(
        &mut [&mut alice_1, &mut alice_2, &mut bob_2, &mut carol_1],
        "message.updated",
        room,
        &edited.raw_data(),
    )
    .await;

    // React: reaction.added.
    let reacted = api
        .post(
            &format!("/messages/{message_id}/reactions"),
            carol,
            json!({"emoji": "👍"}),
        )
        .await;
    assert_eq!(reacted.status, 201, "{}", reacted.body);
    assert_each_receives(
        &mut [&mut alice_1, &mut alice_2, &mut bob_2, &mut carol_1],
        "reaction.added",
        room,
        &reacted.raw_data(),
    )
    .await;

    // Remove Carol; once the DELETE has answered, the next message must not reach her.
    let removed = api
        .call(
            "DELETE",
            &format!("/conversations/{room}/participants/{carol}"),
            alice,
            None,
        )
        .await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    let after = api
        .post(
            &format!("/conversations/{room}/messages"),
            alice,
            json!({"content": "carol cannot see this"}),
        )
        .await;
    assert_eq!(after.status, 201, "{}", after.body);
    for (index, client) in [&mut alice_1, &mut alice_2, &mut bob_2]
        .into_iter()
        .enumerate()
    {
        let (line, event) = client.next_raw_event_skipping(&SKIP).await;
        assert_eq!(
            event["type"], "participant.removed",
            "client {index}: {line}"
        );
        assert_eq!(
            event["payload"],
            json!({"conversation_id": room.to_string(), "user_id": carol.to_string()})
        );
        let (line, event) = client.next_raw_event_skipping(&SKIP).await;
        assert_eq!(event["type"], "message.new", "client {index}: {line}");
        assert_eq!(raw_payload(&line), after.raw_data(), "client {index}");
    }
    // g1 and g2 have handled the message (Alice got it on both): a sentinel in the side
    // conversation, sent now, reaches Carol after anything of the room could have.
    let sentinel = api
        .post(
            &format!("/conversations/{side}/messages"),
            alice,
            json!({"content": "sentinel"}),
        )
        .await;
    assert_eq!(sentinel.status, 201, "{}", sentinel.body);
    let mut left = false;
    loop {
        let (line, event) = carol_1.next_raw_event_skipping(&SKIP).await;
        match event["type"].as_str().unwrap() {
            "participant.removed" => assert!(!left, "participant.removed after conversation.left"),
            "conversation.left" => {
                assert_eq!(event["conversation_id"], room.to_string());
                left = true;
            }
            "message.new" => {
                assert_eq!(event["conversation_id"], side.to_string(), "{line}");
                break;
            }
            other => panic!("Carol received {other}: {line}"),
        }
    }
    if !left {
        // conversation.left travels on Carol's personal subject: it may come after the sentinel.
        let event = carol_1.next_event_skipping(&SKIP).await;
        assert_eq!(event["type"], "conversation.left", "{event}");
    }
    for client in [&mut alice_1, &mut alice_2] {
        let event = client.next_event_skipping(&SKIP).await;
        assert_eq!(event["conversation_id"], side.to_string(), "{event}");
    }
    carol_1.assert_quiet().await;

    // Add Carol back: she receives the conversation's events again without reconnecting.
    let added = api
        .post(
            &format!("/conversations/{room}/participants"),
            alice,
            json!({"participant_ids": [carol]}),
        )
        .await;
    assert_eq!(added.status, 201, "{}", added.body);
    loop {
        let event = carol_1.next_event_skipping(&SKIP).await;
        match event["type"].as_str().unwrap() {
            "participant.added" => continue,
            "conversation.joined" => {
                assert_eq!(event["conversation_id"], room.to_string());
                break;
            }
            other => panic!("Carol received {other}: {event}"),
        }
    }
    for client in [&mut alice_1, &mut alice_2, &mut bob_2] {
        let event = client.next_event_skipping(&SKIP).await;
        assert_eq!(event["type"], "participant.added", "{event}");
    }
    let welcome = api
        .post(
            &format!("/conversations/{room}/messages"),
            bob,
            json!({"content": "welcome back"}),
        )
        .await;
    assert_eq!(welcome.status, 201, "{}", welcome.body);
    let mut own_addition_seen = false;
    loop {
        let (line, event) = carol_1.next_raw_event_skipping(&SKIP).await;
        if event["type"] == "participant.added" && !own_addition_seen {
            // Her own addition, when conversation.joined won the race.
            own_addition_seen = true;
            continue;
        }
        assert_eq!(event["type"], "message.new", "{line}");
        assert_eq!(raw_payload(&line), welcome.raw_data());
        break;
    }
    assert_each_receives(
        &mut [&mut alice_1, &mut alice_2, &mut bob_2],
        "message.new",
        room,
        &welcome.raw_data(),
    )
    .await;

    // Dave, in none of these conversations, received nothing at all.
    dave_1.assert_quiet().await;
    dave_2.assert_quiet().await;
}

#[tokio::test]
async fn typing_crosses_gateways_skips_every_socket_of_the_typist_and_shows_in_the_api() {
    let env = TestEnv::new().await;
    let api = Box::pin(Api::start(&env)).await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (mut alice_1, _) = connect(&env, g1.port, alice).await;
    let (mut alice_2, _) = connect(&env, g2.port, alice).await;
    let (mut bob_2, _) = connect(&env, g2.port, bob).await;
    let (mut carol_1, _) = connect(&env, g1.port, carol).await;

    let created = api
        .post(
            "/conversations",
            bob,
            json!({"type": "group", "name": "typing", "participant_ids": [alice, carol]}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let room: Uuid = created.data()["id"].as_str().unwrap().parse().unwrap();
    for client in [&mut alice_1, &mut alice_2, &mut bob_2, &mut carol_1] {
        let joined = client.next_event_skipping(&SKIP).await;
        assert_eq!(joined["type"], "conversation.joined", "{joined}");
    }

    // Alice types on g1: Bob (g2) and Carol (g1) see it, stamped with Alice's id.
    alice_1
        .send_typing("typing.start", room, json!({"user_id": bob, "draft": true}))
        .await;
    for client in [&mut bob_2, &mut carol_1] {
        let typing = client.next_event_skipping(&SKIP).await;
        assert_eq!(typing["type"], "typing.start", "{typing}");
        assert_eq!(typing["conversation_id"], room.to_string());
        assert_eq!(
            typing["payload"],
            json!({"user_id": alice.to_string(), "draft": true})
        );
    }

    // The API lists her as typing.
    let typing = api
        .call("GET", &format!("/conversations/{room}/typing"), carol, None)
        .await;
    assert_eq!(typing.status, 200, "{}", typing.body);
    assert_eq!(typing.data(), json!({"user_ids": [alice.to_string()]}));

    // Neither of Alice's sockets saw her own typing: their next event is the message.
    let sent = api
        .post(
            &format!("/conversations/{room}/messages"),
            bob,
            json!({"content": "sentinel"}),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_each_receives(
        &mut [&mut alice_1, &mut alice_2, &mut bob_2, &mut carol_1],
        "message.new",
        room,
        &sent.raw_data(),
    )
    .await;
}

/// Creates a conversation through the API as `creator`; returns its id.
async fn create(api: &Api, creator: Uuid, kind: &str, others: &[Uuid]) -> Uuid {
    let body = if kind == "direct" {
        json!({"type": "direct", "participant_ids": others})
    } else {
        json!({"type": kind, "name": "a room", "participant_ids": others})
    };
    let created = api.post("/conversations", creator, body).await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.data()["id"].as_str().unwrap().parse().unwrap()
}

/// Sends a message through the API; asserts it was stored (201).
async fn send(api: &Api, sender: Uuid, conversation: Uuid, content: &str) {
    let sent = api
        .post(
            &format!("/conversations/{conversation}/messages"),
            sender,
            json!({"content": content}),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
}

#[tokio::test]
async fn a_web_client_receives_every_message_of_a_burst_of_concurrent_sends_through_the_api() {
    const BURST: usize = 50;
    let env = TestEnv::new().await;
    let api = Box::pin(Api::start_with(
        &env,
        &[("RATE_LIMIT_MESSAGES_BURST", "200")],
    ))
    .await;
    let gateway = ProcessGateway::start(&env, &[]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = create(&api, alice, "group", &[bob]).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;

    let api = &api;
    let sends = (0..BURST).map(|n| async move {
        send(api, alice, room, &format!("burst {n}")).await;
    });
    futures_util::future::join_all(sends).await;

    // One JSON.parse per message, what does not parse is dropped: the web client's way.
    let mut contents = std::collections::BTreeSet::new();
    let mut seqs = Vec::new();
    while contents.len() < BURST {
        let Some(message) = bob_ws.next_message(WAIT).await else {
            break;
        };
        let Ok(event) = serde_json::from_str::<Value>(&message) else {
            continue;
        };
        if event["type"] == "message.new" {
            contents.insert(event["payload"]["content"].as_str().unwrap().to_owned());
            seqs.push(event["payload"]["seq"].as_i64().unwrap());
        }
    }
    assert_eq!(contents.len(), BURST, "every message of the burst arrived");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in seq order: {seqs:?}"
    );
}

#[tokio::test]
async fn a_dm_made_while_both_are_connected_brings_presence_both_ways_and_a_second_one_nothing() {
    let env = TestEnv::new().await;
    let api = Box::pin(Api::start(&env)).await;
    let (g1, g2) = tokio::join!(
        ProcessGateway::start(&env, &[]),
        ProcessGateway::start(&env, &[])
    );
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (mut alice_ws, online) = connect(&env, g1.port, alice).await;
    assert!(online.is_empty());
    let (mut bob_ws, online) = connect(&env, g2.port, bob).await;
    assert!(online.is_empty(), "no shared conversation yet");

    let dm = create(&api, alice, "direct", &[bob]).await;
    for (ws, peer) in [(&mut alice_ws, bob), (&mut bob_ws, alice)] {
        let joined = ws.next_event().await;
        assert_eq!(joined["type"], "conversation.joined", "{joined}");
        assert_eq!(joined["conversation_id"], dm.to_string());
        let online = ws.next_event().await;
        assert_eq!(online["type"], "presence.online", "{online}");
        assert_eq!(online["payload"]["user_id"], peer.to_string());
    }

    // A second shared conversation: joined, then the first message, and nothing else.
    let group = create(&api, bob, "group", &[alice]).await;
    send(&api, bob, group, "sentinel").await;
    for ws in [&mut alice_ws, &mut bob_ws] {
        let joined = ws.next_event().await;
        assert_eq!(joined["type"], "conversation.joined", "{joined}");
        let message = ws.next_event().await;
        assert_eq!(message["type"], "message.new", "{message}");
        ws.assert_quiet().await;
    }
}

#[tokio::test]
async fn a_message_sent_while_nats_is_down_reaches_the_sockets_once_it_is_back() {
    let env = TestEnv::new().await;
    let mut nats = OwnNats::start().await;
    let api = Box::pin(Api::start_with(&env, &[("NATS_URL", nats.url.as_str())])).await;
    let gateway = ProcessGateway::start(&env, &[("NATS_URL", nats.url.as_str())]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = create(&api, alice, "group", &[bob]).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;
    send(&api, alice, room, "before").await;
    let event = bob_ws
        .next_event_skipping(&["presence.online", "conversation.joined"])
        .await;
    assert_eq!(event["payload"]["content"], "before", "{event}");

    nats.kill();
    api.wait_for_nats("fail").await;
    // Stored and answered while NATS is down.
    send(&api, alice, room, "during").await;
    nats.restart().await;

    // The gateway's stream was interrupted: it says so. The API publishes what it kept once it
    // is back, which reaches Bob unless the gateway had not subscribed again yet — which is what
    // the resync covers: Bob's catch-up finds the message either way.
    let mut live = false;
    loop {
        let event = bob_ws.next_event_skipping(&SKIP).await;
        match event["type"].as_str().unwrap() {
            "message.new" => {
                assert_eq!(event["payload"]["content"], "during");
                assert_eq!(event["payload"]["seq"], 2);
                live = true;
            }
            // The gateway's own, or the API's notice: "before" was published just before
            // the connection died, so it may not have reached NATS.
            "resync" => break,
            other => panic!("unexpected {other}: {event}"),
        }
    }
    let caught_up = api
        .call(
            "GET",
            &format!("/conversations/{room}/messages?after_seq=1&limit=100"),
            bob,
            None,
        )
        .await;
    assert_eq!(caught_up.status, 200, "{}", caught_up.body);
    let contents: Vec<Value> = caught_up
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, [json!("during")]);
    // Live delivery is back: "after" arrives (behind "during" and the other side's resync,
    // when those had not arrived yet).
    send(&api, alice, room, "after").await;
    loop {
        let event = bob_ws.next_event_skipping(&SKIP).await;
        match (
            event["type"].as_str().unwrap(),
            &event["payload"]["content"],
        ) {
            ("message.new", content) if content == "during" && !live => live = true,
            ("message.new", content) if content == "after" => break,
            ("resync", _) => {}
            _ => panic!("unexpected: {event}"),
        }
    }
    eprintln!("the message sent during the outage arrived live: {live}");
}

#[tokio::test]
async fn events_the_api_had_to_drop_during_an_outage_are_answered_with_resync() {
    let env = TestEnv::new().await;
    let mut nats = OwnNats::start().await;
    let api = Box::pin(Api::start_with(
        &env,
        &[("NATS_URL", nats.url.as_str()), ("EVENT_BUFFER_SIZE", "2")],
    ))
    .await;
    let gateway = ProcessGateway::start(&env, &[("NATS_URL", nats.url.as_str())]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let room = create(&api, alice, "group", &[bob]).await;
    let (mut bob_ws, _) = connect(&env, gateway.port, bob).await;

    nats.kill();
    api.wait_for_nats("fail").await;
    for n in 1..=4 {
        send(&api, alice, room, &format!("while down {n}")).await;
    }
    nats.restart().await;

    // Two were kept and published; two were dropped, which the notice tells Bob's gateway.
    let mut reasons = std::collections::BTreeSet::new();
    let mut contents = Vec::new();
    while reasons.len() < 2 || contents.len() < 2 {
        let event = bob_ws.next_event_skipping(&SKIP).await;
        match event["type"].as_str().unwrap() {
            "message.new" => {
                contents.push(event["payload"]["content"].as_str().unwrap().to_owned())
            }
            "resync" => {
                reasons.insert(event["payload"]["reason"].as_str().unwrap().to_owned());
            }
            // Published before Bob connected, it may still be on its way to his gateway.
            "conversation.joined" => {}
            other => panic!("unexpected {other}: {event}"),
        }
    }
    assert_eq!(contents, ["while down 1", "while down 2"]);
    assert!(reasons.contains("events_not_published"), "{reasons:?}");
}
