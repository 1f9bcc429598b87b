/**
 * Per-conversation ordering, gap detection, catch-up and de-duplication (docs/websocket.md,
 * "Staying consistent"). Independent of the socket so it can be tested alone.
 *
 * Each conversation has an ordered queue. Live events are appended as they arrive and handled one
 * at a time; REST work for the conversation (setting its starting point, filling a gap, a
 * requested catch-up, loading history) runs in the same queue, so the app sees one ordered,
 * duplicate-free stream per conversation:
 *
 * - `last` is the highest `seq` delivered (or taken as the starting point). A `message.new` with
 *   `seq <= last` is a duplicate and dropped; `last + 1` is delivered; anything higher is a gap:
 *   the queue stops, fetches `after_seq=last` page by page (delivering each message as a
 *   `message.new` with `catchUp: true`) and then goes on.
 * - Deleted messages leave holes in `seq`: a gap that a fetch started after the event's arrival
 *   did not fill is a hole, not a loss, and is not fetched again.
 * - The starting point of a conversation seen for the first time is the `seq` just before its
 *   first live `message.new` if one is already queued, otherwise the newest message's `seq`.
 *   Messages up to the starting point are history (see `RealtimeConnection.loadHistory`).
 */
import { ApiError } from "./errors.js";
import type { ConversationEvent, MessageNewEvent } from "./events.js";
import type { Message } from "./types.js";
import { backoffDelay, sleep, type BackoffOptions } from "./util.js";

/** Where the tracker reads messages from (the REST API in production, a fake in tests). */
export interface SeqSource {
  /** The highest `seq` of the conversation's messages (0 when there are none). */
  newestSeq(conversationId: string, signal: AbortSignal): Promise<number>;
  /**
   * Every message with `seq > afterSeq`, oldest first, handed over page by page through `onPage`
   * (a retry after a failure starts again from the new `last`).
   */
  messagesAfter(
    conversationId: string,
    afterSeq: number,
    onPage: (messages: Message[]) => void,
    signal: AbortSignal,
  ): Promise<void>;
}

export interface SeqTrackerOptions {
  source: SeqSource;
  /** Receives every event, in order per conversation, duplicates removed. */
  deliver: (event: ConversationEvent) => void;
  /** A REST call failed and will be retried (the tracker keeps trying until disposed). */
  onError?: (error: unknown, conversationId: string) => void;
  /**
   * The conversation can no longer be read (403/404: left, removed, or deleted). Its queue is
   * dropped and it is no longer tracked.
   */
  onGone?: (conversationId: string, error: ApiError) => void;
  /** Back-off between retries of failed REST calls (default 500 ms doubling to 30 s, ±50 %). */
  retry?: BackoffOptions;
}

type Item =
  | { kind: "event"; event: ConversationEvent; arrival: number }
  | { kind: "catch-up"; arrival: number; resolve: () => void; reject: (error: unknown) => void }
  | { kind: "task"; run: (last: number) => Promise<unknown>; resolve: (value: unknown) => void; reject: (error: unknown) => void };

interface ConversationState {
  readonly id: string;
  /** Highest seq delivered or taken as the starting point; null until known. */
  last: number | null;
  /** Clock value when the last completed fetch of this conversation started. */
  fetchMark: number;
  inbox: Item[];
  running: boolean;
}

/** Raised to tasks of a conversation that became unreadable or of a disposed tracker. */
export class TrackingStoppedError extends Error {
  override readonly name = "TrackingStoppedError";
}

export class SeqTracker {
  private readonly states = new Map<string, ConversationState>();
  private readonly options: SeqTrackerOptions;
  private readonly abort = new AbortController();
  /** Counts arrivals (events and catch-up requests); orders them against fetches. */
  private clock = 0;

  constructor(options: SeqTrackerOptions) {
    this.options = options;
  }

  /** Conversations being tracked. */
  conversationIds(): string[] {
    return [...this.states.keys()];
  }

  has(conversationId: string): boolean {
    return this.states.has(conversationId);
  }

  /** The highest `seq` delivered for the conversation (undefined when not known yet). */
  lastSeq(conversationId: string): number | undefined {
    return this.states.get(conversationId)?.last ?? undefined;
  }

