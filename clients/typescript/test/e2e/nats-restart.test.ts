// (3) The NATS server is SIGKILLed and restarted on the same port: the gateway sends resync,
// the client catches up, nothing is missing or duplicated.
import { strict as assert } from "node:assert";
import { after, before, describe, it } from "node:test";

import { MessageLog, OwnNats, Stack, eventually, range, sleep } from "./stack.js";

describe("NATS restart", () => {
  let nats: OwnNats;
  let stack: Stack;
  before(async () => {
    nats = await OwnNats.start();
    stack = await Stack.start({
      natsUrl: nats.url,
      apiEnv: { RATE_LIMIT_MESSAGES_PER_SEC: "1000", RATE_LIMIT_MESSAGES_BURST: "1000" },
    });
  });
  after(async () => {
    await stack?.stop();
    await nats?.kill();
  });

  it("the client gets resync and ends with every message", async (t) => {
    const alice = stack.user();
    const bob = stack.user();
    const conversation = await alice.api.createConversation({
      type: "group",
      name: "nats restart",
      participant_ids: [bob.id],
    });
    const rt = stack.realtime(bob);
    const log = new MessageLog(rt, conversation.id);
    const resyncs: string[] = [];
    rt.on("resync", (e) => resyncs.push(e.payload.reason));
    const syncs: string[] = [];
    rt.on("sync", (s) => syncs.push(s.reason));
    await rt.connect();

    for (const i of range(40)) await alice.api.sendText(conversation.id, `before ${i}`);
    await log.waitFor(40);

    await nats.kill();
    // Sends keep working while NATS is down (the api-service buffers the events).
    for (const i of range(20, 41)) await alice.api.sendText(conversation.id, `during ${i}`);
    await nats.restart();
    await eventually("a resync", () => resyncs.length > 0, 30_000);
    for (const i of range(40, 61)) await alice.api.sendText(conversation.id, `after ${i}`);

    await log.waitFor(100);
    await eventually("the resync's catch-up", () => syncs.includes("resync"));
    await sleep(500);
    assert.deepEqual(log.seqs, range(100), "every seq once, in order");
    assert.equal(rt.state, "open", "the socket stayed open");
    t.diagnostic(`resync reasons: ${resyncs.join(", ")}; ${log.catchUps} messages came from catch-up`);
  });
});
