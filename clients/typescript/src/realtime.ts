/**
 * The realtime connection to ws-gateway (docs/websocket.md, docs/delivery.md).
 *
 * - Connects to `/ws` with the token in `?token=` (works in browsers too), trying the given
 *   gateway URLs in turn; after any close it reconnects with jittered exponential back-off.
 * - Every WebSocket message is parsed once (one JSON object; `"\n"`-joined batches of older
 *   gateways are split).
 * - Per conversation, events are delivered in order and `message.new` without duplicates or gaps:
 *   the highest `seq` is tracked, a gap is filled with `after_seq` over REST before going on
 *   (see {@link SeqTracker}).
 * - After every connect (once `presence.snapshot` arrived), on every `resync`, it lists the
 *   conversations (`GET /conversations`), catches every one of them up with `after_seq`, and then
 *   emits `sync`.
 * - Keeps {@link PresenceState} and {@link TypingIndicators} current, and sends typing frames.
 */
import { Emitter, type Listener } from "./emitter.js";
import { ApiError } from "./errors.js";
import {
  isKnownEvent,
  parseFrame,
  type ConversationEvent,
  type ServerEvent,
  type ServerEventOf,
  type ServerEventType,
  type UnknownEvent,
} from "./events.js";
import { PresenceState } from "./presence.js";
import type { MessagingApi } from "./rest.js";
import { SeqTracker, TrackingStoppedError, type SeqSource } from "./seq-tracker.js";
import type { Conversation, Message } from "./types.js";
import {
  TypingIndicators,
  TypingSender,
  type TypingFrameType,
  type TypingSenderOptions,
} from "./typing.js";
import { backoffDelay, resolveToken, sleep, type BackoffOptions, type TokenSource } from "./util.js";

/** The part of the WebSocket API this client uses (browsers' WebSocket and the `ws` package both fit). */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: any) => void): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type ConnectionState =
  /** Not started. */
  | "idle"
  /** Opening the first socket. */
  | "connecting"
  /** A socket is open and its `presence.snapshot` has arrived. */
  | "open"
  /** Lost the socket; waiting to reconnect or reconnecting. */
  | "reconnecting"
  /** `close()` was called. */
  | "closed";

/** Why a sync ran. */
export type SyncReason = "connect" | "reconnect" | "resync";

/** Emitted when a sync has finished: every conversation is caught up. */
export interface SyncInfo {
  reason: SyncReason;
  /** `GET /conversations`, every page: my conversations now (archived included). */
  conversations: Conversation[];
  /** Conversations tracked from this sync on (on the first sync: all of them). */
  added: string[];
  /** Conversations no longer listed (left or removed while disconnected): no longer tracked. */
  removed: string[];
}

export interface DisconnectInfo {
  url: string;
  /** The close code (1006 when the connection dropped without a close frame). */
  code: number;
  reason: string;
  /** Whether the socket had reached `presence.snapshot`. */
  wasOpen: boolean;
}

/** Every event {@link RealtimeConnection.on} accepts. */
export type RealtimeEventMap = {
  [K in ServerEventType]: ServerEventOf<K>;
} & {
  /** Every server event, processed: ordered per conversation, duplicates removed, gaps filled. */
  event: ServerEvent;
  /** Every parsed envelope as it arrived, known type or not, before any processing. */
  raw: UnknownEvent;
  state: ConnectionState;
  /** A socket is usable (its `presence.snapshot` arrived); a sync follows. */
  connected: { url: string };
  disconnected: DisconnectInfo;
  sync: SyncInfo;
  /** Something failed and is being retried (REST during catch-up, a connect attempt, a 401). */
  error: unknown;
};

