//! The simulated users' side of the protocol: identity in either auth mode, the few REST calls
//! the scenarios need (`POST /conversations` and `POST /conversations/{id}/messages`, see
//! `docs/api.md`, "Routes at a glance" and "Sending messages"), and the WebSocket connect
//! (`docs/websocket.md`, "Connecting" and "After the upgrade"), optionally from a given loopback
//! source address.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Request,
    client::conn::http1::SendRequest,
    header::{CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig},
};
use uuid::Uuid;

/// How the services identify callers (`AUTH_MODE` of both services).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `Authorization: Bearer <HS256 token signed with --jwt-secret>`.
    Jwt,
    /// `X-User-ID: <uuid>` (the services trust the header).
    Header,
}

/// Identity options shared by every scenario.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// The services' AUTH_MODE.
    #[arg(long, value_enum, default_value = "jwt", env = "BENCH_AUTH_MODE")]
    pub auth: AuthMode,
    /// The services' JWT_SECRET (jwt mode).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

/// Produces the credential header of a simulated user.
#[derive(Clone)]
pub struct Identity {
    mode: AuthMode,
    config: shared_auth::JwtConfig,
}

impl Identity {
    pub fn new(args: &AuthArgs) -> Result<Self> {
        if args.auth == AuthMode::Jwt && args.jwt_secret.as_deref().unwrap_or("").is_empty() {
            bail!("jwt mode needs --jwt-secret (or JWT_SECRET), the services' secret");
        }
        Ok(Self {
            mode: args.auth,
            config: shared_auth::JwtConfig {
                secret: args.jwt_secret.clone(),
                ..Default::default()
            },
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The header (name, value) that identifies `user`. Tokens live 6 hours: longer than any run.
    pub fn header(&self, user: Uuid) -> (&'static str, String) {
        match self.mode {
            AuthMode::Jwt => {
                let token =
                    shared_auth::mint_token(&self.config, user, Duration::from_secs(6 * 3600))
                        .expect("a secret is configured");
                ("authorization", format!("Bearer {token}"))
            }
            AuthMode::Header => ("x-user-id", user.to_string()),
        }
    }
}

/// A REST client of api-service: reqwest for the setup calls, [`Senders`] for the sends that
/// are measured.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    identity: Identity,
    senders: Arc<Senders>,
}

/// Longest a measured send may take before it counts as a transport error.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Plain HTTP/1.1 connections for the measured sends, one per send in flight, kept idle between
/// sends (so a closed-loop client keeps one connection). The load tool shares the cores with the
/// services it measures: through reqwest a send cost it ~23 µs of user CPU (its pool, a timer
/// per request, the body built and the answer parsed as JSON values); here the request is one
/// formatted body and the answer is read for its status and `data.seq` only.
struct Senders {
    /// `host:port` of the API, resolved at each connect.
    authority: String,
    host: HeaderValue,
    /// The base URL's path (empty for `http://host:port`).
    path_prefix: String,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Senders {
    fn new(base: &str) -> Result<Self> {
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("API URL must start with http:// ({base})"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.is_empty() {
            bail!("API URL without a host ({base})");
        }
        Ok(Self {
            authority: authority.to_owned(),
            host: HeaderValue::from_str(authority).context("API host")?,
            path_prefix: if path.is_empty() {
                String::new()
            } else {
                format!("/{}", path.trim_end_matches('/'))
            },
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .with_context(|| format!("connect {}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // Ends with the connection: the server closed it or every sender handle was dropped.
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn send(
        &self,
        header: (&'static str, &str),
        conversation: Uuid,
        client_msg_id: &str,
    ) -> Result<Sent> {
        let idle = self.idle.lock().expect("not poisoned").pop();
        // A kept connection the server closed since its last send is not ready; nothing was
        // sent on it yet, so a new one takes the send.
        let kept = match idle {
            Some(mut conn) => conn.ready().await.is_ok().then_some(conn),
            None => None,
        };
        let mut conn = match kept {
            Some(conn) => conn,
            None => {
                let mut conn = self.connect().await?;
                conn.ready().await.context("connection")?;
                conn
            }
        };
        let body = serde_json::to_vec(&SendBody {
            content: "retich-bench message",
            client_msg_id,
        })?;
        let request = Request::post(format!(
            "{}/conversations/{conversation}/messages",
            self.path_prefix
        ))
        .header(HOST, self.host.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(header.0, header.1)
        .body(Full::new(Bytes::from(body)))?;
        let (status, body) = tokio::time::timeout(SEND_TIMEOUT, async {
            let response = conn.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        })
        .await
        .map_err(|_| anyhow!("send timed out after {SEND_TIMEOUT:?}"))??;
        self.idle.lock().expect("not poisoned").push(conn);
        Ok(Sent {
            status,
            seq: (status == 201).then(|| created_seq(&body)).flatten(),
        })
    }
}

#[derive(serde::Serialize)]
struct SendBody<'a> {
    content: &'a str,
    client_msg_id: &'a str,
}

/// `data.seq` of a 201's body (the stored Message), without building the rest of it.
fn created_seq(body: &[u8]) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Created {
        data: Seq,
    }
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: i64,
    }
    serde_json::from_slice::<Created>(body)
        .ok()
        .map(|c| c.data.seq)
}

/// The outcome of one send: HTTP status and, on success, the message's seq.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub status: u16,
    pub seq: Option<i64>,
}

impl Api {
    /// `max_connections`: idle connections kept by the setup calls' reqwest pool (the measured
    /// sends keep one connection per send in flight themselves, [`Senders`]).
    pub fn new(base: &str, identity: Identity, max_connections: usize) -> Result<Self> {
        shared_auth::install_crypto_provider();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(max_connections)
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .context("HTTP client")?;
        let base = base.trim_end_matches('/');
        Ok(Self {
            senders: Arc::new(Senders::new(base)?),
            base: base.to_owned(),
            http,
            identity,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Creates a group owned by `creator` with `others` as members (one transaction on the
    /// server, however many members); returns its id.
    pub async fn create_group(&self, creator: Uuid, others: &[Uuid], name: &str) -> Result<Uuid> {
        let (h, v) = self.identity.header(creator);
        let response = self
            .http
            .post(format!("{}/conversations", self.base))
            .header(h, v)
            .json(&json!({"type": "group", "name": name, "participant_ids": others}))
            .send()
            .await
            .context("POST /conversations")?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.as_u16() != 201 {
            bail!("POST /conversations answered {status}: {body}");
        }
        body["data"]["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("POST /conversations: no data.id in {body}"))
    }

    /// Sends a text message with `client_msg_id` (the bench's message number travels in it).
    /// Transport errors are `Err`; any HTTP status is `Ok`.
    pub async fn send(
        &self,
        header: (&'static str, &str),
        conversation: Uuid,
        client_msg_id: &str,
    ) -> Result<Sent> {
        self.senders.send(header, conversation, client_msg_id).await
    }
}

/// A connected client socket.
pub type Socket = WebSocketStream<TcpStream>;

/// Client buffers: the events are small; tungstenite's default 128 KiB read buffer per socket
/// would make the load tool, not the gateway, run out of memory at 100K sockets. The read buffer
/// is 4096 bytes unless `BENCH_READ_BUFFER` says otherwise (a browser reads larger chunks; the
/// size changes how many reads, and acknowledgements, a burst of events costs both sides).
pub fn socket_config() -> WebSocketConfig {
    let read_buffer = std::env::var("BENCH_READ_BUFFER")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096);
    WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0)
}

/// Opens `ws_url` (`ws://host:port/ws`) as `user`, from `source` when given (an address of the
/// loopback interface, to spread ephemeral ports; with a port when the caller planned one), and
/// completes the upgrade.
pub async fn connect(
    ws_url: &str,
    identity: &Identity,
    user: Uuid,
    source: Option<SocketAddr>,
) -> Result<Socket> {
    let mut request = ws_url.into_client_request().context("gateway URL")?;
    let (h, v) = identity.header(user);
    request
        .headers_mut()
        .insert(h, HeaderValue::from_str(&v).context("header value")?);
    let addr = target_addr(ws_url)?;
    let stream = match source {
        None => tcp_connect(addr, None).await?,
        Some(source) if source.port() == 0 => tcp_connect(addr, Some(source)).await?,
        // A planned port may be taken (another run on the same address, a 4-tuple still in
        // TIME_WAIT): the kernel's choice then, as before.
        Some(source) => match tcp_connect(addr, Some(source)).await {
            Ok(stream) => stream,
            Err(_) => tcp_connect(addr, Some(SocketAddr::new(source.ip(), 0))).await?,
        },
    };
    stream.set_nodelay(true)?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(socket_config()))
            .await
            .context("WebSocket upgrade")?;
    Ok(ws)
}

/// A client socket read the way a browser's event loop reads one: every message already
/// received is handled before the reader waits again, so a burst costs one wake-up and one
/// readiness wait, not a future poll (and two waker registrations) per WebSocket message. The
/// fan-out members use it because the gateway sends one event per message: per-message overhead
/// in the tool would grow with the number of events and take CPU from the gateway it measures
/// on a small machine. tungstenite's own frame and message parsing is unchanged.
pub struct DrainSocket {
    ws: tungstenite::WebSocket<NonBlocking>,
}

/// A tokio `TcpStream` as a non-blocking `std::io` stream: `WouldBlock` when nothing is ready.
pub struct NonBlocking(TcpStream);

impl std::io::Read for NonBlocking {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl std::io::Write for NonBlocking {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`DrainSocket::read`] found.
pub enum Drained {
    /// A text message.
    Text(tungstenite::Utf8Bytes),
    /// Nothing more is buffered or readable now: wait with [`DrainSocket::readable`].
    Empty,
    /// The peer closed or the connection failed (`Some` says how).
    Closed(Option<String>),
}

impl DrainSocket {
    /// Opens `ws_url` as `user` and completes the upgrade, like [`connect`].
    pub async fn connect(ws_url: &str, identity: &Identity, user: Uuid) -> Result<Self> {
        use tungstenite::HandshakeError;
        let mut request = ws_url.into_client_request().context("gateway URL")?;
        let (h, v) = identity.header(user);
        request
            .headers_mut()
            .insert(h, HeaderValue::from_str(&v).context("header value")?);
        let stream = tcp_connect(target_addr(ws_url)?, None).await?;
        stream.set_nodelay(true)?;
        let mut attempt = tungstenite::client::client_with_config(
            request,
            NonBlocking(stream),
            Some(socket_config()),
        );
        loop {
            match attempt {
                Ok((ws, _)) => return Ok(Self { ws }),
                Err(HandshakeError::Interrupted(mid)) => {
                    // The request is written in one go on a fresh connection; what is missing
                    // is the answer.
                    mid.get_ref().get_ref().0.readable().await?;
                    attempt = mid.handshake();
                }
                Err(HandshakeError::Failure(e)) => {
                    return Err(anyhow::Error::new(e).context("WebSocket upgrade"));
                }
            }
        }
    }

    /// The next message already received, without waiting. Pings are answered (tungstenite
    /// queues the pong and writes it on the next read).
    pub fn read(&mut self) -> Drained {
        use tungstenite::{Error, Message};
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => return Drained::Text(text),
                Ok(Message::Close(_)) => return Drained::Closed(None),
                Ok(_) => continue,
                Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Drained::Empty;
                }
                Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                    return Drained::Closed(None);
                }
                Err(e) => return Drained::Closed(Some(e.to_string())),
            }
        }
    }

    /// Waits until the socket has something to read.
    pub async fn readable(&self) -> std::io::Result<()> {
        self.ws.get_ref().0.readable().await
    }
}

/// A TCP connection to `addr`, bound to `source` first when given.
///
/// A source with port 0 leaves the port to `bind`, which looks for a port not bound on that
/// address at all and prefers even ports: once ~14,000 of them are taken on one address every
/// further `bind` walks all of them under kernel locks (measured: 78 % of the machine's CPU in
/// `inet_csk_get_port` while the last sockets of a 17,000-socket run connected at ~370/s instead
/// of ~7,000/s). A planned port is one lookup. `SO_REUSEADDR` lets a port whose connection from
/// an earlier run sits in TIME_WAIT be bound again.
async fn tcp_connect(addr: SocketAddr, source: Option<SocketAddr>) -> Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        if source.port() != 0 {
            socket.set_reuseaddr(true)?;
        }
        socket
            .bind(source)
            .with_context(|| format!("bind {source}"))?;
    }
    socket.connect(addr).await.context("TCP connect")
}

/// The socket address of a `ws://host:port/...` URL; only literal addresses (the bench runs on
/// loopback), so no resolver is involved per connect.
pub fn target_addr(ws_url: &str) -> Result<SocketAddr> {
    let rest = ws_url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("gateway URL must start with ws:// ({ws_url})"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.replace("localhost", "127.0.0.1");
    authority
        .parse()
        .with_context(|| format!("gateway URL needs a literal ip:port ({ws_url})"))
}

/// A short, stable label for an error, so thousands of errors summarise into a few counts.
pub fn error_kind(error: &anyhow::Error) -> String {
    let mut kind = error.to_string();
    if let Some(cause) = error.chain().nth(1) {
        kind = format!("{kind}: {cause}");
    }
    kind.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_resolve_to_literal_socket_addresses() {
        assert_eq!(
            target_addr("ws://127.0.0.1:8085/ws").unwrap(),
            "127.0.0.1:8085".parse().unwrap()
        );
        assert_eq!(
            target_addr("ws://localhost:9000/ws").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert!(target_addr("http://127.0.0.1:8085/ws").is_err());
        assert!(target_addr("ws://example.org:80/ws").is_err());
    }

    #[test]
    fn header_mode_identifies_with_x_user_id_and_jwt_mode_needs_a_secret() {
        let user = Uuid::new_v4();
        let header = Identity::new(&AuthArgs {
            auth: AuthMode::Header,
            jwt_secret: None,
        })
        .unwrap();
        assert_eq!(header.header(user), ("x-user-id", user.to_string()));
        assert!(
            Identity::new(&AuthArgs {
                auth: AuthMode::Jwt,
                jwt_secret: None
            })
            .is_err()
        );
        let jwt = Identity::new(&AuthArgs {
            auth: AuthMode::Jwt,
            jwt_secret: Some("s".into()),
        })
        .unwrap();
        let (name, value) = jwt.header(user);
        assert_eq!(name, "authorization");
        assert!(value.starts_with("Bearer "));
    }

    #[test]
    fn api_urls_split_into_authority_and_path_prefix() {
        let plain = Senders::new("http://127.0.0.1:8082").unwrap();
        assert_eq!(
            (plain.authority.as_str(), plain.path_prefix.as_str()),
            ("127.0.0.1:8082", "")
        );
        let nested = Senders::new("http://api.local:80/v1/").unwrap();
        assert_eq!(
            (nested.authority.as_str(), nested.path_prefix.as_str()),
            ("api.local:80", "/v1")
        );
        assert!(Senders::new("https://127.0.0.1:8082").is_err());
        assert!(Senders::new("http:///x").is_err());
    }

    #[test]
    fn only_a_created_answer_with_data_seq_gives_a_seq() {
        assert_eq!(
            created_seq(br#"{"data":{"id":"x","seq":42,"content":"a"}}"#),
            Some(42)
        );
        assert_eq!(created_seq(br#"{"error":{"code":"FORBIDDEN"}}"#), None);
        assert_eq!(created_seq(b"not json"), None);
    }

    /// Against a canned HTTP/1.1 server on loopback: the request is the documented send, the
    /// answer's status and seq come back, and consecutive sends reuse one connection.
    #[tokio::test]
    async fn sends_post_the_message_and_keep_their_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut heads = Vec::new();
            let mut accepted = 0;
            while heads.len() < 3 {
                let (mut stream, _) = listener.accept().await.unwrap();
                accepted += 1;
                let mut buf = Vec::new();
                while heads.len() < 3 {
                    let mut chunk = [0u8; 4096];
                    let n = stream.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    // One request at a time: a head and a body of content-length bytes.
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.parse().unwrap())
                        })
                        .unwrap();
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    heads.push(String::from_utf8(buf[..end + 4 + len].to_vec()).unwrap());
                    buf.drain(..end + 4 + len);
                    let body = format!(r#"{{"data":{{"seq":{}}}}}"#, heads.len());
                    let answer = format!(
                        "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    stream.write_all(answer.as_bytes()).await.unwrap();
                }
            }
            (heads, accepted)
        });
        let api = Api::new(
            &format!("http://127.0.0.1:{port}"),
            Identity::new(&AuthArgs {
                auth: AuthMode::Header,
                jwt_secret: None,
            })
            .unwrap(),
            1,
        )
        .unwrap();
        let conversation = Uuid::new_v4();
        let user = Uuid::new_v4().to_string();
        for (i, key) in ["k1", "k2", "k3"].into_iter().enumerate() {
            let sent = api
                .send(("x-user-id", &user), conversation, key)
                .await
                .unwrap();
            assert_eq!(sent.status, 201);
            assert_eq!(sent.seq, Some(i as i64 + 1));
        }
        let (heads, accepted) = server.await.unwrap();
        assert_eq!(accepted, 1, "one connection for three sends");
        let first = heads[0].to_ascii_lowercase();
        assert!(
            first.starts_with(&format!(
                "post /conversations/{conversation}/messages http/1.1\r\n"
            )),
            "{first}"
        );
        assert!(first.contains(&format!("x-user-id: {user}")), "{first}");
        assert!(first.contains("content-type: application/json"), "{first}");
        assert!(
            first.contains(&format!("host: 127.0.0.1:{port}")),
            "{first}"
        );
        let body: Value =
            serde_json::from_str(&heads[2][heads[2].find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(
            body,
            json!({"content": "retich-bench message", "client_msg_id": "k3"})
        );
    }
}
