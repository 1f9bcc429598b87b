//! The HTTP front, on the raw `TcpStream` (no HTTP server library): one request head parsed with
//! `httparse`, then `/health`, `/ready`, `/metrics`, the `/ws` handshake checks of
//! `docs/websocket.md` ("Connecting", "Handshake failures") in their documented order, or 404.
//! Every plain response closes the connection; a successful handshake hands the stream to
//! [`crate::connection`].
//!
//! Nothing here logs a header value or the query string (tokens, cookies).

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use uuid::Uuid;

use crate::{config::AuthMode, connection::Upgraded, state::AppState};

/// Largest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Most headers accepted.
const MAX_HEADERS: usize = 64;
/// Time a client gets to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed request head (owned; the raw buffer is dropped after parsing).
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// HTTP minor version (1 for HTTP/1.1).
    pub version: u8,
    /// Names lowercased; values as sent (lossy UTF-8).
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether any value of header `name` holds `token` in its comma-separated list
    /// (case-insensitive).
    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The percent-decoded value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.as_deref()?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key) == name).then(|| percent_decode(value))
        })
    }
}

/// Why no request head could be read.
#[derive(Debug)]
enum HeadError {
    /// The client went away or sent nothing in time: no response.
    Gone,
    /// Not HTTP: 400.
    Malformed,
    /// Head larger than [`MAX_HEAD`] or too many headers: 431.
    TooLarge,
}

/// Serves one accepted TCP connection: answers it, or returns it upgraded to a WebSocket.
///
/// The upgraded socket is run by the caller, not from inside this future: this one (request
/// head, handshake state) is then freed instead of staying alive for the socket's whole life.
pub async fn serve(mut stream: TcpStream, state: Arc<AppState>) -> Option<Upgraded> {
    let _ = stream.set_nodelay(true);
    let (head, leftover) = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(parsed)) => parsed,
        Ok(Err(HeadError::Malformed)) => {
            respond(&mut stream, 400, "Bad Request", &[], b"Bad Request").await;
            return None;
        }
        Ok(Err(HeadError::TooLarge)) => {
            respond(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                &[],
                b"Request Header Fields Too Large",
            )
            .await;
            return None;
        }
        Ok(Err(HeadError::Gone)) => {
            state
                .metrics
                .request_head_failures
                .with_label_values(&["closed"])
                .inc();
            return None;
        }
        Err(_) => {
            // The client connected but sent no complete head in time (a starved or stuck
            // client; its handshake fails with EOF before any response).
            state
                .metrics
                .request_head_failures
                .with_label_values(&["timeout"])
                .inc();
            tracing::debug!("no request head within the head timeout; connection dropped");
            return None;
        }
    };
    let path_label = match head.path.as_str() {
        "/health" | "/ready" | "/metrics" => head.path.clone(),
        _ => "other".to_owned(),
    };
    if head.path == "/ws" {
        let status = match handshake(&head, &state).await {
            Ok(user) => {
                let key = head
                    .header("sec-websocket-key")
                    .unwrap_or_default()
                    .trim()
                    .to_owned();
                // The head (with its Authorization header) is not kept for the socket's life.
                drop(head);
                state
                    .metrics
                    .http_requests
                    .with_label_values(&["/ws", "101"])
                    .inc();
                return upgrade(stream, &key, leftover, user).await;
            }
            Err(rejection) => {
                rejection.send(&mut stream).await;
                rejection.status
            }
        };
        state
            .metrics
            .http_requests
            .with_label_values(&["/ws", &status.to_string()])
            .inc();
        return None;
    }
    let status = match head.path.as_str() {
        "/health" | "/ready" | "/metrics" if !matches!(head.method.as_str(), "GET" | "HEAD") => {
            respond(
                &mut stream,
                405,
                "Method Not Allowed",
                &[("Allow", "GET")],
                b"Method Not Allowed",
            )
            .await;
            405
        }
        "/health" => {
            let body = format!(
                r#"{{"status":"healthy","service":"ws-gateway","timestamp":"{}"}}"#,
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            respond_json(&mut stream, 200, "OK", body.as_bytes()).await;
            200
        }
        "/ready" => {
            let (nats, redis) = (
                state.nats.connection_state() == async_nats::connection::State::Connected,
                state.redis.ping().await,
            );
            let draining = state.is_draining();
            let ready = nats && !draining;
            let check = |ok: bool| if ok { "ok" } else { "fail" };
            let body = format!(
                r#"{{"status":"{}","checks":{{"nats":"{}","redis":"{}"}}}}"#,
                if ready { "ready" } else { "not ready" },
                check(nats),
                check(redis)
            );
            let (status, reason) = if ready {
                (200, "OK")
            } else {
                (503, "Service Unavailable")
            };
            respond_json(&mut stream, status, reason, body.as_bytes()).await;
            status
        }
        "/metrics" => {
            let body = state.metrics.render();
            respond(
                &mut stream,
                200,
                "OK",
                &[("Content-Type", crate::metrics::TEXT_FORMAT)],
                &body,
            )
            .await;
            200
        }
        _ => {
            respond(&mut stream, 404, "Not Found", &[], b"404 page not found").await;
            404
        }
    };
    state
        .metrics
        .http_requests
        .with_label_values(&[path_label.as_str(), &status.to_string()])
        .inc();
    None
}

