//! How events travel on NATS (events.rs): one `conversation.joined` addressed to every user a
//! create concerns, split over as few messages as the server's `max_payload` allows; and what a
//! NATS outage does — events kept in order and published when it is back, what does not fit
//! dropped, counted and announced by a resync notice. Each test has a nats-server of its own,
//! killed (SIGKILL) and started again on the same port.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures_util::StreamExt;
use prost::Message as _;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{As, TestApp, spawn_app_with};

/// A NATS server of this test's own on a free port, killed when dropped. It can be killed
/// (SIGKILL) and started again on the same port, to play an outage.
struct SmallNats {
    child: Option<Child>,
    port: u16,
    /// No credentials: what the api-service connects with.
    url: String,
    max_payload: usize,
    config: TempConfig,
}

/// The test's own NATS user and password; the api-service connects without credentials
/// ([`SmallNats::write_config`]).
const TEST_USER: &str = "test";

/// The server's config file, removed when dropped.
struct TempConfig(std::path::PathBuf);

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl SmallNats {
    /// A server with this `max_payload` that lets everyone in.
    async fn start(max_payload: usize) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = std::env::temp_dir().join(format!("retich-nats-{}.conf", Uuid::new_v4()));
        let mut server = Self {
            child: None,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            max_payload,
            config: TempConfig(config),
        };
        server.write_config(true);
        server.spawn().await;
        server
    }

    /// Connects as the test's own user.
    async fn connect(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        async_nats::ConnectOptions::with_user_and_password(TEST_USER.into(), TEST_USER.into())
            .connect(&self.url)
            .await
    }

    /// A client of the test's own.
    async fn client(&self) -> async_nats::Client {
        tokio::time::timeout(Duration::from_secs(10), self.connect())
            .await
            .expect("connects within 10 s")
            .expect("connects")
    }

    /// Clients without credentials (the api-service) are taken for the user `app`; without
    /// `app_allowed` that user may only connect over WebSocket, which refuses the api-service
    /// and lets [`TEST_USER`] in. Only that restriction changes between the two configs, which
    /// leaves the test's connection alone (a reload that drops the authorization block, say,
    /// closes every connection, the test's included).
    fn write_config(&self, app_allowed: bool) {
        let restriction = if app_allowed {
            ""
        } else {
            r#", allowed_connection_types: ["WEBSOCKET"]"#
        };
        let config = format!(
            "listen: 127.0.0.1:{port}\nmax_payload: {max_payload}\nno_auth_user: app\n\
             authorization {{\n  users = [\n    {{user: {TEST_USER}, password: {TEST_USER}}}\n    \
             {{user: app, password: app{restriction}}}\n  ]\n}}\n",
            port = self.port,
            max_payload = self.max_payload,
        );
        std::fs::write(&self.config.0, config).expect("write the NATS config");
    }

    async fn spawn(&mut self) {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server");
        self.child = Some(
            Command::new(binary)
                .arg("-c")
                .arg(&self.config.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server"),
        );
        for _ in 0..100 {
            if self.connect().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server on port {} did not come up", self.port);
    }

    /// SIGKILLs the server: nothing is flushed, connections just drop.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a new server on the same port that lets the test in but not the api-service, so
    /// the test can subscribe before the api-service reconnects ([`SmallNats::admit_app`]).
    async fn restart_without_app(&mut self) {
        self.write_config(false);
        self.spawn().await;
    }

    /// Lets the api-service in: the config reloaded on SIGHUP.
    fn admit_app(&self) {
        self.write_config(true);
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success());
    }
}