  /**
   * Starts tracking a conversation. With `lastSeq` the app says what it already has; without it
   * the starting point is found when the queue first runs (see the module comment).
   */
  track(conversationId: string, lastSeq?: number): void {
    const state = this.state(conversationId);
    if (lastSeq !== undefined && state.last === null) state.last = lastSeq;
  }

  /** Stops tracking a conversation; its queued tasks are rejected (catch-ups resolve). */
  forget(conversationId: string): void {
    const state = this.states.get(conversationId);
    if (!state) return;
    this.states.delete(conversationId);
    this.rejectAll(state, new TrackingStoppedError(`conversation ${conversationId} is no longer tracked`), true);
  }

  /** Appends a live event to its conversation's queue. */
  push(event: ConversationEvent): void {
    if (this.abort.signal.aborted) return;
    const state = this.state(event.conversation_id);
    state.inbox.push({ kind: "event", event, arrival: ++this.clock });
    void this.pump(state);
  }

  /**
   * Catches the conversation up with `after_seq` once everything queued before has been handled.
   * Requests made while an equivalent fetch had not started yet are served by that fetch.
   * Resolves when done (also when the conversation turned out to be gone).
   */
  catchUp(conversationId: string): Promise<void> {
    if (this.abort.signal.aborted) return Promise.reject(new TrackingStoppedError("tracker disposed"));
    const state = this.state(conversationId);
    return new Promise<void>((resolve, reject) => {
      state.inbox.push({ kind: "catch-up", arrival: ++this.clock, resolve, reject });
      void this.pump(state);
    });
  }

  /**
   * Runs `task` in the conversation's queue once its starting point is known, with `last` (every
   * message up to it has been delivered or is history). Used to load history consistently.
   */
  run<T>(conversationId: string, task: (last: number) => Promise<T>): Promise<T> {
    if (this.abort.signal.aborted) return Promise.reject(new TrackingStoppedError("tracker disposed"));
    const state = this.state(conversationId);
    return new Promise<T>((resolve, reject) => {
      state.inbox.push({ kind: "task", run: task, resolve: resolve as (value: unknown) => void, reject });
      void this.pump(state);
    });
  }

  /** Stops everything: pending fetches are aborted, queued tasks rejected. */
  dispose(): void {
    if (this.abort.signal.aborted) return;
    this.abort.abort(new TrackingStoppedError("tracker disposed"));
    for (const state of this.states.values()) this.rejectAll(state, new TrackingStoppedError("tracker disposed"));
    this.states.clear();
  }

  // ------------------------------------------------------------------ internals

  private state(conversationId: string): ConversationState {
    let state = this.states.get(conversationId);
    if (!state) {
      state = { id: conversationId, last: null, fetchMark: -1, inbox: [], running: false };
      this.states.set(conversationId, state);
    }
    return state;
  }

  private live(state: ConversationState): boolean {
    return !this.abort.signal.aborted && this.states.get(state.id) === state;
  }

  private async pump(state: ConversationState): Promise<void> {
    if (state.running) return;
    state.running = true;
    try {
      while (state.inbox.length > 0 && this.live(state)) {
        if (state.last === null) {
          await this.withRetry(state, () => this.initStart(state));
          continue;
        }
        const item = state.inbox[0] as Item;
        if (item.kind === "event") {
          const done = await this.handleEvent(state, item);
          if (done) state.inbox.shift();
        } else if (item.kind === "catch-up") {
          if (item.arrival > state.fetchMark) await this.withRetry(state, () => this.fetchAfter(state));
          state.inbox.shift();
          item.resolve();
        } else {
          state.inbox.shift();
          try {
            item.resolve(await item.run(state.last));
          } catch (error) {
            item.reject(error);
          }
        }
      }
    } catch (error) {
      if (error instanceof ApiError && (error.status === 403 || error.status === 404)) {
        // Left, removed, or no such conversation: stop tracking it.
        if (this.states.get(state.id) === state) this.states.delete(state.id);
        this.rejectAll(state, error, true);
        this.options.onGone?.(state.id, error);
      } else if (!(error instanceof TrackingStoppedError) && !this.abort.signal.aborted) {
        // Not expected: keep the queue going rather than wedging it.
        this.options.onError?.(error, state.id);
      }
    } finally {
      state.running = false;
    }
    if (state.inbox.length > 0 && this.live(state)) void this.pump(state);
  }

