//! `spawn_app()` and the test client: a fresh database (migrated), a random NATS subject prefix
//! and Redis key prefix per test, the service bound to a free port and run in the background.

use std::{collections::HashMap, time::Duration};

use api_service::{config::Settings, startup::Application};
use retich_migrations as migrate;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const JWT_SECRET: &str = "test-secret";

/// The maintenance database used to create and drop test databases
/// (`TEST_DATABASE_ADMIN_URL`, default: the local server's `postgres` database).
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that is dropped when the value goes away.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// Creates an empty database with a unique name.
    pub async fn create() -> Self {
        let name = format!("api_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("admin connection");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
            .execute(&mut admin)
            .await
            .expect("create database");
        let admin = admin_url();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Self { name, url }
    }

    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.url)
            .await
            .expect("connect test database")
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect_with(self.url.parse::<PgConnectOptions>().unwrap())
            .await
            .expect("pool")
    }

    /// Drops the database now (the server closes its connections).
    pub async fn drop_now(&self) {
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("admin connection");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "drop database if exists {} with (force)",
            self.name
        )))
        .execute(&mut admin)
        .await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Dropped from a plain thread: Drop cannot await, and the test's runtime may be gone.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "drop database if exists {name} with (force)"
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}

/// A running api-service with its own database and prefixes.
pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub pool: PgPool,
    pub nats_prefix: String,
    pub redis_prefix: String,
    /// The app's own Redis handle (its circuit and connection attempts).
    pub redis: std::sync::Arc<shared_redis::RedisConn>,
    pub client: reqwest::Client,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Settings for a test: local services, port 0, the test's own prefixes.
pub fn test_settings(db_url: &str, extra: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = HashMap::new();
    let nats_prefix = format!("t{}", Uuid::new_v4().simple());
    let uploads =
        std::env::temp_dir().join(format!("retich-test-uploads-{}", Uuid::new_v4().simple()));
    let uploads = uploads.to_string_lossy().into_owned();
    for (k, v) in [
        ("PORT", "0"),
        ("HOST", "127.0.0.1"),
        ("DATABASE_URL", db_url),
        ("DATABASE_MAX_CONNECTIONS", "8"),
        ("NATS_SUBJECT_PREFIX", nats_prefix.as_str()),
        ("REDIS_KEY_PREFIX", nats_prefix.as_str()),
        ("JWT_SECRET", JWT_SECRET),
        ("LOG_LEVEL", "warn"),
        ("UPLOAD_DIR", uploads.as_str()),
    ] {
        vars.insert(k.into(), v.into());
    }
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    Settings::from_map(&vars).expect("test settings")
}

/// Spawns the service against a fresh, fully migrated database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// [`spawn_app`] with extra environment variables.
pub async fn spawn_app_with(extra: &[(&str, &str)]) -> TestApp {
    shared_auth::install_crypto_provider();
    let db = TestDb::create().await;
    migrate::up(&mut db.connect().await, None)
        .await
        .expect("migrate");
    let settings = test_settings(&db.url, extra);
    let nats_prefix = settings.nats_subject_prefix.clone();
    let redis_prefix = settings.redis_key_prefix.clone();
    let app = Application::build(settings).await.expect("build app");
    let address = format!("http://127.0.0.1:{}", app.port());
    let redis = app.state().redis.clone();
    let pool = db.pool().await;
    let stop = CancellationToken::new();
    let token = stop.clone();
    let server = tokio::spawn(app.run_until(async move { token.cancelled().await }));
    TestApp {
        address,
        db,
        pool,
        nats_prefix,
        redis_prefix,
        redis,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        stop,
        server: Some(server),
    }
}

impl TestApp {
    /// The `seq` of every stored message of `conversation`, ascending.
    pub async fn stored_seqs(&self, conversation: Uuid) -> Vec<i64> {
        sqlx::query_scalar("select seq from messages where conversation_id = $1 order by seq")
            .bind(conversation)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// Stops the server and waits for it to end.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server)
                .await
                .expect("server stops")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A development token for `user`.
pub fn token_for(user: Uuid) -> String {
    let config = shared_auth::JwtConfig {
        secret: Some(JWT_SECRET.into()),
        ..Default::default()
    };
    shared_auth::mint_token(&config, user, Duration::from_secs(3600)).unwrap()
}

// ----- requests -----------------------------------------------------------------------------------

/// A response read whole: status, headers and body (parsed as JSON when it is JSON).
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// `data` of a success envelope.
    pub fn data(&self) -> serde_json::Value {
        self.json()["data"].clone()
    }

    /// Asserts an error envelope: status, code and message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, message: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        let v = self.json();
        assert_eq!(v["error"]["code"], code, "body: {}", self.text);
        assert_eq!(v["error"]["message"], message, "body: {}", self.text);
    }

    /// Asserts a `VALIDATION_ERROR` with exactly these details.
    #[track_caller]
    pub fn assert_validation(&self, details: serde_json::Value) {
        self.assert_error(400, "VALIDATION_ERROR", "Invalid request parameters");
        assert_eq!(
            self.json()["error"]["details"],
            details,
            "body: {}",
            self.text
        );
    }
}

