//! Read receipts: forward-only marks with a stable receipt id, the `read.updated` event only when
//! the receipt is created or moved, the check order in both auth modes, concurrent marks, and the
//! list.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{As, TestApp, spawn_app, spawn_app_with};

/// Sends a text message as `who`; returns its id.
async fn send(app: &TestApp, conversation: Uuid, who: As) -> Uuid {
    let r = app
        .post_json(
            &format!("/conversations/{conversation}/messages"),
            who,
            json!({"content": "hello"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.data()["id"].as_str().unwrap().parse().unwrap()
}

async fn mark(
    app: &TestApp,
    conversation: Uuid,
    who: As,
    message: impl Into<Value>,
) -> crate::helpers::Reply {
    app.post_json(
        &format!("/conversations/{conversation}/read"),
        who,
        json!({"last_read_message_id": message.into()}),
    )
    .await
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[tokio::test]
async fn marking_read_creates_the_receipt_and_publishes_it_as_read_updated() {
    let app = spawn_app().await;
    let (owner, member) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[member]).await;
    let m = send(&app, conv, As::User(owner)).await;
    let mut events = app.conversation_events(conv).await;

    let r = mark(&app, conv, As::User(member), m.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json");
    let data = r.data();
    assert_eq!(
        keys(&data),
        [
            "conversation_id",
            "id",
            "last_read_at",
            "last_read_message_id",
            "user_id"
        ]
    );
    assert_eq!(data["conversation_id"], conv.to_string());
    assert_eq!(data["user_id"], member.to_string());
    assert_eq!(data["last_read_message_id"], m.to_string());
    assert!(data["last_read_at"].as_str().unwrap().ends_with('Z'));

    let frame = events.next_frame().await;
    assert_eq!(frame["type"], "read.updated");
    assert_eq!(frame["conversation_id"], conv.to_string());
    assert_eq!(frame["payload"], data);

    let (id, last): (Uuid, Uuid) = sqlx::query_as(
        "select id, last_read_message_id from read_receipts where conversation_id = $1 and user_id = $2",
    )
    .bind(conv)
    .bind(member)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(id.to_string(), data["id"]);
    assert_eq!(last, m);
}

#[tokio::test]
async fn the_receipt_only_moves_forward_and_keeps_its_id() {
    let app = spawn_app().await;
    let (owner, member) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[member]).await;
    let m1 = send(&app, conv, As::User(owner)).await;
    let m2 = send(&app, conv, As::User(owner)).await;
    let m3 = send(&app, conv, As::User(owner)).await;
    let who = As::User(member);

    let at_m2 = mark(&app, conv, who, m2.to_string()).await.data();
    let mut events = app.conversation_events(conv).await;

    // An older message, and the same one again: unchanged receipt, no event.
    for older in [m1, m2] {
        let r = mark(&app, conv, who, older.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.data(), at_m2);
    }
    events.assert_quiet(300).await;

    // A newer one moves it: same id, new message, later time, one event.
    let r = mark(&app, conv, who, m3.to_string()).await;
    assert_eq!(r.status, 200);
    let at_m3 = r.data();
    assert_eq!(at_m3["id"], at_m2["id"]);
    assert_eq!(at_m3["last_read_message_id"], m3.to_string());
    assert!(at_m3["last_read_at"].as_str() > at_m2["last_read_at"].as_str());
    let frame = events.next_frame().await;
    assert_eq!(frame["type"], "read.updated");
    assert_eq!(frame["payload"], at_m3);
    events.assert_quiet(200).await;

    let rows: i64 =
        sqlx::query_scalar("select count(*) from read_receipts where conversation_id = $1")
            .bind(conv)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn deleted_messages_can_be_marked_read_and_ids_are_accepted_in_every_uuid_form() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let conv = app.create_group(owner, &[Uuid::new_v4()]).await;
    let m1 = send(&app, conv, As::User(owner)).await;
    let m2 = send(&app, conv, As::User(owner)).await;
    let m3 = send(&app, conv, As::User(owner)).await;
    let r = app
        .delete_as(&format!("/messages/{m1}"), As::User(owner))
        .await;
    assert_eq!(r.status, 204);

    let r = mark(
        &app,
        conv,
        As::User(owner),
        format!("{{{}}}", m1.to_string().to_uppercase()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["last_read_message_id"], m1.to_string());
    let r = mark(&app, conv, As::User(owner), format!("urn:uuid:{m2}")).await;
    assert_eq!(r.data()["last_read_message_id"], m2.to_string());
    let r = mark(
        &app,
        conv,
        As::User(owner),
        m3.simple().to_string().to_uppercase(),
    )
    .await;
    assert_eq!(r.data()["last_read_message_id"], m3.to_string());
}

#[tokio::test]
async fn concurrent_marks_never_fail_and_leave_one_receipt_at_the_furthest_message() {
    let app = spawn_app().await;
    let (owner, member) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[member]).await;
    let mut messages = Vec::new();
    for _ in 0..8 {
        messages.push(send(&app, conv, As::User(owner)).await);
    }
    let mut events = app.conversation_events(conv).await;

    let replies = futures_util::future::join_all(
        messages
            .iter()
            .rev()
            .chain(messages.iter())
            .map(|m| mark(&app, conv, As::User(member), m.to_string())),
    )
    .await;
    let mut ids = std::collections::HashSet::new();
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.text);
        ids.insert(r.data()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1, "one receipt, one id");

    let rows: Vec<Uuid> = sqlx::query_scalar(
        "select last_read_message_id from read_receipts where conversation_id = $1",
    )
    .bind(conv)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(rows, [*messages.last().unwrap()]);

    // Every event is a real move: each to a different message (a receipt never moves to where it
    // already is, nor back), the last message among them. Publication order across concurrent
    // requests is not defined, so only the set is checked.
    let mut targets = std::collections::HashSet::new();
    while targets.len() < messages.len() {
        let next =
            tokio::time::timeout(std::time::Duration::from_millis(500), events.next_frame()).await;
        let Ok(frame) = next else { break };
        assert_eq!(frame["type"], "read.updated");
        let target = frame["payload"]["last_read_message_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(targets.insert(target.clone()), "moved to {target} twice");
    }
    assert!(targets.contains(&messages.last().unwrap().to_string()));
}

#[tokio::test]
async fn mark_read_checks_run_in_the_documented_order() {
    let app = spawn_app().await;
    let (owner, outsider) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[Uuid::new_v4()]).await;
    let other = app.create_group(owner, &[Uuid::new_v4()]).await;
    let m = send(&app, conv, As::User(owner)).await;
    let elsewhere = send(&app, other, As::User(owner)).await;
    let path = format!("/conversations/{conv}/read");

    // No credentials: 401 before the path id and the body.
    let r = app
        .send(
            "POST",
            "/conversations/nope/read",
            As::Nobody,
            Some(b"{".to_vec()),
        )
        .await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    // PATH-C before BODY.
    let r = app
        .send(
            "POST",
            "/conversations/nope/read",
            As::User(owner),
            Some(b"{".to_vec()),
        )
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    // BODY: malformed, wrong type, non-object, too large.
    for body in [
        &b"{"[..],
        b"",
        b"[1]",
        br#"{"last_read_message_id": 5}"#,
        br#"{"last_read_message_id": ["x"]}"#,
    ] {
        let r = app
            .send("POST", &path, As::User(owner), Some(body.to_vec()))
            .await;
        r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
    let huge = format!(
        r#"{{"last_read_message_id": "{}"}}"#,
        "a".repeat(1024 * 1024)
    );
    let r = app
        .send("POST", &path, As::User(owner), Some(huge.into_bytes()))
        .await;
    r.assert_error(413, "PAYLOAD_TOO_LARGE", "Request body too large");
    // Field rules (before MEMBER: an outsider gets them too).
    for who in [owner, outsider] {
        for body in [
            json!({}),
            json!(null),
            json!({"last_read_message_id": null}),
            json!({"last_read_message_id": ""}),
        ] {
            let r = app.post_json(&path, As::User(who), body).await;
            r.assert_validation(
                json!({"last_read_message_id": "last_read_message_id is required"}),
            );
        }
        let r = mark(&app, conv, As::User(who), "not-a-uuid").await;
        r.assert_validation(json!({"last_read_message_id": "invalid UUID format"}));
    }
    // MEMBER, also for a conversation that does not exist and a message that does not either.
    for target in [conv, Uuid::new_v4()] {
        let r = mark(&app, target, As::User(outsider), Uuid::new_v4().to_string()).await;
        r.assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
    }
    // The message must exist in this conversation.
    for missing in [Uuid::new_v4(), elsewhere] {
        let r = mark(&app, conv, As::User(owner), missing.to_string()).await;
        r.assert_error(404, "NOT_FOUND", "Message not found");
    }
    assert_eq!(
        mark(&app, conv, As::User(owner), m.to_string())
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn in_header_mode_the_user_header_is_checked_after_the_body_and_before_the_fields() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let owner = Uuid::new_v4();
    let r = app
        .post_json(
            "/conversations",
            As::Header(owner),
            json!({"type": "group", "name": "g", "participant_ids": [Uuid::new_v4()]}),
        )
        .await;
    let conv: Uuid = r.data()["id"].as_str().unwrap().parse().unwrap();
    let path = format!("/conversations/{conv}/read");

    let r = app
        .send(
            "POST",
            "/conversations/x/read",
            As::Nobody,
            Some(b"{".to_vec()),
        )
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    let r = app
        .send("POST", &path, As::Nobody, Some(b"{".to_vec()))
        .await;
    r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    let r = app
        .post_json(&path, As::Nobody, json!({"last_read_message_id": "bad"}))
        .await;
    r.assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    let r = app
        .post_json(
            &path,
            As::Header(owner),
            json!({"last_read_message_id": "bad"}),
        )
        .await;
    r.assert_validation(json!({"last_read_message_id": "invalid UUID format"}));

    let r = app.get_as("/conversations/x/read", As::Nobody).await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    let r = app.get_as(&path, As::Nobody).await;
    r.assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    let r = app.get_as(&path, As::Header(owner)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text, r#"{"data":[]}"#);
}

#[tokio::test]
async fn receipts_are_listed_most_recent_first_including_former_participants() {
    let app = spawn_app().await;
    let (owner, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[a, b]).await;
    let m1 = send(&app, conv, As::User(owner)).await;
    let m2 = send(&app, conv, As::User(owner)).await;

    let ra = mark(&app, conv, As::User(a), m1.to_string()).await.data();
    let rb = mark(&app, conv, As::User(b), m2.to_string()).await.data();
    let ro = mark(&app, conv, As::User(owner), m2.to_string())
        .await
        .data();
    // `a` leaves: the receipt stays listed.
    let r = app
        .delete_as(
            &format!("/conversations/{conv}/participants/{a}"),
            As::User(a),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    let r = app
        .get_as(&format!("/conversations/{conv}/read"), As::User(owner))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data(), json!([ro, rb, ra]));

    // A former participant and an outsider may not list; nor may anyone for a missing conversation.
    for who in [a, Uuid::new_v4()] {
        let r = app
            .get_as(&format!("/conversations/{conv}/read"), As::User(who))
            .await;
        r.assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
    }
    let r = app
        .get_as(
            &format!("/conversations/{}/read", Uuid::new_v4()),
            As::User(owner),
        )
        .await;
    r.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    let r = app
        .get_as("/conversations/nope/read", As::User(owner))
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    let r = app.get_as("/conversations/nope/read", As::Nobody).await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
}
