// (1) A burst of 100 messages is seen complete and in order by another user's client.
import { strict as assert } from "node:assert";
import { after, before, describe, it } from "node:test";

import { MessageLog, Stack, range, sleep } from "./stack.js";

describe("burst", () => {
  let stack: Stack;
  before(async () => {
    stack = await Stack.start({
      apiEnv: { RATE_LIMIT_MESSAGES_PER_SEC: "1000", RATE_LIMIT_MESSAGES_BURST: "1000" },
    });
  });
  after(async () => {
    await stack?.stop();
  });

  it("100 concurrent sends reach the other user's client complete, in seq order, once each", async (t) => {
    const alice = stack.user();
    const bob = stack.user();
    const conversation = await alice.api.createConversation({
      type: "group",
      name: "burst",
      participant_ids: [bob.id],
    });
    const rt = stack.realtime(bob);
    const log = new MessageLog(rt, conversation.id);
    await rt.connect();

    const sent = await Promise.all(range(100).map((i) => alice.api.sendText(conversation.id, `burst ${i}`)));
    assert.deepEqual(
      sent.map((m) => m.seq).sort((a, b) => a - b),
      range(100),
    );
    await log.waitFor(100);
    await sleep(300); // nothing more may arrive
    assert.deepEqual(log.seqs, range(100), "every seq once, in order");
    assert.deepEqual(
      [...log.contents].sort(),
      range(100)
        .map((i) => `burst ${i}`)
        .sort(),
    );
    t.diagnostic(`${log.catchUps} of 100 came from catch-up`);
  });
});
