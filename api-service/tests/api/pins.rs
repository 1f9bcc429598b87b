//! Pinned messages: pin (owners and admins, once per message), unpin (an event on every 204), list;
//! check orders in both auth modes and concurrent pins.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{As, Reply, TestApp, spawn_app, spawn_app_with};

/// Sends a text message as `who`; returns its id.
async fn send(app: &TestApp, conversation: Uuid, who: As) -> Uuid {
    let r = app
        .post_json(
            &format!("/conversations/{conversation}/messages"),
            who,
            json!({"content": "pin me"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.data()["id"].as_str().unwrap().parse().unwrap()
}

async fn pin(app: &TestApp, conversation: Uuid, who: As, message: impl Into<Value>) -> Reply {
    app.post_json(
        &format!("/conversations/{conversation}/pins"),
        who,
        json!({"message_id": message.into()}),
    )
    .await
}

async fn make_admin(app: &TestApp, conversation: Uuid, user: Uuid) {
    sqlx::query("update conversation_participants set role = 'admin' where conversation_id = $1 and user_id = $2")
        .bind(conversation)
        .bind(user)
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_owner_pins_a_message_and_the_pin_is_published_as_message_pinned() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let conv = app.create_group(owner, &[Uuid::new_v4()]).await;
    let m = send(&app, conv, As::User(owner)).await;
    let mut events = app.conversation_events(conv).await;

    let r = pin(&app, conv, As::User(owner), m.to_string()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let data = r.data();
    let mut keys: Vec<_> = data.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "conversation_id",
            "id",
            "message_id",
            "pinned_at",
            "pinned_by"
        ]
    );
    assert_eq!(data["conversation_id"], conv.to_string());
    assert_eq!(data["message_id"], m.to_string());
    assert_eq!(data["pinned_by"], owner.to_string());

    let frame = events.next_frame().await;
    assert_eq!(frame["type"], "message.pinned");
    assert_eq!(frame["conversation_id"], conv.to_string());
    assert_eq!(frame["payload"], data);

    let (id, by): (Uuid, Uuid) = sqlx::query_as(
        "select id, pinned_by from pinned_messages where conversation_id = $1 and message_id = $2",
    )
    .bind(conv)
    .bind(m)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(id.to_string(), data["id"]);
    assert_eq!(by, owner);
}

#[tokio::test]
async fn an_admin_may_pin_and_a_second_pin_of_the_same_message_is_a_conflict() {
    let app = spawn_app().await;
    let (owner, admin) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[admin]).await;
    make_admin(&app, conv, admin).await;
    let m = send(&app, conv, As::User(owner)).await;

    assert_eq!(
        pin(&app, conv, As::User(admin), m.to_string()).await.status,
        201
    );
    let mut events = app.conversation_events(conv).await;
    let r = pin(&app, conv, As::User(owner), m.to_string()).await;
    r.assert_error(409, "CONFLICT", "Message is already pinned");
    assert!(r.json().get("data").is_none());
    events.assert_quiet(300).await;
}

#[tokio::test]
async fn concurrent_pins_of_one_message_give_one_201_and_409s() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let conv = app.create_group(owner, &[Uuid::new_v4()]).await;
    let m = send(&app, conv, As::User(owner)).await;

    let replies = futures_util::future::join_all(
        (0..8).map(|_| pin(&app, conv, As::User(owner), m.to_string())),
    )
    .await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1);
    for r in replies.iter().filter(|r| r.status != 201) {
        r.assert_error(409, "CONFLICT", "Message is already pinned");
    }
    let rows: i64 =
        sqlx::query_scalar("select count(*) from pinned_messages where message_id = $1")
            .bind(m)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn a_message_deleted_between_the_check_and_the_pin_is_not_found() {
    // The write re-checks what step 3 checked (docs/api.md, "Errors"), so the race answers 404,
    // never a pin of a deleted message.
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let conv = app.create_group(owner, &[Uuid::new_v4()]).await;
    let message = send(&app, conv, As::User(owner)).await;
    // Hold the pin's insert (not the checks before it) until the message has been deleted.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("lock table pinned_messages in exclusive mode")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let pinning = pin(&app, conv, As::User(owner), json!(message.to_string()));
    let interfere = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let r = app
            .delete_as(&format!("/messages/{message}"), As::User(owner))
            .await;
        assert_eq!(r.status, 204, "{}", r.text);
        blocker.commit().await.unwrap();
    };
    let (r, ()) = tokio::join!(pinning, interfere);
    r.assert_error(404, "NOT_FOUND", "Message not found");
    let pins: i64 = sqlx::query_scalar("select count(*) from pinned_messages")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(pins, 0);
}

