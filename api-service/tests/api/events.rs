//! How personal events travel on NATS (events.rs): one `conversation.joined` addressed to every
//! user a create concerns, split over as few messages as the server's `max_payload` allows.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use futures_util::StreamExt;
use prost::Message as _;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{As, spawn_app_with};

/// A NATS server of this test's own, with a small `max_payload`; killed when dropped.
struct SmallNats {
    child: Child,
    url: String,
    _config: TempConfig,
}

/// The server's config file, removed when dropped.
struct TempConfig(std::path::PathBuf);

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl SmallNats {
    async fn start(max_payload: usize) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = std::env::temp_dir().join(format!("retich-nats-{}.conf", Uuid::new_v4()));
        std::fs::write(
            &config,
            format!("listen: 127.0.0.1:{port}\nmax_payload: {max_payload}\n"),
        )
        .expect("write the NATS config");
        let config = TempConfig(config);
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server");
        let server = Self {
            child: Command::new(binary)
                .arg("-c")
                .arg(&config.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server"),
            url: format!("nats://127.0.0.1:{port}"),
            _config: config,
        };
        for _ in 0..100 {
            if async_nats::connect(&server.url).await.is_ok() {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nats-server on port {port} did not come up");
    }
}

impl Drop for SmallNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
