// Gap detection, de-duplication, ordering and starting points of SeqTracker, against a fake
// message store (no network).
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { ApiError } from "../../src/errors.js";
import type { ConversationEvent, MessageNewEvent } from "../../src/events.js";
import { SeqTracker, type SeqSource } from "../../src/seq-tracker.js";
import type { Message } from "../../src/types.js";

const C = "c0000000-0000-4000-8000-000000000001";

function message(seq: number, conversationId = C, content = `m${seq}`): Message {
  return {
    id: `id-${conversationId}-${seq}`,
    conversation_id: conversationId,
    sender_id: "a0000000-0000-4000-8000-000000000001",
    seq,
    type: "text",
    content,
    is_edited: false,
    created_at: "2026-01-01T00:00:00Z",
    reactions: [],
    attachments: [],
  };
}

function live(seq: number, conversationId = C): MessageNewEvent {
  return { type: "message.new", conversation_id: conversationId, payload: message(seq, conversationId) };
}

/** A fake store: messages per conversation; calls are counted; `gate` can hold fetches. */
class FakeStore implements SeqSource {
  messages = new Map<string, Message[]>();
  calls: string[] = [];
  pageSize = 3;
  failNext = 0;
  gate: Promise<void> | undefined;
  gone = new Set<string>();

  add(conversationId: string, ...seqs: number[]): void {
    const list = this.messages.get(conversationId) ?? [];
    for (const seq of seqs) list.push(message(seq, conversationId));
    list.sort((a, b) => a.seq - b.seq);
    this.messages.set(conversationId, list);
  }

  delete(conversationId: string, seq: number): void {
    this.messages.set(conversationId, (this.messages.get(conversationId) ?? []).filter((m) => m.seq !== seq));
  }

  private async check(conversationId: string): Promise<void> {
    if (this.gate) await this.gate;
    if (this.gone.has(conversationId)) {
      throw new ApiError({ status: 403, code: "FORBIDDEN", message: "no", method: "GET", url: "/" });
    }
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error("network down");
    }
  }

  async newestSeq(conversationId: string): Promise<number> {
    this.calls.push(`newest ${conversationId}`);
    await this.check(conversationId);
    const list = this.messages.get(conversationId) ?? [];
    return list.at(-1)?.seq ?? 0;
  }

  async messagesAfter(conversationId: string, afterSeq: number, onPage: (m: Message[]) => void): Promise<void> {
    this.calls.push(`after ${conversationId} ${afterSeq}`);
    await this.check(conversationId);
    let after = afterSeq;
    for (;;) {
      const page = (this.messages.get(conversationId) ?? []).filter((m) => m.seq > after).slice(0, this.pageSize);
      onPage(page);
      if (page.length < this.pageSize) return;
      after = page.at(-1)!.seq;
    }
  }
}

function setup(store = new FakeStore()) {
  const delivered: ConversationEvent[] = [];
  const errors: unknown[] = [];
  const gone: string[] = [];
  const tracker = new SeqTracker({
    source: store,
    deliver: (e) => delivered.push(e),
    onError: (e) => errors.push(e),
    onGone: (id) => gone.push(id),
    retry: { initialDelayMs: 1, maxDelayMs: 5, jitter: 0 },
  });
  const seqs = (conversationId = C) =>
    delivered
      .filter((e): e is MessageNewEvent => e.type === "message.new" && e.conversation_id === conversationId)
      .map((e) => e.payload.seq);
  return { store, tracker, delivered, errors, gone, seqs };
}

/** Waits until the tracker's queue for C is idle (everything queued so far handled). */
async function settle(tracker: SeqTracker, conversationId = C): Promise<void> {
  await tracker.run(conversationId, async () => undefined);
}