#[tokio::test]
async fn pin_checks_run_in_the_documented_order() {
    let app = spawn_app().await;
    let (owner, member, outsider) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[member]).await;
    let other = app.create_group(owner, &[member]).await;
    let dm = app.create_conversation(owner, "direct", &[member]).await;
    let m = send(&app, conv, As::User(owner)).await;
    let deleted = send(&app, conv, As::User(owner)).await;
    assert_eq!(
        app.delete_as(&format!("/messages/{deleted}"), As::User(owner))
            .await
            .status,
        204
    );
    let elsewhere = send(&app, other, As::User(owner)).await;
    let in_dm = send(&app, dm, As::User(owner)).await;
    let path = format!("/conversations/{conv}/pins");

    let r = app
        .send(
            "POST",
            "/conversations/x/pins",
            As::Nobody,
            Some(b"{".to_vec()),
        )
        .await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    let r = app
        .send(
            "POST",
            "/conversations/x/pins",
            As::User(owner),
            Some(b"{".to_vec()),
        )
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    for body in [&b"{"[..], b"\"x\"", br#"{"message_id": 1}"#] {
        let r = app
            .send("POST", &path, As::User(outsider), Some(body.to_vec()))
            .await;
        r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
    for body in [
        json!({}),
        json!({"message_id": null}),
        json!({"message_id": ""}),
    ] {
        let r = app.post_json(&path, As::User(outsider), body).await;
        r.assert_validation(json!({"message_id": "message_id is required"}));
    }
    let r = pin(&app, conv, As::User(outsider), "nope").await;
    r.assert_validation(json!({"message_id": "invalid UUID format"}));
    // The message is looked up before membership: an outsider learns only "not found".
    for missing in [Uuid::new_v4(), deleted, elsewhere] {
        for who in [owner, outsider] {
            let r = pin(&app, conv, As::User(who), missing.to_string()).await;
            r.assert_error(404, "NOT_FOUND", "Message not found");
        }
    }
    let r = pin(&app, conv, As::User(outsider), m.to_string()).await;
    r.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    let r = pin(&app, conv, As::User(member), m.to_string()).await;
    r.assert_error(403, "FORBIDDEN", "Only owners and admins can pin messages");
    // Nobody is an owner or admin of a direct conversation.
    for who in [owner, member] {
        let r = pin(&app, dm, As::User(who), in_dm.to_string()).await;
        r.assert_error(403, "FORBIDDEN", "Only owners and admins can pin messages");
    }
    assert_eq!(
        pin(&app, conv, As::User(owner), m.to_string()).await.status,
        201
    );
    let r = pin(&app, conv, As::User(member), m.to_string()).await;
    r.assert_error(403, "FORBIDDEN", "Only owners and admins can pin messages");
}

#[tokio::test]
async fn unpin_answers_204_and_publishes_message_unpinned_even_when_nothing_was_pinned() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let conv = app.create_group(owner, &[Uuid::new_v4()]).await;
    let m = send(&app, conv, As::User(owner)).await;
    assert_eq!(
        pin(&app, conv, As::User(owner), m.to_string()).await.status,
        201
    );
    let mut events = app.conversation_events(conv).await;

    for round in 0..2 {
        let r = app
            .delete_as(&format!("/conversations/{conv}/pins/{m}"), As::User(owner))
            .await;
        assert_eq!(r.status, 204, "round {round}: {}", r.text);
        assert_eq!(r.text, "");
        assert!(r.headers.get("content-type").is_none());
        let frame = events.next_frame().await;
        assert_eq!(frame["type"], "message.unpinned");
        assert_eq!(frame["conversation_id"], conv.to_string());
        assert_eq!(
            frame["payload"],
            json!({"conversation_id": conv, "message_id": m})
        );
    }
    let rows: i64 =
        sqlx::query_scalar("select count(*) from pinned_messages where conversation_id = $1")
            .bind(conv)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows, 0);
    // A message that never existed unpins just the same (204 and the event).
    let ghost = Uuid::new_v4();
    let r = app
        .delete_as(
            &format!("/conversations/{conv}/pins/{ghost}"),
            As::User(owner),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(
        events.next_frame().await["payload"]["message_id"],
        ghost.to_string()
    );
}