/// How a test request identifies its caller.
#[derive(Clone, Copy)]
pub enum As {
    /// No credentials at all.
    Nobody,
    /// jwt mode: `Authorization: Bearer <token for user>`.
    User(Uuid),
    /// header mode: `X-User-ID: <user>`.
    Header(Uuid),
}

impl TestApp {
    /// Sends `method path` as `who` with an optional raw body.
    pub async fn send(&self, method: &str, path: &str, who: As, body: Option<Vec<u8>>) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, self.url(path));
        match who {
            As::Nobody => {}
            As::User(u) => req = req.bearer_auth(token_for(u)),
            As::Header(u) => req = req.header("X-User-ID", u.to_string()),
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Reply {
            status,
            headers,
            text,
        }
    }

    pub async fn get_as(&self, path: &str, who: As) -> Reply {
        self.send("GET", path, who, None).await
    }

    pub async fn post_json(&self, path: &str, who: As, body: serde_json::Value) -> Reply {
        self.send("POST", path, who, Some(serde_json::to_vec(&body).unwrap()))
            .await
    }

    pub async fn put_json(&self, path: &str, who: As, body: serde_json::Value) -> Reply {
        self.send("PUT", path, who, Some(serde_json::to_vec(&body).unwrap()))
            .await
    }

    pub async fn delete_as(&self, path: &str, who: As) -> Reply {
        self.send("DELETE", path, who, None).await
    }

    /// Creates a group owned by `owner` with `members`; returns its id.
    pub async fn create_group(&self, owner: Uuid, members: &[Uuid]) -> Uuid {
        self.create_conversation(owner, "group", members).await
    }

    /// Creates a conversation of `kind` (`direct` takes one member); returns its id.
    pub async fn create_conversation(&self, owner: Uuid, kind: &str, members: &[Uuid]) -> Uuid {
        let mut body = serde_json::json!({"type": kind, "participant_ids": members});
        if kind != "direct" {
            body["name"] = serde_json::json!(format!(
                "{kind} {}",
                &Uuid::new_v4().simple().to_string()[..8]
            ));
        }
        let r = self
            .post_json("/conversations", As::User(owner), body)
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.data()["id"].as_str().unwrap().parse().unwrap()
    }

    /// Subscribes to a conversation's NATS subject (subscribe before the action under test).
    pub async fn conversation_events(&self, conversation: Uuid) -> Events {
        Events::subscribe(shared_proto::subjects::conversation(
            &self.nats_prefix,
            &conversation,
        ))
        .await
    }

    /// Subscribes to every event on `subject` (a wildcard is allowed).
    pub async fn events_on(&self, subject: String) -> Events {
        Events::subscribe(subject).await
    }

    /// Subscribes to what reaches a user personally: events on the user's subject, and those on
    /// `user.many.<conversation>` that list the user among their `target_user_ids`.
    pub async fn user_events(&self, user: Uuid) -> Events {
        let mut events =
            Events::subscribe(shared_proto::subjects::all_users(&self.nats_prefix)).await;
        events.user = Some(user);
        events
    }
}

// ----- events -------------------------------------------------------------------------------------

/// Events received on one NATS subject, decoded.
pub struct Events {
    sub: async_nats::Subscriber,
    _client: async_nats::Client,
    /// Only the personal events of this user (see [`TestApp::user_events`]).
    user: Option<Uuid>,
}

impl Events {
    async fn subscribe(subject: String) -> Self {
        let client = async_nats::connect("nats://127.0.0.1:4222")
            .await
            .expect("nats");
        let sub = client.subscribe(subject).await.expect("subscribe");
        client.flush().await.expect("flush subscription");
        Self {
            sub,
            _client: client,
            user: None,
        }
    }

    /// Whether `event` is one this subscription reports (all, or those for its user).
    fn wanted(&self, event: &shared_proto::events::Event) -> bool {
        let Some(user) = self.user else {
            return true;
        };
        let user = user.to_string();
        event.target_user_id.as_deref() == Some(user.as_str())
            || event.target_user_ids.contains(&user)
    }

    /// The next event (fails after 5 s).
    pub async fn next(&mut self) -> shared_proto::events::Event {
        use futures_util::StreamExt;
        use prost::Message as _;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let msg = tokio::time::timeout_at(deadline, self.sub.next())
                .await
                .expect("an event within 5 s")
                .expect("subscription open");
            let event = shared_proto::events::Event::decode(msg.payload).expect("protobuf Event");
            if self.wanted(&event) {
                return event;
            }
        }
    }

    /// The next event rendered as the client frame JSON (`{"type","conversation_id","payload"}`).
    pub async fn next_frame(&mut self) -> serde_json::Value {
        let event = self.next().await;
        serde_json::from_slice(&shared_proto::json::client_frame(&event).expect("renders")).unwrap()
    }

    /// Asserts that nothing arrives within `ms` milliseconds.
    pub async fn assert_quiet(&mut self, ms: u64) {
        use futures_util::StreamExt;
        use prost::Message as _;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, self.sub.next()).await {
            let event = shared_proto::events::Event::decode(msg.payload).expect("protobuf Event");
            if self.wanted(&event) {
                panic!("unexpected event: {event:?}");
            }
        }
    }
}