  /**
   * Handles the first queued event. Returns false when it must be looked at again (a gap was
   * filled first).
   */
  private async handleEvent(state: ConversationState, item: Extract<Item, { kind: "event" }>): Promise<boolean> {
    const event = item.event;
    const last = state.last as number;
    if (event.type === "message.new") {
      const seq = event.payload.seq;
      if (seq <= last) return true; // already delivered
      if (seq === last + 1 || item.arrival <= state.fetchMark) {
        // Next in line, or a fetch started after this event arrived did not fill the gap before
        // it: those seqs are holes left by deleted messages.
        state.last = seq;
        this.options.deliver(event);
        return true;
      }
      await this.withRetry(state, () => this.fetchAfter(state));
      return false;
    }
    if (event.type === "message.updated" && event.payload.seq > last && item.arrival > state.fetchMark) {
      // An update of a message this client has not seen: fetch it (and what precedes it) first.
      await this.withRetry(state, () => this.fetchAfter(state));
      return false;
    }
    this.options.deliver(event);
    if (event.type === "conversation.left") {
      // Nothing more of this conversation arrives; a later join starts afresh.
      state.last = null;
      state.fetchMark = -1;
      if (state.inbox.length <= 1) this.states.delete(state.id);
    }
    return true;
  }

  private async initStart(state: ConversationState): Promise<void> {
    const queued = firstLiveSeq(state.inbox);
    if (queued !== undefined) {
      state.last = queued - 1;
      return;
    }
    const mark = this.clock;
    const newest = await this.options.source.newestSeq(state.id, this.abort.signal);
    if (!this.live(state)) return;
    // A live message that arrived during the fetch is delivered, not swallowed as history.
    const arrived = firstLiveSeq(state.inbox);
    state.last = arrived !== undefined ? Math.min(newest, arrived - 1) : newest;
    state.fetchMark = mark;
  }

  private async fetchAfter(state: ConversationState): Promise<void> {
    const mark = this.clock;
    await this.options.source.messagesAfter(
      state.id,
      state.last as number,
      (messages) => {
        if (!this.live(state)) return;
        for (const message of messages) {
          if (message.seq <= (state.last as number)) continue;
          state.last = message.seq;
          const event: MessageNewEvent = {
            type: "message.new",
            conversation_id: state.id,
            payload: message,
            catchUp: true,
          };
          this.options.deliver(event);
        }
      },
      this.abort.signal,
    );
    if (this.live(state)) state.fetchMark = mark;
  }

  /** Runs a REST step, retrying with back-off until it succeeds, the conversation is gone, or disposal. */
  private async withRetry(state: ConversationState, step: () => Promise<void>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (!this.live(state)) throw new TrackingStoppedError("no longer tracked");
      try {
        await step();
        return;
      } catch (error) {
        if (error instanceof ApiError && (error.status === 403 || error.status === 404)) throw error;
        if (!this.live(state)) throw new TrackingStoppedError("no longer tracked");
        this.options.onError?.(error, state.id);
        try {
          await sleep(backoffDelay(attempt, this.options.retry), this.abort.signal);
        } catch {
          throw new TrackingStoppedError("tracker disposed");
        }
      }
    }
  }

  private rejectAll(state: ConversationState, error: Error, resolveCatchUps = false): void {
    const items = state.inbox.splice(0);
    for (const item of items) {
      if (item.kind === "catch-up") {
        if (resolveCatchUps) item.resolve();
        else item.reject(error);
      } else if (item.kind === "task") {
        item.reject(error);
      }
    }
  }
}

function firstLiveSeq(inbox: readonly Item[]): number | undefined {
  let min: number | undefined;
  for (const item of inbox) {
    if (item.kind === "event" && item.event.type === "message.new") {
      const seq = item.event.payload.seq;
      if (min === undefined || seq < min) min = seq;
    }
  }
  return min;
}