/// A refused handshake: a plain-text response.
struct Rejection {
    status: u16,
    reason: &'static str,
    body: &'static str,
    headers: &'static [(&'static str, &'static str)],
}

impl Rejection {
    async fn send(&self, stream: &mut TcpStream) {
        respond(
            stream,
            self.status,
            self.reason,
            self.headers,
            self.body.as_bytes(),
        )
        .await;
    }
}

const DRAINING: Rejection = Rejection {
    status: 503,
    reason: "Service Unavailable",
    body: "Service is draining",
    headers: &[("Retry-After", "1")],
};
const ORIGIN: Rejection = Rejection {
    status: 403,
    reason: "Forbidden",
    body: "Origin not allowed",
    headers: &[],
};
const UNAUTHORIZED: Rejection = Rejection {
    status: 401,
    reason: "Unauthorized",
    body: "Missing or invalid credentials",
    headers: &[("WWW-Authenticate", "Bearer")],
};
const MISSING_USER_HEADER: Rejection = Rejection {
    status: 401,
    reason: "Unauthorized",
    body: "Missing X-User-ID header",
    headers: &[],
};
const INVALID_USER: Rejection = Rejection {
    status: 400,
    reason: "Bad Request",
    body: "Invalid user ID",
    headers: &[],
};
const METHOD: Rejection = Rejection {
    status: 405,
    reason: "Method Not Allowed",
    body: "Method Not Allowed",
    headers: &[("Allow", "GET")],
};
const BAD_UPGRADE: Rejection = Rejection {
    status: 400,
    reason: "Bad Request",
    body: "Bad WebSocket upgrade request",
    headers: &[("Sec-WebSocket-Version", "13")],
};

/// The checks of `docs/websocket.md` ("Connecting", "Handshake failures"), in order; the user on
/// success.
async fn handshake(head: &RequestHead, state: &AppState) -> Result<Uuid, Rejection> {
    let metrics = &state.metrics;
    let outcome = |label: &str| metrics.handshakes.with_label_values(&[label]).inc();
    let auth_failure = |label: &str| metrics.auth_failures.with_label_values(&[label]).inc();
    // 1. draining
    if state.is_draining() {
        outcome("draining");
        return Err(DRAINING);
    }
    // 2. origin
    if let (Some(allowed), Some(origin)) = (&state.settings.allowed_origins, head.header("origin"))
    {
        let origin = origin.trim().to_ascii_lowercase();
        if !allowed.contains(&origin) {
            outcome("origin");
            return Err(ORIGIN);
        }
    }
    // 3. identity
    let user = match state.settings.auth_mode {
        AuthMode::Jwt => {
            let query_token = head.query_param("token");
            let Some(token) =
                shared_auth::bearer_token(head.header("authorization"), query_token.as_deref())
            else {
                auth_failure("missing");
                outcome("unauthorized");
                return Err(UNAUTHORIZED);
            };
            match state.verifier.verify(token).await {
                Ok(user) => user,
                Err(error) => {
                    // The reason, never the token.
                    tracing::debug!(reason = %error, "handshake token refused");
                    auth_failure("invalid");
                    outcome("unauthorized");
                    return Err(UNAUTHORIZED);
                }
            }
        }
        AuthMode::Header => match head.header("x-user-id") {
            None => {
                auth_failure("missing_header");
                outcome("unauthorized");
                return Err(MISSING_USER_HEADER);
            }
            Some(value) => match shared_auth::parse_uuid(value.trim()) {
                Some(user) => user,
                None => {
                    auth_failure("bad_user_id");
                    outcome("bad_user_id");
                    return Err(INVALID_USER);
                }
            },
        },
    };
    // 4. a valid upgrade request
    if head.method != "GET" {
        outcome("method");
        return Err(METHOD);
    }
    let valid = head.version == 1
        && head.header_has_token("connection", "upgrade")
        && head.header_has_token("upgrade", "websocket")
        && head.header("sec-websocket-version").map(str::trim) == Some("13")
        && head
            .header("sec-websocket-key")
            .is_some_and(|key| is_websocket_key(key.trim()));
    if !valid {
        outcome("bad_request");
        return Err(BAD_UPGRADE);
    }
    outcome("upgraded");
    Ok(user)
}

