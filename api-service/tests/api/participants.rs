//! Participants and who may change them: add (with the user service and re-activation), change role
//! and transfer ownership, remove or leave (with ownership succession and the DM pair), join a
//! channel — check orders, database state, events and their order, and concurrent requests.
//!
//! Also home of small helpers the conversation tests share: a stand-in user service, an
//! every-subject event listener, and JSON/URL utilities.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{As, Reply, TestApp, spawn_app, spawn_app_with};

// ----- shared helpers ---------------------------------------------------------------------------

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

/// Parses a timestamp of the API.
pub fn parse_time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// Asserts docs/api.md, "Formats": RFC 3339 UTC with `Z`, at most microseconds, no trailing zeros.
#[track_caller]
pub fn assert_timestamp(v: &Value) {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    assert!(s.ends_with('Z'), "{s}");
    parse_time(v);
    if let Some((_, frac)) = s.trim_end_matches('Z').split_once('.') {
        assert!((1..=6).contains(&frac.len()) && !frac.ends_with('0'), "{s}");
    }
}

/// Percent-encodes every byte but ASCII letters and digits (for query values).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What the stand-in user service answers and what it was asked.
struct StubState {
    answers: Mutex<HashMap<Uuid, u16>>,
    default: u16,
    /// (user id, `Authorization` header) of every request, in arrival order.
    asked: Mutex<Vec<(Uuid, Option<String>)>>,
}

/// A stand-in user service on `127.0.0.1:0`: `GET /users/{id}` answers the status configured for
/// the id (0 = answer 200 after 6 s, beyond the service's 5 s timeout).
pub struct UserStub {
    pub url: String,
    state: Arc<StubState>,
}

impl UserStub {
    /// Every request so far.
    pub fn asked(&self) -> Vec<(Uuid, Option<String>)> {
        self.state.asked.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.state.asked.lock().unwrap().clear();
    }

    /// Changes the answer for one user.
    pub fn answer(&self, user: Uuid, status: u16) {
        self.state.answers.lock().unwrap().insert(user, status);
    }
}

#[poem::handler]
async fn stub_lookup(
    req: &poem::Request,
    poem::web::Path(id): poem::web::Path<String>,
    poem::web::Data(state): poem::web::Data<&Arc<StubState>>,
) -> poem::http::StatusCode {
    let user: Uuid = id.parse().expect("the service asks by canonical id");
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    state.asked.lock().unwrap().push((user, auth));
    let status = state
        .answers
        .lock()
        .unwrap()
        .get(&user)
        .copied()
        .unwrap_or(state.default);
    if status == 0 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        return poem::http::StatusCode::OK;
    }
    poem::http::StatusCode::from_u16(status).unwrap()
}

/// Starts a [`UserStub`] answering `answers` per user and `default` for everyone else.
pub async fn user_stub(answers: HashMap<Uuid, u16>, default: u16) -> UserStub {
    use poem::{
        EndpointExt,
        listener::{Acceptor, Listener},
    };
    let state = Arc::new(StubState {
        answers: Mutex::new(answers),
        default,
        asked: Mutex::new(Vec::new()),
    });
    let routes = poem::Route::new()
        .at("/users/:id", poem::get(stub_lookup))
        .data(state.clone());
    let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .expect("bind the user service stub");
    let port = acceptor.local_addr()[0]
        .as_socket_addr()
        .expect("a TCP address")
        .port();
    tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(routes));
    UserStub {
        url: format!("http://127.0.0.1:{port}"),
        state,
    }
}

/// Every event of one test app, on all subjects, in the order NATS delivers them (one
/// subscription, so the publisher's order across subjects is kept).
pub struct AllEvents {
    sub: async_nats::Subscriber,
    _client: async_nats::Client,
    prefix: String,
}

impl AllEvents {
    pub async fn subscribe(app: &TestApp) -> Self {
        let client = async_nats::connect("nats://127.0.0.1:4222")
            .await
            .expect("nats");
        let sub = client
            .subscribe(format!("{}.>", app.nats_prefix))
            .await
            .expect("subscribe");
        client.flush().await.expect("flush subscription");
        Self {
            sub,
            _client: client,
            prefix: app.nats_prefix.clone(),
        }
    }

    /// The next event: its subject without the prefix (`conv.<id>`, `user.<id>`) and its frame.
    pub async fn next(&mut self) -> (String, Value) {
        let (subject, _, frame) = self.next_addressed().await;
        (subject, frame)
    }

    /// The next event with the users it is addressed to when there are several
    /// (`target_user_ids`, on `user.many.<conversation>`).
    pub async fn next_addressed(&mut self) -> (String, Vec<String>, Value) {
        use futures_util::StreamExt;
        use prost::Message as _;
        let msg = tokio::time::timeout(Duration::from_secs(5), self.sub.next())
            .await
            .expect("an event within 5 s")
            .expect("subscription open");
        let event = shared_proto::events::Event::decode(msg.payload).expect("protobuf Event");
        let frame = shared_proto::json::client_frame(&event).expect("renders");
        let subject = msg.subject.as_str()[self.prefix.len() + 1..].to_owned();
        (
            subject,
            event.target_user_ids,
            serde_json::from_slice(&frame).unwrap(),
        )
    }

    /// Asserts that nothing arrives within `ms` milliseconds.
    pub async fn assert_quiet(&mut self, ms: u64) {
        use futures_util::StreamExt;
        if let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(ms), self.sub.next()).await
        {
            panic!("unexpected event on {}", msg.subject);
        }
    }
}

// ----- fixtures ---------------------------------------------------------------------------------

const PARTICIPANT_KEYS: [&str; 6] = [
    "conversation_id",
    "id",
    "joined_at",
    "nickname",
    "role",
    "user_id",
];
const NOT_PARTICIPANT: &str = "User is not a participant of this conversation";
const CANNOT_REMOVE: &str = "Insufficient permissions to remove this participant";

/// A group or channel with an owner, an admin and a member.
struct Team {
    id: Uuid,
    owner: Uuid,
    admin: Uuid,
    member: Uuid,
}