describe("SeqTracker", () => {
  it("delivers consecutive live messages in order", async () => {
    const { tracker, seqs, store } = setup();
    tracker.track(C, 0);
    for (let s = 1; s <= 5; s++) {
      store.add(C, s);
      tracker.push(live(s));
    }
    await settle(tracker);
    assert.deepEqual(seqs(), [1, 2, 3, 4, 5]);
    assert.deepEqual(store.calls, [], "no REST call without a gap");
  });

  it("drops duplicates (seq <= last)", async () => {
    const { tracker, seqs } = setup();
    tracker.track(C, 0);
    for (const s of [1, 2, 2, 1, 3, 3]) tracker.push(live(s));
    await settle(tracker);
    assert.deepEqual(seqs(), [1, 2, 3]);
  });

  it("fills a gap with after_seq before delivering what follows, and marks fetched messages catchUp", async () => {
    const { tracker, seqs, store, delivered } = setup();
    store.add(C, 1, 2, 3, 4, 5, 6, 7, 8);
    tracker.track(C, 1);
    tracker.push(live(2));
    tracker.push(live(7)); // 3..6 lost
    tracker.push(live(8));
    await settle(tracker);
    assert.deepEqual(seqs(), [2, 3, 4, 5, 6, 7, 8]);
    assert.deepEqual(store.calls, [`after ${C} 2`]);
    const catchUp = delivered.filter((e) => e.type === "message.new" && e.catchUp).map((e) => (e as MessageNewEvent).payload.seq);
    // The fetch runs after_seq=2 to the end, so 7 and 8 come from it too; their live copies are duplicates.
    assert.deepEqual(catchUp, [3, 4, 5, 6, 7, 8]);
  });

  it("does not fetch again for holes left by deleted messages", async () => {
    const { tracker, seqs, store } = setup();
    store.add(C, 1, 2, 3, 4, 5);
    store.delete(C, 3); // deleted before anyone saw it
    store.delete(C, 5); // the newest, deleted after its event was sent
    tracker.track(C, 2);
    tracker.push(live(4)); // looks like a gap: 3 missing
    tracker.push(live(5)); // live copy of a message deleted before the fetch
    await settle(tracker);
    // The fetch returned only 4; 5's event arrived before that fetch started, so the missing
    // seqs before it are holes: 5 is delivered live (its message.deleted will follow) and no
    // second fetch happens.
    assert.deepEqual(seqs(), [4, 5]);
    assert.equal(store.calls.length, 1);
  });

  it("orders other events of the conversation behind a catch-up", async () => {
    const { tracker, store, delivered } = setup();
    store.add(C, 1, 2, 3);
    tracker.track(C, 1);
    tracker.push(live(3));
    tracker.push({ type: "message.deleted", conversation_id: C, payload: { conversation_id: C, id: "x" } });
    await settle(tracker);
    assert.deepEqual(
      delivered.map((e) => (e.type === "message.new" ? `new ${e.payload.seq}` : e.type)),
      ["new 2", "new 3", "message.deleted"],
    );
  });

  it("fetches first when an update arrives for a message it has not seen", async () => {
    const { tracker, store, delivered } = setup();
    store.add(C, 1, 2);
    tracker.track(C, 1);
    tracker.push({ type: "message.updated", conversation_id: C, payload: { ...message(2), is_edited: true } });
    await settle(tracker);
    assert.deepEqual(
      delivered.map((e) => (e.type === "message.new" ? `new ${e.payload.seq}` : e.type)),
      ["new 2", "message.updated"],
    );
  });

  it("takes the newest seq as the starting point of a new conversation", async () => {
    const { tracker, store, seqs } = setup();
    store.add(C, 1, 2, 3);
    await tracker.catchUp(C);
    assert.equal(tracker.lastSeq(C), 3);
    assert.deepEqual(seqs(), [], "history is not delivered as events");
    // the catch-up request was served by the starting-point fetch (one call only)
    assert.deepEqual(store.calls, [`newest ${C}`]);
    store.add(C, 4);
    tracker.push(live(4));
    await settle(tracker);
    assert.deepEqual(seqs(), [4]);
  });

  it("starts before the first queued live message rather than swallowing it", async () => {
    const { tracker, store, seqs } = setup();
    store.add(C, 1, 2, 3, 4, 5);
    tracker.push(live(4));
    tracker.push(live(5));
    await settle(tracker);
    assert.deepEqual(seqs(), [4, 5]);
    assert.deepEqual(store.calls, [], "a queued live message gives the starting point");
  });

  it("does not swallow live messages that arrive while the starting point is fetched", async () => {
    const { tracker, store, seqs } = setup();
    store.add(C, 1, 2, 3, 4, 5);
    let open!: () => void;
    store.gate = new Promise((resolve) => (open = resolve));
    const done = tracker.catchUp(C); // newest = 5, but 4 and 5 arrive live meanwhile
    await new Promise((r) => setTimeout(r, 5));
    tracker.push(live(4));
    tracker.push(live(5));
    store.gate = undefined;
    open();
    await done;
    await settle(tracker);
    assert.deepEqual(seqs(), [4, 5]);
    assert.equal(tracker.lastSeq(C), 5);
  });

  it("catch-up requests fetch after last; several queued ones share one fetch", async () => {
    const { tracker, store, seqs } = setup();
    store.add(C, 1, 2, 3, 4, 5, 6, 7);
    tracker.track(C, 2);
    let open!: () => void;
    store.gate = new Promise((resolve) => (open = resolve));
    const a = tracker.catchUp(C);
    await new Promise((r) => setTimeout(r, 5)); // the first fetch is under way
    const b = tracker.catchUp(C); // arrived during the fetch: needs one more
    const c = tracker.catchUp(C); // served by the same second fetch
    store.gate = undefined;
    open();
    await Promise.all([a, b, c]);
    assert.deepEqual(seqs(), [3, 4, 5, 6, 7]);
    assert.deepEqual(store.calls, [`after ${C} 2`, `after ${C} 7`]);
  });

  it("retries a failed fetch and resumes after the last delivered seq", async () => {
    const { tracker, store, seqs, errors } = setup();
    store.add(C, 1, 2, 3, 4, 5);
    tracker.track(C, 0);
    store.failNext = 2;
    tracker.push(live(5));
    await settle(tracker);
    assert.deepEqual(seqs(), [1, 2, 3, 4, 5]);
    assert.equal(errors.length, 2);
  });

  it("stops tracking a conversation that answers 403, rejecting its tasks with the ApiError", async () => {
    const { tracker, store, gone } = setup();
    store.gone.add(C);
    await assert.rejects(
      tracker.run(C, async () => 1),
      (e: unknown) => e instanceof ApiError && e.status === 403,
    );
    assert.deepEqual(gone, [C]);
    assert.equal(tracker.has(C), false);
  });

  it("keeps conversations independent", async () => {
    const D = "d0000000-0000-4000-8000-000000000002";
    const { tracker, store, seqs } = setup();
    store.add(C, 1, 2, 3);
    store.add(D, 1);
    tracker.track(C, 0);
    tracker.track(D, 0);
    let open!: () => void;
    store.gate = new Promise((resolve) => (open = resolve));
    tracker.push(live(3)); // C has a gap and waits for the fetch
    tracker.push(live(1, D)); // D goes on
    await settle(tracker, D);
    assert.deepEqual(seqs(D), [1]);
    assert.deepEqual(seqs(C), []);
    store.gate = undefined;
    open();
    await settle(tracker);
    assert.deepEqual(seqs(C), [1, 2, 3]);
  });

  it("forgets a conversation on conversation.left and starts afresh on a new join", async () => {
    const { tracker, store, seqs } = setup();
    store.add(C, 1, 2);
    tracker.track(C, 2);
    tracker.push({ type: "conversation.left", conversation_id: C, payload: { conversation_id: C, user_id: "u" } });
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(tracker.has(C), false);
    store.add(C, 3, 4, 5);
    tracker.push({
      type: "conversation.joined",
      conversation_id: C,
      payload: {
        id: C,
        type: "group",
        is_archived: false,
        created_at: "2026-01-01T00:00:00Z",
        updated_at: "2026-01-01T00:00:00Z",
        unread_count: 0,
        participants: [],
      },
    });
    await settle(tracker);
    assert.equal(tracker.lastSeq(C), 5, "the newest page sets the starting point after a join");
    assert.deepEqual(seqs(), []);
  });

  it("dispose rejects pending tasks and stops deliveries", async () => {
    const { tracker, store, delivered } = setup();
    store.gate = new Promise(() => {});
    const pending = tracker.run(C, async () => 1);
    tracker.dispose();
    await assert.rejects(pending);
    tracker.push(live(1));
    assert.equal(delivered.length, 0);
  });
});