/// 5. `101 Switching Protocols`; the socket is then the caller's to run.
async fn upgrade(
    mut stream: TcpStream,
    key: &str,
    leftover: Vec<u8>,
    user: Uuid,
) -> Option<Upgraded> {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    stream.write_all(response.as_bytes()).await.ok()?;
    Some(Upgraded {
        stream,
        leftover,
        user,
    })
}

/// Reads until a complete request head; returns it and any bytes read past it.
async fn read_head(stream: &mut TcpStream) -> Result<(RequestHead, Vec<u8>), HeadError> {
    let mut buffer = Vec::with_capacity(1024);
    loop {
        if buffer.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        buffer.reserve(1024);
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return Err(HeadError::Gone),
            Ok(_) => {}
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buffer) {
            Ok(httparse::Status::Complete(length)) => {
                let target = request.path.unwrap_or("/");
                let (path, query) = match target.split_once('?') {
                    Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
                    None => (target.to_owned(), None),
                };
                let head = RequestHead {
                    method: request.method.unwrap_or_default().to_owned(),
                    path,
                    query,
                    version: request.version.unwrap_or(0),
                    headers: request
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                return Ok((head, buffer[length..].to_vec()));
            }
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

async fn respond_json(stream: &mut TcpStream, status: u16, reason: &str, body: &[u8]) {
    respond(
        stream,
        status,
        reason,
        &[("Content-Type", "application/json")],
        body,
    )
    .await;
}

/// Writes a complete response and closes the connection. Plain text unless `headers` says
/// otherwise.
async fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut response = format!("HTTP/1.1 {status} {reason}\r\n");
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        response.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    let mut bytes = response.into_bytes();
    bytes.extend_from_slice(body);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&bytes).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A `Sec-WebSocket-Key`: base64 of exactly 16 bytes (RFC 6455 §4.1).
fn is_websocket_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    if bytes.len() != 24 || &bytes[22..] != b"==" {
        return false;
    }
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    // The last symbol carries 2 data bits; its 4 low bits must be zero.
    bytes[..22].iter().all(|c| value(*c).is_some())
        && value(bytes[21]).is_some_and(|v| v & 0x0f == 0)
}

/// `%XX` decoding of a query-string key or value: an invalid sequence is kept as it is, `+` stays
/// a plus sign (it is not form encoding), and bytes that are not UTF-8 become U+FFFD.
fn percent_decode(input: &str) -> String {
    percent_encoding::percent_decode_str(input)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_keys_must_be_sixteen_bytes_of_base64() {
        assert!(is_websocket_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!is_websocket_key("dGhlIHNhbXBsZSBub25jZQ"));
        assert!(!is_websocket_key("not a key at all!!!!!!=="));
        assert!(!is_websocket_key("dGhlIHNhbXBsZSBub25jZR=="));
    }

    #[test]
    fn query_parameters_are_percent_decoded() {
        let head = RequestHead {
            method: "GET".into(),
            path: "/ws".into(),
            query: Some("a=1&token=ab%2Ecd&x".into()),
            version: 1,
            headers: vec![],
        };
        assert_eq!(head.query_param("token").as_deref(), Some("ab.cd"));
        assert_eq!(head.query_param("x").as_deref(), Some(""));
        assert_eq!(head.query_param("nope"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("a+b%2Bc"), "a+b+c");
        assert_eq!(percent_decode("%41%4a%ff"), "AJ\u{fffd}");
    }
}