async fn team(app: &TestApp, kind: &str) -> Team {
    let (owner, admin, member) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let id = app.create_conversation(owner, kind, &[admin, member]).await;
    set_role(app, id, admin, "admin").await;
    Team {
        id,
        owner,
        admin,
        member,
    }
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

/// A participant row as stored: (row id, role, active, joined_at, join_seq).
type Row = (Uuid, String, bool, DateTime<Utc>, i64);

async fn row(app: &TestApp, conversation: Uuid, user: Uuid) -> Option<Row> {
    sqlx::query_as(
        "select id, role, left_at is null, joined_at, join_seq from conversation_participants
         where conversation_id = $1 and user_id = $2",
    )
    .bind(conversation)
    .bind(user)
    .fetch_optional(&app.pool)
    .await
    .unwrap()
}

/// The active participants' (user, role), in join order.
async fn roster(app: &TestApp, conversation: Uuid) -> Vec<(Uuid, String)> {
    sqlx::query_as(
        "select user_id, role from conversation_participants
         where conversation_id = $1 and left_at is null order by joined_at, join_seq",
    )
    .bind(conversation)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

fn participants_path(conversation: Uuid) -> String {
    format!("/conversations/{conversation}/participants")
}

fn participant_path(conversation: Uuid, user: Uuid) -> String {
    format!("/conversations/{conversation}/participants/{user}")
}

async fn add(app: &TestApp, conversation: Uuid, who: Uuid, users: &[Uuid]) -> Reply {
    app.post_json(
        &participants_path(conversation),
        As::User(who),
        json!({ "participant_ids": users }),
    )
    .await
}

async fn change_role(
    app: &TestApp,
    conversation: Uuid,
    who: Uuid,
    target: Uuid,
    role: &str,
) -> Reply {
    app.put_json(
        &participant_path(conversation, target),
        As::User(who),
        json!({ "role": role }),
    )
    .await
}

async fn remove(app: &TestApp, conversation: Uuid, who: Uuid, target: Uuid) -> Reply {
    app.delete_as(&participant_path(conversation, target), As::User(who))
        .await
}

async fn join(app: &TestApp, conversation: Uuid, who: Uuid) -> Reply {
    app.send(
        "POST",
        &format!("/conversations/{conversation}/join"),
        As::User(who),
        None,
    )
    .await
}

/// The detail `user` would GET, as an event payload carries it (`unread_count` 0).
async fn detail_as_event(app: &TestApp, conversation: Uuid, user: Uuid) -> Value {
    let r = app
        .get_as(&format!("/conversations/{conversation}"), As::User(user))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut d = r.data();
    d["unread_count"] = json!(0);
    d
}

#[track_caller]
fn assert_no_content(r: &Reply) {
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(r.text, "");
    assert!(r.headers.get("content-type").is_none());
}

#[tokio::test]
async fn every_participant_route_answers_401_first_without_credentials() {
    let app = spawn_app().await;
    for (method, path, body) in [
        (
            "POST",
            "/conversations/nope/participants",
            Some(b"{".to_vec()),
        ),
        (
            "PUT",
            "/conversations/nope/participants/nope",
            Some(b"{".to_vec()),
        ),
        ("DELETE", "/conversations/nope/participants/nope", None),
        ("POST", "/conversations/nope/join", None),
    ] {
        let r = app.send(method, path, As::Nobody, body).await;
        r.assert_error(401, "UNAUTHORIZED", "Missing or invalid credentials");
        assert_eq!(r.headers["www-authenticate"], "Bearer");
    }
}

// ----- add --------------------------------------------------------------------------------------

#[tokio::test]
async fn admins_add_participants_in_request_order_and_everyone_hears_of_it() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    let (x, y) = (Uuid::new_v4(), Uuid::new_v4());
    let mut events = AllEvents::subscribe(&app).await;

    // duplicates, current participants and the caller are skipped
    let r = app
        .post_json(
            &participants_path(t.id),
            As::User(t.admin),
            json!({"participant_ids": [y.to_string(), t.admin.to_string(), x.simple().to_string().to_uppercase(), y.to_string(), t.member.to_string()]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let data = r.data();
    let added = data.as_array().unwrap();
    assert_eq!(added.len(), 2, "{data}");
    for (p, user) in added.iter().zip([y, x]) {
        assert_eq!(keys(p), PARTICIPANT_KEYS);
        assert_eq!(p["user_id"], user.to_string());
        assert_eq!(p["conversation_id"], t.id.to_string());
        assert_eq!(p["role"], "member");
        assert_eq!(p["nickname"], Value::Null);
        assert_timestamp(&p["joined_at"]);
        let stored = row(&app, t.id, user).await.unwrap();
        assert_eq!(p["id"], stored.0.to_string());
        assert!(stored.2);
    }
    assert_eq!(
        roster(&app, t.id).await,
        [
            (t.owner, "owner".into()),
            (t.admin, "admin".into()),
            (t.member, "member".into()),
            (y, "member".into()),
            (x, "member".into())
        ]
    );

    // one conversation.joined addressed to both, in request order, not one per user
    let (subject, targets, frame) = events.next_addressed().await;
    assert_eq!(subject, format!("user.many.{}", t.id));
    assert_eq!(targets, [y.to_string(), x.to_string()]);
    assert_eq!(frame["type"], "conversation.joined", "{subject}");
    assert_eq!(frame["conversation_id"], t.id.to_string());
    for user in [x, y] {
        assert_eq!(frame["payload"], detail_as_event(&app, t.id, user).await);
    }
    let (subject, frame) = events.next().await;
    assert_eq!(subject, format!("conv.{}", t.id));
    assert_eq!(frame["type"], "participant.added");
    assert_eq!(
        frame["payload"],
        json!({"conversation_id": t.id.to_string(), "participants": data})
    );
    events.assert_quiet(200).await;

    // the owner may add too, in a channel as in a group
    let c = team(&app, "channel").await;
    let z = Uuid::new_v4();
    let r = add(&app, c.id, c.owner, &[z]).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.data()[0]["user_id"], z.to_string());
}

#[tokio::test]
async fn adding_only_current_participants_answers_an_empty_list_and_publishes_nothing() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    let mut events = AllEvents::subscribe(&app).await;
    let r = add(&app, t.id, t.owner, &[t.owner, t.member, t.admin]).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.text, r#"{"data":[]}"#);
    events.assert_quiet(300).await;
}

#[tokio::test]
async fn a_former_participant_is_reactivated_in_the_same_row_as_a_member() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    let before = row(&app, t.id, t.admin).await.unwrap();
    assert_no_content(&remove(&app, t.id, t.owner, t.admin).await);
    let gone = row(&app, t.id, t.admin).await.unwrap();
    assert!(!gone.2, "the row stays, inactive");

    let newcomer = Uuid::new_v4();
    let r = add(&app, t.id, t.owner, &[t.admin, newcomer]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let data = r.data();
    assert_eq!(data[0]["id"], before.0.to_string(), "same row");
    assert_eq!(data[0]["role"], "member", "an admin comes back as a member");
    let after = row(&app, t.id, t.admin).await.unwrap();
    assert_eq!(after.0, before.0);
    assert!(after.2);
    assert_eq!(after.1, "member");
    assert!(after.3 > before.3, "joined_at reset to now");
    assert_eq!(parse_time(&data[0]["joined_at"]), after.3);
    let newcomer_row = row(&app, t.id, newcomer).await.unwrap();
    assert!(
        after.4 > before.4 && after.4 < newcomer_row.4,
        "a new join_seq, in request order"
    );
    // listed after the others, in request order
    let detail = detail_as_event(&app, t.id, t.owner).await;
    let order: Vec<&str> = detail["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_id"].as_str().unwrap())
        .collect();
    let expected = [t.owner, t.member, t.admin, newcomer].map(|u| u.to_string());
    assert_eq!(order, expected);
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "select count(*) from conversation_participants where conversation_id = $1"
        )
        .bind(t.id)
        .fetch_one(&app.pool)
        .await
        .unwrap(),
        4
    );
}