impl Drop for SmallNats {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test]
async fn a_join_too_big_for_one_nats_message_is_split_over_as_few_as_fit_and_reaches_everyone() {
    const MAX_PAYLOAD: usize = 40_000;
    let nats = SmallNats::start(MAX_PAYLOAD).await;
    let app = spawn_app_with(&[("NATS_URL", nats.url.as_str())]).await;
    let client = async_nats::connect(&nats.url).await.unwrap();
    let mut sub = client
        .subscribe(format!("{}.user.>", app.nats_prefix))
        .await
        .unwrap();
    client.flush().await.unwrap();

    // 250 participants: the detail (~134 bytes each) fits in one message, the 250 target ids
    // (38 bytes each) beside it do not.
    let owner = Uuid::new_v4();
    let others: Vec<Uuid> = (0..249).map(|_| Uuid::new_v4()).collect();
    let r = app
        .post_json(
            "/conversations",
            As::User(owner),
            json!({"type": "group", "name": "big", "participant_ids": others}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.data()["id"].as_str().unwrap().to_owned();
    let detail_order: Vec<String> = r.data()["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(detail_order.len(), 250);

    let mut targets = Vec::new();
    let mut messages = 0;
    let mut frames = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        messages += 1;
        assert_eq!(
            msg.subject.as_str(),
            format!("{}.user.many.{id}", app.nats_prefix)
        );
        assert!(msg.payload.len() <= MAX_PAYLOAD, "{}", msg.payload.len());
        let event = shared_proto::events::Event::decode(msg.payload).unwrap();
        assert_eq!(event.target_user_id, None);
        targets.extend(event.target_user_ids.iter().cloned());
        frames.push(shared_proto::json::client_frame(&event).unwrap());
    }
    assert_eq!(messages, 2, "as few messages as fit, and more than one");
    assert_eq!(
        targets, detail_order,
        "every participant once, in the detail's order"
    );
    assert_eq!(
        frames[0], frames[1],
        "each message carries the same client frame"
    );
}

#[test]
fn targets_per_message_leaves_room_for_the_event_and_refuses_when_none_fits() {
    use api_service::events::targets_per_message;
    // 1 MiB server, a 10,000-byte event: (1,048,576 - 10,000 - 1,024) / 38 ids
    assert_eq!(targets_per_message(10_000, 1_048_576), Some(27_304));
    assert_eq!(targets_per_message(0, 1_024 + 38), Some(1));
    assert_eq!(targets_per_message(0, 1_024 + 37), None);
    assert_eq!(targets_per_message(2_000_000, 1_048_576), None);
}

// ----- NATS outages (events.rs, "The buffer") -----------------------------------------------------

/// Sends `text` to `conversation` as `who`; asserts 201 and returns the message's `seq`.
async fn send_text(app: &TestApp, conversation: Uuid, who: Uuid, text: &str) -> i64 {
    let r = app
        .post_json(
            &format!("/conversations/{conversation}/messages"),
            As::User(who),
            json!({ "content": text }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.data()["seq"].as_i64().expect("seq")
}

/// Whether the app's `/ready` reports its NATS connection as up.
async fn nats_ready(app: &TestApp) -> bool {
    let body: serde_json::Value = app.get("/ready").await.json().await.expect("JSON");
    body["checks"]["nats"] == "ok"
}

/// Waits (at most 10 s) until the app's NATS connection is `up` or down.
async fn wait_nats(app: &TestApp, up: bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while nats_ready(app).await != up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the app's NATS connection is not {up} within 10 s"));
}

/// The value of one sample of `/metrics` (`name` or `name{labels}` as exposed); 0 when absent.
async fn metric(app: &TestApp, sample: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// Waits (at most 10 s) until `sample` is `value`.
async fn wait_metric(app: &TestApp, sample: &str, value: f64) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while metric(app, sample).await != value {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{sample} is {} after 10 s, not {value}",
        metric(app, sample).await
    );
}

/// The next message on `sub` (fails after 5 s).
async fn next_msg(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message within 5 s")
        .expect("subscription open")
}

/// The `seq` of the next `message.new` on `sub`.
async fn next_seq(sub: &mut async_nats::Subscriber) -> i64 {
    seq_of(next_msg(sub).await)
}

/// The `seq` of a `message.new`.
fn seq_of(msg: async_nats::Message) -> i64 {
    let event = shared_proto::events::Event::decode(msg.payload).unwrap();
    assert_eq!(
        event.kind,
        shared_proto::events::EventKind::MessageNew as i32
    );
    match event.body {
        Some(shared_proto::events::event::Body::Message(m)) => m.seq,
        other => panic!("not a message: {other:?}"),
    }
}

/// Asserts that nothing arrives on `sub` within `ms` milliseconds.
async fn assert_quiet(sub: &mut async_nats::Subscriber, ms: u64) {
    if let Ok(msg) = tokio::time::timeout(Duration::from_millis(ms), sub.next()).await {
        panic!("unexpected message: {msg:?}");
    }
}

/// Subscribes to `subject` and makes sure the server has the subscription.
async fn subscribe(client: &async_nats::Client, subject: String) -> async_nats::Subscriber {
    let sub = client.subscribe(subject).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), client.flush())
        .await
        .expect("flush within 5 s")
        .unwrap();
    sub
}

#[tokio::test]
async fn messages_sent_while_nats_is_down_are_stored_at_once_and_published_in_order_when_it_is_back()
 {
    let mut nats = SmallNats::start(1024 * 1024).await;
    let app = spawn_app_with(&[("NATS_URL", nats.url.as_str())]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let subject = shared_proto::subjects::conversation(&app.nats_prefix, &conv);
    let before = nats.client().await;
    let mut sub = subscribe(&before, subject.clone()).await;
    let mut seqs = vec![send_text(&app, conv, alice, "before").await];
    assert_eq!(next_seq(&mut sub).await, seqs[0]);
    drop((sub, before));

    nats.kill();
    wait_nats(&app, false).await;
    for i in 0..5 {
        seqs.push(send_text(&app, conv, alice, &format!("while down {i}")).await);
    }
    assert_eq!(app.stored_seqs(conv).await, seqs, "stored at once");
    assert_eq!(metric(&app, "api_service_event_buffer_events").await, 5.0);

    nats.restart_without_app().await;
    let after = nats.client().await;
    let mut sub = subscribe(&after, subject).await;
    nats.admit_app();
    wait_nats(&app, true).await;
    seqs.push(send_text(&app, conv, alice, "after").await);

    let mut received = vec![seqs[0]];
    while received.len() < seqs.len() {
        let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), sub.next()).await else {
            break;
        };
        received.push(seq_of(msg));
    }
    assert_eq!(received, seqs, "every event, in seq order");
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_quiet(&mut sub, 300).await;
    wait_metric(&app, "api_service_event_buffer_events", 0.0).await;
    // The last message may have found the buffer still draining and queued behind it.
    let buffered = metric(&app, "api_service_events_buffered_total").await;
    assert!(buffered == 5.0 || buffered == 6.0, "{buffered}");
    assert_eq!(
        metric(
            &app,
            r#"api_service_events_dropped_total{reason="overflow"}"#
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn events_beyond_the_buffer_are_dropped_counted_and_announced_by_one_resync_notice() {
    let mut nats = SmallNats::start(1024 * 1024).await;
    let app = spawn_app_with(&[("NATS_URL", nats.url.as_str()), ("EVENT_BUFFER_SIZE", "3")]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;

    nats.kill();
    wait_nats(&app, false).await;
    let mut seqs = Vec::new();
    for i in 0..6 {
        seqs.push(send_text(&app, conv, alice, &format!("while down {i}")).await);
    }
    assert_eq!(app.stored_seqs(conv).await, seqs, "all stored");
    assert_eq!(
        metric(
            &app,
            r#"api_service_events_dropped_total{reason="overflow"}"#
        )
        .await,
        3.0
    );
    assert_eq!(metric(&app, "api_service_event_buffer_events").await, 3.0);

    nats.restart_without_app().await;
    let client = nats.client().await;
    let mut events = subscribe(
        &client,
        shared_proto::subjects::conversation(&app.nats_prefix, &conv),
    )
    .await;
    let mut notices = subscribe(&client, shared_proto::subjects::resync(&app.nats_prefix)).await;
    nats.admit_app();

    for seq in &seqs[..3] {
        assert_eq!(
            next_seq(&mut events).await,
            *seq,
            "the buffered three, in order"
        );
    }
    let notice = next_notice_for(&mut notices, conv).await;
    assert!(!notice.everyone, "{notice:?}");
    assert_quiet(&mut events, 300).await;
    assert_quiet(&mut notices, 300).await;
    assert_eq!(
        metric(&app, "api_service_resync_notices_published_total").await,
        1.0
    );
    assert_eq!(metric(&app, "api_service_event_buffer_events").await, 0.0);
}

/// The next resync notice, which must name `conv` with the api-service's reason.
async fn next_notice_for(
    notices: &mut async_nats::Subscriber,
    conv: Uuid,
) -> shared_proto::events::ResyncNotice {
    let notice =
        shared_proto::events::ResyncNotice::decode(next_msg(notices).await.payload).unwrap();
    assert!(
        notice.conversation_ids.contains(&conv.to_string()),
        "{notice:?}"
    );
    assert_eq!(notice.reason, shared_proto::json::RESYNC_NOT_PUBLISHED);
    notice
}

#[tokio::test]
async fn a_connection_lost_just_after_a_publish_leads_to_a_resync_notice_for_its_conversation() {
    // The event may have died in the connection: the notice after the reconnection covers it.
    let mut nats = SmallNats::start(1024 * 1024).await;
    let app = spawn_app_with(&[("NATS_URL", nats.url.as_str())]).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    send_text(&app, conv, alice, "in flight").await;
    nats.kill();
    wait_nats(&app, false).await;

    nats.restart_without_app().await;
    let client = nats.client().await;
    let mut notices = subscribe(&client, shared_proto::subjects::resync(&app.nats_prefix)).await;
    nats.admit_app();
    next_notice_for(&mut notices, conv).await;
    assert_eq!(
        metric(
            &app,
            r#"api_service_events_dropped_total{reason="overflow"}"#
        )
        .await,
        0.0
    );
}

#[tokio::test]
async fn with_nats_up_events_go_straight_out_and_no_resync_notice_is_published() {
    let nats = SmallNats::start(1024 * 1024).await;
    let app = spawn_app_with(&[("NATS_URL", nats.url.as_str())]).await;
    let client = nats.client().await;
    let mut notices = subscribe(&client, shared_proto::subjects::resync(&app.nats_prefix)).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let mut events = subscribe(
        &client,
        shared_proto::subjects::conversation(&app.nats_prefix, &conv),
    )
    .await;
    for i in 0..3 {
        let seq = send_text(&app, conv, alice, &format!("up {i}")).await;
        assert_eq!(next_seq(&mut events).await, seq);
    }
    // A removal flushes before answering; with nothing buffered that is a real flush.
    let r = app
        .delete_as(
            &format!("/conversations/{conv}/participants/{bob}"),
            As::User(bob),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_quiet(&mut notices, 500).await;
    assert_eq!(metric(&app, "api_service_event_buffer_events").await, 0.0);
    assert_eq!(metric(&app, "api_service_events_buffered_total").await, 0.0);
    assert_eq!(
        metric(&app, "api_service_resync_notices_published_total").await,
        0.0
    );
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !text.contains("api_service_event_publish_failures_total{"),
        "{text}"
    );
    for reason in ["overflow", "too_large", "shutdown"] {
        assert_eq!(
            metric(
                &app,
                &format!(r#"api_service_events_dropped_total{{reason="{reason}"}}"#)
            )
            .await,
            0.0
        );
    }
}
