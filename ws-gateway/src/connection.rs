//! One WebSocket, from the 101 to the close (`docs/websocket.md`: "After the upgrade", "Sending
//! typing frames", "Keep-alive, limits and close codes").
//!
//! Setup, in the order of "After the upgrade": register the socket (its send queue starts filling
//! at once, but nothing is written yet), load the user's conversations and subscribe, register
//! presence (publishing `presence.online` on the fleet-wide 0→1), then write `presence.snapshot` —
//! the first frame — and only then start draining the queue, so events that arrived meanwhile
//! follow the snapshot instead of being dropped.
//!
//! Then one `select!` over: the end-of-drain hard stop, the socket (typing frames, pings, close),
//! the [`Outbox`] (queued events — whatever is queued goes out with one write, one text frame per
//! event — and
//! the gateway's close requests: send-queue overflow or drain), and the keep-alive timer. A
//! problem of this socket closes this socket only, with a close frame when the transport still
//! allows one, then lingers briefly so the client can read it.

use std::{sync::Arc, time::Duration};

use futures_util::{SinkExt, StreamExt};
use shared_ops::Chain;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Error as WsError, Message, Utf8Bytes,
        error::ProtocolError,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};
use uuid::Uuid;

use crate::{
    fanout::{Outbox, SocketId},
    membership,
    protocol::{self, Ignored, close},
    state::AppState,
};

/// How long sending a close frame may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the gateway keeps reading after its close frame, so the client can read it (an
/// unread receive buffer would turn the close into a reset).
const LINGER: Duration = Duration::from_secs(2);
/// Most events in one write: everything queued for the socket is sent with one `write`, one
/// text frame per event, up to this many events or [`BATCH_BYTES`].
const BATCH: usize = 64;
/// A write stops growing once it holds this many payload bytes (a larger single event is still
/// sent whole).
const BATCH_BYTES: usize = 64 * 1024;
/// Bound on loading the user's conversations.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection ended: the close code sent or received, or `None` when the transport
/// failed first.
type Ending = Option<u16>;

/// The per-socket task (mini-redis' `Handler`).
struct Handler {
    ws: WebSocketStream<TcpStream>,
    user: Uuid,
    socket: SocketId,
    /// Events for this socket and close requests from the gateway (overflow becomes a 1013
    /// request); the other `Arc` is in the fan-out registry, where the drain reaches it too.
    outbox: Arc<Outbox>,
    state: Arc<AppState>,
    last_received: Instant,
}

/// A socket after its `101`, ready for [`serve`].
pub struct Upgraded {
    pub stream: TcpStream,
    /// Bytes the client sent after its request head.
    pub leftover: Vec<u8>,
    pub user: Uuid,
}

/// Runs a freshly upgraded socket to its end.
pub async fn serve(upgraded: Upgraded, state: Arc<AppState>) {
    let Upgraded {
        stream,
        leftover,
        user,
    } = upgraded;
    let config = Some(protocol::websocket_config());
    let ws = if leftover.is_empty() {
        WebSocketStream::from_raw_socket(stream, Role::Server, config).await
    } else {
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, config).await
    };
    let metrics = Arc::clone(&state.metrics);
    metrics.sockets_open.inc();
    let registration = state.fanout.register(user, state.settings.send_queue);
    tracing::debug!(user.id = %user, socket.id = registration.socket, "socket open");
    let mut handler = Handler {
        ws,
        user,
        socket: registration.socket,
        outbox: registration.outbox,
        state: Arc::clone(&state),
        last_received: Instant::now(),
    };
    let (ending, presence_registered) = match Box::pin(handler.setup()).await {
        Ok(()) => (handler.run().await, true),
        Err(ending) => (ending, false),
    };
    let socket = handler.socket;
    state.fanout.unregister(user, socket);
    // The socket (its file and buffers) goes now, not after the presence round trip.
    drop(handler);
    if presence_registered {
        Box::pin(state.presence.disconnect(user)).await;
    }
    metrics.sockets_open.dec();
    let code = ending.map_or_else(|| "none".to_owned(), |c| c.to_string());
    metrics.closes.with_label_values(&[code.as_str()]).inc();
    tracing::debug!(user.id = %user, socket.id = socket, close.code = %code, "socket closed");
}

impl Handler {
    /// Steps 1–3 of `docs/websocket.md`, "After the upgrade". `Err` carries how the socket ended
    /// when setup failed.
    async fn setup(&mut self) -> Result<(), Ending> {
        let state = Arc::clone(&self.state);
        let loaded = match tokio::time::timeout(LOAD_TIMEOUT, state.loader.load(self.user)).await {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(error)) => {
                tracing::error!(error = %Chain(&*error), user.id = %self.user, "loading conversations failed");
                return Err(self.close(close::INTERNAL, "Internal error").await);
            }
            Err(_) => {
                tracing::error!(user.id = %self.user, "loading conversations timed out");
                return Err(self.close(close::INTERNAL, "Internal error").await);
            }
        };
        let peers = membership::presence_peers(self.user, &loaded);
        let readies = state
            .fanout
            .add_conversations(self.user, self.socket, loaded);
        state.fanout.settle(readies).await;