#[tokio::test]
async fn add_rules_come_before_the_header_and_report_the_first_failure() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let conv = Uuid::new_v4(); // the rules run before the conversation is looked up
    let caller = Uuid::new_v4();
    let ok = Uuid::new_v4().to_string();
    let fifty_one: Vec<String> = (0..51).map(|i| format!("bad {i}")).collect();
    let cases = [
        (json!({}), "at least one participant is required"),
        (
            json!({"participant_ids": null}),
            "at least one participant is required",
        ),
        (
            json!({"participant_ids": []}),
            "at least one participant is required",
        ),
        (
            json!({"participant_ids": fifty_one}),
            "cannot add more than 50 participants at once",
        ),
        (
            json!({"participant_ids": [ok, "nope", ""]}),
            "invalid UUID at index 1",
        ),
        (
            json!({"participant_ids": ["", ok]}),
            "invalid UUID at index 0",
        ),
        (
            json!({"Participant_ids": [ok]}),
            "at least one participant is required",
        ),
    ];
    for (body, message) in cases {
        for who in [As::Nobody, As::Header(caller)] {
            let r = app
                .post_json(&participants_path(conv), who, body.clone())
                .await;
            r.assert_validation(json!({ "participant_ids": message }));
        }
    }
    let r = app
        .send(
            "POST",
            &participants_path(conv),
            As::Nobody,
            Some(b"null".to_vec()),
        )
        .await;
    r.assert_validation(json!({"participant_ids": "at least one participant is required"}));
    for body in [
        &b""[..],
        b"{",
        b"[]",
        br#"{"participant_ids": "x"}"#,
        br#"{"participant_ids": [1]}"#,
        br#"{"participant_ids": [null]}"#,
    ] {
        let r = app
            .send(
                "POST",
                &participants_path(conv),
                As::Nobody,
                Some(body.to_vec()),
            )
            .await;
        r.assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
    let r = app
        .send(
            "POST",
            "/conversations/nope/participants",
            As::Nobody,
            Some(b"{".to_vec()),
        )
        .await;
    r.assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    let big = format!(
        r#"{{"participant_ids":["{ok}"],"pad":"{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let r = app
        .send(
            "POST",
            &participants_path(conv),
            As::Nobody,
            Some(big.into_bytes()),
        )
        .await;
    r.assert_error(413, "PAYLOAD_TOO_LARGE", "Request body too large");
    let valid = json!({"participant_ids": [ok]});
    app.post_json(&participants_path(conv), As::Nobody, valid.clone())
        .await
        .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    app.post_json(&participants_path(conv), As::Header(caller), valid)
        .await
        .assert_error(404, "NOT_FOUND", "Conversation not found");
}

#[tokio::test]
async fn add_checks_the_type_before_membership_and_requires_an_owner_or_admin() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    let (a, b, stranger, x) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let dm = app.create_conversation(a, "direct", &[b]).await;
    let former = Uuid::new_v4();
    add(&app, t.id, t.owner, &[former]).await;
    remove(&app, t.id, former, former).await;
    let cases: Vec<(Uuid, Uuid, u16, &str, &str)> = vec![
        (
            Uuid::new_v4(),
            t.owner,
            404,
            "NOT_FOUND",
            "Conversation not found",
        ),
        (
            dm,
            stranger,
            400,
            "BAD_REQUEST",
            "Cannot add participants to a direct conversation",
        ),
        (
            dm,
            a,
            400,
            "BAD_REQUEST",
            "Cannot add participants to a direct conversation",
        ),
        (
            t.id,
            stranger,
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        ),
        (
            t.id,
            former,
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        ),
        (
            t.id,
            t.member,
            403,
            "FORBIDDEN",
            "Only owners and admins can add participants",
        ),
    ];
    let mut events = AllEvents::subscribe(&app).await;
    for (conv, who, status, code, message) in cases {
        add(&app, conv, who, &[x])
            .await
            .assert_error(status, code, message);
    }
    events.assert_quiet(200).await;
    assert!(row(&app, t.id, x).await.is_none());
    assert_eq!(roster(&app, dm).await.len(), 2);
}

