// RealtimeConnection against a fake WebSocket and a fake REST API (no network): URL rotation,
// back-off, snapshot → sync, gap catch-up, resync, typing frames.
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import { MessagingApi, RealtimeConnection, type Message, type WebSocketLike } from "../../src/index.js";

const C = "c0000000-0000-4000-8000-000000000001";

class FakeSocket implements WebSocketLike {
  static all: FakeSocket[] = [];
  /** URLs that refuse the connection (close 1006 without opening). */
  static refused = new Set<string>();
  readyState = 0;
  binaryType = "blob";
  sent: string[] = [];
  private listeners = new Map<string, Array<(event: any) => void>>();

  constructor(readonly url: string) {
    FakeSocket.all.push(this);
    setTimeout(() => {
      const base = url.split("?")[0]!;
      if (FakeSocket.refused.has(base)) {
        this.fire("error", {});
        this.fire("close", { code: 1006, reason: "" });
        return;
      }
      this.readyState = 1;
      this.fire("open", {});
    }, 1);
  }

  addEventListener(type: string, listener: (event: any) => void): void {
    const list = this.listeners.get(type) ?? [];
    list.push(listener);
    this.listeners.set(type, list);
  }

  send(data: string): void {
    this.sent.push(data);
  }

  close(code = 1000, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.fire("close", { code, reason }), 1);
  }

  /** The server sends an event. */
  emit(event: unknown): void {
    this.fire("message", { data: JSON.stringify(event) });
  }

  /** The server goes away without a close frame. */
  drop(): void {
    this.readyState = 3;
    this.fire("close", { code: 1006, reason: "" });
  }

  private fire(type: string, event: unknown): void {
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }
}

function message(seq: number): Message {
  return {
    id: `m${seq}`,
    conversation_id: C,
    sender_id: "a",
    seq,
    type: "text",
    content: `m${seq}`,
    is_edited: false,
    created_at: "2026-01-01T00:00:00Z",
    reactions: [],
    attachments: [],
  };
}

/** A fake api-service with one conversation. */
function fakeApi(store: Message[]) {
  const requests: string[] = [];
  const fetch = (async (input: string | URL | Request) => {
    const url = new URL(String(input));
    requests.push(url.pathname + url.search);
    const json = (body: unknown) => new Response(JSON.stringify(body), { status: 200 });
    if (url.pathname === "/conversations") {
      return json({
        data: [{ id: C, type: "group", is_archived: false, created_at: "", updated_at: "", unread_count: 0 }],
        pagination: { total: 1, limit: 100, offset: 0 },
      });
    }
    if (url.pathname === `/conversations/${C}/messages`) {
      const limit = Number(url.searchParams.get("limit") ?? 20);
      const after = url.searchParams.get("after_seq");
      const before = url.searchParams.get("before_seq");
      let list = [...store];
      if (after !== null) list = list.filter((m) => m.seq > Number(after));
      if (before !== null) list = list.filter((m) => m.seq < Number(before));
      if (after === null) list.reverse();
      return json({ data: list.slice(0, limit), pagination: { total: list.length, limit, offset: 0 } });
    }
    return new Response("404 page not found", { status: 404 });
  }) as typeof globalThis.fetch;
  return { api: new MessagingApi({ baseUrl: "http://api", fetch, token: "t" }), requests };
}

function snapshot(online: string[] = []) {
  return { type: "presence.snapshot", conversation_id: "", payload: { online_user_ids: online } };
}

function newMessage(seq: number) {
  return { type: "message.new", conversation_id: C, payload: message(seq) };
}

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 3000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function setup(store: Message[], urls = ["ws://g1/ws", "ws://g2/ws"]) {
  FakeSocket.all = [];
  FakeSocket.refused = new Set();
  const { api, requests } = fakeApi(store);
  const rt = new RealtimeConnection({
    urls,
    token: "secret token",
    api,
    WebSocket: FakeSocket,
    reconnect: { initialDelayMs: 5, maxDelayMs: 20 },
    retry: { initialDelayMs: 5, maxDelayMs: 20 },
  });
  const seqs: number[] = [];
  rt.on("message.new", (e) => seqs.push(e.payload.seq));
  const syncs: string[] = [];
  rt.on("sync", (s) => syncs.push(s.reason));
  return { rt, requests, seqs, syncs, current: () => FakeSocket.all.at(-1)! };
}

