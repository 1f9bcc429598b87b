//! What every gateway test needs: a fresh environment (its own database, NATS subject prefix
//! and Redis key prefix), gateways in-process or as real processes, a WebSocket client, rows in
//! the database and events on NATS published exactly as api-service publishes them.
//!
//! Every wait is bounded by [`WAIT`]; nothing asserts on speed.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    process::Stdio,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use shared_proto::{
    events::{self, Event, EventKind, event::Body},
    prost::Message as _,
    subjects,
};
use shared_redis::fred::{
    interfaces::{ClientLike, KeysInterface},
    types::CustomCommand,
};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgPoolOptions};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest, http::HeaderValue},
};
use uuid::Uuid;
use ws_gateway::{Application, config::Settings};

/// Upper bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long a socket must stay quiet to count as "received nothing" — only used after a
/// sentinel that must arrive later has already arrived.
pub const QUIET: Duration = Duration::from_millis(400);

/// Awaits `future`, failing the test with `what` after [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    within_for(WAIT, what, future).await
}

/// Awaits `future`, failing the test with `what` after `limit`.
pub async fn within_for<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// One test's world: a database, a subject prefix, a key prefix, a JWT secret.
pub struct TestEnv {
    pub db_name: String,
    pub database_url: String,
    pub db: PgPool,
    pub subject_prefix: String,
    pub redis_prefix: String,
    pub secret: String,
    pub nats: async_nats::Client,
    /// `REDIS_URL` of this test's gateways: the shared server, or a cluster of the test's own.
    pub redis_url: String,
    /// A client of the test's own on `redis_url`.
    pub redis: shared_redis::fred::clients::Client,
}

impl TestEnv {
    /// A test's world on the shared Redis (127.0.0.1:6379).
    pub async fn new() -> Self {
        Self::with_redis("redis://127.0.0.1:6379").await
    }

    /// A test's world whose gateways use Redis at `redis_url` (e.g. a test cluster's).
    pub async fn with_redis(redis_url: &str) -> Self {
        // The test process's rustls provider, as the binaries install it in `main`.
        shared_auth::install_crypto_provider();
        let id = Uuid::new_v4().simple().to_string();
        let db_name = format!("gw_test_{id}");
        let database_url = format!("postgres://root@127.0.0.1:5432/{db_name}");
        within("the test database", async {
            retich_migrations::create_database_if_missing(&database_url)
                .await
                .expect("create the test database");
            let mut conn = PgConnection::connect(&database_url)
                .await
                .expect("connect to the test database");
            retich_migrations::up(&mut conn, None)
                .await
                .expect("migrate the test database");
            conn.close().await.ok();
        })
        .await;
        let db = PgPoolOptions::new()
            .max_connections(4)
            .connect(&database_url)
            .await
            .expect("pool");
        let nats = async_nats::connect("nats://127.0.0.1:4222")
            .await
            .expect("NATS on 127.0.0.1:4222");
        let redis = shared_redis::testing::connect(redis_url)
            .await
            .unwrap_or_else(|e| panic!("Redis at {redis_url}: {e}"));
        Self {
            db_name,
            database_url,
            db,
            subject_prefix: format!("gwtest.{id}"),
            redis_prefix: format!("gwtest:{id}"),
            secret: format!("secret-{id}"),
            nats,
            redis_url: redis_url.to_owned(),
            redis,
        }
    }