#[tokio::test]
async fn add_asks_the_user_service_only_after_the_role_check_and_adds_nothing_on_failure() {
    let (ghost, broken, slow) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let stub = user_stub(HashMap::from([(ghost, 404), (broken, 500), (slow, 0)]), 200).await;
    let app = spawn_app_with(&[("USER_SERVICE_URL", stub.url.as_str())]).await;
    let t = team(&app, "group").await; // creating asked about admin and member
    let x = Uuid::new_v4();

    stub.clear();
    add(&app, t.id, t.member, &[ghost]).await.assert_error(
        403,
        "FORBIDDEN",
        "Only owners and admins can add participants",
    );
    assert!(stub.asked().is_empty(), "not asked before the role check");

    let r = add(&app, t.id, t.admin, &[x, ghost]).await;
    r.assert_validation(json!({"participant_ids": "one or more user IDs do not exist"}));
    assert!(row(&app, t.id, x).await.is_none());

    for failing in [broken, slow] {
        let r = add(&app, t.id, t.admin, &[x, failing]).await;
        r.assert_error(500, "INTERNAL_ERROR", "An unexpected error occurred");
        assert!(row(&app, t.id, x).await.is_none());
    }

    // never about the caller; duplicates asked once; the token is forwarded
    stub.clear();
    let token = crate::helpers::token_for(t.admin);
    let r = app
        .client
        .post(app.url(&participants_path(t.id)))
        .bearer_auth(&token)
        .json(&json!({"participant_ids": [t.admin, x, x, t.member]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut asked = stub.asked();
    asked.sort();
    let mut expected = vec![
        (x, Some(format!("Bearer {token}"))),
        (t.member, Some(format!("Bearer {token}"))),
    ];
    expected.sort();
    assert_eq!(asked, expected);
    assert!(row(&app, t.id, x).await.unwrap().2);
}

#[tokio::test]
async fn fifty_participants_can_be_added_at_once() {
    let stub = user_stub(HashMap::new(), 200).await;
    let app = spawn_app_with(&[("USER_SERVICE_URL", stub.url.as_str())]).await;
    let t = team(&app, "channel").await;
    let users: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    let r = add(&app, t.id, t.owner, &users).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let got: Vec<String> = r
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(got, users.iter().map(Uuid::to_string).collect::<Vec<_>>());
    assert_eq!(roster(&app, t.id).await.len(), 53);
}

#[tokio::test]
async fn concurrent_adds_of_the_same_users_add_each_of_them_once() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    for _ in 0..5 {
        let users = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        let reversed = [users[2], users[0]];
        let (r1, r2, r3) = tokio::join!(
            add(&app, t.id, t.owner, &users),
            add(&app, t.id, t.admin, &users[1..]),
            add(&app, t.id, t.owner, &reversed),
        );
        let mut seen: Vec<String> = Vec::new();
        for r in [&r1, &r2, &r3] {
            assert_eq!(r.status, 201, "{}", r.text);
            for p in r.data().as_array().unwrap() {
                seen.push(p["user_id"].as_str().unwrap().to_owned());
            }
        }
        seen.sort();
        let mut expected: Vec<String> = users.iter().map(Uuid::to_string).collect();
        expected.sort();
        assert_eq!(seen, expected, "each user reported added exactly once");
        for u in users {
            assert!(row(&app, t.id, u).await.unwrap().2);
        }
    }
}

// ----- change role ------------------------------------------------------------------------------

#[tokio::test]
async fn role_changes_check_ids_body_header_role_then_the_conversation() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let (owner, member) = (Uuid::new_v4(), Uuid::new_v4());
    let r = app
        .post_json(
            "/conversations",
            As::Header(owner),
            json!({"type": "group", "name": "g", "participant_ids": [member]}),
        )
        .await;
    let conv: Uuid = r.data()["id"].as_str().unwrap().parse().unwrap();
    let unknown = Uuid::new_v4();
    let put = |path: String, who: As, body: &'static [u8]| {
        let app = &app;
        async move { app.send("PUT", &path, who, Some(body.to_vec())).await }
    };
    put(
        "/conversations/nope/participants/nope".into(),
        As::Nobody,
        b"{",
    )
    .await
    .assert_error(
        400,
        "BAD_REQUEST",
        "Invalid conversation ID format, expected UUID",
    );
    put(
        format!("/conversations/{conv}/participants/nope"),
        As::Nobody,
        b"{",
    )
    .await
    .assert_error(400, "BAD_REQUEST", "Invalid user ID format, expected UUID");
    for body in [
        &b""[..],
        b"{",
        b"[]",
        br#"{"role": 5}"#,
        br#"{"role": ["owner"]}"#,
    ] {
        put(participant_path(conv, member), As::Nobody, body)
            .await
            .assert_error(400, "BAD_REQUEST", "Invalid JSON body");
    }
    let big = format!(r#"{{"role":"admin","pad":"{}"}}"#, "x".repeat(1024 * 1024));
    let r = app
        .send(
            "PUT",
            &participant_path(conv, member),
            As::Nobody,
            Some(big.into_bytes()),
        )
        .await;
    r.assert_error(413, "PAYLOAD_TOO_LARGE", "Request body too large");
    put(
        participant_path(conv, member),
        As::Nobody,
        br#"{"role": "nonsense"}"#,
    )
    .await
    .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    // role rules come before the conversation is looked up
    for (body, message) in [
        (&b"{}"[..], "role is required"),
        (b"null", "role is required"),
        (br#"{"role": null}"#, "role is required"),
        (br#"{"role": ""}"#, "role is required"),
        (
            br#"{"role": "Owner"}"#,
            "role must be one of: owner, admin, member",
        ),
        (
            br#"{"role": "guest"}"#,
            "role must be one of: owner, admin, member",
        ),
        (
            br#"{"role": " admin"}"#,
            "role must be one of: owner, admin, member",
        ),
    ] {
        put(participant_path(unknown, member), As::Header(owner), body)
            .await
            .assert_validation(json!({ "role": message }));
    }
    put(
        participant_path(unknown, member),
        As::Header(owner),
        br#"{"role": "admin"}"#,
    )
    .await
    .assert_error(404, "NOT_FOUND", "Conversation not found");
    // every UUID form of the user id
    let r = put(
        format!(
            "/conversations/{conv}/participants/{}",
            member.simple().to_string().to_uppercase()
        ),
        As::Header(owner),
        br#"{"role": "admin"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["user_id"], member.to_string());
}

#[tokio::test]
async fn only_the_owner_changes_roles_of_active_participants_outside_direct_conversations() {
    let app = spawn_app().await;
    let t = team(&app, "channel").await;
    let (a, b, stranger, former) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let dm = app.create_conversation(a, "direct", &[b]).await;
    add(&app, t.id, t.owner, &[former]).await;
    remove(&app, t.id, former, former).await;
    let cases: Vec<(Uuid, Uuid, Uuid, &str, u16, &str, &str)> = vec![
        (
            dm,
            a,
            b,
            "admin",
            400,
            "BAD_REQUEST",
            "Cannot change roles in a direct conversation",
        ),
        (
            dm,
            stranger,
            b,
            "owner",
            400,
            "BAD_REQUEST",
            "Cannot change roles in a direct conversation",
        ),
        (
            t.id,
            stranger,
            t.member,
            "admin",
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        ),
        (
            t.id,
            former,
            t.member,
            "admin",
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        ),
        (
            t.id,
            t.admin,
            t.member,
            "admin",
            403,
            "FORBIDDEN",
            "Only the owner can change roles",
        ),
        (
            t.id,
            t.admin,
            t.admin,
            "owner",
            403,
            "FORBIDDEN",
            "Only the owner can change roles",
        ),
        (
            t.id,
            t.member,
            t.member,
            "admin",
            403,
            "FORBIDDEN",
            "Only the owner can change roles",
        ),
        (
            t.id,
            t.owner,
            stranger,
            "admin",
            404,
            "NOT_FOUND",
            "Participant not found",
        ),
        (
            t.id,
            t.owner,
            former,
            "member",
            404,
            "NOT_FOUND",
            "Participant not found",
        ),
        (
            t.id,
            t.owner,
            t.owner,
            "admin",
            400,
            "BAD_REQUEST",
            "Transfer ownership before changing the owner's role",
        ),
        (
            t.id,
            t.owner,
            t.owner,
            "member",
            400,
            "BAD_REQUEST",
            "Transfer ownership before changing the owner's role",
        ),
    ];
    let mut events = AllEvents::subscribe(&app).await;
    for (conv, who, target, role, status, code, message) in cases {
        change_role(&app, conv, who, target, role)
            .await
            .assert_error(status, code, message);
    }
    events.assert_quiet(200).await;
    assert_eq!(
        roster(&app, t.id).await,
        [
            (t.owner, "owner".into()),
            (t.admin, "admin".into()),
            (t.member, "member".into())
        ]
    );
}

#[tokio::test]
async fn the_owner_promotes_and_demotes_with_one_event_per_change() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    let mut events = AllEvents::subscribe(&app).await;

    for (target, role) in [(t.member, "admin"), (t.admin, "member")] {
        let r = change_role(&app, t.id, t.owner, target, role).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let data = r.data();
        assert_eq!(keys(&data), PARTICIPANT_KEYS);
        assert_eq!(data["user_id"], target.to_string());
        assert_eq!(data["role"], role);
        assert_eq!(row(&app, t.id, target).await.unwrap().1, role);
        let (subject, frame) = events.next().await;
        assert_eq!(subject, format!("conv.{}", t.id));
        assert_eq!(frame["type"], "participant.updated");
        assert_eq!(frame["payload"], data);
    }
    // the same role again, and the owner naming themself owner: 200, nothing written, no event
    for (target, role) in [(t.member, "admin"), (t.admin, "member"), (t.owner, "owner")] {
        let before = row(&app, t.id, target).await.unwrap();
        let r = change_role(&app, t.id, t.owner, target, role).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.data()["role"], role);
        assert_eq!(r.data()["id"], before.0.to_string());
        assert_eq!(row(&app, t.id, target).await.unwrap(), before);
    }
    events.assert_quiet(300).await;
}

#[tokio::test]
async fn naming_someone_else_owner_transfers_ownership() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    let mut events = AllEvents::subscribe(&app).await;
    let r = change_role(&app, t.id, t.owner, t.member, "owner").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.data()["user_id"], t.member.to_string());
    assert_eq!(r.data()["role"], "owner");
    assert_eq!(
        roster(&app, t.id).await,
        [
            (t.owner, "admin".into()),
            (t.admin, "admin".into()),
            (t.member, "owner".into())
        ]
    );
    // the target first, then the previous owner
    let (_, first) = events.next().await;
    assert_eq!(first["type"], "participant.updated");
    assert_eq!(first["payload"], r.data());
    let (_, second) = events.next().await;
    assert_eq!(second["type"], "participant.updated");
    assert_eq!(second["payload"]["user_id"], t.owner.to_string());
    assert_eq!(second["payload"]["role"], "admin");
    events.assert_quiet(200).await;
    // creator_id does not follow ownership
    let detail = detail_as_event(&app, t.id, t.member).await;
    assert_eq!(detail["creator_id"], t.owner.to_string());
    // the old owner has lost the right, the new one has it
    change_role(&app, t.id, t.owner, t.admin, "member")
        .await
        .assert_error(403, "FORBIDDEN", "Only the owner can change roles");
    assert_eq!(
        change_role(&app, t.id, t.member, t.owner, "member")
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn concurrent_transfers_leave_exactly_one_owner() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let t = team(&app, "group").await;
        let (to_admin, to_member) = tokio::join!(
            change_role(&app, t.id, t.owner, t.admin, "owner"),
            change_role(&app, t.id, t.owner, t.member, "owner"),
        );
        let mut statuses = [to_admin.status, to_member.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [200, 403],
            "{} / {}",
            to_admin.text,
            to_member.text
        );
        let (winner, loser) = if to_admin.status == 200 {
            (t.admin, &to_member)
        } else {
            (t.member, &to_admin)
        };
        loser.assert_error(403, "FORBIDDEN", "Only the owner can change roles");
        let owners: Vec<Uuid> = roster(&app, t.id)
            .await
            .into_iter()
            .filter(|(_, role)| role == "owner")
            .map(|(u, _)| u)
            .collect();
        assert_eq!(owners, [winner]);
    }
}