describe("RealtimeConnection (fake socket)", () => {
  it("sends the token as ?token=, syncs after the snapshot, resolves connect()", async () => {
    const store = [message(1), message(2)];
    const { rt, current, syncs, requests } = setup(store);
    const ready = rt.connect();
    await until(() => FakeSocket.all.length === 1, "a socket");
    assert.equal(current().url, "ws://g1/ws?token=secret%20token");
    assert.equal(current().binaryType, "arraybuffer");
    await until(() => current().readyState === 1, "open");
    current().emit(snapshot(["bob"]));
    await ready;
    assert.deepEqual(syncs, ["connect"]);
    assert.equal(rt.state, "open");
    assert.equal(rt.lastSeq(C), 2, "starting point: the newest message");
    assert.ok(rt.presence.isOnline("bob"));
    assert.ok(requests.some((r) => r.startsWith("/conversations?")));
    rt.close();
    assert.equal(rt.state, "closed");
  });

  it("fills a gap over REST and drops duplicates", async () => {
    const store = [message(1)];
    const { rt, current, seqs } = setup(store);
    const ready = rt.connect();
    await until(() => current()?.readyState === 1, "open");
    current().emit(snapshot());
    await ready;
    store.push(message(2), message(3), message(4));
    current().emit(newMessage(2));
    current().emit(newMessage(4)); // 3 lost
    current().emit(newMessage(4));
    await until(() => seqs.length === 3, "three messages");
    assert.deepEqual(seqs, [2, 3, 4]);
    rt.close();
  });

  it("reconnects to the next URL after a drop and catches up", async () => {
    const store = [message(1)];
    const { rt, current, seqs, syncs } = setup(store);
    const ready = rt.connect();
    await until(() => current()?.readyState === 1, "open");
    current().emit(snapshot());
    await ready;
    const first = current();
    first.drop();
    store.push(message(2), message(3));
    await until(() => FakeSocket.all.length === 2 && current().readyState === 1, "second socket");
    assert.ok(current().url.startsWith("ws://g2/ws"), current().url);
    current().emit(snapshot());
    await until(() => syncs.length === 2, "reconnect sync");
    assert.deepEqual(syncs, ["connect", "reconnect"]);
    assert.deepEqual(seqs, [2, 3]);
    // events the new socket delivers that the catch-up already gave are dropped
    current().emit(newMessage(3));
    store.push(message(4));
    current().emit(newMessage(4));
    await until(() => seqs.length === 3, "4");
    assert.deepEqual(seqs, [2, 3, 4]);
    rt.close();
  });

  it("tries the other URL when one refuses, with back-off", async () => {
    const { rt, current } = setup([]);
    FakeSocket.refused.add("ws://g1/ws");
    const ready = rt.connect();
    await until(() => FakeSocket.all.length >= 2 && current().readyState === 1, "g2");
    assert.ok(current().url.startsWith("ws://g2/ws"));
    current().emit(snapshot());
    await ready;
    rt.close();
  });

  it("a resync runs a catch-up while the socket stays open", async () => {
    const store = [message(1)];
    const { rt, current, seqs, syncs } = setup(store);
    const ready = rt.connect();
    await until(() => current()?.readyState === 1, "open");
    current().emit(snapshot());
    await ready;
    store.push(message(2)); // its event was lost
    current().emit({ type: "resync", conversation_id: "", payload: { reason: "event_stream_interrupted" } });
    await until(() => syncs.length === 2, "resync sync");
    assert.deepEqual(seqs, [2]);
    assert.equal(FakeSocket.all.length, 1, "no reconnect");
    rt.close();
  });

  it("sends typing frames only while open; splits newline-joined batches", async () => {
    const { rt, current } = setup([]);
    assert.equal(rt.sendTyping(C, "typing.start"), false);
    const ready = rt.connect();
    await until(() => current()?.readyState === 1, "open");
    assert.equal(rt.sendTyping(C, "typing.start"), false, "not before the snapshot");
    // an older gateway's batch: two events in one message
    (current() as unknown as { fire: (t: string, e: unknown) => void }).fire("message", {
      data: `${JSON.stringify(snapshot())}\n${JSON.stringify({
        type: "typing.start",
        conversation_id: C,
        payload: { user_id: "bob" },
      })}`,
    });
    await ready;
    await until(() => rt.typing.isTyping(C, "bob"), "bob typing");
    assert.equal(rt.sendTyping(C, "typing.start", { kind: "text" }), true);
    assert.deepEqual(JSON.parse(current().sent[0]!), { type: "typing.start", conversation_id: C, payload: { kind: "text" } });
    assert.throws(() => rt.sendTyping(C, "typing.start", { big: "x".repeat(5000) }), RangeError);
    rt.close();
  });
});