    /// The environment variables of a gateway of this test (plus `extra`).
    pub fn vars(&self, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut vars: HashMap<String, String> = [
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("LOG_LEVEL", "warn"),
            ("DATABASE_URL", self.database_url.as_str()),
            ("NATS_URL", "nats://127.0.0.1:4222"),
            ("NATS_SUBJECT_PREFIX", self.subject_prefix.as_str()),
            ("REDIS_URL", self.redis_url.as_str()),
            ("REDIS_KEY_PREFIX", self.redis_prefix.as_str()),
            ("JWT_SECRET", self.secret.as_str()),
            ("PRESENCE_HEARTBEAT_SECONDS", "1"),
            ("PRESENCE_EXPIRY_SECONDS", "3"),
            ("WS_DRAIN_SECONDS", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        vars
    }

    pub fn settings(&self, extra: &[(&str, &str)]) -> Settings {
        let vars = self.vars(extra);
        Settings::from_lookup(|name| vars.get(name).cloned()).expect("test settings")
    }

    /// A JWT for `user`, signed with this test's secret.
    pub fn token(&self, user: Uuid) -> String {
        let config = shared_auth::JwtConfig {
            secret: Some(self.secret.clone()),
            ..Default::default()
        };
        shared_auth::mint_token(&config, user, Duration::from_secs(600)).unwrap()
    }

    /// Creates a conversation with these active participants; returns its id.
    pub async fn conversation(&self, kind: &str, members: &[Uuid]) -> Uuid {
        let name = (kind != "direct").then(|| format!("{kind} for a test"));
        let creator = (kind != "direct").then(|| members[0]);
        let id: Uuid = sqlx::query_scalar(
            "insert into conversations (type, name, creator_id)
             values ($1::conversation_type, $2, $3) returning id",
        )
        .bind(kind)
        .bind(name)
        .bind(creator)
        .fetch_one(&self.db)
        .await
        .unwrap();
        for member in members {
            self.add_participant(id, *member).await;
        }
        id
    }

    /// Adds (or re-activates) a participant.
    pub async fn add_participant(&self, conversation: Uuid, user: Uuid) {
        sqlx::query(
            "insert into conversation_participants (conversation_id, user_id, role)
             values ($1, $2, 'member')
             on conflict (conversation_id, user_id) do update set left_at = null",
        )
        .bind(conversation)
        .bind(user)
        .execute(&self.db)
        .await
        .unwrap();
    }

    /// Marks a participant as left.
    pub async fn remove_participant(&self, conversation: Uuid, user: Uuid) {
        sqlx::query(
            "update conversation_participants set left_at = now()
             where conversation_id = $1 and user_id = $2",
        )
        .bind(conversation)
        .bind(user)
        .execute(&self.db)
        .await
        .unwrap();
    }

    /// Publishes on a conversation's subject and flushes.
    pub async fn publish_to_conversation(&self, conversation: Uuid, event: Event) {
        self.publish(
            subjects::conversation(&self.subject_prefix, &conversation),
            event,
        )
        .await;
    }

    /// Publishes on a user's personal subject and flushes.
    pub async fn publish_to_user(&self, user: Uuid, event: Event) {
        self.publish(subjects::user(&self.subject_prefix, &user), event)
            .await;
    }

    /// Publishes `event` once, addressed to `users` (`user.many.<conversation>`), and flushes.
    pub async fn publish_to_users(&self, conversation: Uuid, users: &[Uuid], mut event: Event) {
        event.target_user_id = None;
        event.target_user_ids = users.iter().map(Uuid::to_string).collect();
        self.publish(subjects::users(&self.subject_prefix, &conversation), event)
            .await;
    }

    async fn publish(&self, subject: String, event: Event) {
        self.nats
            .publish(subject, event.encode_to_vec().into())
            .await
            .unwrap();
        self.nats.flush().await.unwrap();
    }

    /// Reads a gateway's metric (the sum over label sets matching `labels`).
    pub async fn metric(&self, port: u16, name: &str, labels: &str) -> f64 {
        let (_, body) = http_get(port, "/metrics").await;
        metric_value(&body, name, labels)
    }

    /// The Redis key api-service reads for typing.
    pub fn typing_key(&self, conversation: Uuid) -> String {
        shared_redis::Keys::new(self.redis_prefix.as_str()).typing(&conversation)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Drops the database and the Redis keys even when the test failed; a thread of its own
        // because Drop cannot await and the test's runtime may be shutting down.
        let name = self.db_name.clone();
        let pattern = format!("{}:*", self.redis_prefix);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut conn) =
                    PgConnection::connect("postgres://root@127.0.0.1:5432/postgres").await
                {
                    let sql = format!("drop database if exists \"{name}\" with (force)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                }
                // The shared server only: a test's own cluster goes away with the test.
                let Ok(conn) = shared_redis::testing::connect("redis://127.0.0.1:6379").await
                else {
                    return;
                };
                let keys: Vec<String> = conn
                    .custom(
                        CustomCommand::new_static("KEYS", None, false),
                        vec![pattern],
                    )
                    .await
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: Result<i64, _> = conn.del(keys).await;
                }
            });
        })
        .join();
    }
}

