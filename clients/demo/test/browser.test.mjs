// The demo in headless Chromium, as two people: context A is Alice, context B is Bob, each in
// its own browser context (own storage, own WebSocket). Runs against real services (stack.mjs).
//
// Needs: the built demo (npm run build), the debug binaries (cargo build -p api-service
// -p ws-gateway), PostgreSQL, Redis and NATS, and Chromium (/usr/bin/chromium, or CHROMIUM_PATH).
// Screenshots go to test-results/ (DEMO_SCREENSHOT_DIR overrides: `npm run screenshots` writes
// docs/demo/); when a step fails, both pages are saved there as failure-*.png.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { deflateSync } from "node:zlib";

import { chromium } from "playwright-core";

import { DEMO_ROOT, Stack } from "./stack.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = resolve(process.env.DEMO_SCREENSHOT_DIR ?? join(DEMO_ROOT, "test-results"));
const VIEWPORT = { width: 1000, height: 700 };
const WAIT_MS = 15_000;

let stack;
let browser;
/** Uncaught exceptions in either page: the test fails on any. */
const pageErrors = [];

before(async () => {
  stack = await Stack.start(["Alice", "Bob"]);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true });
});

after(async () => {
  await browser?.close();
  await stack?.stop();
});

async function openPage(label) {
  const context = await browser.newContext({ viewport: VIEWPORT });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  page.on("pageerror", (error) => pageErrors.push(`${label}: ${error.stack ?? error}`));
  if (process.env.RETICH_TEST_LOGS === "1") {
    page.on("console", (message) => process.stderr.write(`[${label} console.${message.type()}] ${message.text()}\n`));
  }
  await page.goto(stack.demoUrl);
  return page;
}

/** Runs one step; on failure saves both pages and adds the services' logs to the error. */
async function step(name, pages, body) {
  try {
    await body();
  } catch (error) {
    mkdirSync(SHOTS, { recursive: true });
    const slug = name.replace(/[^a-z0-9]+/gi, "-").toLowerCase();
    for (const [label, page] of Object.entries(pages)) {
      await page.screenshot({ path: join(SHOTS, `failure-${slug}-${label}.png`) }).catch(() => {});
    }
    error.message = `step "${name}": ${error.message}\n\nservices:\n${stack.logs()}`;
    throw error;
  }
}

async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  // Let the hover-only message actions fold away before the picture.
  await page.mouse.move(0, 0);
  await page.screenshot({ path: join(SHOTS, name), animations: "disabled" });
}

/** The (stored, not pending) message whose text is exactly `text`. */
function message(page, text) {
  return page
    .locator(".message:not(.pending)")
    .filter({ has: page.locator(".body", { hasText: new RegExp(`^${escapeRegExp(text)}$`) }) });
}

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Hovers a message (its actions unfold) and clicks one of them. */
async function messageAction(page, text, selector) {
  const m = message(page, text);
  await m.hover();
  await m.locator(selector).click();
}

async function send(page, text) {
  await page.locator("#input").fill(text);
  await page.locator("#input").press("Enter");
  await message(page, text).waitFor();
}

async function noErrorsShown(page) {
  const shown = await page.locator("#errors .error").allTextContents();
  assert.deepEqual(shown, [], "no error is shown");
}