// ----- remove or leave --------------------------------------------------------------------------

#[tokio::test]
async fn leaving_is_a_soft_delete_announced_to_the_room_then_to_the_user() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    let mut events = AllEvents::subscribe(&app).await;
    let r = remove(&app, t.id, t.member, t.member).await;
    assert_no_content(&r);
    let stored = row(&app, t.id, t.member).await.unwrap();
    assert!(!stored.2);
    assert_eq!(stored.1, "member");

    let (subject, frame) = events.next().await;
    assert_eq!(subject, format!("conv.{}", t.id));
    assert_eq!(
        frame,
        json!({"type": "participant.removed", "conversation_id": t.id.to_string(),
               "payload": {"conversation_id": t.id.to_string(), "user_id": t.member.to_string()}})
    );
    let (subject, frame) = events.next().await;
    assert_eq!(subject, format!("user.{}", t.member));
    assert_eq!(
        frame,
        json!({"type": "conversation.left", "conversation_id": t.id.to_string(),
               "payload": {"conversation_id": t.id.to_string(), "user_id": t.member.to_string()}})
    );
    events.assert_quiet(200).await;

    // gone from everything, and cannot leave twice
    app.get_as(&format!("/conversations/{}", t.id), As::User(t.member))
        .await
        .assert_error(
            403,
            "FORBIDDEN",
            "You are not a participant of this conversation",
        );
    let r = app.get_as("/conversations", As::User(t.member)).await;
    assert_eq!(r.json()["pagination"]["total"], 0);
    remove(&app, t.id, t.member, t.member)
        .await
        .assert_error(403, "FORBIDDEN", NOT_PARTICIPANT);
    remove(&app, t.id, Uuid::new_v4(), Uuid::nil())
        .await
        .assert_error(403, "FORBIDDEN", NOT_PARTICIPANT);
    events.assert_quiet(200).await;
}

