// REST client behaviour against a fake fetch: error envelopes, Retry-After, send retries with the
// same client_msg_id; frame parsing, back-off, typing timing and presence.
import { strict as assert } from "node:assert";
import { describe, it } from "node:test";

import {
  ApiError,
  MessagingApi,
  NetworkError,
  PresenceState,
  TypingIndicators,
  TypingSender,
  backoffDelay,
  parseFrame,
  parseRetryAfter,
} from "../../src/index.js";

type Handler = (url: string, init: RequestInit) => Response | Promise<Response>;

function fakeFetch(handler: Handler): { fetch: typeof fetch; calls: Array<{ url: string; init: RequestInit }> } {
  const calls: Array<{ url: string; init: RequestInit }> = [];
  const f = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = String(input);
    calls.push({ url, init: init ?? {} });
    return handler(url, init ?? {});
  }) as typeof fetch;
  return { fetch: f, calls };
}

function json(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

const MESSAGE = {
  id: "d0000000-0000-7000-8000-000000000042",
  conversation_id: "c0000000-0000-4000-8000-000000000001",
  sender_id: "a0000000-0000-4000-8000-000000000001",
  seq: 1,
  type: "text",
  content: "hi",
  is_edited: false,
  created_at: "2026-01-01T00:00:00Z",
  reactions: [],
  attachments: [],
};

describe("MessagingApi", () => {
  it("sends the bearer token and unwraps data and pagination", async () => {
    const { fetch, calls } = fakeFetch(() => json(200, { data: [MESSAGE], pagination: { total: 1, limit: 100, offset: 0 } }));
    const api = new MessagingApi({ baseUrl: "http://api/", token: () => "tok", fetch });
    const page = await api.listMessages(MESSAGE.conversation_id, { afterSeq: 5, limit: 100 });
    assert.equal(page.data[0]?.seq, 1);
    assert.equal(page.pagination.total, 1);
    assert.equal(calls[0]?.url, `http://api/conversations/${MESSAGE.conversation_id}/messages?limit=100&after_seq=5`);
    assert.equal((calls[0]?.init.headers as Record<string, string>).Authorization, "Bearer tok");
  });

  it("surfaces the error envelope as ApiError with code, message and details", async () => {
    const { fetch } = fakeFetch(() =>
      json(400, {
        error: { code: "VALIDATION_ERROR", message: "Invalid request parameters", details: { limit: "limit must not exceed 100" } },
      }),
    );
    const api = new MessagingApi({ baseUrl: "http://api", fetch });
    await assert.rejects(api.listConversations({ limit: 1000 }), (e: unknown) => {
      assert.ok(e instanceof ApiError);
      assert.equal(e.status, 400);
      assert.equal(e.code, "VALIDATION_ERROR");
      assert.equal(e.message, "Invalid request parameters");
      assert.deepEqual(e.details, { limit: "limit must not exceed 100" });
      return true;
    });
  });

  it("gives 429 its retryAfter and does not retry it by default", async () => {
    const { fetch, calls } = fakeFetch(() =>
      json(429, { error: { code: "RATE_LIMITED", message: "Too many requests" } }, { "Retry-After": "2" }),
    );
    const api = new MessagingApi({ baseUrl: "http://api", fetch });
    await assert.rejects(api.sendMessage("c", { content: "x" }), (e: unknown) => {
      assert.ok(e instanceof ApiError);
      assert.equal(e.code, "RATE_LIMITED");
      assert.equal(e.retryAfter, 2);
      assert.equal(e.isRateLimited, true);
      return true;
    });
    assert.equal(calls.length, 1);
  });

  it("maps a non-JSON answer to HTTP_<status>", async () => {
    const { fetch } = fakeFetch(() => new Response("404 page not found", { status: 404 }));
    const api = new MessagingApi({ baseUrl: "http://api", fetch });
    await assert.rejects(api.getMessage("x"), (e: unknown) => e instanceof ApiError && e.code === "HTTP_404" && e.message === "404 page not found");
  });

  it("keeps the existing direct conversation of a 409", async () => {
    const existing = { id: "c1", type: "direct", participants: [] };
    const { fetch } = fakeFetch(() =>
      json(409, { data: existing, error: { code: "CONFLICT", message: "Direct conversation already exists between these users" } }),
    );
    const api = new MessagingApi({ baseUrl: "http://api", fetch });
    await assert.rejects(api.createConversation({ type: "direct", participant_ids: ["u"] }), (e: unknown) => e instanceof ApiError && (e.data as { id: string }).id === "c1");
    const opened = await api.openDirectConversation("u");
    assert.equal(opened.id, "c1");
  });

  it("retries a send after network errors with the same generated client_msg_id", async () => {
    let n = 0;
    const { fetch, calls } = fakeFetch(() => {
      n++;
      if (n <= 2) throw new TypeError("fetch failed");
      return json(200, { data: MESSAGE });
    });
    const api = new MessagingApi({ baseUrl: "http://api", fetch, sendRetry: { initialDelayMs: 1 } });
    const result = await api.sendMessage(MESSAGE.conversation_id, { content: "hi" });
    assert.equal(result.attempts, 3);
    assert.equal(result.replayed, true);
    const ids = calls.map((c) => JSON.parse(String(c.init.body)).client_msg_id);
    assert.equal(new Set(ids).size, 1);
    assert.match(ids[0], /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it("gives up after the configured retries with a NetworkError", async () => {
    const { fetch, calls } = fakeFetch(() => {
      throw new TypeError("fetch failed");
    });
    const api = new MessagingApi({ baseUrl: "http://api", fetch });
    await assert.rejects(
      api.sendMessage("c", { content: "x", client_msg_id: "mine" }, { retry: { retries: 2, initialDelayMs: 1 } }),
      (e: unknown) => e instanceof NetworkError,
    );
    assert.equal(calls.length, 3);
    assert.ok(calls.every((c) => JSON.parse(String(c.init.body)).client_msg_id === "mine"));
  });

  it("does not retry other errors (a 403 is thrown at once)", async () => {
    const { fetch, calls } = fakeFetch(() => json(403, { error: { code: "FORBIDDEN", message: "no" } }));
    const api = new MessagingApi({ baseUrl: "http://api", fetch });
    await assert.rejects(api.sendMessage("c", { content: "x" }), (e: unknown) => e instanceof ApiError && e.status === 403);
    assert.equal(calls.length, 1);
  });

  it("times out into a NetworkError", async () => {
    const f = ((_: unknown, init?: RequestInit) =>
      new Promise((_, reject) => init?.signal?.addEventListener("abort", () => reject(init.signal?.reason)))) as typeof fetch;
    const api = new MessagingApi({ baseUrl: "http://api", fetch: f, timeoutMs: 20 });
    await assert.rejects(api.getMessage("x"), (e: unknown) => e instanceof NetworkError && e.timedOut);
  });
});

describe("parseRetryAfter", () => {
  it("reads seconds and HTTP dates", () => {
    assert.equal(parseRetryAfter("3"), 3);
    assert.equal(parseRetryAfter(null), undefined);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 0), 10);
  });
});

describe("parseFrame", () => {
  it("parses one envelope per message, splits newline batches, skips junk", () => {
    assert.deepEqual(parseFrame('{"type":"resync","conversation_id":"","payload":{"reason":"x"}}'), [
      { type: "resync", conversation_id: "", payload: { reason: "x" } },
    ]);
    const two = parseFrame('{"type":"a","conversation_id":"c","payload":{}}\n{"type":"b","conversation_id":"c","payload":{}}\n');
    assert.deepEqual(
      two.map((e) => e.type),
      ["a", "b"],
    );
    assert.deepEqual(parseFrame("not json"), []);
    assert.deepEqual(parseFrame("[1,2]"), []);
  });
});

describe("backoffDelay", () => {
  it("doubles, caps and jitters", () => {
    const opts = { initialDelayMs: 500, maxDelayMs: 30_000, jitter: 0.5 };
    assert.equal(backoffDelay(0, opts, () => 0.5), 500);
    assert.equal(backoffDelay(3, opts, () => 0.5), 4000);
    assert.equal(backoffDelay(20, opts, () => 0.5), 30_000);
    assert.equal(backoffDelay(0, opts, () => 0), 250);
    assert.equal(backoffDelay(0, opts, () => 0.999999), 750);
  });
});

describe("TypingSender", () => {
  it("starts at once, resends at most every 3 s, stops once", () => {
    const sent: string[] = [];
    const sender = new TypingSender((type) => (sent.push(type), true), { idleMs: 0 });
    sender.input(0);
    sender.input(1000);
    sender.input(2999);
    sender.input(3000);
    sender.input(4000);
    sender.stop();
    sender.stop();
    assert.deepEqual(sent, ["typing.start", "typing.start", "typing.stop"]);
  });

  it("sends nothing while the socket is down and starts when it can", () => {
    let up = false;
    const sent: string[] = [];
    const sender = new TypingSender((type) => (up ? (sent.push(type), true) : false), { idleMs: 0 });
    sender.input(0);
    sender.stop();
    up = true;
    sender.input(10);
    assert.deepEqual(sent, ["typing.start"]);
    sender.dispose();
    assert.deepEqual(sent, ["typing.start", "typing.stop"]);
  });

  it("stops after the idle time", async () => {
    const sent: string[] = [];
    const sender = new TypingSender((type) => (sent.push(type), true), { idleMs: 20 });
    sender.input();
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(sent, ["typing.start", "typing.stop"]);
  });
});

describe("TypingIndicators", () => {
  it("tracks typists and expires them", async () => {
    const typing = new TypingIndicators({ timeoutMs: 30 });
    const changes: string[][] = [];
    typing.subscribe((c) => changes.push(c.userIds));
    typing.start("c", "bob");
    typing.start("c", "bob");
    typing.start("c", "carol");
    assert.deepEqual(typing.typing("c").sort(), ["bob", "carol"]);
    typing.stop("c", "carol");
    assert.equal(typing.isTyping("c", "carol"), false);
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(typing.typing("c"), []);
    assert.deepEqual(changes, [["bob"], ["bob", "carol"], ["bob"], []]);
    typing.dispose();
  });
});

describe("PresenceState", () => {
  it("applies snapshots and online/offline events", () => {
    const presence = new PresenceState();
    const seen: string[] = [];
    presence.subscribe((c) => seen.push(c.kind));
    presence.applySnapshot(["a", "b"]);
    presence.set("c", true);
    presence.set("a", false);
    assert.deepEqual(presence.onlineUserIds().sort(), ["b", "c"]);
    presence.applySnapshot(["a"]);
    assert.deepEqual(presence.onlineUserIds(), ["a"]);
    assert.deepEqual(Object.fromEntries(presence.toMap()), { a: true, b: false, c: false });
    assert.deepEqual(seen, ["snapshot", "online", "offline", "snapshot"]);
  });
});