export interface RealtimeOptions {
  /** Gateway WebSocket URL(s), e.g. `ws://localhost:8085/ws`; tried in turn after failures. */
  urls: string | readonly string[];
  /** The JWT (or a function returning a fresh one), sent as `?token=` on every connect. */
  token?: TokenSource;
  /** The REST client, for catch-up. */
  api: MessagingApi;
  /** WebSocket constructor (default `globalThis.WebSocket`; in Node 20 pass the `ws` package's). */
  WebSocket?: WebSocketConstructor;
  /** Reconnect back-off (default 500 ms doubling to 30 s, ±50 %). */
  reconnect?: BackoffOptions;
  /** Give up on a socket that has not delivered `presence.snapshot` after this long (default 15,000 ms). */
  connectTimeoutMs?: number;
  /** Back-off between retries of failed REST calls during catch-up (default as `reconnect`). */
  retry?: BackoffOptions;
  /** `limit` of the `after_seq` pages (default 100, the maximum). */
  catchUpPageSize?: number;
  /** At most this many REST calls at once for catch-up (default 4). */
  maxConcurrentRequests?: number;
  /** Typing indicators expire this long after the last `typing.start` (default 6,000 ms). */
  typingTimeoutMs?: number;
}

const OPEN = 1;
const MAX_CLIENT_FRAME = 4096;

/**
 * ```ts
 * const rt = new RealtimeConnection({ urls: ["wss://chat.example.com/ws"], token, api });
 * rt.on("message.new", (e) => show(e.payload));
 * rt.on("sync", (s) => refreshList(s.conversations));
 * await rt.connect(); // resolves after the first sync
 * ```
 */
export class RealtimeConnection {
  readonly api: MessagingApi;
  /** Who of my presence peers is online. */
  readonly presence = new PresenceState();
  /** Who is typing where. */
  readonly typing: TypingIndicators;

  private readonly urls: readonly string[];
  private readonly token: TokenSource | undefined;
  private readonly WS: WebSocketConstructor;
  private readonly reconnectOptions: BackoffOptions;
  private readonly retryOptions: BackoffOptions;
  private readonly connectTimeoutMs: number;
  private readonly pageSize: number;
  private readonly emitter = new Emitter<RealtimeEventMap>();
  private readonly tracker: SeqTracker;
  private readonly limiter: Limiter;
  /** Aborted by close(): ends back-off sleeps and in-flight sync requests. */
  private readonly lifetime = new AbortController();

  private socket: WebSocketLike | undefined;
  private socketOpen = false;
  private currentUrl: string | undefined;
  private connectionState: ConnectionState = "idle";
  private loop: Promise<void> | undefined;
  private stopped = false;
  private everConnected = false;
  private urlIndex = 0;
  private skipBackoff = false;
  private wake: (() => void) | undefined;
  private syncRunning = false;
  private syncPending: SyncReason | undefined;
  private readyPromise: Promise<void> | undefined;
  private resolveReady: (() => void) | undefined;
  private rejectReady: ((error: unknown) => void) | undefined;

  constructor(options: RealtimeOptions) {
    this.urls = typeof options.urls === "string" ? [options.urls] : [...options.urls];
    if (this.urls.length === 0) throw new TypeError("RealtimeConnection: at least one gateway URL is needed");
    this.api = options.api;
    this.token = options.token;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new TypeError(
        "RealtimeConnection: no global WebSocket; pass options.WebSocket (e.g. the `ws` package's WebSocket)",
      );
    }
    this.WS = WS;
    this.reconnectOptions = options.reconnect ?? {};
    this.retryOptions = options.retry ?? options.reconnect ?? {};
    this.connectTimeoutMs = options.connectTimeoutMs ?? 15_000;
    this.pageSize = options.catchUpPageSize ?? 100;
    this.limiter = new Limiter(options.maxConcurrentRequests ?? 4);
    this.typing = new TypingIndicators({ timeoutMs: options.typingTimeoutMs });
    this.emitter.onListenerError = (error) => {
      setTimeout(() => {
        throw error;
      });
    };