#[tokio::test]
async fn remove_and_leave_check_ids_then_the_header_then_the_conversation() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let u = Uuid::new_v4();
    let unknown = Uuid::new_v4();
    let cases: Vec<(String, As, u16, &str)> = vec![
        (
            "/conversations/nope/participants/nope".into(),
            As::Nobody,
            400,
            "Invalid conversation ID format, expected UUID",
        ),
        (
            format!("/conversations/{unknown}/participants/nope"),
            As::Nobody,
            400,
            "Invalid user ID format, expected UUID",
        ),
        (
            participant_path(unknown, u),
            As::Nobody,
            400,
            "Missing or invalid X-User-ID header",
        ),
        (
            participant_path(unknown, u),
            As::Header(u),
            404,
            "Conversation not found",
        ),
        (
            participant_path(unknown, Uuid::new_v4()),
            As::Header(u),
            404,
            "Conversation not found",
        ),
    ];
    for (path, who, status, message) in cases {
        let r = app.delete_as(&path, who).await;
        assert_eq!(r.status, status, "{path}: {}", r.text);
        assert_eq!(r.json()["error"]["message"], message);
    }
}

#[tokio::test]
async fn removal_rights_follow_the_matrix_and_the_documented_check_order() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    let (admin2, member2, former, stranger) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    add(&app, t.id, t.owner, &[admin2, member2, former]).await;
    set_role(&app, t.id, admin2, "admin").await;
    assert_no_content(&remove(&app, t.id, former, former).await);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let dm = app.create_conversation(a, "direct", &[b]).await;

    let cases: Vec<(Uuid, Uuid, Uuid, u16, &str, &str)> = vec![
        (
            Uuid::new_v4(),
            t.owner,
            t.member,
            404,
            "NOT_FOUND",
            "Conversation not found",
        ),
        (
            dm,
            a,
            b,
            400,
            "BAD_REQUEST",
            "Cannot remove participants from a direct conversation",
        ),
        (
            dm,
            stranger,
            b,
            400,
            "BAD_REQUEST",
            "Cannot remove participants from a direct conversation",
        ),
        (t.id, stranger, t.member, 403, "FORBIDDEN", NOT_PARTICIPANT),
        (t.id, former, t.member, 403, "FORBIDDEN", NOT_PARTICIPANT),
        (t.id, t.member, member2, 403, "FORBIDDEN", CANNOT_REMOVE),
        // the caller's role is checked before the target's participation
        (t.id, t.member, stranger, 403, "FORBIDDEN", CANNOT_REMOVE),
        (t.id, t.member, t.owner, 403, "FORBIDDEN", CANNOT_REMOVE),
        (t.id, t.admin, stranger, 403, "FORBIDDEN", NOT_PARTICIPANT),
        (t.id, t.admin, former, 403, "FORBIDDEN", NOT_PARTICIPANT),
        (t.id, t.owner, former, 403, "FORBIDDEN", NOT_PARTICIPANT),
        (t.id, t.admin, t.owner, 403, "FORBIDDEN", CANNOT_REMOVE),
        (t.id, t.admin, admin2, 403, "FORBIDDEN", CANNOT_REMOVE),
    ];
    let mut events = AllEvents::subscribe(&app).await;
    for (conv, who, target, status, code, message) in cases {
        remove(&app, conv, who, target)
            .await
            .assert_error(status, code, message);
    }
    events.assert_quiet(200).await;
    assert_eq!(roster(&app, t.id).await.len(), 5);
    assert_eq!(roster(&app, dm).await.len(), 2);

    // admin → member, owner → admin, owner → member
    for (who, target) in [(t.admin, t.member), (t.owner, admin2), (t.owner, member2)] {
        assert_no_content(&remove(&app, t.id, who, target).await);
        let (_, removed) = events.next().await;
        assert_eq!(removed["type"], "participant.removed");
        assert_eq!(removed["payload"]["user_id"], target.to_string());
        let (subject, left) = events.next().await;
        assert_eq!(subject, format!("user.{target}"));
        assert_eq!(left["type"], "conversation.left");
        assert!(!row(&app, t.id, target).await.unwrap().2);
    }
    events.assert_quiet(200).await;
    assert_eq!(
        roster(&app, t.id).await,
        [(t.owner, "owner".into()), (t.admin, "admin".into())]
    );
}

