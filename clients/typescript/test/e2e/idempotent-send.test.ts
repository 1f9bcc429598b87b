// (4) A send whose response is lost (a proxy drops the connection after forwarding the request)
// is retried with the same client_msg_id and stored once.
import { strict as assert } from "node:assert";
import { after, before, describe, it } from "node:test";

import { MessagingApi } from "../../src/index.js";
import { DroppingProxy, MessageLog, Stack, sleep } from "./stack.js";

describe("idempotent send", () => {
  let stack: Stack;
  let proxy: DroppingProxy;
  before(async () => {
    stack = await Stack.start();
    proxy = await DroppingProxy.start(stack.apiPort);
  });
  after(async () => {
    await proxy?.stop();
    await stack?.stop();
  });

  it("a send retried after a dropped connection is stored once", async () => {
    const alice = stack.user();
    const bob = stack.user();
    const conversation = await alice.api.createConversation({
      type: "group",
      name: "once",
      participant_ids: [bob.id],
    });
    const rt = stack.realtime(bob);
    const log = new MessageLog(rt, conversation.id);
    await rt.connect();

    const viaProxy = new MessagingApi({
      baseUrl: `http://127.0.0.1:${proxy.port}`,
      token: alice.token,
      sendRetry: { initialDelayMs: 50 },
    });
    proxy.dropsLeft = 1;
    const result = await viaProxy.sendMessage(conversation.id, { content: "exactly once" });
    assert.equal(proxy.dropped, 1, "the first attempt's answer was dropped");
    assert.equal(result.attempts, 2);
    assert.equal(result.replayed, true, "the retry was answered from the stored message (200)");
    assert.ok(result.message.client_msg_id);

    const page = await alice.api.listMessages(conversation.id);
    assert.equal(page.pagination.total, 1);
    assert.equal(page.data[0]?.id, result.message.id);
    assert.equal(page.data[0]?.client_msg_id, result.message.client_msg_id);

    await log.waitFor(1);
    await sleep(300);
    assert.deepEqual(log.seqs, [1], "one message.new");
  });
});
