// Realtime features against the real stack: presence, typing, conversation.joined with
// consistent history, resync on demand.
import { strict as assert } from "node:assert";
import { after, before, describe, it } from "node:test";

import type { PresenceChange, ServerEvent } from "../../src/index.js";
import { MessageLog, Stack, eventually, sleep } from "./stack.js";

describe("realtime", () => {
  let stack: Stack;
  before(async () => {
    stack = await Stack.start();
  });
  after(async () => {
    await stack?.stop();
  });

  it("presence: snapshot, online and offline", async () => {
    const alice = stack.user();
    const bob = stack.user();
    await alice.api.createConversation({ type: "direct", participant_ids: [bob.id] });
    const bobRt = stack.realtime(bob);
    const changes: PresenceChange[] = [];
    bobRt.presence.subscribe((c) => changes.push(c));
    await bobRt.connect();
    assert.equal(bobRt.presence.isOnline(alice.id), false);

    const aliceRt = stack.realtime(alice);
    await aliceRt.connect();
    assert.ok(aliceRt.presence.isOnline(bob.id), "alice's snapshot has bob");
    await eventually("bob sees alice online", () => bobRt.presence.isOnline(alice.id));

    aliceRt.close();
    await eventually("bob sees alice offline", () => !bobRt.presence.isOnline(alice.id));
    assert.deepEqual(
      changes.map((c) => c.kind),
      ["snapshot", "online", "offline"],
    );
    assert.equal(bobRt.presence.toMap().get(alice.id), false);
  });

  it("typing: the sender's start and stop reach the other side", async () => {
    const alice = stack.user();
    const bob = stack.user();
    const c = await alice.api.createConversation({ type: "group", name: "typing", participant_ids: [bob.id] });
    const aliceRt = stack.realtime(alice);
    const bobRt = stack.realtime(bob);
    await Promise.all([aliceRt.connect(), bobRt.connect()]);

    const sender = aliceRt.typingSender(c.id, { payload: { kind: "text" } });
    const starts: ServerEvent[] = [];
    bobRt.on("typing.start", (e) => starts.push(e));
    sender.input();
    await eventually("bob sees alice typing", () => bobRt.typing.isTyping(c.id, alice.id));
    assert.equal(starts[0]?.payload && (starts[0].payload as { kind?: string }).kind, "text");
    sender.stop();
    await eventually("alice stopped typing", () => bobRt.typing.typing(c.id).length === 0);
    assert.equal(aliceRt.typing.typing(c.id).length, 0, "the typist's own sockets do not get it");
  });

  it("conversation.joined: live events plus loadHistory are complete and without duplicates", async () => {
    const alice = stack.user();
    const bob = stack.user();
    const bobRt = stack.realtime(bob);
    await bobRt.connect();
    const joined: string[] = [];
    const history = new Map<string, Promise<number[]>>();
    bobRt.on("conversation.joined", (e) => {
      joined.push(e.conversation_id);
      history.set(
        e.conversation_id,
        bobRt.loadHistory(e.conversation_id).then((messages) => messages.map((m) => m.seq)),
      );
    });

    const c = await alice.api.createConversation({ type: "group", name: "fresh", participant_ids: [bob.id] });
    const log = new MessageLog(bobRt, c.id);
    for (let i = 1; i <= 10; i++) await alice.api.sendText(c.id, `hello ${i}`);
    await eventually("the join", () => joined.includes(c.id));
    const loaded = await history.get(c.id)!;
    await eventually("all ten", () => loaded.length + log.seqs.length >= 10);
    await sleep(300);
    assert.deepEqual([...loaded, ...log.seqs], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.ok(bobRt.trackedConversations().includes(c.id));
  });

  it("resync(): catches up and lists conversations again", async () => {
    const alice = stack.user();
    const bob = stack.user();
    const c = await alice.api.createConversation({ type: "group", name: "resync", participant_ids: [bob.id] });
    const bobRt = stack.realtime(bob);
    const syncs: string[] = [];
    bobRt.on("sync", (s) => syncs.push(s.reason));
    await bobRt.connect();
    assert.deepEqual(syncs, ["connect"]);
    assert.equal(bobRt.lastSeq(c.id), 0);
    await alice.api.sendText(c.id, "one");
    await bobRt.resync();
    assert.equal(bobRt.lastSeq(c.id), 1);
    assert.deepEqual(syncs, ["connect", "resync"]);
  });
});
