//! Messages, unread counts and who may do what to a message: send (idempotency, rate limit, seq
//! under concurrency), history, search, get, edit, delete, typing.

use std::collections::HashSet;

use futures_util::future::join_all;
use serde_json::{Value, json};
use shared_redis::{
    Keys,
    fred::{
        clients::Client,
        interfaces::{ClientLike, KeysInterface, SortedSetsInterface},
        types::CustomCommand,
    },
};
use uuid::Uuid;

use crate::helpers::{As, Reply, TestApp, spawn_app, spawn_app_with};

// ----- helpers ----------------------------------------------------------------------------------

fn messages_path(conversation: Uuid) -> String {
    format!("/conversations/{conversation}/messages")
}

async fn send(app: &TestApp, conversation: Uuid, who: As, body: Value) -> Reply {
    app.post_json(&messages_path(conversation), who, body).await
}

/// Sends a text message as `user` (jwt) and returns its `data`.
async fn send_text(app: &TestApp, conversation: Uuid, user: Uuid, text: &str) -> Value {
    let r = send(
        app,
        conversation,
        As::User(user),
        json!({ "content": text }),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.data()
}

fn id_of(v: &Value) -> Uuid {
    v["id"].as_str().unwrap().parse().unwrap()
}

fn seqs(page: &Value) -> Vec<i64> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect()
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

fn sorted(keys: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = keys.iter().map(|s| (*s).to_owned()).collect();
    k.sort();
    k
}

/// A group created in header mode (`As::Header`), with one more random member.
async fn header_group(app: &TestApp, owner: Uuid, members: &[Uuid]) -> Uuid {
    let mut members = members.to_vec();
    members.push(Uuid::new_v4());
    let r = app
        .post_json(
            "/conversations",
            As::Header(owner),
            json!({"type": "group", "name": "header group", "participant_ids": members}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    id_of(&r.data())
}

/// The value of an unlabelled counter on `/metrics`.
async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn set_role(app: &TestApp, conversation: Uuid, user: Uuid, role: &str) {
    sqlx::query(
        "update conversation_participants set role = $3 where conversation_id = $1 and user_id = $2",
    )
    .bind(conversation)
    .bind(user)
    .bind(role)
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn redis() -> Client {
    shared_redis::testing::connect("redis://127.0.0.1:6379")
        .await
        .expect("redis")
}

// ----- send: success, shape, database, event -----------------------------------------------------

#[tokio::test]
async fn a_text_message_is_stored_with_seq_1_and_answered_201_with_the_full_shape() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;

    let r = send(&app, conv, As::User(alice), json!({"content": "Bonjour"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json");
    let m = r.data();
    assert_eq!(
        keys(&m),
        sorted(&[
            "id",
            "conversation_id",
            "sender_id",
            "seq",
            "type",
            "content",
            "is_edited",
            "created_at",
            "reactions",
            "attachments"
        ]),
        "metadata, reply_to_id, client_msg_id and edited_at are omitted when null"
    );
    assert_eq!(m["conversation_id"], conv.to_string());
    assert_eq!(m["sender_id"], alice.to_string());
    assert_eq!(m["seq"], 1);
    assert_eq!(m["type"], "text");
    assert_eq!(m["content"], "Bonjour");
    assert_eq!(m["is_edited"], false);
    assert_eq!(m["reactions"], json!([]));
    assert_eq!(m["attachments"], json!([]));

    // The id is a UUIDv7 of the creation instant (what partition-aware lookups rely on).
    let id = id_of(&m);
    assert_eq!(id.get_version_num(), 7);
    let created: chrono::DateTime<chrono::Utc> = m["created_at"].as_str().unwrap().parse().unwrap();
    let (from, to) = api_service::db::messages::v7_window(id).unwrap();
    assert!(
        from <= created && created < to,
        "{from} <= {created} < {to}"
    );

    let row: (i64, String, Option<String>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "select seq, content, client_msg_id, created_at from messages where id = $1",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(row.0, 1);
    assert_eq!(row.1, "Bonjour");
    assert_eq!(row.2, None);
    assert_eq!(row.3, created);

    // The conversation's counter and last_message_at moved with the insert.
    let (last_seq, last_message_at): (i64, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("select last_seq, last_message_at from conversations where id = $1")
            .bind(conv)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(last_seq, 1);
    assert_eq!(last_message_at, created);
    let detail = app
        .get_as(&format!("/conversations/{conv}"), As::User(bob))
        .await
        .data();
    assert_eq!(detail["last_message_at"], m["created_at"]);

    let second = send_text(&app, conv, bob, "Salut").await;
    assert_eq!(second["seq"], 2);
}

#[tokio::test]
async fn sending_publishes_message_new_equal_to_the_rest_data_to_the_room() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let mut events = app.conversation_events(conv).await;

    let r = send(
        &app,
        conv,
        As::User(alice),
        json!({"content": "hi", "metadata": {"b": [1, 2], "a": null}, "client_msg_id": "c-1"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let event = events.next().await;
    assert_eq!(event.actor_id, alice.to_string());
    let frame = shared_proto::json::client_frame(&event).unwrap();
    let frame: Value = serde_json::from_slice(&frame).unwrap();
    assert_eq!(
        frame,
        json!({"type": "message.new", "conversation_id": conv.to_string(), "payload": r.data()})
    );
    events.assert_quiet(300).await;
}

#[tokio::test]
async fn optional_fields_are_stored_and_echoed_with_metadata_in_jsonb_normal_form() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let first = send_text(&app, conv, alice, "first").await;
    let reply_upper = format!("{{{}}}", first["id"].as_str().unwrap().to_uppercase());

    let raw = format!(
        r#"{{"type":"image","content":null,"reply_to_id":"{reply_upper}","client_msg_id":"abc","metadata":{{"bbb":1,"a":{{"zz":true,"y":[1,2.5]}},"cc":"x","a":2}},"unknown":1}}"#
    );
    let r = app
        .send(
            "POST",
            &messages_path(conv),
            As::User(bob),
            Some(raw.into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // jsonb normal form: shorter keys first, duplicate keys collapsed (last one wins), compact.
    assert!(
        r.text.contains(r#""metadata":{"a":2,"cc":"x","bbb":1}"#),
        "{}",
        r.text
    );
    let m = r.data();
    assert_eq!(m["type"], "image");
    assert_eq!(m["content"], Value::Null, "content is always present");
    assert_eq!(
        m["reply_to_id"], first["id"],
        "ids are echoed lowercase canonical"
    );
    assert_eq!(m["client_msg_id"], "abc");

    // Any JSON value is accepted as metadata; null counts as absent.
    for (metadata, echoed) in [
        (json!(5), Some(json!(5))),
        (json!("s"), Some(json!("s"))),
        (
            json!([1, {"b": 1, "a": 2}]),
            Some(json!([1, {"a": 2, "b": 1}])),
        ),
        (json!({}), Some(json!({}))),
        (Value::Null, None),
    ] {
        let r = send(
            &app,
            conv,
            As::User(bob),
            json!({"content": "m", "metadata": metadata}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(r.data().get("metadata").cloned(), echoed, "{}", r.text);
    }

    // Non-text types need no content; whitespace-only text is accepted.
    for body in [
        json!({"type": "file"}),
        json!({"type": "audio", "content": ""}),
        json!({"type": "video"}),
        json!({"content": "   "}),
        json!({"type": "text", "content": " \n"}),
    ] {
        let r = send(&app, conv, As::User(alice), body.clone()).await;
        assert_eq!(r.status, 201, "{body}: {}", r.text);
    }
}

#[tokio::test]
async fn odd_and_large_unicode_is_stored_byte_for_byte() {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    for text in [
        "🦀".repeat(2500), // 10000 bytes
        "e\u{301}\u{202e}\u{200b}\u{feff}ﷺ𝕏".to_owned(),
        "\u{10ffff}\u{fffd}".to_owned(),
    ] {
        let m = send_text(&app, conv, alice, &text).await;
        assert_eq!(m["content"], text.as_str());
        let stored: String = sqlx::query_scalar("select content from messages where id = $1")
            .bind(id_of(&m))
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(stored, text);
    }
}

// ----- send: rules and check order -------------------------------------------------------------

#[tokio::test]
async fn send_field_rules_are_reported_together_and_count_bytes() {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    let cases = [
        (
            json!({}),
            json!({"content": "content is required for text messages"}),
        ),
        (
            json!({"content": ""}),
            json!({"content": "content is required for text messages"}),
        ),
        (
            json!({"type": null, "content": null}),
            json!({"content": "content is required for text messages"}),
        ),
        (
            json!({"type": "", "content": "x"}),
            json!({"type": "type must be one of: text, image, file, audio, video, system"}),
        ),
        (
            json!({"type": "TEXT", "content": "x"}),
            json!({"type": "type must be one of: text, image, file, audio, video, system"}),
        ),
        (
            json!({"content": "a".repeat(10001)}),
            json!({"content": "content must not exceed 10000 characters"}),
        ),
        (
            json!({"content": "é".repeat(5001)}),
            json!({"content": "content must not exceed 10000 characters"}),
        ),
        (
            json!({"type": "image", "content": "a".repeat(10001)}),
            json!({"content": "content must not exceed 10000 characters"}),
        ),
        (
            json!({"content": "x", "metadata": {"k": "x".repeat(16377)}}),
            json!({"metadata": "metadata must not exceed 16384 bytes"}),
        ),
        (
            json!({"content": "x", "reply_to_id": "nope"}),
            json!({"reply_to_id": "invalid UUID format"}),
        ),
        (
            json!({"content": "x", "client_msg_id": ""}),
            json!({"client_msg_id": "client_msg_id must not be empty"}),
        ),
        (
            json!({"content": "x", "client_msg_id": "é".repeat(33)}),
            json!({"client_msg_id": "client_msg_id must not exceed 64 characters"}),
        ),
        (
            json!({
                "type": "bogus",
                "content": "a".repeat(10001),
                "metadata": ["x".repeat(16400)],
                "reply_to_id": "x",
                "client_msg_id": "",
            }),
            json!({
                "type": "type must be one of: text, image, file, audio, video, system",
                "content": "content must not exceed 10000 characters",
                "metadata": "metadata must not exceed 16384 bytes",
                "reply_to_id": "invalid UUID format",
                "client_msg_id": "client_msg_id must not be empty",
            }),
        ),
    ];
    for (body, details) in cases {
        let r = send(&app, conv, As::User(alice), body.clone()).await;
        r.assert_validation(details);
    }

    // The limits themselves are allowed; "" reply_to_id counts as absent.
    for body in [
        json!({"content": "a".repeat(10000)}),
        json!({"content": "x", "metadata": {"k": "x".repeat(16376)}}),
        json!({"content": "x", "client_msg_id": "c".repeat(64)}),
        json!({"content": "x", "reply_to_id": ""}),
    ] {
        let r = send(&app, conv, As::User(alice), body).await;
        assert_eq!(r.status, 201, "{}", r.text);
        assert!(r.data().get("reply_to_id").is_none());
    }
    let count: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 4, "no failed send stored anything");
}

#[tokio::test]
async fn undecodable_send_bodies_are_invalid_json_and_oversized_ones_413() {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    let path = messages_path(conv);
    for body in [
        "",
        "{",
        "[]",
        "\"text\"",
        "5",
        r#"{"content": 5}"#,
        r#"{"content": ["x"]}"#,
        r#"{"type": 1, "content": "x"}"#,
        r#"{"content": "x", "reply_to_id": 7}"#,
        r#"{"content": "x", "client_msg_id": true}"#,
        r#"{"content": "x", "client_msg_id": {}}"#,
        r#"{"content": "\ud800"}"#,
        // PostgreSQL cannot store U+0000 in text or jsonb.
        r#"{"content": "a\u0000b"}"#,
        r#"{"content": "x", "client_msg_id": "\u0000"}"#,
        r#"{"content": "x", "metadata": {"k": ["\u0000"]}}"#,
        r#"{"content": "x", "metadata": {"\u0000": 1}}"#,
    ] {
        let r = app
            .send(
                "POST",
                &path,
                As::User(alice),
                Some(body.as_bytes().to_vec()),
            )
            .await;
        r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
    // `null` is `{}`; trailing bytes after the first value are ignored.
    let r = app
        .send("POST", &path, As::User(alice), Some(b"null".to_vec()))
        .await;
    r.assert_validation(json!({"content": "content is required for text messages"}));
    let r = app
        .send(
            "POST",
            &path,
            As::User(alice),
            Some(br#"{"content":"ok"} trailing"#.to_vec()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let big = format!(r#"{{"content":"{}"}}"#, "a".repeat(1024 * 1024));
    let r = app
        .send("POST", &path, As::User(alice), Some(big.into_bytes()))
        .await;
    r.assert_error(413, "PAYLOAD_TOO_LARGE", "Request body too large");
}

#[tokio::test]
async fn send_checks_run_in_the_documented_order_in_jwt_mode() {
    let app = spawn_app().await;
    let (alice, bob, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let other = app.create_group(alice, &[bob]).await;
    let foreign = send_text(&app, other, alice, "elsewhere").await;
    let cid = send(
        &app,
        conv,
        As::User(bob),
        json!({"content": "x", "client_msg_id": "k"}),
    )
    .await;
    assert_eq!(cid.status, 201);
    let unknown = Uuid::new_v4();
    let bad = b"{".to_vec();

    // No credentials: 401 before everything else.
    let r = app
        .send(
            "POST",
            "/conversations/nope/messages",
            As::Nobody,
            Some(bad.clone()),
        )
        .await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    // PATH-C before BODY.
    app.send(
        "POST",
        "/conversations/nope/messages",
        As::User(alice),
        Some(bad.clone()),
    )
    .await
    .assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    // BODY before field rules and CONV.
    app.send("POST", &messages_path(unknown), As::User(alice), Some(bad))
        .await
        .assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    // Field rules before CONV.
    send(&app, unknown, As::User(alice), json!({"type": "x"}))
        .await
        .assert_validation(
            json!({"type": "type must be one of: text, image, file, audio, video, system"}),
        );
    // CONV before MEMBER.
    send(&app, unknown, As::User(stranger), json!({"content": "x"}))
        .await
        .assert_error(404, "NOT_FOUND", "Conversation not found");
    // MEMBER before the system rule.
    send(
        &app,
        conv,
        As::User(stranger),
        json!({"type": "system", "content": "x"}),
    )
    .await
    .assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    // system before reply_to_id.
    send(
        &app,
        conv,
        As::User(alice),
        json!({"type": "system", "content": "x", "reply_to_id": unknown}),
    )
    .await
    .assert_error(403, "FORBIDDEN", "System messages cannot be sent by users");
    // reply_to_id before the replay.
    send(
        &app,
        conv,
        As::User(bob),
        json!({"content": "x", "reply_to_id": foreign["id"], "client_msg_id": "k"}),
    )
    .await
    .assert_validation(
        json!({"reply_to_id": "reply_to_id must reference a message in this conversation"}),
    );
}

#[tokio::test]
async fn send_checks_run_in_the_documented_order_in_header_mode() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let (alice, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = header_group(&app, alice, &[Uuid::new_v4()]).await;
    let path = messages_path(conv);

    // PATH-C, then BODY, then HDR.
    app.send(
        "POST",
        "/conversations/x/messages",
        As::Nobody,
        Some(b"{".to_vec()),
    )
    .await
    .assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    app.send("POST", &path, As::Nobody, Some(b"{".to_vec()))
        .await
        .assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    send(&app, conv, As::Nobody, json!({"type": "x"}))
        .await
        .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    // A token is no identity in header mode.
    send(&app, conv, As::User(alice), json!({"content": "x"}))
        .await
        .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    send(&app, conv, As::Header(alice), json!({"type": "x"}))
        .await
        .assert_validation(
            json!({"type": "type must be one of: text, image, file, audio, video, system"}),
        );
    send(&app, conv, As::Header(stranger), json!({"content": "x"}))
        .await
        .assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
    let r = send(&app, conv, As::Header(alice), json!({"content": "x"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["sender_id"], alice.to_string());
}

#[tokio::test]
async fn reply_to_id_must_name_a_live_message_of_the_same_conversation() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let other = app.create_group(alice, &[bob]).await;
    let here = send_text(&app, conv, alice, "here").await;
    let deleted = send_text(&app, conv, alice, "gone").await;
    assert_eq!(
        app.delete_as(
            &format!("/messages/{}", deleted["id"].as_str().unwrap()),
            As::User(alice)
        )
        .await
        .status,
        204
    );
    let elsewhere = send_text(&app, other, alice, "elsewhere").await;

    for target in [
        elsewhere["id"].clone(),
        deleted["id"].clone(),
        json!(Uuid::new_v4()),
    ] {
        send(
            &app,
            conv,
            As::User(bob),
            json!({"content": "re", "reply_to_id": target}),
        )
        .await
        .assert_validation(
            json!({"reply_to_id": "reply_to_id must reference a message in this conversation"}),
        );
    }
    let r = send(
        &app,
        conv,
        As::User(bob),
        json!({"content": "re", "reply_to_id": here["id"]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["reply_to_id"], here["id"]);
}

#[tokio::test]
async fn any_active_participant_may_post_in_any_conversation_type_even_archived_but_never_system() {
    let app = spawn_app().await;
    let (owner, member, left) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let channel = app
        .create_conversation(owner, "channel", &[member, left])
        .await;
    let dm = app.create_conversation(owner, "direct", &[member]).await;
    let group = app.create_group(owner, &[member]).await;

    for conv in [channel, dm, group] {
        for user in [owner, member] {
            send_text(&app, conv, user, "hello").await;
            send(
                &app,
                conv,
                As::User(user),
                json!({"type": "system", "content": "x"}),
            )
            .await
            .assert_error(403, "FORBIDDEN", "System messages cannot be sent by users");
        }
    }
    // Archived conversations accept messages.
    assert_eq!(
        app.delete_as(&format!("/conversations/{group}"), As::User(owner))
            .await
            .status,
        200
    );
    send_text(&app, group, member, "still here").await;

    // A participant who left is no participant.
    sqlx::query("update conversation_participants set left_at = now() where conversation_id = $1 and user_id = $2")
        .bind(channel)
        .bind(left)
        .execute(&app.pool)
        .await
        .unwrap();
    send(&app, channel, As::User(left), json!({"content": "x"}))
        .await
        .assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
}

// ----- send: idempotency -------------------------------------------------------------------------

#[tokio::test]
async fn a_repeated_client_msg_id_replays_the_stored_message_with_200_and_no_event() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let first = send(
        &app,
        conv,
        As::User(alice),
        json!({"content": "once", "client_msg_id": "k1"}),
    )
    .await;
    assert_eq!(first.status, 201);
    let first = first.data();
    let mut events = app.conversation_events(conv).await;

    // The retry may differ in every field: the stored message answers, in its current state.
    let r = send(
        &app,
        conv,
        As::User(alice),
        json!({"type": "image", "content": "other", "client_msg_id": "k1"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.data(), first);
    events.assert_quiet(300).await;

    let edited = app
        .put_json(
            &format!("/messages/{}", first["id"].as_str().unwrap()),
            As::User(alice),
            json!({"content": "edited"}),
        )
        .await;
    assert_eq!(edited.status, 200);
    assert_eq!(events.next_frame().await["type"], "message.updated");
    let r = send(
        &app,
        conv,
        As::User(alice),
        json!({"content": "once", "client_msg_id": "k1"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data(), edited.data());

    // The same key is independent per sender and per conversation.
    let r = send(
        &app,
        conv,
        As::User(bob),
        json!({"content": "bob", "client_msg_id": "k1"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(events.next_frame().await["type"], "message.new");
    let other = app.create_group(alice, &[Uuid::new_v4()]).await;
    let r = send(
        &app,
        other,
        As::User(alice),
        json!({"content": "x", "client_msg_id": "k1"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Deleted since: 404.
    assert_eq!(
        app.delete_as(
            &format!("/messages/{}", first["id"].as_str().unwrap()),
            As::User(alice)
        )
        .await
        .status,
        204
    );
    assert_eq!(events.next_frame().await["type"], "message.deleted");
    let r = send(
        &app,
        conv,
        As::User(alice),
        json!({"content": "once", "client_msg_id": "k1"}),
    )
    .await;
    r.assert_error(404, "NOT_FOUND", "Message not found");
    events.assert_quiet(300).await;

    let keys: i64 =
        sqlx::query_scalar("select count(*) from message_client_ids where conversation_id = $1")
            .bind(conv)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(keys, 2);
}

#[tokio::test]
async fn concurrent_retries_with_one_client_msg_id_insert_exactly_once() {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    let mut events = app.conversation_events(conv).await;

    let replies = join_all((0..10).map(|_| {
        send(
            &app,
            conv,
            As::User(alice),
            json!({"content": "retry", "client_msg_id": "same"}),
        )
    }))
    .await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [vec![200; 9], vec![201]].concat(),
        "{:?}",
        replies.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    let ids: HashSet<String> = replies
        .iter()
        .map(|r| r.data()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    assert!(replies.iter().all(|r| r.data()["seq"] == 1));

    let (messages, last_seq): (i64, i64) = sqlx::query_as(
        "select (select count(*) from messages where conversation_id = $1), (select last_seq from conversations where id = $1)",
    )
    .bind(conv)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((messages, last_seq), (1, 1), "losers gave their seq back");
    assert_eq!(events.next_frame().await["type"], "message.new");
    events.assert_quiet(300).await;

    // The next message continues without a gap.
    assert_eq!(send_text(&app, conv, alice, "next").await["seq"], 2);
}

// ----- send: concurrency ------------------------------------------------------------------------

#[tokio::test]
async fn fifty_concurrent_sends_get_the_unique_gap_free_seqs_1_to_50() {
    let app = spawn_app().await;
    let users: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    let conv = app.create_group(users[0], &users[1..]).await;

    let replies = join_all((0..50).map(|i| {
        send(
            &app,
            conv,
            As::User(users[i % 5]),
            json!({"content": format!("m{i}")}),
        )
    }))
    .await;
    let mut seqs: Vec<i64> = replies
        .iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{}", r.text);
            r.data()["seq"].as_i64().unwrap()
        })
        .collect();
    seqs.sort();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());

    let stored = app.stored_seqs(conv).await;
    assert_eq!(stored, (1..=50).collect::<Vec<_>>());
    let last_seq: i64 = sqlx::query_scalar("select last_seq from conversations where id = $1")
        .bind(conv)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(last_seq, 50);
    // last_message_at is the newest created_at of them all.
    let newest: bool = sqlx::query_scalar(
        "select c.last_message_at = (select max(created_at) from messages where conversation_id = c.id) from conversations c where c.id = $1",
    )
    .bind(conv)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(newest);
    assert_eq!(
        metric(&app, "api_service_messages_persisted_total").await,
        50.0
    );
}

// ----- send: rate limit ----------------------------------------------------------------------------

/// One token per 20 s: nothing refills during a test, whatever the machine's speed.
const SLOW_REFILL: [(&str, &str); 2] = [
    ("RATE_LIMIT_MESSAGES_PER_SEC", "0.05"),
    ("RATE_LIMIT_MESSAGES_BURST", "2"),
];

#[tokio::test]
async fn sends_beyond_the_burst_get_429_with_an_integer_retry_after() {
    let app = spawn_app_with(&SLOW_REFILL).await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    send_text(&app, conv, alice, "1").await;
    send_text(&app, conv, alice, "2").await;
    let mut events = app.conversation_events(conv).await;

    let r = send(&app, conv, As::User(alice), json!({"content": "3"})).await;
    r.assert_error(429, "RATE_LIMITED", "Too many requests");
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("integer seconds");
    assert!((1..=20).contains(&retry), "{retry}");
    events.assert_quiet(200).await;

    // Per user: bob has his own bucket.
    send_text(&app, conv, bob, "bob").await;
    let stored: i64 = sqlx::query_scalar("select count(*) from messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 3);
    assert_eq!(metric(&app, "api_service_rate_limited_total").await, 1.0);

    // The bucket lives in Redis under the documented key.
    let redis = redis().await;
    let key = Keys::new(app.redis_prefix.as_str()).send_bucket(&alice);
    let exists: bool = redis.exists(&key).await.unwrap();
    assert!(exists, "{key}");

    // Limits apply after validation, membership and replays: those answer as usual.
    send(&app, conv, As::User(alice), json!({}))
        .await
        .assert_validation(json!({"content": "content is required for text messages"}));
    send(
        &app,
        conv,
        As::User(alice),
        json!({"type": "system", "content": "x"}),
    )
    .await
    .assert_error(403, "FORBIDDEN", "System messages cannot be sent by users");
}

#[tokio::test]
async fn replays_are_answered_even_when_limited_and_consume_no_token() {
    let app = spawn_app_with(&SLOW_REFILL).await;
    let alice = Uuid::new_v4();
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    let first = send(
        &app,
        conv,
        As::User(alice),
        json!({"content": "a", "client_msg_id": "a"}),
    )
    .await;
    assert_eq!(first.status, 201);
    for _ in 0..3 {
        let r = send(
            &app,
            conv,
            As::User(alice),
            json!({"content": "a", "client_msg_id": "a"}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    // The second token is still there.
    let r = send(
        &app,
        conv,
        As::User(alice),
        json!({"content": "b", "client_msg_id": "b"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = send(
        &app,
        conv,
        As::User(alice),
        json!({"content": "c", "client_msg_id": "c"}),
    )
    .await;
    r.assert_error(429, "RATE_LIMITED", "Too many requests");
    // Step 6 comes before step 7: a limited user still gets replays.
    let r = send(
        &app,
        conv,
        As::User(alice),
        json!({"content": "a", "client_msg_id": "a"}),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data(), first.data());
}

#[tokio::test]
async fn sends_refused_by_a_check_take_no_token_and_keep_their_answer_when_limited() {
    // Tokens are taken ahead of the checks (one statement checks and writes a batch) and given
    // back for refused sends: the buckets must read as if step 7 came after steps 3–6.
    let app = spawn_app_with(&SLOW_REFILL).await;
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mine = app.create_group(alice, &[bob]).await;
    let theirs = app.create_group(bob, &[carol]).await;
    for _ in 0..3 {
        send(&app, theirs, As::User(alice), json!({"content": "x"}))
            .await
            .assert_error(
                403,
                "FORBIDDEN",
                "You are not a participant of this conversation",
            );
    }
    let elsewhere = id_of(&send_text(&app, theirs, bob, "bob's").await);
    for _ in 0..2 {
        let r = send(
            &app,
            mine,
            As::User(alice),
            json!({"content": "x", "reply_to_id": elsewhere}),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text);
    }
    // Both tokens of the burst are still there.
    send_text(&app, mine, alice, "1").await;
    send_text(&app, mine, alice, "2").await;
    send(&app, mine, As::User(alice), json!({"content": "3"}))
        .await
        .assert_error(429, "RATE_LIMITED", "Too many requests");
    // Limited, a refused send still gets its own answer, not 429.
    send(&app, theirs, As::User(alice), json!({"content": "x"}))
        .await
        .assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
    assert_eq!(metric(&app, "api_service_rate_limited_total").await, 1.0);
}

#[tokio::test]
async fn the_send_limit_is_shared_by_every_replica_through_redis() {
    let first = spawn_app_with(&SLOW_REFILL).await;
    let shared = first.redis_prefix.clone();
    let second = spawn_app_with(&[
        SLOW_REFILL[0],
        SLOW_REFILL[1],
        ("REDIS_KEY_PREFIX", shared.as_str()),
    ])
    .await;
    let alice = Uuid::new_v4();
    let conv_a = first.create_group(alice, &[Uuid::new_v4()]).await;
    let conv_b = second.create_group(alice, &[Uuid::new_v4()]).await;

    send_text(&first, conv_a, alice, "1").await;
    send_text(&second, conv_b, alice, "2").await;
    send(&first, conv_a, As::User(alice), json!({"content": "3"}))
        .await
        .assert_error(429, "RATE_LIMITED", "Too many requests");
    send(&second, conv_b, As::User(alice), json!({"content": "3"}))
        .await
        .assert_error(429, "RATE_LIMITED", "Too many requests");
}

#[tokio::test]
async fn the_limiter_fails_open_when_redis_is_unreachable() {
    let app = spawn_app_with(&[
        ("RATE_LIMIT_MESSAGES_PER_SEC", "0.05"),
        ("RATE_LIMIT_MESSAGES_BURST", "1"),
        ("REDIS_URL", "redis://127.0.0.1:1"),
    ])
    .await;
    let alice = Uuid::new_v4();
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    for i in 0..3 {
        let m = send_text(&app, conv, alice, "allowed").await;
        assert_eq!(m["seq"], i + 1);
    }
    assert_eq!(
        metric(&app, "api_service_rate_limiter_errors_total").await,
        3.0
    );
    assert_eq!(metric(&app, "api_service_rate_limited_total").await, 0.0);
    assert_eq!(
        metric(&app, "api_service_messages_persisted_total").await,
        3.0
    );

    // Typing lists are empty without Redis.
    let r = app
        .get_as(&format!("/conversations/{conv}/typing"), As::User(alice))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({"data": {"user_ids": []}}));
}

// ----- history ----------------------------------------------------------------------------------

/// A conversation with messages seq 1..=5 where 3 is deleted; returns (app, conv, alice, ids).
async fn five_with_a_hole() -> (TestApp, Uuid, Uuid, Vec<Value>) {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    let mut sent = Vec::new();
    for i in 1..=5 {
        sent.push(send_text(&app, conv, alice, &format!("m{i}")).await);
    }
    let r = app
        .delete_as(
            &format!("/messages/{}", sent[2]["id"].as_str().unwrap()),
            As::User(alice),
        )
        .await;
    assert_eq!(r.status, 204);
    (app, conv, alice, sent)
}

#[tokio::test]
async fn history_pages_newest_first_by_offset_and_by_seq_in_the_documented_orders() {
    let (app, conv, alice, sent) = five_with_a_hole().await;
    let get = |query: &'static str| {
        let app = &app;
        async move {
            let r = app
                .get_as(&format!("{}{query}", messages_path(conv)), As::User(alice))
                .await;
            assert_eq!(r.status, 200, "{query}: {}", r.text);
            r.json()
        }
    };
    let cases: [(&str, Vec<i64>, Value); 10] = [
        (
            "",
            vec![5, 4, 2, 1],
            json!({"total": 4, "limit": 20, "offset": 0}),
        ),
        (
            "?limit=2&offset=1",
            vec![4, 2],
            json!({"total": 4, "limit": 2, "offset": 1}),
        ),
        (
            "?offset=10",
            vec![],
            json!({"total": 4, "limit": 20, "offset": 10}),
        ),
        (
            "?after_seq=1",
            vec![2, 4, 5],
            json!({"total": 3, "limit": 20, "offset": 0}),
        ),
        (
            "?after_seq=0&limit=2",
            vec![1, 2],
            json!({"total": 4, "limit": 2, "offset": 0}),
        ),
        (
            "?after_seq=5",
            vec![],
            json!({"total": 0, "limit": 20, "offset": 0}),
        ),
        (
            "?before_seq=5",
            vec![4, 2, 1],
            json!({"total": 3, "limit": 20, "offset": 0}),
        ),
        (
            "?before_seq=5&limit=1",
            vec![4],
            json!({"total": 3, "limit": 1, "offset": 0}),
        ),
        (
            "?after_seq=1&before_seq=5",
            vec![2, 4],
            json!({"total": 2, "limit": 20, "offset": 0}),
        ),
        (
            "?after_seq=0&before_seq=99999999999999999999999",
            vec![1, 2, 4, 5],
            json!({"total": 4, "limit": 20, "offset": 0}),
        ),
    ];
    for (query, expected, pagination) in cases {
        let page = get(query).await;
        assert_eq!(seqs(&page), expected, "{query}");
        assert_eq!(page["pagination"], pagination, "{query}");
        assert_eq!(keys(&page), sorted(&["data", "pagination"]));
    }
    // Items are full messages in their current state.
    let page = get("?after_seq=4").await;
    assert_eq!(page["data"][0], sent[4]);
}

#[tokio::test]
async fn empty_history_parameters_count_as_absent() {
    let (app, conv, alice, _) = five_with_a_hole().await;
    for (query, expected, pagination) in [
        (
            "?limit=&offset=&after_seq=&before_seq=",
            vec![5, 4, 2, 1],
            json!({"total": 4, "limit": 20, "offset": 0}),
        ),
        (
            "?after_seq=001&before_seq=%2B5&offset=",
            vec![2, 4],
            json!({"total": 2, "limit": 20, "offset": 0}),
        ),
    ] {
        let r = app
            .get_as(&format!("{}{query}", messages_path(conv)), As::User(alice))
            .await;
        assert_eq!(r.status, 200, "{query}: {}", r.text);
        assert_eq!(seqs(&r.json()), expected, "{query}");
        assert_eq!(r.json()["pagination"], pagination, "{query}");
    }
}

#[tokio::test]
async fn history_embeds_reactions_in_creation_order_and_attachments() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let m = send_text(&app, conv, alice, "react to me").await;
    let mid = m["id"].as_str().unwrap();
    for (who, emoji) in [(bob, "👍"), (alice, "🎉"), (bob, "🎉")] {
        let r = app
            .post_json(
                &format!("/messages/{mid}/reactions"),
                As::User(who),
                json!({"emoji": emoji}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    sqlx::query(
        "insert into attachments (message_id, message_created_at, file_name, file_type, file_size, file_url, width, height)
         select id, created_at, 'a.png', 'image/png', 10, 'http://x/a.png', 4, 3 from messages where id = $1",
    )
    .bind(id_of(&m))
    .execute(&app.pool)
    .await
    .unwrap();

    let page = app.get_as(&messages_path(conv), As::User(bob)).await.json();
    let got = &page["data"][0];
    assert_eq!(
        got["reactions"],
        json!([
            {"emoji": "👍", "user_id": bob.to_string()},
            {"emoji": "🎉", "user_id": alice.to_string()},
            {"emoji": "🎉", "user_id": bob.to_string()},
        ])
    );
    let attachment = &got["attachments"][0];
    assert_eq!(attachment["file_name"], "a.png");
    assert_eq!(attachment["width"], 4);
    assert!(attachment.get("thumbnail_url").is_none());
    let single = app
        .get_as(&format!("/messages/{mid}"), As::User(bob))
        .await
        .data();
    assert_eq!(&single, got);
}

#[tokio::test]
async fn history_parameter_rules_are_reported_together() {
    let (app, conv, alice, _) = five_with_a_hole().await;
    let cases = [
        (
            "?limit=0&offset=-1&after_seq=x&before_seq=-1",
            json!({
                "limit": "limit must be a positive integer",
                "offset": "offset cannot be combined with after_seq or before_seq",
                "after_seq": "after_seq must be a non-negative integer",
                "before_seq": "before_seq must be a non-negative integer",
            }),
        ),
        (
            "?limit=101&offset=2147483648",
            json!({"limit": "limit must not exceed 100", "offset": "offset must not exceed 2147483647"}),
        ),
        (
            "?after_seq=1.5",
            json!({"after_seq": "after_seq must be a non-negative integer"}),
        ),
        (
            "?before_seq=%20",
            json!({"before_seq": "before_seq must be a non-negative integer"}),
        ),
        (
            "?offset=5&after_seq=1",
            json!({"offset": "offset cannot be combined with after_seq or before_seq"}),
        ),
        (
            "?offset=0&before_seq=3",
            json!({"offset": "offset cannot be combined with after_seq or before_seq"}),
        ),
        (
            "?offset=1&after_seq=-1",
            json!({
                "offset": "offset cannot be combined with after_seq or before_seq",
                "after_seq": "after_seq must be a non-negative integer",
            }),
        ),
    ];
    for (query, details) in cases {
        let r = app
            .get_as(&format!("{}{query}", messages_path(conv)), As::User(alice))
            .await;
        r.assert_validation(details);
    }
}

#[tokio::test]
async fn history_checks_run_in_the_documented_order() {
    let app = spawn_app().await;
    let (alice, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    let unknown = Uuid::new_v4();
    app.get_as("/conversations/x/messages?limit=0", As::Nobody)
        .await
        .assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    app.get_as("/conversations/x/messages?limit=0", As::User(alice))
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        );
    app.get_as(
        &format!("{}?limit=0", messages_path(unknown)),
        As::User(alice),
    )
    .await
    .assert_validation(json!({"limit": "limit must be a positive integer"}));
    app.get_as(&messages_path(unknown), As::User(stranger))
        .await
        .assert_error(404, "NOT_FOUND", "Conversation not found");
    app.get_as(&messages_path(conv), As::User(stranger))
        .await
        .assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );

    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let conv = header_group(&app, alice, &[]).await;
    app.get_as("/conversations/x/messages", As::Nobody)
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        );
    app.get_as(&format!("{}?limit=0", messages_path(conv)), As::Nobody)
        .await
        .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    app.get_as(
        &format!("{}?limit=0", messages_path(conv)),
        As::Header(alice),
    )
    .await
    .assert_validation(json!({"limit": "limit must be a positive integer"}));
    let r = app.get_as(&messages_path(conv), As::Header(alice)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"data": [], "pagination": {"total": 0, "limit": 20, "offset": 0}})
    );
}

// ----- search -----------------------------------------------------------------------------------

#[tokio::test]
async fn search_matches_french_words_newest_first_without_deleted_messages() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let other = app.create_group(alice, &[bob]).await;
    let m1 = send_text(&app, conv, alice, "Les chats mangent des croquettes").await;
    send_text(&app, conv, bob, "Bonjour à tous").await;
    let m3 = send_text(&app, conv, bob, "Mon chat dort").await;
    let gone = send_text(&app, conv, alice, "Un chat supprimé").await;
    send_text(&app, other, alice, "chat ailleurs").await;
    send(&app, conv, As::User(alice), json!({"type": "image"})).await;
    app.delete_as(
        &format!("/messages/{}", gone["id"].as_str().unwrap()),
        As::User(alice),
    )
    .await;

    let search = |query: String| {
        let app = &app;
        async move {
            let r = app
                .get_as(
                    &format!("/conversations/{conv}/messages/search{query}"),
                    As::User(bob),
                )
                .await;
            assert_eq!(r.status, 200, "{query}: {}", r.text);
            r.json()
        }
    };
    let page = search("?q=chat".into()).await;
    assert_eq!(page["data"], json!([m3, m1]));
    assert_eq!(
        page["pagination"],
        json!({"total": 2, "limit": 20, "offset": 0})
    );
    let page = search("?q=CHATS&limit=1&offset=1".into()).await;
    assert_eq!(page["data"], json!([m1]));
    assert_eq!(
        page["pagination"],
        json!({"total": 2, "limit": 1, "offset": 1})
    );
    let page = search("?q=chat%20croquette".into()).await;
    assert_eq!(page["data"], json!([m1]));
    // Stop words only, or no match: [] with total 0.
    for q in ["des%20et", "le%20la", "licorne", "%27%22%5C%26%7C%21"] {
        let page = search(format!("?q={q}")).await;
        assert_eq!(
            page,
            json!({"data": [], "pagination": {"total": 0, "limit": 20, "offset": 0}}),
            "{q}"
        );
    }
    // A NUL can be in no stored content: such a query matches nothing.
    let r = app
        .get_as(
            &format!("/conversations/{conv}/messages/search?q=%00"),
            As::User(bob),
        )
        .await;
    assert_eq!(
        r.json(),
        json!({"data": [], "pagination": {"total": 0, "limit": 20, "offset": 0}}),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn search_query_rules_come_before_paging_and_paging_before_the_conversation() {
    let app = spawn_app().await;
    let (alice, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    let path = |c: Uuid, q: &str| format!("/conversations/{c}/messages/search{q}");
    let required = json!({"q": "search query is required"});
    let too_long = json!({"q": "search query must not exceed 200 characters"});
    let long_ok = "a".repeat(200);
    let long_bad = "é".repeat(101);
    for (query, details) in [
        ("".to_owned(), required.clone()),
        ("?q=".to_owned(), required.clone()),
        ("?q=&limit=0".to_owned(), required),
        (format!("?q={long_bad}&limit=0"), too_long.clone()),
        (format!("?q={}", "a".repeat(201)), too_long),
        (
            "?q=x&limit=0&offset=-1".to_owned(),
            json!({"limit": "limit must be a positive integer", "offset": "offset must be a non-negative integer"}),
        ),
    ] {
        app.get_as(&path(conv, &query), As::User(alice))
            .await
            .assert_validation(details);
    }
    let r = app
        .get_as(&path(conv, &format!("?q={long_ok}")), As::User(alice))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let unknown = Uuid::new_v4();
    app.get_as(&path(unknown, "?q=x&limit=0"), As::User(alice))
        .await
        .assert_validation(json!({"limit": "limit must be a positive integer"}));
    app.get_as(&path(unknown, "?q=x"), As::User(stranger))
        .await
        .assert_error(404, "NOT_FOUND", "Conversation not found");
    app.get_as(&path(conv, "?q=x"), As::User(stranger))
        .await
        .assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
    app.get_as("/conversations/nope/messages/search", As::User(alice))
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        );
    app.get_as("/conversations/nope/messages/search", As::Nobody)
        .await
        .assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");

    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let conv = header_group(&app, alice, &[]).await;
    app.get_as("/conversations/nope/messages/search", As::Nobody)
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        );
    app.get_as(&path(conv, ""), As::Nobody).await.assert_error(
        400,
        "BAD_REQUEST",
        "Missing or invalid X-User-ID header",
    );
    app.get_as(&path(conv, ""), As::Header(alice))
        .await
        .assert_validation(json!({"q": "search query is required"}));
}

#[tokio::test]
async fn the_search_condition_can_use_the_gin_index_idx_messages_content_search() {
    let app = spawn_app().await;
    let mut conn = app.pool.acquire().await.unwrap();
    // The index partitions of idx_messages_content_search (one per messages partition).
    let partitions: Vec<String> = sqlx::query_scalar(
        "select c.relname::text from pg_inherits i join pg_class c on c.oid = i.inhrelid
         where i.inhparent = 'idx_messages_content_search'::regclass",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(!partitions.is_empty());
    sqlx::query("set enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    // The condition exactly as the search route runs it ($2 = the query); $1 only gives the
    // statement its first parameter.
    let sql = format!(
        "explain select 1 from messages m where $1::uuid is not null and {}",
        api_service::db::messages::SEARCH_MATCH
    );
    let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(Uuid::new_v4())
        .bind("chat")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(
        partitions
            .iter()
            .any(|p| plan.contains(&format!("Bitmap Index Scan on {p}"))),
        "{plan}"
    );
}

// ----- get ----------------------------------------------------------------------------------------

#[tokio::test]
async fn getting_a_message_checks_path_identity_existence_then_membership() {
    let app = spawn_app().await;
    let (alice, bob, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let m = send_text(&app, conv, alice, "hi").await;
    let gone = send_text(&app, conv, alice, "bye").await;
    app.delete_as(
        &format!("/messages/{}", gone["id"].as_str().unwrap()),
        As::User(alice),
    )
    .await;
    let path = format!("/messages/{}", m["id"].as_str().unwrap());

    let r = app.get_as(&path, As::User(bob)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data(), m);
    // Other UUID spellings of the id are accepted.
    let braced = format!(
        "/messages/%7B{}%7D",
        m["id"].as_str().unwrap().to_uppercase()
    );
    assert_eq!(app.get_as(&braced, As::User(bob)).await.data(), m);

    app.get_as("/messages/nope", As::Nobody).await.assert_error(
        401,
        "UNAUTHORIZED",
        "Missing or invalid credentials",
    );
    app.get_as("/messages/nope", As::User(bob))
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid message ID format, expected UUID",
        );
    for missing in [
        gone["id"].as_str().unwrap().to_owned(),
        Uuid::new_v4().to_string(),
        Uuid::now_v7().to_string(),
    ] {
        app.get_as(&format!("/messages/{missing}"), As::User(stranger))
            .await
            .assert_error(404, "NOT_FOUND", "Message not found");
    }
    app.get_as(&path, As::User(stranger)).await.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );

    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let conv = header_group(&app, alice, &[]).await;
    let m = send(&app, conv, As::Header(alice), json!({"content": "x"}))
        .await
        .data();
    app.get_as("/messages/nope", As::Nobody).await.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid message ID format, expected UUID",
    );
    app.get_as(&format!("/messages/{}", Uuid::new_v4()), As::Nobody)
        .await
        .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    assert_eq!(
        app.get_as(
            &format!("/messages/{}", m["id"].as_str().unwrap()),
            As::Header(alice)
        )
        .await
        .data(),
        m
    );
}

// ----- edit ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_sender_edits_content_and_the_room_gets_message_updated_equal_to_the_rest_data() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let m = send(
        &app,
        conv,
        As::User(alice),
        json!({"type": "file", "content": "v1", "metadata": {"k": 1}, "client_msg_id": "e"}),
    )
    .await
    .data();
    let path = format!("/messages/{}", m["id"].as_str().unwrap());
    let mut events = app.conversation_events(conv).await;

    let r = app
        .put_json(
            &path,
            As::User(alice),
            json!({"content": "v2", "type": "text"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let edited = r.data();
    assert_eq!(edited["content"], "v2");
    assert_eq!(edited["is_edited"], true);
    assert!(edited["edited_at"].as_str().unwrap().ends_with('Z'));
    for same in [
        "id",
        "seq",
        "type",
        "metadata",
        "client_msg_id",
        "created_at",
        "sender_id",
    ] {
        assert_eq!(edited[same], m[same], "{same}");
    }
    let frame = events.next_frame().await;
    assert_eq!(
        frame,
        json!({"type": "message.updated", "conversation_id": conv.to_string(), "payload": edited})
    );
    assert_eq!(app.get_as(&path, As::User(bob)).await.data(), edited);

    let (content, is_edited, edited_at): (String, bool, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("select content, is_edited, edited_at from messages where id = $1")
            .bind(id_of(&m))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((content.as_str(), is_edited), ("v2", true));
    assert!(edited_at.is_some());

    // A sender who left the conversation may still edit: there is no participant check.
    sqlx::query("update conversation_participants set left_at = now() where user_id = $1")
        .bind(alice)
        .execute(&app.pool)
        .await
        .unwrap();
    let r = app
        .put_json(&path, As::User(alice), json!({"content": "v3"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["content"], "v3");
}

#[tokio::test]
async fn only_the_sender_may_edit_and_edit_checks_run_in_order() {
    let app = spawn_app().await;
    let (alice, owner, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[alice]).await;
    let m = send_text(&app, conv, alice, "mine").await;
    let path = format!("/messages/{}", m["id"].as_str().unwrap());
    let gone = send_text(&app, conv, alice, "gone").await;
    app.delete_as(
        &format!("/messages/{}", gone["id"].as_str().unwrap()),
        As::User(alice),
    )
    .await;
    let unknown = format!("/messages/{}", Uuid::new_v4());

    for who in [owner, stranger] {
        app.put_json(&path, As::User(who), json!({"content": "x"}))
            .await
            .assert_error(
                403,
                "FORBIDDEN",
                "Only the message author can edit this message",
            );
    }
    app.put_json(
        &format!("/messages/{}", gone["id"].as_str().unwrap()),
        As::User(alice),
        json!({"content": "x"}),
    )
    .await
    .assert_error(404, "NOT_FOUND", "Message not found");
    app.send("PUT", "/messages/nope", As::Nobody, Some(b"{".to_vec()))
        .await
        .assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    app.send(
        "PUT",
        "/messages/nope",
        As::User(alice),
        Some(b"{".to_vec()),
    )
    .await
    .assert_error(
        400,
        "BAD_REQUEST",
        "Invalid message ID format, expected UUID",
    );
    for body in ["{", "[]", r#"{"content": 1}"#, r#"{"content": "\u0000"}"#] {
        app.send(
            "PUT",
            &unknown,
            As::User(alice),
            Some(body.as_bytes().to_vec()),
        )
        .await
        .assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
    for (body, message) in [
        (json!({}), "content is required"),
        (json!({"content": null}), "content is required"),
        (json!({"content": ""}), "content is required"),
        (
            json!({"content": "é".repeat(5001)}),
            "content must not exceed 10000 characters",
        ),
    ] {
        // Content rules come before MSG.
        app.put_json(&unknown, As::User(alice), body)
            .await
            .assert_validation(json!({"content": message}));
    }
    app.put_json(&unknown, As::User(alice), json!({"content": "x"}))
        .await
        .assert_error(404, "NOT_FOUND", "Message not found");
    // MSG before the author check.
    app.put_json(&unknown, As::User(stranger), json!({"content": "x"}))
        .await
        .assert_error(404, "NOT_FOUND", "Message not found");
    let big = format!(r#"{{"content":"{}"}}"#, "a".repeat(1024 * 1024));
    app.send("PUT", &path, As::User(alice), Some(big.into_bytes()))
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE", "Request body too large");
    let r = app
        .put_json(
            &path,
            As::User(alice),
            json!({"content": "a".repeat(10000)}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let conv = header_group(&app, alice, &[]).await;
    let m = send(&app, conv, As::Header(alice), json!({"content": "x"}))
        .await
        .data();
    let path = format!("/messages/{}", m["id"].as_str().unwrap());
    app.send("PUT", "/messages/nope", As::Nobody, Some(b"{".to_vec()))
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid message ID format, expected UUID",
        );
    app.send("PUT", &path, As::Nobody, Some(b"{".to_vec()))
        .await
        .assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    app.put_json(&path, As::Nobody, json!({"content": ""}))
        .await
        .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    app.put_json(&path, As::Header(alice), json!({"content": ""}))
        .await
        .assert_validation(json!({"content": "content is required"}));
    let r = app
        .put_json(&path, As::Header(alice), json!({"content": "y"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

// ----- delete -------------------------------------------------------------------------------------

#[tokio::test]
async fn deleting_hides_the_message_everywhere_and_publishes_message_deleted() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let keep = send_text(&app, conv, alice, "le chat reste").await;
    let m = send_text(&app, conv, bob, "le chat part").await;
    let mid = m["id"].as_str().unwrap().to_owned();
    let r = app
        .post_json(
            &format!("/messages/{mid}/reactions"),
            As::User(alice),
            json!({"emoji": "👍"}),
        )
        .await;
    assert_eq!(r.status, 201);
    let mut events = app.conversation_events(conv).await;

    let r = app
        .delete_as(&format!("/messages/{mid}"), As::User(bob))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.text, "");
    assert!(r.headers.get("content-type").is_none());
    assert_eq!(
        events.next_frame().await,
        json!({"type": "message.deleted", "conversation_id": conv.to_string(), "payload": {"conversation_id": conv.to_string(), "id": mid}})
    );

    let (is_deleted, deleted_at): (bool, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("select is_deleted, deleted_at from messages where id = $1")
            .bind(id_of(&m))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(is_deleted && deleted_at.is_some());

    app.get_as(&format!("/messages/{mid}"), As::User(alice))
        .await
        .assert_error(404, "NOT_FOUND", "Message not found");
    let history = app
        .get_as(&messages_path(conv), As::User(alice))
        .await
        .json();
    assert_eq!(history["data"], json!([keep]));
    assert_eq!(history["pagination"]["total"], 1);
    let found = app
        .get_as(
            &format!("/conversations/{conv}/messages/search?q=chat"),
            As::User(alice),
        )
        .await
        .json();
    assert_eq!(found["data"], json!([keep]));
    // Its reactions stay listed; its seq is never reused.
    let reactions = app
        .get_as(&format!("/messages/{mid}/reactions"), As::User(alice))
        .await;
    assert_eq!(reactions.status, 200);
    assert_eq!(reactions.data().as_array().unwrap().len(), 1);
    assert_eq!(send_text(&app, conv, alice, "next").await["seq"], 3);
    // Deleting again: 404.
    app.delete_as(&format!("/messages/{mid}"), As::User(bob))
        .await
        .assert_error(404, "NOT_FOUND", "Message not found");
}

#[tokio::test]
async fn senders_owners_and_admins_may_delete_but_other_members_may_not() {
    let app = spawn_app().await;
    let (owner, admin, member, other, stranger) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let conv = app.create_group(owner, &[admin, member, other]).await;
    set_role(&app, conv, admin, "admin").await;
    let del = |who: Uuid, m: Value| {
        let app = &app;
        async move {
            app.delete_as(
                &format!("/messages/{}", m["id"].as_str().unwrap()),
                As::User(who),
            )
            .await
        }
    };

    let m = send_text(&app, conv, other, "x").await;
    del(member, m.clone()).await.assert_error(
        403,
        "FORBIDDEN",
        "Insufficient permissions to delete this message",
    );
    del(stranger, m.clone()).await.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    assert_eq!(del(other, m).await.status, 204);
    assert_eq!(
        del(admin, send_text(&app, conv, owner, "x").await)
            .await
            .status,
        204
    );
    assert_eq!(
        del(owner, send_text(&app, conv, admin, "x").await)
            .await
            .status,
        204
    );
    assert_eq!(
        del(admin, send_text(&app, conv, member, "x").await)
            .await
            .status,
        204
    );

    // A sender who left is no participant any more.
    let m = send_text(&app, conv, member, "x").await;
    sqlx::query("update conversation_participants set left_at = now() where conversation_id = $1 and user_id = $2")
        .bind(conv)
        .bind(member)
        .execute(&app.pool)
        .await
        .unwrap();
    del(member, m).await.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );

    // In a DM both are members: only the sender deletes.
    let dm = app.create_conversation(owner, "direct", &[member]).await;
    let m = send_text(&app, dm, member, "dm").await;
    del(owner, m.clone()).await.assert_error(
        403,
        "FORBIDDEN",
        "Insufficient permissions to delete this message",
    );
    assert_eq!(del(member, m).await.status, 204);
}

#[tokio::test]
async fn delete_checks_run_in_the_documented_order() {
    let app = spawn_app().await;
    let (alice, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[Uuid::new_v4()]).await;
    let m = send_text(&app, conv, alice, "x").await;
    app.delete_as("/messages/nope", As::Nobody)
        .await
        .assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    app.delete_as("/messages/nope", As::User(alice))
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid message ID format, expected UUID",
        );
    app.delete_as(&format!("/messages/{}", Uuid::new_v4()), As::User(stranger))
        .await
        .assert_error(404, "NOT_FOUND", "Message not found");
    app.delete_as(
        &format!("/messages/{}", m["id"].as_str().unwrap()),
        As::User(stranger),
    )
    .await
    .assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );

    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let conv = header_group(&app, alice, &[]).await;
    let m = send(&app, conv, As::Header(alice), json!({"content": "x"}))
        .await
        .data();
    let path = format!("/messages/{}", m["id"].as_str().unwrap());
    app.delete_as("/messages/nope", As::Nobody)
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid message ID format, expected UUID",
        );
    app.delete_as(&path, As::Nobody).await.assert_error(
        400,
        "BAD_REQUEST",
        "Missing or invalid X-User-ID header",
    );
    assert_eq!(app.delete_as(&path, As::Header(alice)).await.status, 204);
}

#[tokio::test]
async fn concurrent_deletes_of_one_message_give_one_204_and_404s_never_500() {
    let app = spawn_app().await;
    let (owner, admin, sender) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[admin, sender]).await;
    set_role(&app, conv, admin, "admin").await;
    let m = send_text(&app, conv, sender, "contested").await;
    let path = format!("/messages/{}", m["id"].as_str().unwrap());
    let mut events = app.conversation_events(conv).await;

    let who = [owner, admin, sender];
    let replies = join_all((0..8).map(|i| app.delete_as(&path, As::User(who[i % 3])))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [vec![204], vec![404; 7]].concat());
    for r in replies.iter().filter(|r| r.status == 404) {
        r.assert_error(404, "NOT_FOUND", "Message not found");
    }
    assert_eq!(events.next_frame().await["type"], "message.deleted");
    events.assert_quiet(300).await;
}

// ----- typing -------------------------------------------------------------------------------------

#[tokio::test]
async fn typing_lists_the_live_entries_of_the_gateways_zset_only() {
    let app = spawn_app().await;
    let (alice, bob, carol, stranger) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let conv = app.create_group(alice, &[bob, carol]).await;
    let path = format!("/conversations/{conv}/typing");

    let r = app.get_as(&path, As::User(alice)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({"data": {"user_ids": []}}));

    let redis = redis().await;
    let (secs, micros): (i64, i64) = redis
        .custom(
            CustomCommand::new_static("TIME", None, false),
            Vec::<String>::new(),
        )
        .await
        .unwrap();
    let now_ms = secs * 1000 + micros / 1000;
    let key = Keys::new(app.redis_prefix.as_str()).typing(&conv);
    let _: i64 = redis
        .zadd(
            &key,
            None,
            None,
            false,
            false,
            vec![
                ((now_ms + 6000) as f64, bob.to_string()),
                ((now_ms - 1000) as f64, carol.to_string()),
                ((now_ms + 6000) as f64, "not-a-uuid".to_owned()),
            ],
        )
        .await
        .unwrap();
    let _: bool = redis.pexpire(&key, 60_000, None).await.unwrap();

    let r = app.get_as(&path, As::User(alice)).await;
    assert_eq!(r.json(), json!({"data": {"user_ids": [bob.to_string()]}}));
    // The caller's own entry is included.
    let _: i64 = redis
        .zadd(
            &key,
            None,
            None,
            false,
            false,
            ((now_ms + 6000) as f64, alice.to_string()),
        )
        .await
        .unwrap();
    let mut ids: Vec<String> = app.get_as(&path, As::User(bob)).await.data()["user_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    let mut expected = vec![alice.to_string(), bob.to_string()];
    expected.sort();
    assert_eq!(ids, expected);

    // Check order: PATH-C, CONV, MEMBER (jwt: 401 first).
    app.get_as("/conversations/x/typing", As::Nobody)
        .await
        .assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    app.get_as("/conversations/x/typing", As::User(alice))
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        );
    app.get_as(
        &format!("/conversations/{}/typing", Uuid::new_v4()),
        As::User(stranger),
    )
    .await
    .assert_error(404, "NOT_FOUND", "Conversation not found");
    app.get_as(&path, As::User(stranger)).await.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    let _: i64 = redis.del(&key).await.unwrap();
}

#[tokio::test]
async fn typing_checks_the_header_after_the_path_in_header_mode() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let alice = Uuid::new_v4();
    let conv = header_group(&app, alice, &[]).await;
    app.get_as("/conversations/x/typing", As::Nobody)
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        );
    app.get_as(
        &format!("/conversations/{}/typing", Uuid::new_v4()),
        As::Nobody,
    )
    .await
    .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    let r = app
        .get_as(&format!("/conversations/{conv}/typing"), As::Header(alice))
        .await;
    assert_eq!(r.json(), json!({"data": {"user_ids": []}}));
}

// ----- unread counts ----------------------------------------------------------------------------

/// The caller's `unread_count` of `conv` in both `GET /conversations` and `GET /conversations/{id}`
/// (asserted equal).
async fn unread(app: &TestApp, conv: Uuid, user: Uuid) -> i64 {
    let detail = app
        .get_as(&format!("/conversations/{conv}"), As::User(user))
        .await;
    assert_eq!(detail.status, 200, "{}", detail.text);
    let list = app
        .get_as("/conversations?limit=100", As::User(user))
        .await
        .json();
    let listed = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == conv.to_string())
        .expect("listed")["unread_count"]
        .clone();
    assert_eq!(listed, detail.data()["unread_count"]);
    listed.as_i64().unwrap()
}

async fn mark_read(app: &TestApp, conv: Uuid, user: Uuid, message: Uuid) {
    sqlx::query(
        "insert into read_receipts (conversation_id, user_id, last_read_message_id) values ($1, $2, $3)
         on conflict (conversation_id, user_id) do update set last_read_message_id = excluded.last_read_message_id",
    )
    .bind(conv)
    .bind(user)
    .bind(message)
    .execute(&app.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn unread_counts_others_live_messages_after_the_read_position() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    assert_eq!(unread(&app, conv, bob).await, 0);

    let m1 = send_text(&app, conv, alice, "1").await;
    let m2 = send_text(&app, conv, alice, "2").await;
    let m3 = send_text(&app, conv, alice, "3").await;
    let own = send_text(&app, conv, bob, "mine").await;
    assert_eq!(unread(&app, conv, bob).await, 3, "own messages never count");
    assert_eq!(unread(&app, conv, alice).await, 1);

    app.delete_as(
        &format!("/messages/{}", m3["id"].as_str().unwrap()),
        As::User(alice),
    )
    .await;
    assert_eq!(
        unread(&app, conv, bob).await,
        2,
        "deleted messages never count"
    );

    mark_read(&app, conv, bob, id_of(&m1)).await;
    assert_eq!(unread(&app, conv, bob).await, 1);
    mark_read(&app, conv, bob, id_of(&m2)).await;
    assert_eq!(unread(&app, conv, bob).await, 0);
    // A receipt on one's own later message covers everything before it.
    mark_read(&app, conv, alice, id_of(&own)).await;
    assert_eq!(unread(&app, conv, alice).await, 0);
    // A receipt whose message is unknown (or of another conversation) counts as none.
    let elsewhere = app.create_group(bob, &[alice]).await;
    let foreign = send_text(&app, elsewhere, alice, "x").await;
    mark_read(&app, conv, bob, id_of(&foreign)).await;
    assert_eq!(unread(&app, conv, bob).await, 2);
    mark_read(&app, conv, bob, Uuid::new_v4()).await;
    assert_eq!(unread(&app, conv, bob).await, 2);

    // System messages count.
    sqlx::query(
        "with c as (update conversations set last_seq = last_seq + 1 where id = $1 returning last_seq)
         insert into messages (conversation_id, sender_id, seq, type, content) select $1, $2, c.last_seq, 'system', 'x' from c",
    )
    .bind(conv)
    .bind(Uuid::nil())
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(unread(&app, conv, bob).await, 3);
}

#[tokio::test]
async fn messages_from_before_joining_do_not_count_and_counts_are_capped_at_1000() {
    let app = spawn_app().await;
    let (alice, bob, late) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    sqlx::query(
        "with c as (update conversations set last_seq = 1005 where id = $1 returning id)
         insert into messages (conversation_id, sender_id, seq, content, created_at)
         select $1, $2, g, 'bulk', now() + g * interval '1 microsecond' from c, generate_series(1, 1005) g",
    )
    .bind(conv)
    .bind(alice)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(unread(&app, conv, bob).await, 1000);

    // Someone who joins now has nothing unread; the next message counts.
    sqlx::query("insert into conversation_participants (conversation_id, user_id, role) values ($1, $2, 'member')")
        .bind(conv)
        .bind(late)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(unread(&app, conv, late).await, 0);
    send_text(&app, conv, alice, "welcome").await;
    assert_eq!(unread(&app, conv, late).await, 1);
    assert_eq!(unread(&app, conv, bob).await, 1000);
}

#[tokio::test]
async fn metadata_numbers_come_back_exactly_as_postgresql_stores_them() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(alice, &[bob]).await;
    let mut events = app.conversation_events(conv).await;
    let raw = r#"{"type":"text","content":"n","metadata":{"big": 123456789012345678901234567890, "n": 1.50, "s": "a  b"}}"#;
    let r = app
        .send(
            "POST",
            &messages_path(conv),
            As::User(alice),
            Some(raw.as_bytes().to_vec()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // jsonb normal form (shorter keys first), compact, numbers untouched by any float.
    let expected = r#""metadata":{"n":1.50,"s":"a  b","big":123456789012345678901234567890}"#;
    assert!(r.text.contains(expected), "{}", r.text);
    let id = r.data()["id"].as_str().unwrap().to_owned();
    let frame = shared_proto::json::client_frame(&events.next().await).unwrap();
    let frame = String::from_utf8(frame).unwrap();
    assert!(frame.contains(expected), "event payload: {frame}");
    let got = app.get_as(&format!("/messages/{id}"), As::User(bob)).await;
    assert!(got.text.contains(expected), "{}", got.text);
}