test("two people chat in the demo: live messages, unread, typing, presence, replies, reactions, edits, deletes, images, reload", { timeout: 180_000 }, async () => {
  const a = await openPage("alice");
  const b = await openPage("bob");
  const both = { alice: a, bob: b };

  await step("the first screen offers both users", both, async () => {
    for (const page of [a, b]) {
      await page.locator("button.user-button[data-user=Alice]").waitFor();
      await page.locator("button.user-button[data-user=Bob]").waitFor();
    }
    await screenshot(a, "01-pick-user.png");
  });

  await step("A picks Alice, B picks Bob, both connect", both, async () => {
    await a.locator("button.user-button[data-user=Alice]").click();
    await b.locator("button.user-button[data-user=Bob]").click();
    await a.locator("#connection[data-state=open]").waitFor();
    await b.locator("#connection[data-state=open]").waitFor();
    assert.equal(await a.locator("#me-name").textContent(), "Alice");
    assert.equal(await b.locator("#me-name").textContent(), "Bob");
  });

  await step("A starts a direct conversation; it appears at B live", both, async () => {
    await a.locator("button.new-chat[data-user=Bob]").click();
    await a.locator("#chat[data-loaded=true]").waitFor();
    await a.locator("#chat-title", { hasText: "Bob" }).waitFor();
    // conversation.joined reached B's open socket: no reload, no polling.
    await b.locator(".conversation .conversation-name", { hasText: "Alice" }).waitFor();
  });

  await step("presence: each sees the other online", both, async () => {
    await a.locator('#chat-presence[data-presence="online"]').waitFor();
    await a.locator("#chat-presence-text", { hasText: "online" }).waitFor();
    await b.locator('.conversation .presence-dot[data-presence="online"]').waitFor();
  });

  await step("A sends; B's unread count goes up live", both, async () => {
    await send(a, "Hi Bob!");
    await b.locator(".conversation .unread", { hasText: "1" }).waitFor();
    await send(a, "Are you there?");
    await b.locator(".conversation .unread", { hasText: "2" }).waitFor();
    await screenshot(b, "02-unread.png");
  });

  await step("B opens the conversation: history, unread cleared", both, async () => {
    await b.locator(".conversation button", { hasText: "Alice" }).click();
    await message(b, "Hi Bob!").waitFor();
    await message(b, "Are you there?").waitFor();
    await b.locator(".conversation .unread").waitFor({ state: "detached" });
    await b.locator('#chat-presence[data-presence="online"]').waitFor();
  });

  await step("A sends while B looks: B sees it live", both, async () => {
    await send(a, "Lunch at noon?");
    await message(b, "Lunch at noon?").waitFor();
    const order = await b.locator(".message .body").allTextContents();
    assert.deepEqual(order, ["Hi Bob!", "Are you there?", "Lunch at noon?"], "in seq order, each once");
  });

  await step("B types: A sees the typing indicator; it goes when B sends", both, async () => {
    await b.locator("#input").pressSequentially("Sounds go", { delay: 30 });
    await a.locator("#typing", { hasText: "Bob is typing…" }).waitFor();
    await a.locator(".conversation .conversation-sub", { hasText: "Bob is typing…" }).waitFor();
    await screenshot(a, "03-typing.png");
    await b.locator("#input").pressSequentially("od!", { delay: 30 });
    await b.locator("#input").press("Enter");
    await message(a, "Sounds good!").waitFor();
    // Bob's message.new ends his typing at once (no 6 s timeout).
    await a.waitForFunction(() => document.querySelector("#typing").textContent === "");
  });

  await step("A types: B sees the typing indicator", both, async () => {
    await a.locator("#input").pressSequentially("Great", { delay: 30 });
    await b.locator("#typing", { hasText: "Alice is typing…" }).waitFor();
    await a.locator("#input").fill("");
    // An emptied input sends typing.stop.
    await b.waitForFunction(() => document.querySelector("#typing").textContent === "");
  });

  await step("B reacts: A sees the reaction", both, async () => {
    await messageAction(b, "Hi Bob!", '[data-react="👍"]');
    await message(b, "Hi Bob!").locator('.reaction.mine[data-emoji="👍"][data-count="1"]').waitFor();
    await message(a, "Hi Bob!").locator('.reaction[data-emoji="👍"][data-count="1"]').waitFor();
    // A reacts with the same emoji: two.
    await messageAction(a, "Hi Bob!", '[data-react="👍"]');
    await message(b, "Hi Bob!").locator('.reaction[data-emoji="👍"][data-count="2"]').waitFor();
  });

  await step("A replies to B's message: B sees the quote", both, async () => {
    await messageAction(a, "Sounds good!", '[data-action="reply"]');
    await a.locator("#reply-bar", { hasText: "Replying to Bob: Sounds good!" }).waitFor();
    await send(a, "See you there");
    const reply = message(b, "See you there");
    await reply.locator(".quote", { hasText: "Bob Sounds good!" }).waitFor();
    assert.equal(await a.locator("#reply-bar").isHidden(), true, "the reply bar closes after sending");
  });

  await step("A edits a message: B sees the new text, marked edited", both, async () => {
    await messageAction(a, "Lunch at noon?", '[data-action="edit"]');
    await a.locator(".message .edit-input").fill("Lunch at 12:30?");
    await a.locator(".message .edit-input").press("Enter");
    await message(b, "Lunch at 12:30?").locator(".edited").waitFor();
    await message(b, "Lunch at noon?").waitFor({ state: "detached" });
  });

  await step("A deletes a message: it goes at B too", both, async () => {
    await send(a, "oops, wrong chat");
    await message(b, "oops, wrong chat").waitFor();
    a.once("dialog", (dialog) => dialog.accept());
    await messageAction(a, "oops, wrong chat", '[data-action="delete"]');
    await message(a, "oops, wrong chat").waitFor({ state: "detached" });
    await message(b, "oops, wrong chat").waitFor({ state: "detached" });
  });

  await step("B sends an image: both see it", both, async () => {
    await noErrorsShown(a);
    await noErrorsShown(b);
    await b.locator("#input").fill("The whiteboard");
    await b.locator("#file").setInputFiles({ name: "whiteboard.png", mimeType: "image/png", buffer: png(160, 100) });
    for (const page of [a, b]) {
      const img = message(page, "The whiteboard").locator("img.attachment-image");
      await img.waitFor();
      await page.waitForFunction((el) => el.complete && el.naturalWidth === 160, await img.elementHandle());
    }
    await screenshot(b, "05-bob.png");
  });

  await step("errors from the API are shown: a file that is not the image it claims", both, async () => {
    await a.locator("#file").setInputFiles({ name: "fake.png", mimeType: "image/png", buffer: Buffer.from("not a png") });
    const error = a.locator("#errors .error", { hasText: "VALIDATION_ERROR" });
    await error.waitFor();
    assert.match(await error.textContent(), /Upload of fake\.png: VALIDATION_ERROR \(HTTP 400\):.*file: File content does not match its declared type/);
    // The empty image message made for the upload is deleted again, at both.
    await a.waitForFunction(() => !document.querySelector(".attachments.placeholder"));
    await b.waitForFunction(() => !document.querySelector(".attachments.placeholder"));
    await screenshot(a, "06-error.png");
    await error.locator("button").click();
    await noErrorsShown(a);
  });

  await step("the gateway dies and comes back: both reconnect, B catches up on what it missed", both, async () => {
    await stack.killGateway();
    await a.locator("#connection[data-state=reconnecting]").waitFor();
    await b.locator("#connection[data-state=reconnecting]").waitFor();
    // REST still works: A sends while nobody has a socket.
    await send(a, "Did you get this?");
    await send(a, "And this?");
    await stack.startGateway();
    await a.locator("#connection[data-state=open]").waitFor();
    await b.locator("#connection[data-state=open]").waitFor();
    // Fetched by the connection's catch-up (after_seq), in order, each once.
    await message(b, "And this?").waitFor();
    const texts = await b.locator(".message .body").allTextContents();
    assert.deepEqual(texts.slice(-3), ["The whiteboard", "Did you get this?", "And this?"]);
    await b.locator('#chat-presence[data-presence="online"]').waitFor();
    await a.locator('#chat-presence[data-presence="online"]').waitFor();
  });

  await step("Alice's view: reactions, reply, edit, image", both, async () => {
    await screenshot(a, "04-alice.png");
  });

  await step("A reloads: the same conversation, its history and reactions are still there", both, async () => {
    await a.reload();
    await a.locator("#connection[data-state=open]").waitFor();
    await a.locator("#chat[data-loaded=true]").waitFor();
    await a.locator("#chat-title", { hasText: "Bob" }).waitFor();
    const texts = await a.locator(".message .body").allTextContents();
    assert.deepEqual(texts, [
      "Hi Bob!",
      "Are you there?",
      "Lunch at 12:30?",
      "Sounds good!",
      "See you there",
      "The whiteboard",
      "Did you get this?",
      "And this?",
    ]);
    await message(a, "Hi Bob!").locator('.reaction.mine[data-emoji="👍"][data-count="2"]').waitFor();
    await message(a, "See you there").locator(".quote", { hasText: "Bob Sounds good!" }).waitFor();
    await message(a, "Lunch at 12:30?").locator(".edited").waitFor();
    await message(a, "The whiteboard").locator("img.attachment-image").waitFor();
    await a.locator('#chat-presence[data-presence="online"]').waitFor();
    // And it is still live after the reload.
    await send(b, "Welcome back");
    await message(a, "Welcome back").waitFor();
  });

  await step("B leaves: A sees Bob go offline", both, async () => {
    await b.context().close();
    await a.locator('#chat-presence[data-presence="offline"]').waitFor();
    await a.locator("#chat-presence-text", { hasText: "offline" }).waitFor();
  });

  await step("a long history: the newest 50 first, earlier ones on demand", { alice: a }, async () => {
    const conversationId = await a.locator("#chat").getAttribute("data-id");
    const alice = stack.users.find((u) => u.name === "Alice");
    for (let i = 1; i <= 50; i++) {
      const response = await fetch(`${stack.apiUrl}/conversations/${conversationId}/messages`, {
        method: "POST",
        headers: { Authorization: `Bearer ${alice.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ content: `bulk ${i}` }),
      });
      assert.equal(response.status, 201, await response.text());
    }
    await message(a, "bulk 50").waitFor(); // live, from another client of Alice's
    await a.reload();
    await a.locator("#chat[data-loaded=true]").waitFor();
    assert.equal(await a.locator(".message").count(), 50);
    assert.equal(await message(a, "Hi Bob!").count(), 0);
    await a.locator("#load-older").click();
    await message(a, "Hi Bob!").waitFor();
    const texts = await a.locator(".message .body").allTextContents();
    assert.equal(texts.length, 59);
    assert.deepEqual(texts.slice(0, 2), ["Hi Bob!", "Are you there?"]);
    assert.deepEqual(texts.slice(-2), ["bulk 49", "bulk 50"]);
    assert.equal(await a.locator("#load-older").isHidden(), true, "nothing earlier left");
  });

  await noErrorsShown(a);
  assert.deepEqual(pageErrors, [], "no uncaught exception in either page");
});

// ------------------------------------------------------------------------------ a test image

/** A `width`×`height` RGB PNG with a colour gradient. */
function png(width, height) {
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3); // filter byte 0, then RGB
    for (let x = 0; x < width; x++) {
      row[1 + x * 3] = Math.round((x / width) * 255);
      row[2 + x * 3] = Math.round((y / height) * 255);
      row[3 + x * 3] = 200;
    }
    rows.push(row);
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // colour type: RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

function chunk(type, data) {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([length, body, crc]);
}

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}