#[tokio::test]
async fn when_the_owner_leaves_the_longest_standing_admin_becomes_owner() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let (old_member, early_admin, late_admin) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let conv = app
        .create_conversation(owner, "channel", &[late_admin, early_admin, old_member])
        .await;
    for (user, role, hours) in [
        (old_member, "member", 3),
        (early_admin, "admin", 2),
        (late_admin, "admin", 1),
    ] {
        sqlx::query(
            "update conversation_participants set role = $3, joined_at = now() - make_interval(hours => $4)
             where conversation_id = $1 and user_id = $2",
        )
        .bind(conv)
        .bind(user)
        .bind(role)
        .bind(hours)
        .execute(&app.pool)
        .await
        .unwrap();
    }
    let mut events = AllEvents::subscribe(&app).await;
    assert_no_content(&remove(&app, conv, owner, owner).await);

    let (subject, removed) = events.next().await;
    assert_eq!(subject, format!("conv.{conv}"));
    assert_eq!(removed["type"], "participant.removed");
    assert_eq!(removed["payload"]["user_id"], owner.to_string());
    let (subject, updated) = events.next().await;
    assert_eq!(subject, format!("conv.{conv}"));
    assert_eq!(updated["type"], "participant.updated");
    let detail = detail_as_event(&app, conv, early_admin).await;
    let new_owner = detail["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["user_id"] == early_admin.to_string())
        .unwrap()
        .clone();
    assert_eq!(new_owner["role"], "owner");
    assert_eq!(updated["payload"], new_owner);
    let (subject, left) = events.next().await;
    assert_eq!(subject, format!("user.{owner}"));
    assert_eq!(left["type"], "conversation.left");
    events.assert_quiet(200).await;

    assert_eq!(
        roster(&app, conv).await,
        [
            (old_member, "member".into()),
            (early_admin, "owner".into()),
            (late_admin, "admin".into())
        ]
    );
    assert_eq!(detail["creator_id"], owner.to_string());
}

#[tokio::test]
async fn without_admins_the_first_member_inherits_and_the_last_one_out_leaves_no_owner() {
    let app = spawn_app().await;
    let owner = Uuid::new_v4();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    // same joined_at: ties go in insertion (participant_ids) order
    let conv = app.create_group(owner, &[first, second]).await;
    let mut events = AllEvents::subscribe(&app).await;

    for (leaver, heir) in [(owner, first), (first, second)] {
        assert_no_content(&remove(&app, conv, leaver, leaver).await);
        assert_eq!(events.next().await.1["type"], "participant.removed");
        let (_, updated) = events.next().await;
        assert_eq!(updated["type"], "participant.updated");
        assert_eq!(updated["payload"]["user_id"], heir.to_string());
        assert_eq!(updated["payload"]["role"], "owner");
        assert_eq!(events.next().await.1["type"], "conversation.left");
        assert_eq!(roster(&app, conv).await[0], (heir, "owner".into()));
    }
    assert_no_content(&remove(&app, conv, second, second).await);
    assert_eq!(events.next().await.1["type"], "participant.removed");
    assert_eq!(events.next().await.1["type"], "conversation.left");
    events.assert_quiet(200).await;
    assert!(roster(&app, conv).await.is_empty());
}