#[tokio::test]
async fn unpin_checks_run_in_the_documented_order() {
    let app = spawn_app().await;
    let (owner, admin, member) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[admin, member]).await;
    make_admin(&app, conv, admin).await;
    let m = send(&app, conv, As::User(owner)).await;
    assert_eq!(
        pin(&app, conv, As::User(owner), m.to_string()).await.status,
        201
    );
    let mut events = app.conversation_events(conv).await;

    let r = app.delete_as("/conversations/x/pins/y", As::Nobody).await;
    r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    let r = app
        .delete_as("/conversations/x/pins/y", As::User(owner))
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    let r = app
        .delete_as(&format!("/conversations/{conv}/pins/y"), As::User(owner))
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid message ID format, expected UUID",
    );
    for target in [conv, Uuid::new_v4()] {
        let r = app
            .delete_as(
                &format!("/conversations/{target}/pins/{m}"),
                As::User(Uuid::new_v4()),
            )
            .await;
        r.assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
    }
    let r = app
        .delete_as(&format!("/conversations/{conv}/pins/{m}"), As::User(member))
        .await;
    r.assert_error(
        403,
        "FORBIDDEN",
        "Only owners and admins can unpin messages",
    );
    events.assert_quiet(200).await;
    let r = app
        .delete_as(&format!("/conversations/{conv}/pins/{m}"), As::User(admin))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(events.next_frame().await["type"], "message.unpinned");
}

#[tokio::test]
async fn pins_are_listed_most_recent_first_including_those_of_deleted_messages() {
    let app = spawn_app().await;
    let (owner, member) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[member]).await;
    let m1 = send(&app, conv, As::User(owner)).await;
    let m2 = send(&app, conv, As::User(owner)).await;
    let p1 = pin(&app, conv, As::User(owner), m1.to_string())
        .await
        .data();
    let p2 = pin(&app, conv, As::User(owner), m2.to_string())
        .await
        .data();
    assert_eq!(
        app.delete_as(&format!("/messages/{m2}"), As::User(owner))
            .await
            .status,
        204
    );

    let r = app
        .get_as(&format!("/conversations/{conv}/pins"), As::User(member))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data(), json!([p2, p1]));

    let r = app
        .get_as(
            &format!("/conversations/{conv}/pins"),
            As::User(Uuid::new_v4()),
        )
        .await;
    r.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    let r = app
        .get_as(
            &format!("/conversations/{}/pins", Uuid::new_v4()),
            As::User(owner),
        )
        .await;
    r.assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    let r = app.get_as("/conversations/x/pins", As::User(owner)).await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    let empty = app.create_group(owner, &[member]).await;
    let r = app
        .get_as(&format!("/conversations/{empty}/pins"), As::User(owner))
        .await;
    assert_eq!(r.text, r#"{"data":[]}"#);
}

#[tokio::test]
async fn in_header_mode_the_user_header_is_checked_at_its_place_in_each_pin_route() {
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
    let m = send(&app, conv, As::Header(owner)).await;
    let path = format!("/conversations/{conv}/pins");
    let header = "Missing or invalid X-User-ID header";

    // pin: PATH-C → BODY → HDR → field rules.
    let r = app
        .send(
            "POST",
            "/conversations/x/pins",
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
        .post_json(&path, As::Nobody, json!({"message_id": "bad"}))
        .await;
    r.assert_error(400, "BAD_REQUEST", header);
    assert_eq!(
        pin(&app, conv, As::Header(owner), m.to_string())
            .await
            .status,
        201
    );
    // unpin: PATH-C → PATH-M → HDR.
    let r = app.delete_as(&format!("{path}/x"), As::Nobody).await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid message ID format, expected UUID",
    );
    let r = app.delete_as(&format!("{path}/{m}"), As::Nobody).await;
    r.assert_error(400, "BAD_REQUEST", header);
    // list: PATH-C → HDR.
    let r = app.get_as(&path, As::Nobody).await;
    r.assert_error(400, "BAD_REQUEST", header);
    let r = app.get_as(&path, As::Header(owner)).await;
    assert_eq!(r.data().as_array().unwrap().len(), 1);
    assert_eq!(
        app.delete_as(&format!("{path}/{m}"), As::Header(owner))
            .await
            .status,
        204
    );
}
