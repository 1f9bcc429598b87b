/**
 * Typing, both ways (docs/websocket.md, "Sending typing frames" and `typing.start`/`typing.stop`).
 *
 * - {@link TypingSender}: call `input()` on every keystroke; it sends `typing.start` at once and
 *   then at most every 3 s while the user keeps typing (inside the gateway's 2/s limit, often
 *   enough to beat its 5 s automatic stop), and `typing.stop` when `stop()` is called (message
 *   sent, input cleared) or after a pause.
 * - {@link TypingIndicators}: who is typing where, from the events; an entry disappears on
 *   `typing.stop`, when that user's message arrives, or 6 s after their last `typing.start`.
 */
import { Emitter, type Listener } from "./emitter.js";

export type TypingFrameType = "typing.start" | "typing.stop";

/** Sends one typing frame; returns false when it could not be sent (socket not open). */
export type TypingSend = (type: TypingFrameType, payload?: Record<string, unknown>) => boolean;

export interface TypingSenderOptions {
  /** Resend `typing.start` at most this often while typing (default 3,000 ms). */
  resendMs?: number;
  /** Send `typing.stop` after this long without `input()` (default 5,000 ms; 0 disables). */
  idleMs?: number;
  /** Payload sent with `typing.start`, e.g. `{kind: "text"}` (keep it small). */
  payload?: Record<string, unknown>;
}

export class TypingSender {
  private readonly send: TypingSend;
  private readonly resendMs: number;
  private readonly idleMs: number;
  private readonly payload: Record<string, unknown> | undefined;
  private typing = false;
  private lastStart = -Infinity;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(send: TypingSend, options: TypingSenderOptions = {}) {
    this.send = send;
    this.resendMs = options.resendMs ?? 3_000;
    this.idleMs = options.idleMs ?? 5_000;
    this.payload = options.payload;
  }

  /** Whether this sender is in the typing state (a start was sent and no stop since). */
  get isTyping(): boolean {
    return this.typing;
  }

  /** The user typed (call on every input event). */
  input(now: number = Date.now()): void {
    if (!this.typing || now - this.lastStart >= this.resendMs) {
      if (this.send("typing.start", this.payload)) {
        this.lastStart = now;
        this.typing = true;
      }
    }
    if (this.idleMs > 0) {
      clearTimeout(this.idleTimer);
      this.idleTimer = setTimeout(() => this.stop(), this.idleMs);
      (this.idleTimer as { unref?: () => void }).unref?.();
    }
  }

  /** Convenience: `input()` for a non-empty text, `stop()` for an empty one. */
  update(text: string): void {
    if (text.length > 0) this.input();
    else this.stop();
  }

  /** The user stopped (message sent, input cleared, focus lost): sends `typing.stop` if typing. */
  stop(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (!this.typing) return;
    this.typing = false;
    this.lastStart = -Infinity;
    this.send("typing.stop");
  }

  /** Stops (sending `typing.stop` if needed) and clears the timer. */
  dispose(): void {
    this.stop();
  }
}

export interface TypingIndicatorsOptions {
  /** Forget a typist after this long without a new `typing.start` (default 6,000 ms). */
  timeoutMs?: number;
}

/** A conversation's typists changed. */
export interface TypingChange {
  conversationId: string;
  userIds: string[];
}

export class TypingIndicators {
  private readonly timeoutMs: number;
  /** conversation → user → expiry timer */
  private readonly typists = new Map<string, Map<string, ReturnType<typeof setTimeout>>>();
  private readonly changes = new Emitter<{ change: TypingChange }>();

  constructor(options: TypingIndicatorsOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 6_000;
  }

  /** Who is typing in the conversation now. */
  typing(conversationId: string): string[] {
    return [...(this.typists.get(conversationId)?.keys() ?? [])];
  }

  isTyping(conversationId: string, userId: string): boolean {
    return this.typists.get(conversationId)?.has(userId) ?? false;
  }

  /** Calls `listener` whenever a conversation's typists change; returns the unsubscribe function. */
  subscribe(listener: Listener<TypingChange>): () => void {
    return this.changes.on("change", listener);
  }

  /** Applies `typing.start`. */
  start(conversationId: string, userId: string): void {
    let users = this.typists.get(conversationId);
    if (!users) {
      users = new Map();
      this.typists.set(conversationId, users);
    }
    const existing = users.get(userId);
    clearTimeout(existing);
    const timer = setTimeout(() => this.stop(conversationId, userId), this.timeoutMs);
    (timer as { unref?: () => void }).unref?.();
    users.set(userId, timer);
    if (existing === undefined) this.notify(conversationId);
  }

  /** Applies `typing.stop` (and a message from that user). */
  stop(conversationId: string, userId: string): void {
    const users = this.typists.get(conversationId);
    const timer = users?.get(userId);
    if (!users || timer === undefined) return;
    clearTimeout(timer);
    users.delete(userId);
    if (users.size === 0) this.typists.delete(conversationId);
    this.notify(conversationId);
  }

  /** Forgets a conversation's typists (left it). */
  clear(conversationId: string): void {
    const users = this.typists.get(conversationId);
    if (!users) return;
    for (const timer of users.values()) clearTimeout(timer);
    this.typists.delete(conversationId);
    this.notify(conversationId);
  }

  /** Clears every timer. */
  dispose(): void {
    for (const users of this.typists.values()) for (const timer of users.values()) clearTimeout(timer);
    this.typists.clear();
  }

  private notify(conversationId: string): void {
    this.changes.emit("change", { conversationId, userIds: this.typing(conversationId) });
  }
}