#[tokio::test]
async fn either_user_of_a_direct_conversation_may_leave_which_frees_the_pair() {
    let app = spawn_app().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let dm = app.create_conversation(a, "direct", &[b]).await;
    let mut events = AllEvents::subscribe(&app).await;
    assert_no_content(&remove(&app, dm, b, b).await);
    let pair: (Option<Uuid>, Option<Uuid>) =
        sqlx::query_as("select direct_user_low, direct_user_high from conversations where id = $1")
            .bind(dm)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(pair, (None, None));
    assert_eq!(events.next().await.1["type"], "participant.removed");
    let (subject, left) = events.next().await;
    assert_eq!(subject, format!("user.{b}"));
    assert_eq!(left["type"], "conversation.left");
    events.assert_quiet(200).await;
    // the other stays, and may leave too
    assert_eq!(roster(&app, dm).await, [(a, "member".into())]);
    assert_no_content(&remove(&app, dm, a, a).await);
    assert!(roster(&app, dm).await.is_empty());
    // the pair may talk again, in a new conversation
    let r = app
        .post_json(
            "/conversations",
            As::User(a),
            json!({"type": "direct", "participant_ids": [b]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn concurrent_departures_of_the_owner_and_the_heir_still_leave_an_owner() {
    let app = spawn_app().await;
    for _ in 0..5 {
        let t = team(&app, "group").await;
        let (x, y) = tokio::join!(
            remove(&app, t.id, t.owner, t.owner),
            remove(&app, t.id, t.admin, t.admin),
        );
        assert_no_content(&x);
        assert_no_content(&y);
        assert_eq!(roster(&app, t.id).await, [(t.member, "owner".into())]);
    }
}

#[tokio::test]
async fn concurrent_removals_of_one_participant_give_one_204_and_a_403() {
    let app = spawn_app().await;
    let t = team(&app, "group").await;
    let (x, y) = tokio::join!(
        remove(&app, t.id, t.owner, t.member),
        remove(&app, t.id, t.admin, t.member),
    );
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [204, 403], "{} / {}", x.text, y.text);
    let loser = if x.status == 403 { &x } else { &y };
    loser.assert_error(403, "FORBIDDEN", NOT_PARTICIPANT);
}

// ----- join -------------------------------------------------------------------------------------

#[tokio::test]
async fn anyone_joins_a_channel_as_a_member_even_an_archived_one() {
    let app = spawn_app().await;
    let t = team(&app, "channel").await;
    let joiner = Uuid::new_v4();
    let mut events = AllEvents::subscribe(&app).await;
    let r = join(&app, t.id, joiner).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let data = r.data();
    assert_eq!(keys(&data), PARTICIPANT_KEYS);
    assert_eq!(data["user_id"], joiner.to_string());
    assert_eq!(data["conversation_id"], t.id.to_string());
    assert_eq!(data["role"], "member");
    assert_eq!(
        data["id"],
        row(&app, t.id, joiner).await.unwrap().0.to_string()
    );

    let (subject, joined) = events.next().await;
    assert_eq!(subject, format!("user.{joiner}"));
    assert_eq!(joined["type"], "conversation.joined");
    assert_eq!(joined["payload"], detail_as_event(&app, t.id, joiner).await);
    let (subject, added) = events.next().await;
    assert_eq!(subject, format!("conv.{}", t.id));
    assert_eq!(
        added,
        json!({"type": "participant.added", "conversation_id": t.id.to_string(),
               "payload": {"conversation_id": t.id.to_string(), "participants": [data]}})
    );
    events.assert_quiet(200).await;

    assert_eq!(
        app.delete_as(&format!("/conversations/{}", t.id), As::User(t.owner))
            .await
            .status,
        200
    );
    let late = Uuid::new_v4();
    assert_eq!(join(&app, t.id, late).await.status, 201);
}

#[tokio::test]
async fn join_checks_the_id_header_conversation_type_and_membership_in_order() {
    let app = spawn_app_with(&[("AUTH_MODE", "header")]).await;
    let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
    let mk = |kind: &'static str| {
        let app = &app;
        async move {
            let mut body = json!({"type": kind, "participant_ids": [other]});
            if kind != "direct" {
                body["name"] = json!("n");
            }
            let r = app
                .post_json("/conversations", As::Header(owner), body)
                .await;
            r.data()["id"].as_str().unwrap().parse::<Uuid>().unwrap()
        }
    };
    let (channel, group, dm) = (mk("channel").await, mk("group").await, mk("direct").await);
    let stranger = Uuid::new_v4();
    let post = |path: String, who: As| {
        let app = &app;
        async move {
            app.send("POST", &path, who, Some(b"{not json".to_vec()))
                .await
        }
    };
    post("/conversations/nope/join".into(), As::Nobody)
        .await
        .assert_error(
            400,
            "BAD_REQUEST",
            "Invalid conversation ID format, expected UUID",
        );
    post(
        format!("/conversations/{}/join", Uuid::new_v4()),
        As::Nobody,
    )
    .await
    .assert_error(400, "BAD_REQUEST", "Missing or invalid X-User-ID header");
    post(
        format!("/conversations/{}/join", Uuid::new_v4()),
        As::Header(stranger),
    )
    .await
    .assert_error(404, "NOT_FOUND", "Conversation not found");
    for conv in [group, dm] {
        for who in [stranger, owner] {
            post(format!("/conversations/{conv}/join"), As::Header(who))
                .await
                .assert_error(400, "BAD_REQUEST", "Only channels can be joined");
        }
    }
    for who in [owner, other] {
        let r = post(format!("/conversations/{channel}/join"), As::Header(who)).await;
        r.assert_error(409, "CONFLICT", "Already a participant");
        assert!(!r.text.contains("\"data\""));
    }
    // the body is ignored
    let r = post(
        format!("/conversations/{channel}/join"),
        As::Header(stranger),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test]
async fn a_former_member_rejoins_in_the_same_row() {
    let app = spawn_app().await;
    let t = team(&app, "channel").await;
    let before = row(&app, t.id, t.admin).await.unwrap();
    assert_no_content(&remove(&app, t.id, t.admin, t.admin).await);
    let r = join(&app, t.id, t.admin).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.data()["id"], before.0.to_string());
    assert_eq!(r.data()["role"], "member");
    let after = row(&app, t.id, t.admin).await.unwrap();
    assert!(after.2 && after.3 > before.3 && after.4 > before.4);
    assert_eq!(after.1, "member");
    assert_eq!(roster(&app, t.id).await.last().unwrap().0, t.admin);
}

#[tokio::test]
async fn concurrent_joins_give_one_201_and_409s_for_the_rest() {
    let app = spawn_app().await;
    let t = team(&app, "channel").await;
    for rejoin in [false, true] {
        let user = if rejoin { t.member } else { Uuid::new_v4() };
        if rejoin {
            assert_no_content(&remove(&app, t.id, user, user).await);
        }
        let replies = futures_util::future::join_all((0..6).map(|_| join(&app, t.id, user))).await;
        let created = replies.iter().filter(|r| r.status == 201).count();
        assert_eq!(created, 1, "rejoin: {rejoin}");
        for r in replies.iter().filter(|r| r.status != 201) {
            r.assert_error(409, "CONFLICT", "Already a participant");
        }
        let n: i64 = sqlx::query_scalar(
            "select count(*) from conversation_participants where conversation_id = $1 and user_id = $2",
        )
        .bind(t.id)
        .bind(user)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        assert_eq!(n, 1);
    }
    // different users at once all get in
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let replies = futures_util::future::join_all(users.iter().map(|u| join(&app, t.id, *u))).await;
    assert!(replies.iter().all(|r| r.status == 201));
    assert_eq!(roster(&app, t.id).await.len(), 3 + 1 + 6);
}

#[tokio::test]
async fn joining_does_not_consult_the_user_service() {
    let stub = user_stub(HashMap::new(), 200).await;
    let app = spawn_app_with(&[("USER_SERVICE_URL", stub.url.as_str())]).await;
    let t = team(&app, "channel").await;
    stub.clear();
    let joiner = Uuid::new_v4();
    stub.answer(joiner, 500);
    assert_eq!(join(&app, t.id, joiner).await.status, 201);
    assert!(stub.asked().is_empty());
}