    const api = this.api;
    const pageSize = this.pageSize;
    const limiter = this.limiter;
    const source: SeqSource = {
      newestSeq: (conversationId, signal) =>
        limiter.run(async () => (await api.listMessages(conversationId, { limit: 1, signal })).data[0]?.seq ?? 0),
      messagesAfter: (conversationId, afterSeq, onPage, signal) =>
        limiter.run(async () => {
          await api.listMessagesAfter(conversationId, afterSeq, { pageSize, onPage, signal });
        }),
    };
    this.tracker = new SeqTracker({
      source,
      deliver: (event) => this.deliver(event),
      onError: (error) => this.emitter.emit("error", error),
      onGone: (conversationId) => this.typing.clear(conversationId),
      retry: this.retryOptions,
    });
  }

  /** The connection's state. */
  get state(): ConnectionState {
    return this.connectionState;
  }

  /** The gateway URL of the current (or last) socket. */
  get url(): string | undefined {
    return this.currentUrl;
  }

  /**
   * Starts connecting (and reconnecting, until {@link close}). Resolves after the first
   * successful sync; rejects only if the connection is closed before that.
   */
  connect(): Promise<void> {
    if (!this.readyPromise) {
      this.readyPromise = new Promise<void>((resolve, reject) => {
        this.resolveReady = resolve;
        this.rejectReady = reject;
      });
      this.readyPromise.catch(() => {});
    }
    if (this.stopped) {
      this.rejectReady?.(new Error("RealtimeConnection is closed"));
    } else if (!this.loop) {
      this.loop = this.run();
    }
    return this.readyPromise;
  }

  /** Closes the socket for good: no reconnect, no more events, timers cleared. */
  close(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.setState("closed");
    const socket = this.socket;
    this.socket = undefined;
    this.socketOpen = false;
    try {
      socket?.close(1000, "client closed");
    } catch {
      // already closed
    }
    this.wake?.();
    this.lifetime.abort(new Error("RealtimeConnection closed"));
    this.tracker.dispose();
    this.typing.dispose();
    this.rejectReady?.(new Error("RealtimeConnection closed before it was ready"));
  }

  /** Drops the current socket and connects again at once (e.g. after the network came back). */
  reconnect(): void {
    if (this.stopped) return;
    this.skipBackoff = true;
    this.wake?.();
    try {
      this.socket?.close(1000, "reconnect");
    } catch {
      // already closed
    }
  }

  /** Subscribes to an event (see {@link RealtimeEventMap}); returns the function that unsubscribes. */
  on<K extends keyof RealtimeEventMap>(type: K, listener: Listener<RealtimeEventMap[K]>): () => void {
    return this.emitter.on(type, listener);
  }

  once<K extends keyof RealtimeEventMap>(type: K, listener: Listener<RealtimeEventMap[K]>): () => void {
    return this.emitter.once(type, listener);
  }

  off<K extends keyof RealtimeEventMap>(type: K, listener: Listener<RealtimeEventMap[K]>): void {
    this.emitter.off(type, listener);
  }

  /** The highest `seq` delivered (or taken as the starting point) for a conversation. */
  lastSeq(conversationId: string): number | undefined {
    return this.tracker.lastSeq(conversationId);
  }

  /** The conversations being tracked. */
  trackedConversations(): string[] {
    return this.tracker.conversationIds();
  }

  /**
   * The newest `limit` messages (default 50, at most 100) up to where live delivery starts,
   * **oldest first**; with `beforeSeq`, those before it. Together with the `message.new` events
   * this is complete and without duplicates: everything newer than the returned messages arrives
   * (or has arrived) as an event. Rejects with the {@link ApiError} if the conversation cannot be
   * read.
   */
  async loadHistory(conversationId: string, options?: { limit?: number; beforeSeq?: number }): Promise<Message[]> {
    const limit = options?.limit ?? 50;
    return this.tracker.run(conversationId, async (last) => {
      const before = Math.min(options?.beforeSeq ?? Number.POSITIVE_INFINITY, last + 1);
      const signal = this.lifetime.signal;
      const page = await this.limiter.run(() =>
        this.api.listMessages(conversationId, { beforeSeq: before, limit, signal }),
      );
      return page.data.slice().reverse();
    });
  }

  /**
   * Sends `typing.start` or `typing.stop` for a conversation. Returns false when no socket is
   * open (nothing is queued). Prefer {@link typingSender}, which keeps to the protocol's timing.
   */
  sendTyping(conversationId: string, type: TypingFrameType, payload?: Record<string, unknown>): boolean {
    const socket = this.socket;
    if (!socket || !this.socketOpen || socket.readyState !== OPEN) return false;
    const frame: Record<string, unknown> = { type, conversation_id: conversationId };
    if (payload !== undefined) frame.payload = payload;
    const text = JSON.stringify(frame);
    // The gateway closes the socket (1009) on a client message over 4096 bytes.
    if (new TextEncoder().encode(text).length > MAX_CLIENT_FRAME) {
      throw new RangeError("typing frame over 4096 bytes; keep the payload small");
    }
    try {
      socket.send(text);
      return true;
    } catch {
      return false;
    }
  }

  /** A {@link TypingSender} for one conversation's input box. */
  typingSender(conversationId: string, options?: TypingSenderOptions): TypingSender {
    return new TypingSender((type, payload) => this.sendTyping(conversationId, type, payload), options);
  }

  /**
   * Catches every tracked conversation up and lists the conversations again, as after a
   * reconnect (e.g. when the app comes back to the foreground). Resolves when done.
   */
  async resync(): Promise<void> {
    if (this.stopped) throw new Error("RealtimeConnection is closed");
    // A sync already running may have listed the conversations before this call: wait for the
    // one after it.
    let remaining = this.syncRunning ? 2 : 1;
    await new Promise<void>((resolve) => {
      const off = this.on("sync", () => {
        if (--remaining > 0) return;
        off();
        resolve();
      });
      this.requestSync("resync");
    });
  }

  // ------------------------------------------------------------------ socket loop

  private setState(state: ConnectionState): void {
    if (this.connectionState === state) return;
    this.connectionState = state;
    this.emitter.emit("state", state);
  }

  private async run(): Promise<void> {
    let attempt = 0;
    let failures = 0;
    while (!this.stopped) {
      const url = this.urls[this.urlIndex % this.urls.length] as string;
      this.setState(this.everConnected ? "reconnecting" : "connecting");
      const wasOpen = await this.openSocket(url);
      if (this.stopped) break;
      // Any gateway serves any user: the next attempt goes to the next URL.
      this.urlIndex++;
      if (wasOpen) {
        attempt = 0;
        failures = 0;
      } else if (++failures % 3 === 0) {
        // Browsers do not expose a refused handshake's status: check the token over REST.
        void this.checkCredentials();
      }
      this.setState("reconnecting");
      const delay = this.skipBackoff ? 0 : backoffDelay(attempt++, this.reconnectOptions);
      this.skipBackoff = false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, delay);
        function done() {
          clearTimeout(timer);
          resolve();
        }
        this.wake = done;
      });
      this.wake = undefined;
    }
  }

  /** Opens one socket and resolves when it is closed, with whether it reached the snapshot. */
  private async openSocket(url: string): Promise<boolean> {
    let token: string | undefined;
    try {
      token = await resolveToken(this.token);
    } catch (error) {
      this.emitter.emit("error", error);
      return false;
    }
    if (this.stopped) return false;
    const target = token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
    let socket: WebSocketLike;
    try {
      socket = new this.WS(target);
    } catch (error) {
      this.emitter.emit("error", error);
      return false;
    }
    try {
      socket.binaryType = "arraybuffer";
    } catch {
      // not supported: text frames only anyway
    }
    this.socket = socket;
    this.currentUrl = url;
    return new Promise<boolean>((resolve) => {
      let open = false;
      let settled = false;
      const finish = (code: number, reason: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (this.socket === socket) {
          this.socket = undefined;
          this.socketOpen = false;
        }
        if (!this.stopped) this.emitter.emit("disconnected", { url, code, reason, wasOpen: open });
        resolve(open);
      };
      const timer = setTimeout(() => {
        if (open) return;
        try {
          socket.close(4000, "connect timeout");
        } catch {
          // ignore
        }
        finish(1006, "connect timeout");
      }, this.connectTimeoutMs);
      socket.addEventListener("message", (event: { data: unknown }) => {
        if (settled || this.stopped) return;
        const text = toText(event.data);
        if (text === undefined) return;
        for (const envelope of parseFrame(text)) {
          this.emitter.emit("raw", envelope);
          if (!isKnownEvent(envelope)) continue;
          if (envelope.type === "presence.snapshot" && !open) {
            open = true;
            clearTimeout(timer);
            this.socketOpen = true;
          }
          this.dispatch(envelope, url);
        }
      });
      socket.addEventListener("close", (event: { code?: number; reason?: string }) => {
        finish(event.code ?? 1006, event.reason ?? "");
      });
      socket.addEventListener("error", () => {
        // A close event follows.
      });
    });
  }

  private dispatch(event: ServerEvent, url: string): void {
    switch (event.type) {
      case "presence.snapshot": {
        const ids = Array.isArray(event.payload?.online_user_ids) ? event.payload.online_user_ids : [];
        this.presence.applySnapshot(ids);
        this.emitEvent(event);
        const first = !this.everConnected;
        this.everConnected = true;
        this.setState("open");
        this.emitter.emit("connected", { url });
        this.requestSync(first ? "connect" : "reconnect");
        return;
      }
      case "presence.online":
      case "presence.offline":
        if (typeof event.payload?.user_id === "string") {
          this.presence.set(event.payload.user_id, event.type === "presence.online");
        }
        this.emitEvent(event);
        return;
      case "resync":
        this.emitEvent(event);
        this.requestSync("resync");
        return;
      default:
        if (event.conversation_id) this.tracker.push(event);
        else this.emitEvent(event);
    }
  }

  /** Called by the tracker, in order per conversation. */
  private deliver(event: ConversationEvent): void {
    if (this.stopped) return;
    switch (event.type) {
      case "typing.start":
        this.typing.start(event.conversation_id, event.payload.user_id);
        break;
      case "typing.stop":
        this.typing.stop(event.conversation_id, event.payload.user_id);
        break;
      case "message.new":
        this.typing.stop(event.conversation_id, event.payload.sender_id);
        break;
      case "conversation.left":
        this.typing.clear(event.conversation_id);
        break;
      default:
        break;
    }
    this.emitEvent(event);
  }

  private emitEvent(event: ServerEvent): void {
    this.emitter.emit(event.type, event as never);
    this.emitter.emit("event", event);
  }

  private async checkCredentials(): Promise<void> {
    try {
      await this.api.listConversations({ limit: 1, signal: this.lifetime.signal });
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) this.emitter.emit("error", error);
    }
  }

  // ------------------------------------------------------------------ sync

  private requestSync(reason: SyncReason): void {
    if (this.stopped) return;
    if (this.syncRunning) {
      // Coalesce: one more round after the current one.
      if (this.syncPending === undefined || reason === "resync") this.syncPending = reason;
      return;
    }
    void this.runSyncs(reason);
  }

  private async runSyncs(first: SyncReason): Promise<void> {
    this.syncRunning = true;
    try {
      let reason: SyncReason | undefined = first;
      while (reason !== undefined && !this.stopped) {
        this.syncPending = undefined;
        await this.syncOnce(reason);
        reason = this.syncPending;
      }
    } finally {
      this.syncRunning = false;
    }
  }

  private async syncOnce(reason: SyncReason): Promise<void> {
    const before = new Set(this.tracker.conversationIds());
    let conversations: Conversation[] | undefined;
    for (let attempt = 0; conversations === undefined; attempt++) {
      if (this.stopped) return;
      try {
        const signal = this.lifetime.signal;
        conversations = await this.limiter.run(() => this.api.listAllConversations({ signal }));
      } catch (error) {
        if (this.stopped) return;
        this.emitter.emit("error", error);
        try {
          await sleep(backoffDelay(attempt, this.retryOptions), this.lifetime.signal);
        } catch {
          return;
        }
      }
    }
    if (this.stopped) return;
    const listed = new Set(conversations.map((c) => c.id));
    const removed = [...before].filter((id) => !listed.has(id));
    for (const id of removed) {
      this.tracker.forget(id);
      this.typing.clear(id);
    }
    const added = conversations.map((c) => c.id).filter((id) => !before.has(id));
    const results = await Promise.allSettled(conversations.map((c) => this.tracker.catchUp(c.id)));
    if (this.stopped) return;
    for (const result of results) {
      if (result.status === "rejected" && !(result.reason instanceof TrackingStoppedError)) {
        this.emitter.emit("error", result.reason);
      }
    }
    this.emitter.emit("sync", { reason, conversations, added, removed });
    this.resolveReady?.();
  }
}

function toText(data: unknown): string | undefined {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  return undefined;
}

/** Limits concurrent async work. */
class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly max: number) {}

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) {
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else {
      this.active++;
    }
    try {
      return await work();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