        state.presence.connect(self.user).await;
        state.fanout.mark_present(self.user, self.socket);

        let online = state.presence.online_among(&peers).await;
        let snapshot = shared_proto::json::presence_snapshot_frame(&online);
        let snapshot = Utf8Bytes::try_from(snapshot).expect("the snapshot frame is ASCII");
        match self.write_batch(snapshot).await {
            Ok(()) => Ok(()),
            // Presence is registered already: undo it here, the caller only undoes a full setup.
            Err(ending) => {
                self.state.presence.disconnect(self.user).await;
                Err(ending)
            }
        }
    }

    /// Step 4: the socket's life after the snapshot.
    async fn run(&mut self) -> Ending {
        let settings = &self.state.settings;
        let (ping_every, idle_after, write_timeout) = (
            settings.ping_interval,
            settings.idle_timeout,
            settings.write_timeout,
        );
        // A drain asks each socket to close through its outbox; the `shutdown` token is read
        // once, here, for a socket registered after the drain's last sweep (server.rs). Polling
        // the token in the loop below would take its mutex, shared by every socket of the
        // process, once or more per batch written.
        if self.state.shutdown.is_cancelled() {
            return self.close(close::RESTART, "Service restart").await;
        }
        let mut next_ping = Instant::now() + ping_every;
        let timer = tokio::time::sleep_until(next_ping);
        tokio::pin!(timer);
        loop {
            if let Some(code) = self.outbox.requested() {
                return self.close(code, close_reason(code)).await;
            }
            let idle_deadline = self.last_received + idle_after;
            // Re-arming a timer takes the runtime's timer lock: only when the deadline moved
            // (a frame received, a ping sent), not once per batch written.
            let deadline = next_ping.min(idle_deadline);
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let step = tokio::select! {
                biased;
                incoming = self.ws.next() => Step::Incoming(incoming),
                frame = self.outbox.next() => Step::Outgoing(frame),
                _ = &mut timer => Step::Timer,
            };
            match step {
                Step::Incoming(None) => return None,
                Step::Incoming(Some(Ok(message))) => {
                    self.last_received = Instant::now();
                    match message {
                        Message::Text(text) => {
                            Box::pin(self.on_client_message(text.as_bytes())).await
                        }
                        Message::Binary(bytes) => Box::pin(self.on_client_message(&bytes)).await,
                        Message::Close(frame) => {
                            // tungstenite queued the reply; send it.
                            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.flush()).await;
                            return Some(frame.map_or(1005, |f| f.code.into()));
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Step::Incoming(Some(Err(error))) => {
                    return match error {
                        // The client's TCP connection ended without a close frame: nothing to
                        // answer, and no one to linger for.
                        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
                        WsError::Capacity(_) => self.close(close::TOO_BIG, "Message too big").await,
                        WsError::Utf8(_) => self.close(close::INVALID_DATA, "Invalid UTF-8").await,
                        WsError::Protocol(_) => self.close(close::PROTOCOL, "Protocol error").await,
                        _ => None,
                    };
                }
                // A close was requested: the top of the loop sends it.
                Step::Outgoing(None) => continue,
                Step::Outgoing(Some(frame)) => {
                    if let Err(ending) = self.write_batch(frame).await {
                        return ending;
                    }
                }
                Step::Timer => {
                    let now = Instant::now();
                    if now >= idle_deadline {
                        return self.close(close::GOING_AWAY, "Idle timeout").await;
                    }
                    if now >= next_ping {
                        next_ping = now + ping_every;
                        let ping = self.ws.send(Message::Ping(Default::default()));
                        match tokio::time::timeout(write_timeout, ping).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return None,
                            Err(_) => return self.close(close::TRY_AGAIN, "Write timeout").await,
                        }
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else is already queued (up to [`BATCH`] events or
    /// [`BATCH_BYTES`]) with one `write` to the socket, one text frame per event
    /// (`docs/websocket.md`, "Messages and the envelope": one event per WebSocket message), within
    /// the write timeout; a blocked write closes with 1013.
    ///
    /// The frames are encoded here and written to the TCP stream directly, after tungstenite's
    /// own buffer (pongs, pings) is flushed, so frames never interleave. One `write` per event
    /// would cost a loopback `sendto` — and a wake-up of the reader — per delivery: under a
    /// 10 × 1,000 fan-out that kernel path would take most of the gateway's CPU. Going around
    /// tungstenite also keeps its output buffer from growing to the largest frame ever sent
    /// and keeping that capacity for the socket's life (a `conversation.joined` with a
    /// thousand participants is over 100 KB).
    async fn write_batch(&mut self, first: Utf8Bytes) -> Result<(), Ending> {
        let room = BATCH_BYTES.saturating_sub(first.len());
        let mut events = vec![first];
        self.outbox.pop_batch(&mut events, BATCH, room);
        let frame = protocol::text_frames(&events);
        let metrics = Arc::clone(&self.state.metrics);
        let ws = &mut self.ws;
        let mut written = 0usize;
        let progress = &mut written;
        let result = tokio::time::timeout(self.state.settings.write_timeout, async move {
            ws.flush().await?;
            let stream = ws.get_mut();
            while *progress < frame.len() {
                match stream.write(&frame[*progress..]).await? {
                    0 => return Err(WsError::Io(std::io::ErrorKind::WriteZero.into())),
                    n => *progress += n,
                }
            }
            Ok::<_, WsError>(frame.len())
        })
        .await;
        match result {
            Ok(Ok(bytes)) => {
                metrics.socket_writes.inc();
                metrics.events_out.inc_by(events.len() as u64);
                metrics.bytes_out.inc_by(bytes as u64);
                Ok(())
            }
            Ok(Err(_)) => Err(None),
            Err(_) => {
                tracing::info!(user.id = %self.user, socket.id = self.socket, "write blocked; closing with 1013");
                if written == 0 {
                    Err(self.close(close::TRY_AGAIN, "Write timeout").await)
                } else {
                    // Part of the frame is out: a close frame after it would read as its payload.
                    // The peer has not read for the whole write timeout; just end the stream.
                    Err(self.abandon(close::TRY_AGAIN).await)
                }
            }
        }
    }

    /// A client message: a typing frame to relay, or ignored (`docs/websocket.md`, "Sending typing
    /// frames").
    async fn on_client_message(&mut self, message: &[u8]) {
        let metrics = &self.state.metrics;
        let frame = match protocol::parse_typing_frame(message, self.user) {
            Ok(frame) => frame,
            Err(reason) => {
                metrics
                    .client_frames_ignored
                    .with_label_values(&[reason.label()])
                    .inc();
                return;
            }
        };
        let ignored = |reason: Ignored| {
            metrics
                .client_frames_ignored
                .with_label_values(&[reason.label()])
                .inc();
            let op = if reason == Ignored::RateLimited {
                "rate_limited"
            } else {
                "not_member"
            };
            metrics.typing_ops.with_label_values(&[op]).inc();
        };
        if let Err(reason) = self
            .state
            .fanout
            .typing_member(self.user, frame.conversation_id)
        {
            return ignored(reason);
        }
        // Rule 7 is fleet-wide: the bucket lives in Redis with the typing entry. Without Redis,
        // this gateway's own bucket still bounds what the user relays through it.
        let allowed = match self.state.typing.record(self.user, &frame).await {
            Some(allowed) => allowed,
            None => self
                .state
                .fanout
                .typing_local_bucket(self.user, frame.conversation_id)
                .is_ok(),
        };
        if !allowed {
            return ignored(Ignored::RateLimited);
        }
        self.state.typing.relay(self.user, frame).await;
    }

    /// Sends a close frame (bounded), then lingers until the client closes its side (bounded).
    async fn close(&mut self, code: CloseCode, reason: &'static str) -> Ending {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.ws.close(Some(frame))).await;
        self.linger().await;
        Some(code.into())
    }

    /// Ends the stream without a close frame (the last frame was cut short: a close frame after
    /// it would read as its payload), lingering as [`close`](Self::close) does; `code` is only
    /// what the connection reports as its ending.
    async fn abandon(&mut self, code: CloseCode) -> Ending {
        self.linger().await;
        Some(code.into())
    }

    /// Shuts the sending side down and reads until the client closes its side (bounded).
    async fn linger(&mut self) {
        let stream = self.ws.get_mut();
        let _ = tokio::time::timeout(LINGER, async {
            let _ = stream.shutdown().await;
            let mut discard = vec![0u8; 512];
            while let Ok(n) = stream.read(&mut discard).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// What woke the connection's `select!`.
enum Step {
    Incoming(Option<Result<Message, WsError>>),
    Outgoing(Option<Utf8Bytes>),
    Timer,
}

fn close_reason(code: CloseCode) -> &'static str {
    match code {
        close::TRY_AGAIN => "Send queue full",
        close::RESTART => "Service restart",
        _ => "",
    }
}
