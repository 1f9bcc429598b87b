// The clustered topology of `make dev-cluster` (3 NATS nodes, a 6-node Redis Cluster, 2
// api-services, 3 ws-gateways), tested the way clients use it: sockets read with one JSON.parse
// per WebSocket message, and the client library. Run by scripts/test-cluster.sh, which starts the
// topology first. The failover test kills a NATS node and a Redis master, so it runs last.
import { strict as assert } from "node:assert";
import { after, before, describe, it } from "node:test";

import { ApiError } from "../../src/index.js";
import { MessageLog, eventually, range, sleep, type TestUser } from "../e2e/stack.js";
import { Topology, type RawSocket } from "./topology.js";

describe("clustered topology", () => {
  let topology: Topology;
  before(() => {
    topology = new Topology();
  });
  after(() => {
    topology?.close();
  });

  it("messages sent through both api-services reach sockets on all three gateways", async () => {
    const alice = topology.user(0);
    const bob = topology.user(1);
    const conversation = await alice.api.createConversation({ type: "group", name: "fleet", participant_ids: [bob.id] });
    const tabs = await Promise.all([0, 1, 2].map((g) => topology.socket(bob, g)));
    const aliceOnOtherApi = topology.api(alice, 1);
    // 30 concurrent sends, alternating between the two api-services (within the default burst).
    const sent = await Promise.all(
      range(30).map((i) => (i % 2 ? aliceOnOtherApi : alice.api).sendText(conversation.id, `fleet ${i}`)),
    );
    assert.deepEqual(
      sent.map((m) => m.seq).sort((a, b) => a - b),
      range(30),
    );
    for (const tab of tabs) {
      await eventually(`30 messages on gateway ${tab.gateway} (have ${tab.seqs(conversation.id).length})`, () => tab.seqs(conversation.id).length >= 30);
      assert.deepEqual([...tab.seqs(conversation.id)].sort((a, b) => a - b), range(30), `gateway ${tab.gateway}: every seq once`);
      assert.deepEqual(tab.unparsable, [], "every WebSocket message is one JSON object");
    }
  });

  it("presence: a DM between users on different gateways makes them peers; a second shared conversation adds nothing", async () => {
    const alice = topology.user(0);
    const bob = topology.user(1);
    const aliceSocket = await topology.socket(alice, 0);
    const bobSocket = await topology.socket(bob, 2);
    const dm = await alice.api.createConversation({ type: "direct", participant_ids: [bob.id] });
    const online = (socket: RawSocket, user: TestUser) =>
      socket.ofType("presence.online").filter((e) => e.payload.user_id === user.id);
    for (const [socket, other] of [
      [aliceSocket, bob],
      [bobSocket, alice],
    ] as const) {
      await eventually(`presence.online for ${other.id} on gateway ${socket.gateway}`, () => online(socket, other).length === 1);
      const joined = socket.events.findIndex((e) => e.type === "conversation.joined" && e.conversation_id === dm.id);
      const presence = socket.events.indexOf(online(socket, other)[0]!);
      assert.ok(joined >= 0 && joined < presence, "conversation.joined comes before presence.online");
    }

    const group = await alice.api.createConversation({ type: "group", name: "second", participant_ids: [bob.id] });
    await eventually("the second conversation.joined on both sides", () =>
      [aliceSocket, bobSocket].every((s) => s.ofType("conversation.joined", group.id).length === 1),
    );
    await sleep(500); // a duplicate presence.online would follow the joined event at once
    assert.equal(online(aliceSocket, bob).length, 1, "no second presence.online for Bob");
    assert.equal(online(bobSocket, alice).length, 1, "no second presence.online for Alice");
  });

  it("typing on one gateway reaches the other user on another gateway", async () => {
    const alice = topology.user(0);
    const bob = topology.user(1);
    const dm = await alice.api.createConversation({ type: "direct", participant_ids: [bob.id] });
    const aliceSocket = await topology.socket(alice, 1);
    const bobSocket = await topology.socket(bob, 2);
    aliceSocket.send({ type: "typing.start", conversation_id: dm.id, payload: { kind: "text" } });
    await eventually("typing.start for Bob", () => bobSocket.ofType("typing.start", dm.id).length === 1);
    assert.equal(bobSocket.ofType("typing.start", dm.id)[0]!.payload.user_id, alice.id);
    const typing = await bob.api.getTyping(dm.id);
    assert.ok(JSON.stringify(typing).includes(alice.id), "GET typing (api-service, Redis Cluster) lists Alice");
  });

  it("the send rate limit is one bucket per user across both api-services", async () => {
    const alice = topology.user(0);
    const bob = topology.user(1);
    const conversation = await alice.api.createConversation({ type: "group", name: "limit", participant_ids: [bob.id] });
    const other = topology.api(alice, 1);
    // 100 at once, half through each api-service: with a bucket per process (burst 40 each) at
    // most 80 would be refused nothing; one fleet-wide bucket refuses some.
    const results = await Promise.allSettled(
      range(100).map((i) =>
        (i % 2 ? other : alice.api).sendMessage(conversation.id, { type: "text", content: `n ${i}` }, { retry: { retries: 0 } }),
      ),
    );
    const refused = results.filter((r) => r.status === "rejected");
    const accepted = results.length - refused.length;
    for (const r of refused) {
      const error = (r as PromiseRejectedResult).reason;
      assert.ok(error instanceof ApiError && error.status === 429 && error.code === "RATE_LIMITED", `refused with 429 RATE_LIMITED: ${error}`);
    }
    assert.ok(refused.length > 0, "some sends were rate limited");
    assert.ok(accepted < 80, `one shared bucket: ${accepted} accepted`);
    assert.ok(accepted >= 40, `the burst was accepted: ${accepted}`);
  });

  it("failover: a NATS node and a Redis master killed mid-traffic lose nothing acknowledged, and everything comes back", async (t) => {
    const alice = topology.user(0);
    const bob = topology.user(1);
    const conversation = await alice.api.createConversation({ type: "group", name: "failover", participant_ids: [bob.id] });
    const tabs = await Promise.all([0, 1, 2].map((g) => topology.socket(bob, g)));
    const rt = topology.realtime(bob, 1);
    const log = new MessageLog(rt, conversation.id);
    await rt.connect();

    // One sender, 10 messages a second (below the rate limit), alternating api-services.
    const apis = [alice.api, topology.api(alice, 1)];
    const acked: number[] = [];
    const failed: string[] = [];
    let killedAt = 0;
    const send = async (i: number) => {
      try {
        const m = await apis[i % 2]!.sendText(conversation.id, `failover ${i}`);
        acked.push(m.seq);
      } catch (error) {
        failed.push(String(error));
      }
    };
    const total = 80;
    const traffic = (async () => {
      for (let i = 0; i < total; i++) {
        void send(i);
        await sleep(100);
      }
    })();

    await eventually("20 messages acknowledged", () => acked.length >= 20);
    const natsNode = await topology.busiestNatsNode();
    const masters = topology.redisMasters();
    const redisMaster = topology.redisPorts[0] as number;
    assert.ok(masters.includes(redisMaster), `the first Redis node (${redisMaster}) is a master: ${masters}`);
    killedAt = Date.now();
    topology.killNatsNode(natsNode);
    topology.killRedisNode(redisMaster);
    t.diagnostic(`killed NATS node ${natsNode + 1} and Redis master ${redisMaster}`);

    await traffic;
    await eventually(`${total} sends answered`, () => acked.length + failed.length === total, 60_000);
    assert.deepEqual(failed, [], "no send failed: sends depend on neither NATS nor Redis");

    // (a) Every acknowledged message is stored (read back through the API from PostgreSQL).
    const stored = new Set((await bob.api.listMessagesAfter(conversation.id, 0)).map((m) => m.seq));
    for (const seq of acked) assert.ok(stored.has(seq), `acknowledged seq ${seq} is stored`);

    // (b) Nothing is missed silently: each socket has every acknowledged message, or was told to
    // catch up with `resync`.
    const all = [...acked].sort((a, b) => a - b);
    for (const tab of tabs) {
      await eventually(`gateway ${tab.gateway}: every message or a resync`, () => {
        const have = new Set(tab.seqs(conversation.id));
        return all.every((s) => have.has(s)) || tab.ofType("resync").length > 0;
      }, 30_000);
      assert.deepEqual(tab.unparsable, []);
      t.diagnostic(`gateway ${tab.gateway}: ${tab.seqs(conversation.id).length} live, ${tab.ofType("resync").length} resync`);
    }

    // (c) Live delivery resumed on every gateway: a message sent now reaches every socket.
    const probe = await alice.api.sendText(conversation.id, "after the failover");
    for (const tab of tabs) {
      await eventually(`the probe on gateway ${tab.gateway}`, () => tab.seqs(conversation.id).includes(probe.seq), 30_000);
      // How long live delivery took to resume: the first message sent after the kill that this
      // socket received live.
      const firstLive = tab.ofType("message.new", conversation.id).find((e) => e.at > killedAt);
      t.diagnostic(`gateway ${tab.gateway}: first live message ${firstLive ? firstLive.at - killedAt : "?"} ms after the kill`);
    }

    // (d) The client library ends with every message once, in order.
    await log.waitFor(all.length + 1, 60_000);
    await sleep(300);
    assert.deepEqual(log.seqs, [...all, probe.seq], "the client has every seq once, in order");

    // (e) Presence, typing and rate limiting work again by themselves (Redis replica promoted).
    await eventually("presence and typing work again", async () => {
      const carol = topology.user(0);
      const dave = topology.user(1);
      const carolSocket = await topology.socket(carol, 0);
      const daveSocket = await topology.socket(dave, 2);
      const dm = await carol.api.createConversation({ type: "direct", participant_ids: [dave.id] });
      await sleep(1_000);
      const peers = daveSocket.ofType("presence.online").some((e) => e.payload.user_id === carol.id);
      carolSocket.send({ type: "typing.start", conversation_id: dm.id, payload: { kind: "text" } });
      await sleep(1_000);
      const typing = daveSocket.ofType("typing.start", dm.id).length > 0;
      carolSocket.close();
      daveSocket.close();
      return peers && typing;
    }, 60_000);
    await eventually("rate limiting works again", async () => {
      const erin = topology.user(0);
      const frank = topology.user(1);
      const own = await erin.api.createConversation({ type: "group", name: "limit again", participant_ids: [frank.id] });
      const results = await Promise.allSettled(
        range(80).map((i) => erin.api.sendMessage(own.id, { type: "text", content: `n ${i}` }, { retry: { retries: 0 } })),
      );
      return results.some((r) => r.status === "rejected" && r.reason instanceof ApiError && r.reason.status === 429);
    }, 60_000);
  });
});
