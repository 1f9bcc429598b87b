//! Conversations: create (field rules, user service, DM uniqueness under concurrency), list mine
//! (search, ordering, unread counts, pagination), discover channels, get, update (check order,
//! atomic partial updates) and archive, with their events.

use std::collections::HashMap;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    helpers::{As, Reply, TestApp, spawn_app, spawn_app_with, token_for},
    participants::{UserStub, assert_timestamp, enc, keys, parse_time, user_stub},
};

const CONVERSATION_KEYS: [&str; 11] = [
    "avatar_url",
    "created_at",
    "creator_id",
    "description",
    "id",
    "is_archived",
    "last_message_at",
    "name",
    "type",
    "unread_count",
    "updated_at",
];

fn detail_keys() -> Vec<&'static str> {
    let mut k = CONVERSATION_KEYS.to_vec();
    k.push("participants");
    k.sort();
    k
}

fn id_of(r: &Reply) -> Uuid {
    r.data()["id"].as_str().unwrap().parse().unwrap()
}

/// Inserts a message the way a send does (seq from the conversation's counter, which also moves
/// `last_message_at`), `age_secs` in the past.
async fn insert_message(app: &TestApp, conversation: Uuid, sender: Uuid, age_secs: i64) -> Uuid {
    sqlx::query_scalar(
        "with c as (
            update conversations
            set last_seq = last_seq + 1,
                last_message_at = now() - make_interval(secs => $3)
            where id = $1
            returning last_seq, last_message_at)
         insert into messages (conversation_id, sender_id, type, content, created_at, seq)
         select $1, $2, 'text', 'hello', c.last_message_at, c.last_seq from c
         returning id",
    )
    .bind(conversation)
    .bind(sender)
    .bind(age_secs as f64)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn set_role(app: &TestApp, conversation: Uuid, user: Uuid, role: &str) {
    sqlx::query("update conversation_participants set role = $3 where conversation_id = $1 and user_id = $2")
        .bind(conversation)
        .bind(user)
        .bind(role)
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn create(app: &TestApp, who: As, body: Value) -> Reply {
    app.post_json("/conversations", who, body).await
}

// ----- create -----------------------------------------------------------------------------------

#[tokio::test]
async fn creating_a_group_makes_the_caller_owner_and_tells_every_participant() {
    let app = spawn_app().await;
    let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut joined_a = app.user_events(a).await;
    let mut joined_b = app.user_events(b).await;
    let mut joined_c = app.user_events(c).await;
    let mut all_personal = app
        .events_on(shared_proto::subjects::all_users(&app.nats_prefix))
        .await;

    let r = create(
        &app,
        As::User(a),
        json!({"type": "group", "name": "Team", "description": "d", "avatar_url": "x", "participant_ids": [c.to_string(), b.to_string()]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/json");
    let data = r.data();
    assert_eq!(keys(&data), detail_keys());
    assert_eq!(data["type"], "group");
    assert_eq!(data["name"], "Team");
    assert_eq!(data["description"], "d");
    assert_eq!(data["avatar_url"], "x");
    assert_eq!(data["creator_id"], a.to_string());
    assert_eq!(data["is_archived"], false);
    assert_eq!(data["last_message_at"], Value::Null);
    assert_eq!(data["unread_count"], 0);
    assert_timestamp(&data["created_at"]);
    assert_timestamp(&data["updated_at"]);
    let id = data["id"].as_str().unwrap();
    // creator first, then participant_ids order
    let people: Vec<(String, String)> = data["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(
                keys(p),
                [
                    "conversation_id",
                    "id",
                    "joined_at",
                    "nickname",
                    "role",
                    "user_id"
                ]
            );
            assert_eq!(p["conversation_id"], id);
            assert_eq!(p["nickname"], Value::Null);
            assert_timestamp(&p["joined_at"]);
            (
                p["user_id"].as_str().unwrap().to_owned(),
                p["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        people,
        [
            (a.to_string(), "owner".to_owned()),
            (c.to_string(), "member".to_owned()),
            (b.to_string(), "member".to_owned())
        ]
    );

    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "select user_id, role from conversation_participants where conversation_id = $1::uuid and left_at is null order by join_seq",
    )
    .bind(id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [
            (a, "owner".into()),
            (c, "member".into()),
            (b, "member".into())
        ]
    );

    for (user, events) in [(a, &mut joined_a), (b, &mut joined_b), (c, &mut joined_c)] {
        let frame = events.next_frame().await;
        assert_eq!(frame["type"], "conversation.joined", "{user}");
        assert_eq!(frame["conversation_id"], id);
        assert_eq!(frame["payload"], data);
        events.assert_quiet(200).await;
    }
    // all three heard it from one NATS message addressed to them in the detail's order: a copy
    // per participant would carry the whole participant list each time
    let event = all_personal.next().await;
    assert_eq!(event.target_user_id, None);
    assert_eq!(
        event.target_user_ids,
        [a.to_string(), c.to_string(), b.to_string()]
    );
    all_personal.assert_quiet(200).await;
}

#[tokio::test]
async fn creating_a_direct_conversation_makes_both_users_members_without_a_creator() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut joined_b = app.user_events(b).await;
    let r = create(
        &app,
        As::User(a),
        json!({"type": "direct", "name": null, "description": null, "avatar_url": "https://a/b.png", "participant_ids": [b.to_string()]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let data = r.data();
    assert_eq!(data["type"], "direct");
    assert_eq!(data["name"], Value::Null);
    assert_eq!(data["description"], Value::Null);
    assert_eq!(data["avatar_url"], "https://a/b.png");
    assert_eq!(data["creator_id"], Value::Null);
    let roles: Vec<(&str, &str)> = data["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["user_id"].as_str().unwrap(), p["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        roles,
        [
            (a.to_string().as_str(), "member"),
            (b.to_string().as_str(), "member")
        ]
    );
    // the canonical pair that makes the DM unique
    let (low, high): (Option<Uuid>, Option<Uuid>) =
        sqlx::query_as("select direct_user_low, direct_user_high from conversations where id = $1")
            .bind(id_of(&r))
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((low, high), (Some(a.min(b)), Some(a.max(b))));
    assert_eq!(joined_b.next_frame().await["payload"], data);
}

#[tokio::test]
async fn create_field_rules_report_every_failing_key_with_the_documented_message() {
    let app = spawn_app().await;
    let a = Uuid::new_v4();
    let (b, c) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let me = a.to_string();
    let long = |n: usize| "x".repeat(n);
    let cases: Vec<(Value, Value)> = vec![
        (
            json!({}),
            json!({"type": "type is required", "participant_ids": "at least one participant is required"}),
        ),
        (
            json!({"type": "", "name": "n", "participant_ids": [b]}),
            json!({"type": "type is required"}),
        ),
        (
            json!({"type": "foo", "participant_ids": [b]}),
            json!({"type": "type must be one of: direct, group, channel"}),
        ),
        (
            json!({"type": "Group", "name": "n", "participant_ids": [b]}),
            json!({"type": "type must be one of: direct, group, channel"}),
        ),
        // type-dependent rules only apply to the three known types
        (
            json!({"type": "foo", "name": "n", "description": "d", "participant_ids": [b, c]}),
            json!({"type": "type must be one of: direct, group, channel"}),
        ),
        (
            json!({"type": "foo", "name": long(101), "participant_ids": [b]}),
            json!({"type": "type must be one of: direct, group, channel", "name": "name must not exceed 100 characters"}),
        ),
        (
            json!({"type": "direct", "name": "x", "participant_ids": [b]}),
            json!({"name": "direct conversations cannot have a name"}),
        ),
        (
            json!({"type": "direct", "name": "", "participant_ids": [b]}),
            json!({"name": "direct conversations cannot have a name"}),
        ),
        // the later row of one key wins
        (
            json!({"type": "direct", "name": long(101), "participant_ids": [b]}),
            json!({"name": "name must not exceed 100 characters"}),
        ),
        (
            json!({"type": "direct", "description": "", "participant_ids": [b]}),
            json!({"description": "direct conversations cannot have a description"}),
        ),
        (
            json!({"type": "group", "participant_ids": [b]}),
            json!({"name": "name is required for group and channel conversations"}),
        ),
        (
            json!({"type": "channel", "name": "", "participant_ids": [b]}),
            json!({"name": "name is required for group and channel conversations"}),
        ),
        (
            json!({"type": "group", "name": null, "participant_ids": [b]}),
            json!({"name": "name is required for group and channel conversations"}),
        ),
        // lengths count UTF-8 bytes: 51 × "é" is 102 bytes
        (
            json!({"type": "group", "name": "é".repeat(51), "participant_ids": [b]}),
            json!({"name": "name must not exceed 100 characters"}),
        ),
        (
            json!({"type": "group", "name": "n", "avatar_url": long(501), "participant_ids": [b]}),
            json!({"avatar_url": "avatar_url must not exceed 500 characters"}),
        ),
        (
            json!({"type": "group", "name": "n", "participant_ids": []}),
            json!({"participant_ids": "at least one participant is required"}),
        ),
        (
            json!({"type": "group", "name": "n", "participant_ids": null}),
            json!({"participant_ids": "at least one participant is required"}),
        ),
        (
            json!({"type": "group", "name": "n", "participant_ids": [b, "nope", "bad"]}),
            json!({"participant_ids": "invalid UUID at index 1"}),
        ),
        (
            json!({"type": "group", "name": "n", "participant_ids": ["", b]}),
            json!({"participant_ids": "invalid UUID at index 0"}),
        ),
        (
            json!({"type": "group", "name": "n", "participant_ids": [b, me, "bad"]}),
            json!({"participant_ids": "participant_ids must not include the creator"}),
        ),
        (
            json!({"type": "group", "name": "n", "participant_ids": [b, me.to_uppercase()]}),
            json!({"participant_ids": "participant_ids must not include the creator"}),
        ),
        (
            json!({"type": "group", "name": "n", "participant_ids": ["bad", me]}),
            json!({"participant_ids": "invalid UUID at index 0"}),
        ),
        (
            json!({"type": "direct", "participant_ids": [b, c]}),
            json!({"participant_ids": "direct conversation requires exactly one participant"}),
        ),
        // counted before de-duplication
        (
            json!({"type": "direct", "participant_ids": [b, b]}),
            json!({"participant_ids": "direct conversation requires exactly one participant"}),
        ),
        (
            json!({"type": "direct", "participant_ids": [me]}),
            json!({"participant_ids": "participant_ids must not include the creator"}),
        ),
        (
            json!({"type": "direct", "participant_ids": ["x", c]}),
            json!({"participant_ids": "invalid UUID at index 0"}),
        ),
        (
            json!({"type": "direct", "participant_ids": []}),
            json!({"participant_ids": "at least one participant is required"}),
        ),
        (
            json!({"type": "direct", "name": "n", "description": "d", "avatar_url": long(501), "participant_ids": []}),
            json!({
                "name": "direct conversations cannot have a name",
                "description": "direct conversations cannot have a description",
                "avatar_url": "avatar_url must not exceed 500 characters",
                "participant_ids": "at least one participant is required"
            }),
        ),
        // keys are case-sensitive: "Type" is unknown
        (
            json!({"Type": "group", "name": "n", "participant_ids": [b]}),
            json!({"type": "type is required"}),
        ),
    ];
    for (body, details) in cases {
        let r = create(&app, As::User(a), body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        r.assert_validation(details);
        assert!(!r.text.contains("\"data\""), "{}", r.text);
    }
    let n: i64 = sqlx::query_scalar("select count(*) from conversations")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn create_accepts_the_boundary_lengths_and_every_uuid_form() {
    let app = spawn_app().await;
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let c = Uuid::new_v4();
    let forms = [
        b.simple().to_string().to_uppercase(),
        format!("{{{c}}}"),
        format!("urn:uuid:{b}"),
    ];
    let r = create(
        &app,
        As::User(a),
        json!({"type": "channel", "name": "é".repeat(50), "avatar_url": "a".repeat(500), "description": "d".repeat(5000), "participant_ids": forms}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let users: Vec<String> = r.data()["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_id"].as_str().unwrap().to_owned())
        .collect();
    // de-duplicated (first occurrence kept), output in lowercase canonical form
    assert_eq!(users, [a.to_string(), b.to_string(), c.to_string()]);
    let r = create(
        &app,
        As::User(a),
        json!({"type": "group", "name": "x".repeat(100), "participant_ids": [b, b, c, b]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["participants"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn create_decodes_the_body_before_the_identity_header_and_validates_after_it() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let a = Uuid::new_v4();
    let b = Uuid::new_v4().to_string();
    let bad_json: Vec<&[u8]> = vec![
        b"",
        b"{",
        b"[]",
        b"\"group\"",
        b"5",
        br#"{"type": 5}"#,
        br#"{"type": "group", "name": 1}"#,
        br#"{"type": "direct", "description": true}"#,
        br#"{"avatar_url": []}"#,
        br#"{"participant_ids": "x"}"#,
        br#"{"participant_ids": [1]}"#,
        br#"{"participant_ids": [null]}"#,
    ];
    for body in bad_json {
        for who in [As::Nobody, As::Header(a)] {
            let r = app
                .send("POST", "/conversations", who, Some(body.to_vec()))
                .await;
            r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
        }
    }
    // a body that decodes, without the header: HDR comes before the field rules
    for body in [json!({}), json!({"type": "bogus"}), Value::Null] {
        let r = create(&app, As::Nobody, body).await;
        r.assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    }
    // `null` counts as `{}`
    let r = app
        .send(
            "POST",
            "/conversations",
            As::Header(a),
            Some(b"null".to_vec()),
        )
        .await;
    r.assert_validation(json!({"type": "type is required", "participant_ids": "at least one participant is required"}));
    // only the first JSON value is read; unknown keys are ignored
    let body = format!(
        r#"{{"type":"group","name":"n","extra":{{"x":1}},"participant_ids":["{b}"]}} trailing garbage"#
    );
    let r = app
        .send(
            "POST",
            "/conversations",
            As::Header(a),
            Some(body.into_bytes()),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // over 1 MiB: 413 at the BODY step, before the header
    let big = format!(
        r#"{{"type":"group","name":"n","description":"{}","participant_ids":["{b}"]}}"#,
        "x".repeat(1024 * 1024)
    );
    let r = app
        .send("POST", "/conversations", As::Nobody, Some(big.into_bytes()))
        .await;
    r.assert_error(413, "PAYLOAD_TOO_LARGE", "Request body too large");
    // an unparsable header is the same as none
    let r = app
        .client
        .post(app.url("/conversations"))
        .header("X-User-ID", "not-a-uuid")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["message"],
        "Missing or invalid X-User-ID header"
    );
}

#[tokio::test]
async fn every_conversation_route_answers_401_first_without_credentials() {
    let app = spawn_app().await;
    for (method, path, body) in [
        ("POST", "/conversations", Some(b"{".to_vec())),
        ("GET", "/conversations?limit=0", None),
        ("GET", "/conversations/discover?offset=-1", None),
        ("GET", "/conversations/nope", None),
        ("PUT", "/conversations/nope", Some(b"{".to_vec())),
        ("DELETE", "/conversations/nope", None),
    ] {
        let r = app.send(method, path, As::Nobody, body).await;
        r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
        assert_eq!(r.headers["www-authenticate"], "Bearer", "{method} {path}");
    }
    // X-User-ID is ignored in jwt mode
    let r = app
        .client
        .get(app.url("/conversations"))
        .header("X-User-ID", Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_second_direct_conversation_between_the_same_users_is_a_409_carrying_the_first() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let first = create(
        &app,
        As::User(a),
        json!({"type": "direct", "participant_ids": [b]}),
    )
    .await;
    assert_eq!(first.status, 201);
    let dm = id_of(&first);
    insert_message(&app, dm, a, 0).await;
    let mut joined_a = app.user_events(a).await;

    // either direction conflicts
    for (who, other) in [(a, b), (b, a)] {
        let r = create(
            &app,
            As::User(who),
            json!({"type": "direct", "participant_ids": [other], "avatar_url": "new"}),
        )
        .await;
        assert_eq!(r.status, 409, "{}", r.text);
        assert_eq!(r.headers["content-type"], "application/json");
        assert!(
            r.text.starts_with(r#"{"data":{"#),
            "data comes first: {}",
            r.text
        );
        let body = r.json();
        assert_eq!(keys(&body), ["data", "error"]);
        assert_eq!(
            body["error"],
            json!({"code": "CONFLICT", "message": "Direct conversation already exists between these users"})
        );
        // the existing conversation, as the caller would GET it (unread_count is theirs)
        let get = app
            .get_as(&format!("/conversations/{dm}"), As::User(who))
            .await;
        assert_eq!(body["data"], get.data());
        assert_eq!(body["data"]["unread_count"], if who == b { 1 } else { 0 });
    }
    joined_a.assert_quiet(200).await;
    let n: i64 = sqlx::query_scalar("select count(*) from conversations where type = 'direct'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);

    // a group between the same users is no conflict
    let r = create(
        &app,
        As::User(a),
        json!({"type": "group", "name": "g", "participant_ids": [b]}),
    )
    .await;
    assert_eq!(r.status, 201);
}

#[tokio::test]
async fn once_either_user_left_a_new_direct_conversation_can_be_created() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let old = app.create_conversation(a, "direct", &[b]).await;
    let r = app
        .delete_as(
            &format!("/conversations/{old}/participants/{b}"),
            As::User(b),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = create(
        &app,
        As::User(b),
        json!({"type": "direct", "participant_ids": [a]}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_ne!(id_of(&r), old);
    // and the new one is the one that conflicts now
    let r = create(
        &app,
        As::User(a),
        json!({"type": "direct", "participant_ids": [b]}),
    )
    .await;
    assert_eq!(r.status, 409);
    assert_ne!(r.data()["id"], old.to_string());
}

#[tokio::test]
async fn concurrent_direct_creates_in_both_directions_give_one_201_and_one_409() {
    let app = spawn_app().await;
    let pairs: Vec<(Uuid, Uuid)> = (0..6).map(|_| (Uuid::new_v4(), Uuid::new_v4())).collect();
    let races = pairs.iter().map(|&(a, b)| {
        let app = &app;
        async move {
            let (x, y) = tokio::join!(
                create(
                    app,
                    As::User(a),
                    json!({"type": "direct", "participant_ids": [b]})
                ),
                create(
                    app,
                    As::User(b),
                    json!({"type": "direct", "participant_ids": [a]})
                ),
            );
            (a, b, x, y)
        }
    });
    for (a, b, x, y) in futures_util::future::join_all(races).await {
        let mut statuses = [x.status, y.status];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "{} / {}", x.text, y.text);
        let (won, lost) = if x.status == 201 { (&x, &y) } else { (&y, &x) };
        assert_eq!(lost.data()["id"], won.data()["id"]);
        assert_eq!(lost.json()["error"]["code"], "CONFLICT");
        let n: i64 = sqlx::query_scalar(
            "select count(distinct c.id) from conversations c
             join conversation_participants p on p.conversation_id = c.id
             where c.type = 'direct' and p.user_id in ($1, $2)",
        )
        .bind(a)
        .bind(b)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(n, 1);
    }
}

#[tokio::test]
async fn the_user_service_is_asked_about_every_participant_but_never_the_caller() {
    let (a, b, c, ghost) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let stub = user_stub(HashMap::from([(ghost, 404)]), 200).await;
    let app = spawn_app_with(&[("USER_SERVICE_URL", stub.url.as_str())]).await;

    let token = token_for(a);
    let r = app
        .client
        .post(app.url("/conversations"))
        .bearer_auth(&token)
        .json(&json!({"type": "group", "name": "g", "participant_ids": [b, c, b]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut asked = stub.asked();
    asked.sort();
    let mut expected = vec![b, c];
    expected.sort();
    assert_eq!(asked.iter().map(|(u, _)| *u).collect::<Vec<_>>(), expected);
    // jwt mode forwards the caller's token
    for (_, auth) in &asked {
        assert_eq!(auth.as_deref(), Some(format!("Bearer {token}").as_str()));
    }

    // an unknown user is a validation error and nothing is created
    stub.clear();
    let r = create(
        &app,
        As::User(a),
        json!({"type": "group", "name": "g2", "participant_ids": [b, ghost]}),
    )
    .await;
    r.assert_validation(json!({"participant_ids": "one or more user IDs do not exist"}));
    let n: i64 = sqlx::query_scalar("select count(*) from conversations where name = 'g2'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);

    // field rules come before the user service: it is not asked at all
    stub.clear();
    let r = create(
        &app,
        As::User(a),
        json!({"type": "group", "participant_ids": [ghost]}),
    )
    .await;
    r.assert_validation(json!({"name": "name is required for group and channel conversations"}));
    assert!(stub.asked().is_empty());

    // the user service comes before the DM conflict
    let dm = create(
        &app,
        As::User(a),
        json!({"type": "direct", "participant_ids": [b]}),
    )
    .await;
    assert_eq!(dm.status, 201);
    stub.answer(b, 404);
    let r = create(
        &app,
        As::User(a),
        json!({"type": "direct", "participant_ids": [b]}),
    )
    .await;
    r.assert_validation(json!({"participant_ids": "one or more user IDs do not exist"}));
}

#[tokio::test]
async fn a_failing_or_unreachable_user_service_is_a_500_and_creates_nothing() {
    let (a, b, broken) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let stub: UserStub = user_stub(HashMap::from([(broken, 503)]), 200).await;
    let app = spawn_app_with(&[
        ("USER_SERVICE_URL", stub.url.as_str()),
        ("AUTH_MODE", "header"),
    ])
    .await;
    let r = create(
        &app,
        As::Header(a),
        json!({"type": "group", "name": "g", "participant_ids": [b, broken]}),
    )
    .await;
    r.assert_error(500, "INTERNAL_ERROR", "An unexpected error occurred");
    // header mode forwards no credential
    assert!(stub.asked().iter().all(|(_, auth)| auth.is_none()));

    let dead = spawn_app_with(&[("USER_SERVICE_URL", "http://127.0.0.1:1")]).await;
    let r = create(
        &dead,
        As::User(a),
        json!({"type": "group", "name": "g", "participant_ids": [b]}),
    )
    .await;
    r.assert_error(500, "INTERNAL_ERROR", "An unexpected error occurred");
    for app in [&app, &dead] {
        let n: i64 = sqlx::query_scalar("select count(*) from conversations")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}

// ----- list mine --------------------------------------------------------------------------------

/// Sets a conversation's `created_at` to `minutes` ago (for a deterministic order).
async fn created_minutes_ago(app: &TestApp, conversation: Uuid, minutes: i32) {
    sqlx::query("update conversations set created_at = date_trunc('minute', now()) - make_interval(mins => $2) where id = $1")
        .bind(conversation)
        .bind(minutes)
        .execute(&app.pool)
        .await
        .unwrap();
}

fn ids(r: &Reply) -> Vec<String> {
    r.data()
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text))
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn my_conversations_are_listed_newest_activity_first_archived_included() {
    let app = spawn_app().await;
    let (u, v, w) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let old_msg = app.create_group(u, &[v]).await;
    let new_msg = app.create_conversation(v, "channel", &[u]).await;
    let quiet_new = app.create_conversation(u, "direct", &[v]).await;
    let archived = app.create_group(u, &[w]).await;
    let tie_1 = app.create_group(u, &[w]).await;
    let tie_2 = app.create_group(w, &[u]).await;
    let left = app.create_group(v, &[u]).await;
    let not_mine = app.create_group(v, &[w]).await;
    insert_message(&app, old_msg, v, 60).await;
    insert_message(&app, new_msg, v, 5).await;
    insert_message(&app, not_mine, v, 1).await;
    created_minutes_ago(&app, quiet_new, 1).await;
    created_minutes_ago(&app, archived, 2).await;
    created_minutes_ago(&app, tie_1, 3).await;
    created_minutes_ago(&app, tie_2, 3).await;
    let r = app
        .delete_as(&format!("/conversations/{archived}"), As::User(u))
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .delete_as(
            &format!("/conversations/{left}/participants/{u}"),
            As::User(u),
        )
        .await;
    assert_eq!(r.status, 204);

    let (t1, t2) = if tie_1 < tie_2 {
        (tie_1, tie_2)
    } else {
        (tie_2, tie_1)
    };
    let expected: Vec<String> = [new_msg, old_msg, quiet_new, archived, t1, t2]
        .iter()
        .map(Uuid::to_string)
        .collect();
    let r = app.get_as("/conversations", As::User(u)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.starts_with(r#"{"data":["#), "{}", r.text);
    assert_eq!(
        r.json()["pagination"],
        json!({"total": 6, "limit": 20, "offset": 0})
    );
    assert_eq!(ids(&r), expected);
    for c in r.data().as_array().unwrap() {
        assert_eq!(keys(c), CONVERSATION_KEYS, "no participants key in lists");
    }
    let listed_archived = &r.data()[3];
    assert_eq!(listed_archived["is_archived"], true);
    assert_timestamp(&r.data()[0]["last_message_at"]);

    // the window moves, total stays; empty values are the same as absent
    let r = app
        .get_as("/conversations?limit=2&offset=1", As::User(u))
        .await;
    assert_eq!(ids(&r), expected[1..3]);
    assert_eq!(
        r.json()["pagination"],
        json!({"total": 6, "limit": 2, "offset": 1})
    );
    let r = app
        .get_as("/conversations?limit=&offset=&search=", As::User(u))
        .await;
    assert_eq!(ids(&r), expected);
    let r = app
        .get_as("/conversations?limit=%2B005&offset=0010", As::User(u))
        .await;
    assert_eq!(r.data(), json!([]));
    assert_eq!(
        r.json()["pagination"],
        json!({"total": 6, "limit": 5, "offset": 10})
    );

    // someone with no conversation gets [] (never null)
    let r = app.get_as("/conversations", As::User(Uuid::new_v4())).await;
    assert_eq!(
        r.text,
        r#"{"data":[],"pagination":{"total":0,"limit":20,"offset":0}}"#
    );
}

#[tokio::test]
async fn list_and_discover_check_the_header_then_paging_then_search() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let u = Uuid::new_v4();
    let long = "a".repeat(101);
    for route in ["/conversations", "/conversations/discover"] {
        let r = app
            .get_as(&format!("{route}?limit=0&search={long}"), As::Nobody)
            .await;
        r.assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
        let cases = [
            (
                "limit=0",
                json!({"limit": "limit must be a positive integer"}),
            ),
            (
                "limit=-3",
                json!({"limit": "limit must be a positive integer"}),
            ),
            (
                "limit=abc",
                json!({"limit": "limit must be a positive integer"}),
            ),
            (
                "limit=1.5",
                json!({"limit": "limit must be a positive integer"}),
            ),
            ("limit=101", json!({"limit": "limit must not exceed 100"})),
            (
                "offset=-1",
                json!({"offset": "offset must be a non-negative integer"}),
            ),
            (
                "offset=x",
                json!({"offset": "offset must be a non-negative integer"}),
            ),
            (
                "offset=2147483648",
                json!({"offset": "offset must not exceed 2147483647"}),
            ),
            (
                "offset=99999999999999999999999999",
                json!({"offset": "offset must not exceed 2147483647"}),
            ),
            (
                "limit=0&offset=-1",
                json!({"limit": "limit must be a positive integer", "offset": "offset must be a non-negative integer"}),
            ),
            // paging before search
            (
                &format!("limit=500&search={long}"),
                json!({"limit": "limit must not exceed 100"}),
            ),
            (
                &format!("search={long}"),
                json!({"search": "search must not exceed 100 characters"}),
            ),
            // bytes, not characters: 51 × "é"
            (
                &format!("search={}", enc(&"é".repeat(51))),
                json!({"search": "search must not exceed 100 characters"}),
            ),
        ];
        for (query, details) in cases {
            let r = app.get_as(&format!("{route}?{query}"), As::Header(u)).await;
            assert_eq!(r.status, 400, "{route}?{query}: {}", r.text);
            r.assert_validation(details);
        }
        for query in [
            format!("search={}", "a".repeat(100)),
            format!("search={}", enc(&"é".repeat(50))),
            "limit=100&offset=2147483647".into(),
        ] {
            let r = app.get_as(&format!("{route}?{query}"), As::Header(u)).await;
            assert_eq!(r.status, 200, "{route}?{query}: {}", r.text);
        }
    }
}

#[tokio::test]
async fn search_matches_names_literally_and_direct_conversations_by_the_other_nickname() {
    let app = spawn_app().await;
    let (u, v, w) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut named = HashMap::new();
    for name in [
        "Rust Lovers",
        "100% rust",
        "snake_case fans",
        r"back\slash",
        "Other",
    ] {
        let r = create(
            &app,
            As::User(u),
            json!({"type": "group", "name": name, "participant_ids": [v]}),
        )
        .await;
        named.insert(name, id_of(&r));
    }
    let channel = create(
        &app,
        As::User(v),
        json!({"type": "channel", "name": "rustaceans", "participant_ids": [u]}),
    )
    .await;
    let dm_v = app.create_conversation(u, "direct", &[v]).await;
    let dm_w = app.create_conversation(w, "direct", &[u]).await;
    // the other's nickname makes a DM searchable; the caller's own does not
    sqlx::query("update conversation_participants set nickname = 'Bobby Rust' where conversation_id = $1 and user_id = $2")
        .bind(dm_v)
        .bind(v)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update conversation_participants set nickname = 'Zed' where conversation_id = $1 and user_id = $2")
        .bind(dm_w)
        .bind(u)
        .execute(&app.pool)
        .await
        .unwrap();

    let search = |term: &str| {
        let path = format!("/conversations?search={}", enc(term));
        let app = &app;
        async move {
            let r = app.get_as(&path, As::User(u)).await;
            assert_eq!(r.status, 200, "{}", r.text);
            let mut got = ids(&r);
            assert_eq!(r.json()["pagination"]["total"], got.len(), "{}", r.text);
            got.sort();
            got
        }
    };
    let sorted = |v: Vec<Uuid>| {
        let mut v: Vec<String> = v.iter().map(Uuid::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(
        search("RUST").await,
        sorted(vec![
            named["Rust Lovers"],
            named["100% rust"],
            id_of(&channel),
            dm_v
        ])
    );
    assert_eq!(search("%").await, sorted(vec![named["100% rust"]]));
    assert_eq!(search("0%").await, sorted(vec![named["100% rust"]]));
    assert_eq!(search("_").await, sorted(vec![named["snake_case fans"]]));
    assert_eq!(search("e_c").await, sorted(vec![named["snake_case fans"]]));
    assert_eq!(search(r"\").await, sorted(vec![named[r"back\slash"]]));
    assert_eq!(search("bobby").await, sorted(vec![dm_v]));
    assert_eq!(search("zed").await, Vec::<String>::new());
    assert_eq!(search("no such thing").await, Vec::<String>::new());
    // odd input never breaks the query (U+0000 cannot be in a name: refused or no match)
    assert_eq!(
        search("'; drop table conversations; --").await,
        Vec::<String>::new()
    );
    let r = app.get_as("/conversations?search=%00", As::User(u)).await;
    assert!(r.status == 200 || r.status == 400, "{}", r.text);
    if r.status == 200 {
        assert_eq!(r.data(), json!([]));
    }

    // once the other left, the DM no longer matches their nickname
    let r = app
        .delete_as(
            &format!("/conversations/{dm_v}/participants/{v}"),
            As::User(v),
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(search("bobby").await, Vec::<String>::new());
}

#[tokio::test]
async fn unread_counts_in_lists_and_details_follow_joins_receipts_and_deletions() {
    let app = spawn_app().await;
    let (u, v) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(v, &[u]).await;
    // before u joined: never counted
    sqlx::query("update conversation_participants set joined_at = now() - interval '1 hour' where conversation_id = $1 and user_id = $2")
        .bind(conv)
        .bind(v)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("update conversation_participants set joined_at = now() - interval '30 minutes' where conversation_id = $1 and user_id = $2")
        .bind(conv)
        .bind(u)
        .execute(&app.pool)
        .await
        .unwrap();
    insert_message(&app, conv, v, 45 * 60).await; // seq 1, before u joined
    let m2 = insert_message(&app, conv, v, 20 * 60).await; // seq 2
    insert_message(&app, conv, u, 10 * 60).await; // seq 3, u's own
    let m4 = insert_message(&app, conv, v, 5 * 60).await; // seq 4, deleted below
    insert_message(&app, conv, v, 60).await; // seq 5
    insert_message(&app, conv, v, 30).await; // seq 6
    sqlx::query("update messages set is_deleted = true, deleted_at = now() where id = $1")
        .bind(m4)
        .execute(&app.pool)
        .await
        .unwrap();

    let unread = |who: Uuid| {
        let app = &app;
        async move {
            let list = app.get_as("/conversations", As::User(who)).await;
            let get = app
                .get_as(&format!("/conversations/{conv}"), As::User(who))
                .await;
            let from_list = list.data()[0]["unread_count"].clone();
            assert_eq!(from_list, get.data()["unread_count"]);
            from_list
        }
    };
    assert_eq!(unread(u).await, 3); // seq 2, 5, 6
    assert_eq!(unread(v).await, 1); // u's seq 3 only

    // a receipt moves the baseline to its message's seq
    sqlx::query("insert into read_receipts (conversation_id, user_id, last_read_message_id) values ($1, $2, $3)")
        .bind(conv)
        .bind(u)
        .bind(m2)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(unread(u).await, 2);
    // a receipt pointing at a message of another conversation counts as none
    sqlx::query("update read_receipts set last_read_message_id = $2 where user_id = $1")
        .bind(u)
        .bind(Uuid::new_v4())
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(unread(u).await, 3);

    // capped at 1000
    sqlx::query(
        "with c as (update conversations set last_seq = last_seq + 1005 where id = $1 returning last_seq)
         insert into messages (conversation_id, sender_id, content, seq)
         select $1, $2, 'x', c.last_seq - 1005 + g from c, generate_series(1, 1005) g",
    )
    .bind(conv)
    .bind(v)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(unread(u).await, 1000);
}

// ----- discover ---------------------------------------------------------------------------------

#[tokio::test]
async fn discover_lists_unarchived_channels_by_member_count_then_name() {
    let app = spawn_app().await;
    let people: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let caller = Uuid::new_v4();
    let chan = |owner: Uuid, name: &str, members: &[Uuid]| {
        let body = json!({"type": "channel", "name": name, "participant_ids": members});
        let app = &app;
        async move { id_of(&create(app, As::User(owner), body).await) }
    };
    let b3 = chan(people[0], "b", &people[1..3]).await;
    let a3 = chan(people[0], "a", &people[1..3]).await;
    let z1 = chan(people[0], "z", &people[1..2]).await; // 2 members, one leaves below
    let same_1 = chan(people[3], "same", &people[4..5]).await;
    let same_2 = chan(people[4], "same", &people[5..6]).await;
    let archived = chan(people[0], "archived", &people[1..6]).await;
    let group = app.create_group(people[0], &people[1..6]).await;
    let dm = app
        .create_conversation(people[0], "direct", &[people[1]])
        .await;
    let mine = chan(caller, "mine", &people[1..2]).await;
    let r = app
        .delete_as(&format!("/conversations/{archived}"), As::User(people[0]))
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .delete_as(
            &format!("/conversations/{z1}/participants/{}", people[1]),
            As::User(people[1]),
        )
        .await;
    assert_eq!(r.status, 204);
    insert_message(&app, mine, people[1], 0).await;
    insert_message(&app, a3, people[1], 0).await;

    let (s1, s2) = if same_1 < same_2 {
        (same_1, same_2)
    } else {
        (same_2, same_1)
    };
    let expected: Vec<String> = [a3, b3, mine, s1, s2, z1]
        .iter()
        .map(Uuid::to_string)
        .collect();
    let r = app
        .get_as("/conversations/discover", As::User(caller))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(ids(&r), expected);
    assert_eq!(
        r.json()["pagination"],
        json!({"total": 6, "limit": 20, "offset": 0})
    );
    let data = r.data();
    let counts: Vec<i64> = data
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["member_count"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [3, 3, 2, 2, 2, 1]);
    let mut summary_keys = CONVERSATION_KEYS.to_vec();
    summary_keys.push("member_count");
    summary_keys.sort();
    for c in data.as_array().unwrap() {
        assert_eq!(keys(c), summary_keys);
        assert_eq!(c["type"], "channel");
        assert_eq!(c["is_archived"], false);
    }
    // unread counts are the caller's: a message in a channel they are not in counts 0
    assert_eq!(data[0]["unread_count"], 0);
    assert_eq!(data[2]["unread_count"], 1);
    assert!(!ids(&r).contains(&group.to_string()) && !ids(&r).contains(&dm.to_string()));

    let r = app
        .get_as("/conversations/discover?limit=2&offset=2", As::User(caller))
        .await;
    assert_eq!(ids(&r), expected[2..4]);
    assert_eq!(
        r.json()["pagination"],
        json!({"total": 6, "limit": 2, "offset": 2})
    );
    let r = app
        .get_as("/conversations/discover?search=AM", As::User(caller))
        .await;
    assert_eq!(ids(&r), [s1.to_string(), s2.to_string()]);
    assert_eq!(r.json()["pagination"]["total"], 2);
    let r = app
        .get_as("/conversations/discover?search=%25", As::User(caller))
        .await;
    assert_eq!(r.json()["pagination"]["total"], 0);
}

// ----- get --------------------------------------------------------------------------------------

#[tokio::test]
async fn get_checks_the_id_then_the_header_then_existence_then_membership() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let (u, v, stranger) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let r = create(
        &app,
        As::Header(u),
        json!({"type": "group", "name": "g", "participant_ids": [v]}),
    )
    .await;
    let conv = id_of(&r);
    let unknown = Uuid::new_v4();
    let cases: Vec<(String, As, u16, &str, &str)> = vec![
        (
            "nope".into(),
            As::Nobody,
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        ),
        (
            format!("{conv}x"),
            As::Header(u),
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        ),
        (
            unknown.to_string(),
            As::Nobody,
            400,
            "BAD_REQUEST",
            "Missing or invalid X-User-ID header",
        ),
        (
            unknown.to_string(),
            As::Header(u),
            404,
            "NOT_FOUND",
            "Conversation not found",
        ),
        (
            conv.to_string(),
            As::Header(stranger),
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        ),
    ];
    for (id, who, status, code, message) in cases {
        app.get_as(&format!("/conversations/{id}"), who)
            .await
            .assert_error(status, code, message);
    }
    // every UUID form in the path, answered in canonical form; archived included
    app.send(
        "DELETE",
        &format!("/conversations/{conv}"),
        As::Header(u),
        None,
    )
    .await;
    for form in [
        conv.simple().to_string().to_uppercase(),
        format!("%7B{conv}%7D"),
        format!("urn:uuid:{conv}"),
    ] {
        let r = app
            .get_as(&format!("/conversations/{form}"), As::Header(v))
            .await;
        assert_eq!(r.status, 200, "{form}: {}", r.text);
        assert_eq!(r.data()["id"], conv.to_string());
        assert_eq!(r.data()["is_archived"], true);
        assert_eq!(keys(&r.data()), detail_keys());
    }
    // a former participant is no longer one
    app.send(
        "DELETE",
        &format!("/conversations/{conv}/participants/{v}"),
        As::Header(v),
        None,
    )
    .await;
    app.get_as(&format!("/conversations/{conv}"), As::Header(v))
        .await
        .assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
    // "discover" is a literal route, never an id; a trailing slash is an unknown path
    let r = app.get_as("/conversations/discover", As::Header(u)).await;
    assert_eq!(r.status, 200);
    let r = app.get_as("/conversations/", As::Header(u)).await;
    assert_eq!(r.status, 404);
}

// ----- update -----------------------------------------------------------------------------------

#[tokio::test]
async fn update_field_rules_come_before_the_header_and_report_every_key() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let u = Uuid::new_v4();
    let conv = Uuid::new_v4(); // the field rules run before the conversation is looked up
    let cases = [
        (
            json!({}),
            json!({"body": "at least one field (name, description, avatar_url) must be provided"}),
        ),
        (
            json!({"name": null, "description": null, "avatar_url": null, "other": 1}),
            json!({"body": "at least one field (name, description, avatar_url) must be provided"}),
        ),
        (json!({"name": ""}), json!({"name": "name cannot be empty"})),
        (
            json!({"name": "x".repeat(101)}),
            json!({"name": "name must not exceed 100 characters"}),
        ),
        (
            json!({"name": "é".repeat(51)}),
            json!({"name": "name must not exceed 100 characters"}),
        ),
        (
            json!({"avatar_url": "x".repeat(501)}),
            json!({"avatar_url": "avatar_url must not exceed 500 characters"}),
        ),
        (
            json!({"name": "", "avatar_url": "x".repeat(501)}),
            json!({"name": "name cannot be empty", "avatar_url": "avatar_url must not exceed 500 characters"}),
        ),
        (
            json!({"Name": "x"}),
            json!({"body": "at least one field (name, description, avatar_url) must be provided"}),
        ),
    ];
    for (body, details) in cases {
        for who in [As::Nobody, As::Header(u)] {
            let r = app
                .put_json(&format!("/conversations/{conv}"), who, body.clone())
                .await;
            r.assert_validation(details.clone());
        }
    }
    let r = app
        .send(
            "PUT",
            &format!("/conversations/{conv}"),
            As::Nobody,
            Some(b"null".to_vec()),
        )
        .await;
    r.assert_validation(
        json!({"body": "at least one field (name, description, avatar_url) must be provided"}),
    );
    for body in [
        &b""[..],
        b"{",
        b"[1]",
        br#"{"name": 1}"#,
        br#"{"description": false}"#,
        br#"{"avatar_url": {}}"#,
    ] {
        let r = app
            .send(
                "PUT",
                &format!("/conversations/{conv}"),
                As::Nobody,
                Some(body.to_vec()),
            )
            .await;
        r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
    // PATH-C before BODY
    let r = app
        .send(
            "PUT",
            "/conversations/nope",
            As::Nobody,
            Some(b"{".to_vec()),
        )
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    // a valid body without the header
    let r = app
        .put_json(
            &format!("/conversations/{conv}"),
            As::Nobody,
            json!({"name": "x"}),
        )
        .await;
    r.assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
}

#[tokio::test]
async fn update_refuses_direct_conversations_before_checking_membership_then_requires_admin() {
    let app = spawn_app().await;
    let (owner, admin, member, stranger) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let group = app.create_group(owner, &[admin, member]).await;
    set_role(&app, group, admin, "admin").await;
    let dm = app.create_conversation(owner, "direct", &[member]).await;
    let body = json!({"name": "renamed"});
    let cases: Vec<(Uuid, Uuid, u16, &str, &str)> = vec![
        (
            Uuid::new_v4(),
            owner,
            404,
            "NOT_FOUND",
            "Conversation not found",
        ),
        (
            dm,
            stranger,
            400,
            "BAD_REQUEST",
            "Cannot modify a direct conversation",
        ),
        (
            dm,
            member,
            400,
            "BAD_REQUEST",
            "Cannot modify a direct conversation",
        ),
        (
            group,
            stranger,
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        ),
        (
            group,
            member,
            403,
            "FORBIDDEN",
            "Only owners and admins can modify this conversation",
        ),
    ];
    for (conv, who, status, code, message) in cases {
        app.put_json(
            &format!("/conversations/{conv}"),
            As::User(who),
            body.clone(),
        )
        .await
        .assert_error(status, code, message);
    }
    for who in [owner, admin] {
        let r = app
            .put_json(
                &format!("/conversations/{group}"),
                As::User(who),
                json!({"name": format!("by {who}")}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.data()["name"], format!("by {who}"));
    }
}

#[tokio::test]
async fn update_changes_only_the_given_fields_and_publishes_the_detail() {
    let app = spawn_app().await;
    let (owner, member) = (Uuid::new_v4(), Uuid::new_v4());
    let r = create(
        &app,
        As::User(owner),
        json!({"type": "channel", "name": "old", "description": "desc", "avatar_url": "pic", "participant_ids": [member]}),
    )
    .await;
    let conv = id_of(&r);
    let before = r.data();
    insert_message(&app, conv, member, 0).await; // the owner's unread_count is 1 in REST, 0 in events
    let mut room = app.conversation_events(conv).await;

    let r = app
        .put_json(
            &format!("/conversations/{conv}"),
            As::User(owner),
            json!({"description": "", "name": null}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let data = r.data();
    assert_eq!(keys(&data), detail_keys());
    assert_eq!(data["name"], "old");
    assert_eq!(data["description"], "");
    assert_eq!(data["avatar_url"], "pic");
    assert_eq!(data["unread_count"], 1);
    assert_eq!(data["participants"], before["participants"]);
    assert_eq!(data["created_at"], before["created_at"]);
    assert!(parse_time(&data["updated_at"]) > parse_time(&before["updated_at"]));
    let frame = room.next_frame().await;
    assert_eq!(frame["type"], "conversation.updated");
    assert_eq!(frame["conversation_id"], conv.to_string());
    let mut expected = data.clone();
    expected["unread_count"] = json!(0);
    assert_eq!(frame["payload"], expected);
    // the detail GET returns is the same
    let get = app
        .get_as(&format!("/conversations/{conv}"), As::User(owner))
        .await;
    assert_eq!(get.data(), data);

    let r = app
        .put_json(
            &format!("/conversations/{conv}"),
            As::User(owner),
            json!({"avatar_url": ""}),
        )
        .await;
    assert_eq!(r.data()["avatar_url"], "");
    assert_eq!(r.data()["description"], "");
    room.next_frame().await;

    // archived conversations can be updated
    app.delete_as(&format!("/conversations/{conv}"), As::User(owner))
        .await;
    room.next_frame().await;
    let r = app
        .put_json(
            &format!("/conversations/{conv}"),
            As::User(owner),
            json!({"name": "still"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.data()["is_archived"], true);
    assert_eq!(room.next_frame().await["type"], "conversation.updated");
    // failed updates publish nothing
    app.put_json(
        &format!("/conversations/{conv}"),
        As::User(member),
        json!({"name": "no"}),
    )
    .await;
    room.assert_quiet(200).await;
}

#[tokio::test]
async fn concurrent_updates_of_different_fields_are_all_kept() {
    let app = spawn_app().await;
    let (owner, admin) = (Uuid::new_v4(), Uuid::new_v4());
    let conv = app.create_group(owner, &[admin]).await;
    set_role(&app, conv, admin, "admin").await;
    for round in 0..8 {
        let path = format!("/conversations/{conv}");
        let (x, y, z) = tokio::join!(
            app.put_json(
                &path,
                As::User(owner),
                json!({"name": format!("name {round}")})
            ),
            app.put_json(
                &path,
                As::User(admin),
                json!({"description": format!("desc {round}")})
            ),
            app.put_json(
                &path,
                As::User(owner),
                json!({"avatar_url": format!("pic {round}")})
            ),
        );
        assert_eq!((x.status, y.status, z.status), (200, 200, 200));
        let (name, description, avatar): (String, String, String) =
            sqlx::query_as("select name, description, avatar_url from conversations where id = $1")
                .bind(conv)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!(
            (name, description, avatar),
            (
                format!("name {round}"),
                format!("desc {round}"),
                format!("pic {round}")
            )
        );
    }
}

// ----- archive ----------------------------------------------------------------------------------

#[tokio::test]
async fn only_the_owner_archives_and_every_call_answers_and_publishes() {
    let app = spawn_app().await;
    let (owner, admin, member, stranger) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let conv = app
        .create_conversation(owner, "channel", &[admin, member])
        .await;
    set_role(&app, conv, admin, "admin").await;
    let dm = app.create_conversation(owner, "direct", &[member]).await;
    let mut room = app.conversation_events(conv).await;
    let cases: Vec<(String, Uuid, u16, &str, &str)> = vec![
        (
            "nope".into(),
            owner,
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        ),
        (
            Uuid::new_v4().to_string(),
            owner,
            404,
            "NOT_FOUND",
            "Conversation not found",
        ),
        (
            conv.to_string(),
            stranger,
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        ),
        (
            conv.to_string(),
            admin,
            403,
            "FORBIDDEN",
            "Only the owner can archive this conversation",
        ),
        (
            conv.to_string(),
            member,
            403,
            "FORBIDDEN",
            "Only the owner can archive this conversation",
        ),
        // a DM has no owner
        (
            dm.to_string(),
            owner,
            403,
            "FORBIDDEN",
            "Only the owner can archive this conversation",
        ),
        (
            dm.to_string(),
            member,
            403,
            "FORBIDDEN",
            "Only the owner can archive this conversation",
        ),
    ];
    for (id, who, status, code, message) in cases {
        app.delete_as(&format!("/conversations/{id}"), As::User(who))
            .await
            .assert_error(status, code, message);
    }
    room.assert_quiet(200).await;

    for _ in 0..2 {
        let r = app
            .delete_as(&format!("/conversations/{conv}"), As::User(owner))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let data = r.data();
        assert_eq!(keys(&data), CONVERSATION_KEYS, "no participants key");
        assert_eq!(data["is_archived"], true);
        assert_eq!(data["id"], conv.to_string());
        let frame = room.next_frame().await;
        assert_eq!(frame["type"], "conversation.archived");
        assert_eq!(frame["payload"], data);
    }
    room.assert_quiet(200).await;
    // still listed and readable, gone from discover
    let r = app.get_as("/conversations", As::User(member)).await;
    assert!(ids(&r).contains(&conv.to_string()));
    let r = app
        .get_as("/conversations/discover", As::User(member))
        .await;
    assert_eq!(r.json()["pagination"]["total"], 0);
}

#[tokio::test]
async fn archive_checks_the_header_after_the_id_in_header_mode() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    app.delete_as("/conversations/nope", As::Nobody)
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        );
    app.delete_as(&format!("/conversations/{}", Uuid::new_v4()), As::Nobody)
        .await
        .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    app.delete_as(
        &format!("/conversations/{}", Uuid::new_v4()),
        As::Header(Uuid::new_v4()),
    )
    .await
    .assert_error(404, "NOT_FOUND", "Conversation not found");
}
