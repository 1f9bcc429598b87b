// (2) Two gateways; the one the client is connected to is SIGKILLed mid-stream: the client
// reconnects to the other and ends with every message, in order, once.
import { strict as assert } from "node:assert";
import { after, before, describe, it } from "node:test";

import type { DisconnectInfo } from "../../src/index.js";
import { MessageLog, Stack, range, sleep } from "./stack.js";

describe("gateway failover", () => {
  let stack: Stack;
  before(async () => {
    stack = await Stack.start({
      gateways: 2,
      apiEnv: { RATE_LIMIT_MESSAGES_PER_SEC: "1000", RATE_LIMIT_MESSAGES_BURST: "1000" },
    });
  });
  after(async () => {
    await stack?.stop();
  });

  it("the client moves to the other gateway and misses nothing", async (t) => {
    const [first, second] = stack.gateways;
    assert.ok(first && second);
    const alice = stack.user();
    const bob = stack.user();
    const conversation = await alice.api.createConversation({
      type: "group",
      name: "failover",
      participant_ids: [bob.id],
    });
    const rt = stack.realtime(bob); // urls: [first, second]
    const log = new MessageLog(rt, conversation.id);
    const disconnects: DisconnectInfo[] = [];
    rt.on("disconnected", (d) => disconnects.push(d));
    const syncs: string[] = [];
    rt.on("sync", (s) => syncs.push(s.reason));
    await rt.connect();
    assert.equal(rt.url, first.url);

    let sentCount = 0;
    const sending = (async () => {
      for (const i of range(100)) {
        await alice.api.sendText(conversation.id, `stream ${i}`);
        sentCount++;
        await sleep(10);
      }
    })();

    await log.waitFor(30);
    await first.proc.kill(); // SIGKILL: no close frame
    const sentAtKill = sentCount;
    await sending;
    assert.ok(sentAtKill < 100, `the kill happened mid-stream (${sentAtKill} sent)`);

    await log.waitFor(100);
    await sleep(300);
    assert.deepEqual(log.seqs, range(100), "every seq once, in order");
    assert.equal(rt.url, second.url, "reconnected to the other gateway");
    assert.equal(rt.state, "open");
    assert.ok(disconnects.length >= 1 && disconnects[0]?.url === first.url);
    assert.ok(syncs.includes("reconnect"), `a sync after the reconnect (${syncs.join(",")})`);
    t.diagnostic(`killed after ${sentAtKill} sends; ${log.catchUps} messages came from catch-up`);
  });
});
