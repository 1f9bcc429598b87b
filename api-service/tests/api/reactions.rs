//! Reactions and who may add, remove or list them; events `reaction.added` / `reaction.removed`.

use futures_util::future::join_all;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{As, TestApp, spawn_app, spawn_app_with};

/// A group of `owner` + `members` with one text message by `owner`; returns (conv, message id).
async fn with_message(app: &TestApp, owner: Uuid, members: &[Uuid]) -> (Uuid, String) {
    let conv = app.create_group(owner, members).await;
    let r = app
        .post_json(
            &format!("/conversations/{conv}/messages"),
            As::User(owner),
            json!({"content": "react"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (conv, r.data()["id"].as_str().unwrap().to_owned())
}

fn reactions_path(message: &str) -> String {
    format!("/messages/{message}/reactions")
}

async fn delete_message(app: &TestApp, message: &str, who: Uuid) {
    assert_eq!(
        app.delete_as(&format!("/messages/{message}"), As::User(who))
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn adding_a_reaction_answers_201_stores_it_and_publishes_reaction_added() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (conv, mid) = with_message(&app, alice, &[bob]).await;
    let mut events = app.conversation_events(conv).await;

    let r = app
        .post_json(
            &reactions_path(&mid),
            As::User(bob),
            json!({"emoji": "👍", "other": 1}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json");
    let reaction = r.data();
    let mut keys: Vec<&String> = reaction.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["created_at", "emoji", "id", "message_id", "user_id"]);
    assert_eq!(reaction["message_id"], mid);
    assert_eq!(reaction["user_id"], bob.to_string());
    assert_eq!(reaction["emoji"], "👍");
    assert!(reaction["created_at"].as_str().unwrap().ends_with('Z'));

    assert_eq!(
        events.next_frame().await,
        json!({"type": "reaction.added", "conversation_id": conv.to_string(), "payload": reaction})
    );
    let stored: (Uuid, String) =
        sqlx::query_as("select user_id, emoji from message_reactions where id = $1")
            .bind(reaction["id"].as_str().unwrap().parse::<Uuid>().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stored, (bob, "👍".to_owned()));

    // Several different emojis per user; the same one twice is a conflict without data.
    for emoji in ["🎉", "a", &"x".repeat(50), "é".repeat(25).as_str(), " "] {
        let r = app
            .post_json(
                &reactions_path(&mid),
                As::User(bob),
                json!({"emoji": emoji}),
            )
            .await;
        assert_eq!(r.status, 201, "{emoji}: {}", r.text);
        assert_eq!(events.next_frame().await["type"], "reaction.added");
    }
    let r = app
        .post_json(&reactions_path(&mid), As::User(bob), json!({"emoji": "👍"}))
        .await;
    r.assert_error(409, "CONFLICT", "Reaction already exists");
    assert!(r.json().get("data").is_none());
    events.assert_quiet(300).await;
    // Another user may hold the same emoji.
    let r = app
        .post_json(
            &reactions_path(&mid),
            As::User(alice),
            json!({"emoji": "👍"}),
        )
        .await;
    assert_eq!(r.status, 201);

    let message = app
        .get_as(&format!("/messages/{mid}"), As::User(alice))
        .await
        .data();
    assert_eq!(message["reactions"].as_array().unwrap().len(), 7);
    assert_eq!(
        message["reactions"][0],
        json!({"emoji": "👍", "user_id": bob.to_string()})
    );
}

#[tokio::test]
async fn emoji_rules_and_undecodable_bodies() {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    let (_, mid) = with_message(&app, alice, &[Uuid::new_v4()]).await;
    let path = reactions_path(&mid);
    for (body, message) in [
        (json!({}), "emoji is required"),
        (json!({"emoji": null}), "emoji is required"),
        (json!({"emoji": ""}), "emoji is required"),
        (
            json!({"emoji": "x".repeat(51)}),
            "emoji must not exceed 50 characters",
        ),
        (
            json!({"emoji": "👍".repeat(13)}),
            "emoji must not exceed 50 characters",
        ),
    ] {
        app.post_json(&path, As::User(alice), body)
            .await
            .assert_validation(json!({"emoji": message}));
    }
    app.send("POST", &path, As::User(alice), Some(b"null".to_vec()))
        .await
        .assert_validation(json!({"emoji": "emoji is required"}));
    for body in [
        "",
        "{",
        "[1]",
        r#"{"emoji": 1}"#,
        r#"{"emoji": ["x"]}"#,
        r#"{"emoji": "\u0000"}"#,
    ] {
        app.send(
            "POST",
            &path,
            As::User(alice),
            Some(body.as_bytes().to_vec()),
        )
        .await
        .assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
    let big = format!(r#"{{"emoji":"{}"}}"#, "a".repeat(1024 * 1024));
    app.send("POST", &path, As::User(alice), Some(big.into_bytes()))
        .await
        .assert_error(413, "PAYLOAD_TOO_LARGE", "Request body too large");
    let count: i64 = sqlx::query_scalar("select count(*) from message_reactions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn add_reaction_checks_run_in_the_documented_order() {
    let app = spawn_app().await;
    let (alice, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let (_, mid) = with_message(&app, alice, &[Uuid::new_v4()]).await;
    let (_, gone) = with_message(&app, alice, &[Uuid::new_v4()]).await;
    delete_message(&app, &gone, alice).await;
    let unknown = Uuid::new_v4().to_string();

    app.send(
        "POST",
        "/messages/x/reactions",
        As::Nobody,
        Some(b"{".to_vec()),
    )
    .await
    .assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
    app.send(
        "POST",
        "/messages/x/reactions",
        As::User(alice),
        Some(b"{".to_vec()),
    )
    .await
    .assert_error(
        400,
        "BAD_REQUEST",
        "Invalid message ID format, expected UUID",
    );
    app.send(
        "POST",
        &reactions_path(&unknown),
        As::User(alice),
        Some(b"{".to_vec()),
    )
    .await
    .assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    // emoji rules before MSG.
    app.post_json(
        &reactions_path(&unknown),
        As::User(stranger),
        json!({"emoji": ""}),
    )
    .await
    .assert_validation(json!({"emoji": "emoji is required"}));
    for missing in [&unknown, &gone] {
        app.post_json(
            &reactions_path(missing),
            As::User(stranger),
            json!({"emoji": "👍"}),
        )
        .await
        .assert_error(404, "NOT_FOUND", "Message not found");
    }
    app.post_json(
        &reactions_path(&mid),
        As::User(stranger),
        json!({"emoji": "👍"}),
    )
    .await
    .assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );
    assert_eq!(
        app.post_json(
            &reactions_path(&mid),
            As::User(alice),
            json!({"emoji": "👍"})
        )
        .await
        .status,
        201
    );
    // MEMBER before the conflict.
    app.post_json(
        &reactions_path(&mid),
        As::User(stranger),
        json!({"emoji": "👍"}),
    )
    .await
    .assert_error(
        403,
        "FORBIDDEN",
        "You are not a participant of this conversation",
    );

    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let conv = header_group(&app, alice).await;
    let mid = app
        .post_json(
            &format!("/conversations/{conv}/messages"),
            As::Header(alice),
            json!({"content": "x"}),
        )
        .await
        .data()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send(
        "POST",
        "/messages/x/reactions",
        As::Nobody,
        Some(b"{".to_vec()),
    )
    .await
    .assert_error(
        400,
        "BAD_REQUEST",
        "Invalid message ID format, expected UUID",
    );
    app.send(
        "POST",
        &reactions_path(&mid),
        As::Nobody,
        Some(b"{".to_vec()),
    )
    .await
    .assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    app.post_json(&reactions_path(&mid), As::Nobody, json!({"emoji": ""}))
        .await
        .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    app.post_json(
        &reactions_path(&mid),
        As::Header(alice),
        json!({"emoji": ""}),
    )
    .await
    .assert_validation(json!({"emoji": "emoji is required"}));
    let r = app
        .post_json(
            &reactions_path(&mid),
            As::Header(alice),
            json!({"emoji": "👍"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn header_group(app: &TestApp, owner: Uuid) -> Uuid {
    let r = app
        .post_json(
            "/conversations",
            As::Header(owner),
            json!({"type": "group", "name": "g", "participant_ids": [Uuid::new_v4()]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.data()["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn concurrent_adds_of_one_reaction_give_one_201_and_409s() {
    let app = spawn_app().await;
    let alice = Uuid::new_v4();
    let (conv, mid) = with_message(&app, alice, &[Uuid::new_v4()]).await;
    let mut events = app.conversation_events(conv).await;
    let path = reactions_path(&mid);
    let replies =
        join_all((0..8).map(|_| app.post_json(&path, As::User(alice), json!({"emoji": "🔥"}))))
            .await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort();
    assert_eq!(statuses, [vec![201], vec![409; 7]].concat());
    assert_eq!(events.next_frame().await["type"], "reaction.added");
    events.assert_quiet(300).await;
}

#[tokio::test]
async fn removing_my_reaction_is_idempotent_and_announces_only_real_removals() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (conv, mid) = with_message(&app, alice, &[bob]).await;
    for (who, emoji) in [(alice, "👍"), (bob, "👍"), (alice, "a/b"), (alice, "a b")] {
        assert_eq!(
            app.post_json(
                &reactions_path(&mid),
                As::User(who),
                json!({"emoji": emoji})
            )
            .await
            .status,
            201
        );
    }
    let mut events = app.conversation_events(conv).await;

    // The segment is percent-decoded.
    let r = app
        .delete_as(
            &format!("{}/%F0%9F%91%8D", reactions_path(&mid)),
            As::User(alice),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.text, "");
    assert!(r.headers.get("content-type").is_none());
    assert_eq!(
        events.next_frame().await,
        json!({"type": "reaction.removed", "conversation_id": conv.to_string(),
               "payload": {"emoji": "👍", "message_id": mid, "user_id": alice.to_string()}})
    );
    // Only the caller's reaction went.
    let left: Vec<(Uuid, String)> =
        sqlx::query_as("select user_id, emoji from message_reactions order by created_at")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![
            (bob, "👍".to_owned()),
            (alice, "a/b".to_owned()),
            (alice, "a b".to_owned())
        ]
    );

    // Again, or an emoji never added: 204 and no event.
    for segment in ["%F0%9F%91%8D", "nothing"] {
        let r = app
            .delete_as(
                &format!("{}/{segment}", reactions_path(&mid)),
                As::User(alice),
            )
            .await;
        assert_eq!(r.status, 204, "{segment}: {}", r.text);
    }
    events.assert_quiet(300).await;
    for segment in ["a%2Fb", "a%20b"] {
        assert_eq!(
            app.delete_as(
                &format!("{}/{segment}", reactions_path(&mid)),
                As::User(alice)
            )
            .await
            .status,
            204
        );
        assert_eq!(events.next_frame().await["type"], "reaction.removed");
    }

    // An empty segment does not match the route.
    let r = app
        .delete_as(&format!("{}/", reactions_path(&mid)), As::User(alice))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.text, "404 page not found");
}

#[tokio::test]
async fn reactions_of_a_deleted_message_can_still_be_listed_and_removed() {
    let app = spawn_app().await;
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let (conv, mid) = with_message(&app, alice, &[bob]).await;
    assert_eq!(
        app.post_json(&reactions_path(&mid), As::User(bob), json!({"emoji": "👍"}))
            .await
            .status,
        201
    );
    delete_message(&app, &mid, alice).await;
    let mut events = app.conversation_events(conv).await;

    let list = app.get_as(&reactions_path(&mid), As::User(alice)).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.data().as_array().unwrap().len(), 1);
    assert_eq!(
        app.delete_as(
            &format!("{}/%F0%9F%91%8D", reactions_path(&mid)),
            As::User(bob)
        )
        .await
        .status,
        204
    );
    assert_eq!(events.next_frame().await["type"], "reaction.removed");
    app.post_json(&reactions_path(&mid), As::User(bob), json!({"emoji": "👍"}))
        .await
        .assert_error(404, "NOT_FOUND", "Message not found");
}

#[tokio::test]
async fn remove_and_list_checks_run_in_the_documented_order() {
    let app = spawn_app().await;
    let (alice, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let (_, mid) = with_message(&app, alice, &[Uuid::new_v4()]).await;
    let unknown = Uuid::new_v4().to_string();
    for (method, suffix) in [("DELETE", "/x"), ("GET", "")] {
        let path = |m: &str| format!("{}{suffix}", reactions_path(m));
        app.send(method, &path("nope"), As::Nobody, None)
            .await
            .assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
        app.send(method, &path("nope"), As::User(alice), None)
            .await
            .assert_error(
                400,
                "BAD_REQUEST",
                "Invalid message ID format, expected UUID",
            );
        app.send(method, &path(&unknown), As::User(stranger), None)
            .await
            .assert_error(404, "NOT_FOUND", "Message not found");
        app.send(method, &path(&mid), As::User(stranger), None)
            .await
            .assert_error(
                403,
                "FORBIDDEN",
                "You are not a participant of this conversation",
            );
    }

    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let conv = header_group(&app, alice).await;
    let mid = app
        .post_json(
            &format!("/conversations/{conv}/messages"),
            As::Header(alice),
            json!({"content": "x"}),
        )
        .await
        .data()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (method, suffix, ok) in [("DELETE", "/x", 204), ("GET", "", 200)] {
        app.send(
            method,
            &format!("/messages/nope/reactions{suffix}"),
            As::Nobody,
            None,
        )
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid message ID format, expected UUID",
        );
        app.send(
            method,
            &format!("/messages/{unknown}/reactions{suffix}"),
            As::Nobody,
            None,
        )
        .await
        .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
        let r = app
            .send(
                method,
                &format!("{}{suffix}", reactions_path(&mid)),
                As::Header(alice),
                None,
            )
            .await;
        assert_eq!(r.status, ok, "{}", r.text);
    }
}

#[tokio::test]
async fn listing_reactions_gives_every_reaction_oldest_first_unaggregated() {
    let app = spawn_app().await;
    let (alice, bob, carol) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let (_, mid) = with_message(&app, alice, &[bob, carol]).await;
    let r = app.get_as(&reactions_path(&mid), As::User(carol)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"data": []}));

    let mut added: Vec<Value> = Vec::new();
    for (who, emoji) in [(bob, "👍"), (carol, "👍"), (alice, "❤️"), (bob, "❤️")] {
        let r = app
            .post_json(
                &reactions_path(&mid),
                As::User(who),
                json!({"emoji": emoji}),
            )
            .await;
        assert_eq!(r.status, 201);
        added.push(r.data());
    }
    let r = app.get_as(&reactions_path(&mid), As::User(carol)).await;
    assert_eq!(r.json(), json!({"data": added}));
}
