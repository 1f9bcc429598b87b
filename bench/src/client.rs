//! The simulated users' side of the protocol: identity in either auth mode, the few REST calls
//! the scenarios need (http-api.md §5.1, §7.1), and the WebSocket connect (websocket.md §1–§3),
//! optionally from a given loopback source address.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig},
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

/// A REST client of api-service.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    identity: Identity,
}

/// The outcome of one send: HTTP status and, on success, the message's seq.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub status: u16,
    pub seq: Option<i64>,
}

impl Api {
    /// `max_connections`: the connection pool per host (one per concurrent client).
    pub fn new(base: &str, identity: Identity, max_connections: usize) -> Result<Self> {
        shared_auth::install_crypto_provider();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(max_connections)
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .context("HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
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
        let response = self
            .http
            .post(format!(
                "{}/conversations/{conversation}/messages",
                self.base
            ))
            .header(header.0, header.1)
            .json(&json!({"content": "retich-bench message", "client_msg_id": client_msg_id}))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body = response.bytes().await?;
        let seq = (status == 201)
            .then(|| serde_json::from_slice::<Value>(&body).ok())
            .flatten()
            .and_then(|v| v["data"]["seq"].as_i64());
        Ok(Sent { status, seq })
    }
}

/// A connected client socket.
pub type Socket = WebSocketStream<TcpStream>;

/// Client buffers: the events are small; tungstenite's default 128 KiB read buffer per socket
/// would make the load tool, not the gateway, run out of memory at 100K sockets.
pub fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
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
}