/// The value of metric `name` whose label set contains `labels` (e.g. `kind="conversation"`),
/// summed; 0 when absent.
pub fn metric_value(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let (metric, rest) = match key.split_once('{') {
                Some((metric, rest)) => (metric, rest),
                None => (key, ""),
            };
            (metric == name && rest.contains(labels)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Waits until `check` holds, polling.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A gateway running inside the test process.
pub struct InProcessGateway {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcessGateway {
    pub async fn start(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        Self::start_with(env.settings(extra)).await
    }

    /// With settings the environment cannot express (a test's short write timeout).
    pub async fn start_with(settings: Settings) -> Self {
        let app = within("the gateway to build", Application::build(settings))
            .await
            .expect("gateway builds");
        let port = app.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            port,
            stop: Some(stop),
            task,
        }
    }

    /// Starts the drain (as SIGTERM would).
    pub fn drain(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until the drain is over.
    pub async fn stopped(mut self) {
        self.drain();
        within("the gateway to stop", &mut self.task)
            .await
            .expect("gateway task")
            .expect("gateway run");
    }
}

impl Drop for InProcessGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gateway running as its own process (the real binary).
pub struct ProcessGateway {
    pub port: u16,
    child: tokio::process::Child,
}

impl ProcessGateway {
    pub async fn start(env: &TestEnv, extra: &[(&str, &str)]) -> Self {
        let port = free_port();
        let port_text = port.to_string();
        let mut vars = env.vars(extra);
        vars.insert("PORT".into(), port_text);
        vars.insert("LOG_FORMAT".into(), "text".into());
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-gateway"));
        command
            .env_clear()
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command.spawn().expect("spawn ws-gateway");
        let gateway = Self { port, child };
        eventually("the gateway process to answer /health", || async {
            try_http_get(port, "/health").await.map(|(s, _)| s) == Some(200)
        })
        .await;
        gateway
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends SIGTERM (the drain).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        within("the killed gateway to exit", self.child.wait())
            .await
            .unwrap();
    }

    /// Waits for the process to exit; returns its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        within("the gateway process to exit", self.child.wait())
            .await
            .unwrap()
            .code()
    }
}

/// A NATS server of the test's own on a free port, which the test can kill (SIGKILL) and start
/// again on the same port; killed when dropped. Never the shared server on 4222.
pub struct OwnNats {
    pub port: u16,
    pub url: String,
    /// Arguments after the client address and port (a cluster node's routes and monitoring).
    args: Vec<String>,
    child: Option<std::process::Child>,
}

impl OwnNats {
    pub async fn start() -> Self {
        Self::start_with(free_port(), Vec::new()).await
    }

    /// On `port`, with more `nats-server` arguments.
    async fn start_with(port: u16, args: Vec<String>) -> Self {
        let mut nats = Self {
            port,
            url: format!("nats://127.0.0.1:{port}"),
            args,
            child: None,
        };
        nats.restart().await;
        nats
    }

    /// A server that accepts only clients sending `user` and `password`; its `url` has them
    /// (percent-encoded).
    pub async fn start_with_password(user: &str, password: &str) -> Self {
        let port = free_port();
        let args = ["--user", user, "--pass", password]
            .map(str::to_owned)
            .to_vec();
        let mut nats = Self {
            port,
            url: format!(
                "nats://{}:{}@127.0.0.1:{port}",
                percent_encode(user),
                percent_encode(password)
            ),
            args,
            child: None,
        };
        nats.restart().await;
        nats
    }

    /// Whether the process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on its port and waits until it accepts clients.
    pub async fn restart(&mut self) {
        self.kill();
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("nats-server");
        self.child = Some(
            std::process::Command::new(binary)
                .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
                .args(&self.args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server"),
        );
        // Boxed: a NATS connect future is large, and every caller's future would carry it.
        let url = self.url.clone();
        Box::pin(eventually(
            "the test's nats-server to accept clients",
            || {
                let url = url.clone();
                Box::pin(async move { nats_connect(&url).await.is_ok() })
            },
        ))
        .await;
    }

    /// A client of this server.
    pub async fn client(&self) -> async_nats::Client {
        within("a NATS client", Box::pin(nats_connect(&self.url)))
            .await
            .expect("connect to the test's nats-server")
    }
}

/// Connects to `url` (a `NATS_URL`: one server or a list, credentials in it used) as the
/// services do.
pub async fn nats_connect(url: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
    let servers: shared_proto::nats::NatsServers = url.parse().expect("a valid NATS_URL");
    servers
        .apply_credentials(async_nats::ConnectOptions::new())
        .connect(servers.addrs())
        .await
}

/// `text` with everything but letters and digits percent-encoded (for a URL's user part).
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three [`OwnNats`] nodes routed into one cluster (`retich-test`), each with its monitoring
/// port, so a test can kill the node a client is connected to and watch the client move.
pub struct NatsCluster {
    pub nodes: Vec<OwnNats>,
    /// Each node's HTTP monitoring port (`/routez`, `/connz`).
    monitor_ports: Vec<u16>,
    http: reqwest::Client,
}

impl NatsCluster {
    /// Starts the three nodes and waits until each has its routes to the two others.
    pub async fn start() -> Self {
        const NODES: usize = 3;
        let ports: Vec<(u16, u16, u16)> = (0..NODES)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for (index, (_, cluster, monitor)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .filter(|(_, other, _)| other != cluster)
                .map(|(_, other, _)| format!("nats://127.0.0.1:{other}"))
                .collect();
            let args = [
                "--server_name",
                &format!("retich-test-{index}"),
                "-m",
                &monitor.to_string(),
                "--cluster",
                &format!("nats://127.0.0.1:{cluster}"),
                "--routes",
                &routes.join(","),
                "--cluster_name",
                "retich-test",
            ]
            .map(str::to_owned)
            .to_vec();
            nodes.push(Box::pin(OwnNats::start_with(ports[index].0, args)).await);
        }
        // Its monitor client (reqwest) may be built before any `TestEnv`.
        shared_auth::install_crypto_provider();
        let cluster = Self {
            nodes,
            monitor_ports: ports.iter().map(|(_, _, monitor)| *monitor).collect(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap(),
        };
        eventually(
            "every node of the NATS cluster to route to the two others",
            || async {
                for index in 0..NODES {
                    let routes = cluster.monitor(index, "/routez").await;
                    if routes.and_then(|r| r["num_routes"].as_u64()) != Some(NODES as u64 - 1) {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        cluster
    }

    /// `NATS_URL` listing every node (with spaces after the commas, as an operator may write it).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|node| node.url.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// SIGKILLs node `index`.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// The node whose client port is `port` (what `async_nats::Client::server_info().port` says).
    pub fn node_with_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|node| node.port == port)
    }

    /// The running node that has a client connection named `name` (the name a client gives in
    /// `ConnectOptions::name`: `api-service`, `ws-gateway <GATEWAY_ID>`), from `/connz`.
    pub async fn node_of(&self, name: &str) -> Option<usize> {
        for index in 0..self.nodes.len() {
            if !self.nodes[index].is_running() {
                continue;
            }
            let Some(connz) = self.monitor(index, "/connz?limit=4096").await else {
                continue;
            };
            let connections = connz["connections"].as_array().cloned().unwrap_or_default();
            if connections.iter().any(|c| c["name"] == name) {
                return Some(index);
            }
        }
        None
    }

    /// Waits until the client named `name` is connected to a running node; returns that node.
    pub async fn wait_for_client(&self, name: &str) -> usize {
        within(
            &format!("{name} to be connected to a running node"),
            async {
                loop {
                    if let Some(node) = self.node_of(name).await {
                        return node;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await
    }

    /// A node's monitoring endpoint as JSON; `None` while it does not answer.
    async fn monitor(&self, index: usize, path: &str) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}{path}", self.monitor_ports[index]);
        let response = self.http.get(url).send().await.ok()?;
        response.json().await.ok()
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on a gateway: (status, body).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    within(path, async {
        loop {
            if let Some(response) = try_http_get(port, path).await {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

async fn try_http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (status, _, body) = raw_request(port, request.as_bytes()).await?;
    Some((status, body))
}

/// Sends raw request bytes; returns (status, head, body) of the response.
pub async fn raw_request(port: u16, request: &[u8]) -> Option<(u16, String, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(request).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some((status, head.to_owned(), body.to_owned()))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// Sends raw request bytes and returns the response head only (for a 101, whose connection
/// stays open).
pub async fn response_head(port: u16, request: &[u8]) -> String {
    within("a response head", async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut response = Vec::new();
        let mut byte = [0u8; 1];
        while !response.ends_with(b"\r\n\r\n") {
            assert_eq!(
                stream.read(&mut byte).await.unwrap(),
                1,
                "connection closed"
            );
            response.push(byte[0]);
        }
        String::from_utf8(response).unwrap()
    })
    .await
}

/// A WebSocket client of the tests.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Events already received but not yet consumed, as the exact messages the gateway sent.
    pending: VecDeque<String>,
}

/// Connects `user` with a bearer token and waits for `presence.snapshot`; returns the client
/// and the snapshot's `online_user_ids`.
pub async fn connect(env: &TestEnv, port: u16, user: Uuid) -> (Client, Vec<Uuid>) {
    let mut request = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {}", env.token(user))).unwrap(),
    );
    let mut client = connect_request(request).await.expect("handshake accepted");
    let snapshot = client.next_event().await;
    assert_eq!(
        snapshot["type"], "presence.snapshot",
        "first event: {snapshot}"
    );
    let online = snapshot["payload"]["online_user_ids"]
        .as_array()
        .expect("online_user_ids is an array")
        .iter()
        .map(|id| Uuid::parse_str(id.as_str().unwrap()).unwrap())
        .collect();
    (client, online)
}

/// Performs a handshake; the HTTP response on refusal.
pub async fn connect_request(
    request: tungstenite::handshake::client::Request,
) -> Result<Client, tungstenite::handshake::client::Response> {
    match within("the handshake", tokio_tungstenite::connect_async(request)).await {
        Ok((ws, _)) => Ok(Client {
            ws,
            pending: VecDeque::new(),
        }),
        Err(tungstenite::Error::Http(response)) => Err(*response),
        Err(error) => panic!("handshake failed: {error}"),
    }
}

impl Client {
    /// The next event (waiting at most [`WAIT`]).
    pub async fn next_event(&mut self) -> Value {
        within("an event", self.read_event()).await
    }

    /// The next event of type `kind`, skipping others of the types in `skip` (anything else
    /// fails the test).
    pub async fn next_event_skipping(&mut self, skip: &[&str]) -> Value {
        loop {
            let event = self.next_event().await;
            if !skip.contains(&event["type"].as_str().unwrap_or_default()) {
                return event;
            }
        }
    }

    /// The next event as the exact line the gateway sent, and parsed, skipping events of the
    /// types in `skip`.
    pub async fn next_raw_event_skipping(&mut self, skip: &[&str]) -> (String, Value) {
        loop {
            let raw = within("an event", self.read_raw_event()).await;
            let event: Value = serde_json::from_str(&raw).expect("event is JSON");
            if !skip.contains(&event["type"].as_str().unwrap_or_default()) {
                return (raw, event);
            }
        }
    }

    async fn read_event(&mut self) -> Value {
        serde_json::from_str(&self.read_raw_event().await).expect("event is JSON")
    }

    async fn read_raw_event(&mut self) -> String {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return event;
            }
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    self.pending.push_back(one_event(text.as_str()).to_owned());
                }
                Some(Ok(Message::Close(frame))) => panic!("socket closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(error)) => panic!("socket failed: {error}"),
                None => panic!("socket ended"),
            }
        }
    }

    /// The next text message exactly as received, parsed or not — what a web client hands to
    /// `JSON.parse`; `None` when the socket ends or nothing arrives within `limit`.
    pub async fn next_message(&mut self, limit: Duration) -> Option<String> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
                    Some(Ok(_)) => {}
                }
            }
        };
        tokio::time::timeout(limit, read).await.ok().flatten()
    }

    /// Asserts that nothing arrives for [`QUIET`].
    pub async fn assert_quiet(&mut self) {
        if let Ok(event) = tokio::time::timeout(QUIET, self.read_event()).await {
            panic!("expected nothing, received {event}");
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: impl Into<String>) {
        within("a send", self.ws.send(Message::Text(text.into().into())))
            .await
            .expect("send");
    }

    /// Sends any message (or a raw frame, for fragmented messages).
    pub async fn send(&mut self, message: Message) {
        within("a send", self.ws.send(message)).await.expect("send");
    }

    /// Sends a typing frame.
    pub async fn send_typing(&mut self, kind: &str, conversation: Uuid, payload: Value) {
        let frame = serde_json::json!({
            "type": kind, "conversation_id": conversation, "payload": payload,
        });
        self.send_text(frame.to_string()).await;
    }

    /// Reads (discarding events) until the server's close frame; returns its code.
    pub async fn close_code(&mut self) -> u16 {
        within("a close frame", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
                    Some(Ok(Message::Close(None))) => return 1005,
                    Some(Ok(_)) => {}
                    Some(Err(error)) => panic!("socket failed before a close frame: {error}"),
                    None => panic!("socket ended without a close frame"),
                }
            }
        })
        .await
    }

    /// Reads everything the server sent until the stream ends: the events of every complete
    /// frame, and how it ended — `Ok(code)` for a close frame, `Err(text)` for a transport end
    /// without one.
    pub async fn read_to_end(&mut self) -> (Vec<Value>, Result<u16, String>) {
        within("the stream to end", async {
            let mut events: Vec<Value> = self
                .pending
                .drain(..)
                .map(|line| serde_json::from_str(&line).expect("an event is JSON"))
                .collect();
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        events.push(serde_json::from_str(one_event(text.as_str())).unwrap());
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return (events, Ok(frame.map_or(1005, |f| u16::from(f.code))));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return (events, Err(error.to_string())),
                    None => return (events, Err("end of stream".into())),
                }
            }
        })
        .await
    }

    /// Sends a close frame with `code` and returns the code of the server's answer.
    pub async fn close_handshake(mut self, code: u16) -> u16 {
        let frame = tungstenite::protocol::CloseFrame {
            code: code.into(),
            reason: "bye".into(),
        };
        within("a close frame", self.ws.send(Message::Close(Some(frame))))
            .await
            .expect("send close");
        self.close_code().await
    }

    /// Closes from the client side.
    pub async fn close(mut self) {
        let _ = within("a client close", self.ws.close(None)).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// The one event a WebSocket message holds, as the ReTiCh web client reads it: one `JSON.parse` of
/// the whole message (docs/websocket.md, "Messages and the envelope"). A message that is not
/// exactly one JSON object fails the test — that client would drop it, and every event in it,
/// without a word.
pub fn one_event(message: &str) -> &str {
    match serde_json::from_str::<Value>(message) {
        Ok(Value::Object(_)) => message,
        _ => panic!("a WebSocket message is not exactly one JSON object: {message:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Events exactly as api-service publishes them (the routes of docs/api.md, "Routes at a glance").

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn envelope(kind: EventKind, conversation: Uuid, actor: Uuid, body: Body) -> Event {
    Event {
        event_id: Uuid::new_v4().to_string(),
        kind: kind as i32,
        conversation_id: conversation.to_string(),
        actor_id: actor.to_string(),
        occurred_at_us: now_us(),
        target_user_id: None,
        target_user_ids: vec![],
        body: Some(body),
    }
}

/// `message.new` with `content`.
pub fn message_new(conversation: Uuid, sender: Uuid, seq: i64, content: &str) -> Event {
    envelope(
        EventKind::MessageNew,
        conversation,
        sender,
        Body::Message(events::Message {
            id: Uuid::now_v7().to_string(),
            conversation_id: conversation.to_string(),
            sender_id: sender.to_string(),
            seq,
            r#type: "text".into(),
            content: Some(content.into()),
            created_at_us: now_us(),
            ..Default::default()
        }),
    )
}

/// `message.deleted`.
pub fn message_deleted(conversation: Uuid, actor: Uuid) -> Event {
    envelope(
        EventKind::MessageDeleted,
        conversation,
        actor,
        Body::MessageDeleted(events::MessageDeleted {
            conversation_id: conversation.to_string(),
            id: Uuid::now_v7().to_string(),
        }),
    )
}

fn participant(conversation: Uuid, user: Uuid) -> events::Participant {
    events::Participant {
        id: Uuid::new_v4().to_string(),
        conversation_id: conversation.to_string(),
        user_id: user.to_string(),
        role: "member".into(),
        nickname: None,
        joined_at_us: now_us(),
    }
}

/// `conversation.joined` for `target` (personal subject), with these participants.
pub fn conversation_joined(
    conversation: Uuid,
    kind: &str,
    actor: Uuid,
    target: Uuid,
    participants: &[Uuid],
) -> Event {
    let mut event = envelope(
        EventKind::ConversationJoined,
        conversation,
        actor,
        Body::ConversationJoined(events::ConversationJoined {
            detail: Some(events::ConversationDetail {
                conversation: Some(events::Conversation {
                    id: conversation.to_string(),
                    r#type: kind.into(),
                    name: (kind != "direct").then(|| "a conversation".into()),
                    creator_id: (kind != "direct").then(|| actor.to_string()),
                    created_at_us: now_us(),
                    updated_at_us: now_us(),
                    ..Default::default()
                }),
                participants: participants
                    .iter()
                    .map(|u| participant(conversation, *u))
                    .collect(),
            }),
        }),
    );
    event.target_user_id = Some(target.to_string());
    event
}

/// `participant.added` (conversation subject).
pub fn participant_added(conversation: Uuid, actor: Uuid, added: &[Uuid]) -> Event {
    envelope(
        EventKind::ParticipantAdded,
        conversation,
        actor,
        Body::ParticipantsAdded(events::ParticipantsAdded {
            conversation_id: conversation.to_string(),
            participants: added
                .iter()
                .map(|u| participant(conversation, *u))
                .collect(),
        }),
    )
}

/// `participant.removed` (conversation subject).
pub fn participant_removed(conversation: Uuid, actor: Uuid, removed: Uuid) -> Event {
    envelope(
        EventKind::ParticipantRemoved,
        conversation,
        actor,
        Body::ParticipantRemoved(events::ParticipantRemoved {
            conversation_id: conversation.to_string(),
            user_id: removed.to_string(),
        }),
    )
}

/// `conversation.left` for `target` (personal subject).
pub fn conversation_left(conversation: Uuid, actor: Uuid, target: Uuid) -> Event {
    let mut event = envelope(
        EventKind::ConversationLeft,
        conversation,
        actor,
        Body::ConversationLeft(events::ConversationLeft {
            conversation_id: conversation.to_string(),
            user_id: target.to_string(),
        }),
    );
    event.target_user_id = Some(target.to_string());
    event
}

/// `reaction.removed` (room).
pub fn reaction_removed(conversation: Uuid, actor: Uuid) -> Event {
    envelope(
        EventKind::ReactionRemoved,
        conversation,
        actor,
        Body::ReactionRemoved(events::ReactionRemoved {
            emoji: "👍".into(),
            message_id: Uuid::now_v7().to_string(),
            user_id: actor.to_string(),
        }),
    )
}

/// A loopback TCP proxy in front of a real server, which a test can cut to simulate that server
/// going away (the real PostgreSQL / NATS / Redis are shared by the whole suite and stay up).
pub struct CuttableProxy {
    pub port: u16,
    /// Aborting it stops accepting and drops every proxied connection.
    tasks: tokio::task::JoinHandle<()>,
}

impl CuttableProxy {
    /// Proxies `127.0.0.1:<port>` to `127.0.0.1:<upstream>`.
    pub async fn start(upstream: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let tasks = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                set.spawn(async move {
                    if let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self { port, tasks }
    }

    /// Stops the proxy: open connections are dropped and new ones refused.
    pub fn cut(&self) {
        self.tasks.abort();
    }
}

impl Drop for CuttableProxy {
    fn drop(&mut self) {
        self.tasks.abort();
    }
}
