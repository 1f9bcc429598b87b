// Every REST wrapper against the real api-service, and the errors it surfaces.
import { strict as assert } from "node:assert";
import { after, before, describe, it } from "node:test";

import { ApiError } from "../../src/index.js";
import { Stack } from "./stack.js";

// A 1×1 PNG.
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=",
  "base64",
);

function isApiError(status: number, code: string) {
  return (error: unknown) => {
    assert.ok(error instanceof ApiError, `expected ApiError, got ${String(error)}`);
    assert.equal(error.status, status);
    assert.equal(error.code, code);
    return true;
  };
}

describe("REST wrappers", () => {
  let stack: Stack;
  before(async () => {
    stack = await Stack.start();
  });
  after(async () => {
    await stack?.stop();
  });

  it("conversations and participants", async () => {
    const alice = stack.user();
    const bob = stack.user();
    const carol = stack.user();

    const group = await alice.api.createConversation({ type: "group", name: "Crew", participant_ids: [bob.id] });
    assert.equal(group.type, "group");
    assert.deepEqual(group.participants.map((p) => p.user_id).sort(), [alice.id, bob.id].sort());

    const detail = await bob.api.getConversation(group.id);
    assert.equal(detail.name, "Crew");
    const updated = await alice.api.updateConversation(group.id, { name: "Crew 2", description: "ship it" });
    assert.equal(updated.name, "Crew 2");

    const added = await alice.api.addParticipants(group.id, [carol.id]);
    assert.deepEqual(added.map((p) => p.user_id), [carol.id]);
    const promoted = await alice.api.changeParticipantRole(group.id, carol.id, "admin");
    assert.equal(promoted.role, "admin");
    await alice.api.removeParticipant(group.id, carol.id);
    await assert.rejects(carol.api.getConversation(group.id), isApiError(403, "FORBIDDEN"));

    const page = await bob.api.listConversations({ limit: 10 });
    assert.equal(page.pagination.total, 1);
    assert.equal(page.data[0]?.id, group.id);
    const all = await bob.api.listAllConversations();
    assert.equal(all.length, 1);

    const channel = await alice.api.createConversation({ type: "channel", name: "announcements", participant_ids: [bob.id] });
    const discovered = await carol.api.discoverChannels({ search: "announce" });
    assert.ok(discovered.data.some((c) => c.id === channel.id));
    const joined = await carol.api.joinChannel(channel.id);
    assert.equal(joined.user_id, carol.id);

    const dm = await alice.api.createConversation({ type: "direct", participant_ids: [bob.id] });
    await assert.rejects(
      alice.api.createConversation({ type: "direct", participant_ids: [bob.id] }),
      (error: unknown) => isApiError(409, "CONFLICT")(error) && (error as ApiError & { data: { id: string } }).data.id === dm.id,
    );
    assert.equal((await bob.api.openDirectConversation(alice.id)).id, dm.id);

    const archived = await alice.api.archiveConversation(group.id);
    assert.equal(archived.is_archived, true);
  });

  it("messages, history by seq, search, reactions, receipts, pins", async () => {
    const alice = stack.user();
    const bob = stack.user();
    const c = await alice.api.createConversation({ type: "group", name: "msgs", participant_ids: [bob.id] });

    const sent = [];
    for (let i = 1; i <= 7; i++) sent.push(await alice.api.sendText(c.id, i === 3 ? "bonjour tout le monde" : `message ${i}`));
    assert.deepEqual(sent.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7]);

    const newest = await bob.api.listMessages(c.id, { limit: 2 });
    assert.deepEqual(newest.data.map((m) => m.seq), [7, 6]);
    assert.equal(newest.pagination.total, 7);
    const after = await bob.api.listMessages(c.id, { afterSeq: 4 });
    assert.deepEqual(after.data.map((m) => m.seq), [5, 6, 7]);
    const before = await bob.api.listMessages(c.id, { beforeSeq: 3 });
    assert.deepEqual(before.data.map((m) => m.seq), [2, 1]);
    const between = await bob.api.listMessages(c.id, { afterSeq: 1, beforeSeq: 4 });
    assert.deepEqual(between.data.map((m) => m.seq), [2, 3]);
    const allAfter = await bob.api.listMessagesAfter(c.id, 0, { pageSize: 3 });
    assert.deepEqual(allAfter.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7]);

    const found = await bob.api.searchMessages(c.id, "bonjour");
    assert.deepEqual(found.data.map((m) => m.seq), [3]);

    const edited = await alice.api.editMessage(sent[0]!.id, "edited");
    assert.equal(edited.is_edited, true);
    assert.equal((await bob.api.getMessage(sent[0]!.id)).content, "edited");
    await alice.api.deleteMessage(sent[1]!.id);
    await assert.rejects(bob.api.getMessage(sent[1]!.id), isApiError(404, "NOT_FOUND"));
    const holes = await bob.api.listMessagesAfter(c.id, 0);
    assert.deepEqual(holes.map((m) => m.seq), [1, 3, 4, 5, 6, 7], "a deleted message leaves a hole");

    const reaction = await bob.api.addReaction(sent[0]!.id, "👍");
    assert.equal(reaction.emoji, "👍");
    await assert.rejects(bob.api.addReaction(sent[0]!.id, "👍"), isApiError(409, "CONFLICT"));
    assert.equal((await alice.api.listReactions(sent[0]!.id)).length, 1);
    await bob.api.removeReaction(sent[0]!.id, "👍");
    assert.equal((await alice.api.listReactions(sent[0]!.id)).length, 0);

    const receipt = await bob.api.markRead(c.id, sent[6]!.id);
    assert.equal(receipt.last_read_message_id, sent[6]!.id);
    assert.ok((await alice.api.listReadReceipts(c.id)).some((r) => r.user_id === bob.id));

    const pin = await alice.api.pinMessage(c.id, sent[4]!.id);
    assert.equal(pin.message_id, sent[4]!.id);
    assert.equal((await bob.api.listPins(c.id)).length, 1);
    await assert.rejects(bob.api.pinMessage(c.id, sent[5]!.id), isApiError(403, "FORBIDDEN"));
    await alice.api.unpinMessage(c.id, sent[4]!.id);
    assert.equal((await bob.api.listPins(c.id)).length, 0);

    const typing = await bob.api.getTyping(c.id);
    assert.deepEqual(typing.user_ids, []);
  });

  it("attachments: upload, list, media, download with a range", async () => {
    const alice = stack.user();
    const bob = stack.user();
    const c = await alice.api.createConversation({ type: "group", name: "files", participant_ids: [bob.id] });
    const { message } = await alice.api.sendMessage(c.id, { type: "image" });
    const attachment = await alice.api.uploadAttachment(message.id, new Blob([PNG], { type: "image/png" }), {
      fileName: "dot.png",
    });
    assert.equal(attachment.file_type, "image/png");
    assert.equal(attachment.file_size, PNG.length);
    assert.equal(attachment.width, 1);

    assert.deepEqual((await bob.api.listAttachments(message.id)).map((a) => a.id), [attachment.id]);
    const media = await bob.api.listMedia(c.id);
    assert.equal(media.pagination.total, 1);

    const whole = await bob.api.downloadFile(attachment.file_url);
    assert.equal(whole.status, 200);
    assert.deepEqual(Buffer.from(await whole.arrayBuffer()), PNG);
    const part = await bob.api.downloadFile(attachment.file_url, { range: { start: 0, end: 7 } });
    assert.equal(part.status, 206);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), PNG.subarray(0, 8));
    const name = attachment.file_url.split("/").pop()!;
    assert.equal((await bob.api.downloadFile(name)).status, 200);
    await assert.rejects(bob.api.downloadFile("nope.png"), (e: unknown) => e instanceof ApiError && e.status === 404);

    await assert.rejects(
      alice.api.uploadAttachment(message.id, new Blob(["<html></html>"], { type: "text/html" }), { fileName: "x.html" }),
      (e: unknown) => isApiError(400, "VALIDATION_ERROR")(e) && typeof (e as ApiError).details?.file === "string",
    );
  });

  it("errors: validation details, 401, 404, and 429 with retryAfter", async () => {
    const alice = stack.user();
    const bob = stack.user();
    const c = await alice.api.createConversation({ type: "group", name: "errors", participant_ids: [bob.id] });

    await assert.rejects(alice.api.listMessages(c.id, { limit: 1000, offset: -1 }), (e: unknown) => {
      isApiError(400, "VALIDATION_ERROR")(e);
      const details = (e as ApiError).details ?? {};
      assert.ok(details.limit && details.offset, JSON.stringify(details));
      return true;
    });
    await assert.rejects(alice.api.getMessage(crypto.randomUUID()), isApiError(404, "NOT_FOUND"));
    await assert.rejects(alice.api.getConversation("not-a-uuid"), isApiError(400, "BAD_REQUEST"));

    const stranger = stack.user({ token: "not-a-jwt" });
    await assert.rejects(stranger.api.listConversations(), isApiError(401, "UNAUTHORIZED"));

    // Default limits: 20/s with bursts of 40 per user.
    const results = await Promise.allSettled(
      Array.from({ length: 60 }, (_, i) => alice.api.sendText(c.id, `flood ${i}`)),
    );
    const limited = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    assert.ok(limited.length > 0, "some sends were rate limited");
    for (const r of limited) {
      assert.ok(r.reason instanceof ApiError, String(r.reason));
      assert.equal(r.reason.status, 429);
      assert.equal(r.reason.code, "RATE_LIMITED");
      assert.ok((r.reason.retryAfter ?? 0) >= 1, "Retry-After in seconds");
    }
    // A send allowed to wait for Retry-After succeeds.
    const waited = await alice.api.sendMessage(c.id, { content: "patient" }, { retry: { rateLimitRetries: 5 } });
    assert.equal(waited.message.content, "patient");
  });
});
