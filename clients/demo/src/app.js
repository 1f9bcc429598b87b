// ReTiCh Messaging demo: a small chat on @retich/messaging-client.
//
// - REST goes to the page's own origin: the API sends no CORS headers, so the demo is served by
//   api-service itself (DEMO_DIR, under /demo/).
// - The realtime connection goes straight to ws-gateway: `?ws=<url>` on the page's URL, else
//   ws://<this host>:8085/ws. WebSockets are not subject to CORS.
// - The development users and their tokens come from ./users.json, written next to the demo by
//   `make dev`: [{"name": "Alice", "id": "<uuid>", "token": "<jwt>"}, …]. The API mints no tokens.
// - Who you are and which conversation is open live in the URL's hash (#u=<user>&c=<conversation>),
//   so a reload (or a bookmark) comes back to the same place.
//
// The client library (@retich/messaging-client) is imported from ./lib/, where the build copies
// its compiled ES modules (scripts/build.mjs); an app with a bundler imports the package name.
// No inline script and no import map, so a strict Content-Security-Policy (script-src 'self') fits.
import { ApiError, MessagingApi, NetworkError, RealtimeConnection, randomId } from "./lib/index.js";

import { $, formatSize, formatTime, h, snippet } from "./dom.js";

const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉"];
const HISTORY_PAGE = 50;
const GATEWAY_URL =
  new URLSearchParams(location.search).get("ws") ??
  `${location.protocol === "https:" ? "wss" : "ws"}://${location.hostname}:8085/ws`;

// ---------------------------------------------------------------------------------------- errors

/** One line for any error; an ApiError shows its code, status, message and field details. */
function describeError(error) {
  if (error instanceof ApiError) {
    let text = `${error.code} (HTTP ${error.status}): ${error.message}`;
    if (error.details) {
      text += ` — ${Object.entries(error.details).map(([field, reason]) => `${field}: ${reason}`).join("; ")}`;
    }
    if (error.retryAfter !== undefined) text += ` (retry in ${error.retryAfter} s)`;
    if (error.status === 401) text += " — the token in users.json may have expired: run `make dev` again";
    return text;
  }
  if (error instanceof NetworkError) return `Network error: ${error.message}`;
  return error instanceof Error ? error.message : String(error);
}

/** Shows an error at the top of the page until dismissed (or for 20 s). Repeats are not stacked. */
function showError(error, context) {
  const text = `${context ? `${context}: ` : ""}${describeError(error)}`;
  const box = $("#errors");
  if ([...box.children].some((el) => el.dataset.text === text)) return;
  const item = h(
    "div",
    { class: "error", dataset: { text, code: error instanceof ApiError ? error.code : "" } },
    h("span", {}, text),
    h("button", { type: "button", class: "link", "aria-label": "Dismiss", onclick: () => item.remove() }, "✕"),
  );
  box.append(item);
  setTimeout(() => item.remove(), 20_000);
  console.error(context ?? "error", error);
}

window.addEventListener("unhandledrejection", (event) => showError(event.reason));

// ------------------------------------------------------------------------------------ the hash

function readHash() {
  return new URLSearchParams(location.hash.slice(1));
}

function writeHash(values) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(values)) if (value) params.set(key, value);
  history.replaceState(null, "", `${location.pathname}${location.search}#${params}`);
}

// ------------------------------------------------------------------------------- users.json

async function loadUsers() {
  let response;
  try {
    response = await fetch("./users.json", { cache: "no-store" });
  } catch (error) {
    throw new Error(`could not load users.json (${error.message})`);
  }
  if (!response.ok) {
    throw new Error(`users.json: HTTP ${response.status}. \`make dev\` writes it next to the demo.`);
  }
  const users = await response.json();
  if (!Array.isArray(users) || !users.every((u) => u && u.id && u.token && u.name)) {
    throw new Error('users.json must be [{"name": …, "id": …, "token": …}, …]');
  }
  return users;
}

function showPicker(users, problem) {
  $("#picker").hidden = false;
  $("#app").hidden = true;
  $("#picker-status").textContent = problem ?? "";
  $("#user-buttons").replaceChildren(
    ...users.map((user) =>
      h(
        "button",
        {
          type: "button",
          class: "user-button",
          dataset: { user: user.name },
          onclick: () => {
            writeHash({ u: user.id });
            startSession(user, users);
          },
        },
        h("span", { class: "avatar" }, user.name.slice(0, 1)),
        h("span", { class: "user-name" }, user.name),
        h("span", { class: "user-id" }, user.id),
      ),
    ),
  );
}

// ---------------------------------------------------------------------------- the session

/** Everything about the signed-in user. One per page load: switching user reloads the page. */
let session;

/**
 * The open conversation:
 * `{ id, messages: Map<id, Message>, pending: Map<client_msg_id, text>, replyCache: Map<id, Message|null>,
 *    hasOlder, replyTo, editingId, uploading: Set<message id>, typingSender, readSeq }`.
 */
let open;

function startSession(me, users) {
  $("#picker").hidden = true;
  $("#app").hidden = false;
  $("#me-name").textContent = me.name;
  document.title = `${me.name} — ReTiCh Messaging demo`;

  const api = new MessagingApi({ baseUrl: location.origin, token: me.token });
  const rt = new RealtimeConnection({ urls: [GATEWAY_URL], token: me.token, api });
  session = {
    me,
    users,
    api,
    rt,
    /** id → { conversation, participants: user ids | undefined, unread } */
    conversations: new Map(),
    /** Conversation ids whose participants are being fetched. */
    fetchingDetails: new Set(),
    synced: false,
  };

  wireComposer();
  $("#switch-user").onclick = () => {
    rt.close();
    history.replaceState(null, "", `${location.pathname}${location.search}`);
    location.reload();
  };
  $("#new-chats").replaceChildren(
    ...users
      .filter((u) => u.id !== me.id)
      .map((other) =>
        h(
          "button",
          { type: "button", class: "new-chat", dataset: { user: other.name }, onclick: () => startDirect(other) },
          `+ Chat with ${other.name}`,
        ),
      ),
  );

  rt.on("state", renderConnection);
  rt.on("error", (error) => showError(error, "Realtime"));
  rt.on("sync", onSync);
  rt.on("conversation.joined", (e) => {
    upsertConversation(e.payload, { participants: participantIds(e.payload) });
    renderConversations();
  });
  rt.on("conversation.updated", (e) => {
    upsertConversation(e.payload, { participants: participantIds(e.payload) });
    renderConversations();
    if (open?.id === e.conversation_id) renderChatHeader();
  });
  rt.on("conversation.archived", (e) => {
    upsertConversation(e.payload);
    renderConversations();
  });
  rt.on("conversation.left", (e) => {
    if (e.payload.user_id !== me.id) return;
    session.conversations.delete(e.conversation_id);
    if (open?.id === e.conversation_id) closeConversation();
    renderConversations();
  });
  rt.on("participant.added", (e) => refreshParticipants(e.conversation_id));
  rt.on("participant.removed", (e) => refreshParticipants(e.conversation_id));
  rt.on("message.new", onMessageNew);
  rt.on("message.updated", (e) => {
    if (open?.id === e.conversation_id && open.messages.has(e.payload.id)) upsertMessage(e.payload);
  });
  rt.on("message.deleted", (e) => {
    if (open?.id === e.conversation_id) removeMessage(e.payload.id);
  });
  rt.on("reaction.added", (e) => changeReaction(e.payload.message_id, e.payload.emoji, e.payload.user_id, true));
  rt.on("reaction.removed", (e) => changeReaction(e.payload.message_id, e.payload.emoji, e.payload.user_id, false));
  rt.presence.subscribe(() => {
    renderConversations();
    renderChatHeader();
  });
  rt.typing.subscribe(({ conversationId }) => {
    renderConversations();
    if (open?.id === conversationId) renderTyping();
  });
  document.addEventListener("visibilitychange", scheduleMarkRead);

  renderConnection(rt.state);
  // Resolves after the first sync (see onSync); reconnects by itself after that.
  rt.connect().catch((error) => showError(error, "Realtime"));
}

function nameOf(userId) {
  return session.users.find((u) => u.id === userId)?.name ?? `User ${userId.slice(0, 8)}`;
}

function participantIds(detail) {
  return Array.isArray(detail.participants) ? detail.participants.map((p) => p.user_id) : undefined;
}

// --------------------------------------------------------------------------- conversations

/** After every connect, reconnect and resync: the server's list, with its unread counts. */
function onSync(info) {
  const { conversations } = session;
  for (const id of info.removed) conversations.delete(id);
  for (const conversation of info.conversations) {
    // The server's count is authoritative; the open conversation is being read.
    upsertConversation(conversation, { unread: open?.id === conversation.id ? 0 : conversation.unread_count });
  }
  renderConversations();

  if (!session.synced) {
    session.synced = true;
    const wanted = readHash().get("c");
    if (wanted && conversations.has(wanted)) openConversation(wanted);
    else if (wanted) showError(new Error("that conversation is not one of yours"), "Open conversation");
  } else if (open) {
    // Edits, reactions and deletions are not replayed after an outage: read them again.
    if (!conversations.has(open.id)) closeConversation();
    else refreshOpenConversation().catch((error) => showError(error, "Refreshing the conversation"));
  }
  if (open) scheduleMarkRead();
}

/** Adds or updates a conversation of the list; `extra` may set `participants` and `unread`. */
function upsertConversation(conversation, extra = {}) {
  const existing = session.conversations.get(conversation.id);
  const entry = existing ?? { conversation, participants: undefined, unread: 0 };
  // WebSocket payloads carry unread_count 0: keep our own count.
  entry.conversation = { ...entry.conversation, ...conversation };
  if (extra.participants) entry.participants = extra.participants;
  if (extra.unread !== undefined) entry.unread = extra.unread;
  session.conversations.set(conversation.id, entry);
  if (!entry.participants) fetchParticipants(conversation.id);
  return entry;
}

/** The list endpoint has no participants: fetch them once (names of direct conversations). */
async function fetchParticipants(conversationId) {
  if (session.fetchingDetails.has(conversationId)) return;
  session.fetchingDetails.add(conversationId);
  try {
    const detail = await session.api.getConversation(conversationId);
    const entry = session.conversations.get(conversationId);
    if (entry) entry.participants = participantIds(detail);
    renderConversations();
    if (open?.id === conversationId) renderChatHeader();
  } catch (error) {
    showError(error, "Loading a conversation");
  } finally {
    session.fetchingDetails.delete(conversationId);
  }
}

function refreshParticipants(conversationId) {
  const entry = session.conversations.get(conversationId);
  if (entry) entry.participants = undefined;
  fetchParticipants(conversationId);
}

function titleOf(entry) {
  const { conversation, participants } = entry;
  if (conversation.name) return conversation.name;
  const others = (participants ?? []).filter((id) => id !== session.me.id);
  if (others.length > 0) return others.map(nameOf).join(", ");
  return conversation.type === "direct" ? "Direct conversation" : `Untitled ${conversation.type}`;
}

/** Online state to show for a conversation: the other person of a DM, anyone else in a group. */
function presenceOf(entry) {
  const others = (entry?.participants ?? []).filter((id) => id !== session.me.id);
  if (others.length === 0 || !session.rt.presence.ready) return "unknown";
  return others.some((id) => session.rt.presence.isOnline(id)) ? "online" : "offline";
}

function typingText(conversationId) {
  const names = session.rt.typing
    .typing(conversationId)
    .filter((id) => id !== session.me.id)
    .map(nameOf);
  if (names.length === 0) return "";
  return names.length === 1 ? `${names[0]} is typing…` : `${names.join(" and ")} are typing…`;
}

function renderConversations() {
  const entries = [...session.conversations.values()].sort((a, b) =>
    (b.conversation.last_message_at ?? b.conversation.created_at).localeCompare(
      a.conversation.last_message_at ?? a.conversation.created_at,
    ),
  );
  $("#no-conversations").hidden = entries.length > 0;
  $("#conversations").replaceChildren(
    ...entries.map((entry) => {
      const { id, type } = entry.conversation;
      const typing = typingText(id);
      return h(
        "li",
        { class: "conversation", dataset: { id, type }, "aria-current": open?.id === id ? "true" : false },
        h(
          "button",
          { type: "button", onclick: () => openConversation(id) },
          h("span", { class: "presence-dot", dataset: { presence: presenceOf(entry) } }),
          h(
            "span",
            { class: "conversation-text" },
            h("span", { class: "conversation-name" }, titleOf(entry)),
            h("span", { class: "conversation-sub" }, typing || (entry.conversation.is_archived ? "archived" : type)),
          ),
          entry.unread > 0 ? h("span", { class: "unread", "aria-label": `${entry.unread} unread` }, entry.unread) : null,
        ),
      );
    }),
  );
}

function renderConnection(state) {
  const el = $("#connection");
  el.dataset.state = state;
  el.textContent = { idle: "idle", connecting: "connecting…", open: "online", reconnecting: "reconnecting…", closed: "closed" }[state] ?? state;
}

/** "＋ Chat with Bob": the existing direct conversation, or a new one. */
async function startDirect(other) {
  try {
    const detail = await session.api.openDirectConversation(other.id);
    upsertConversation(detail, { participants: participantIds(detail) });
    renderConversations();
    await openConversation(detail.id);
  } catch (error) {
    showError(error, `Chat with ${other.name}`);
  }
}

// ------------------------------------------------------------------------ the open conversation

async function openConversation(id) {
  if (open?.id === id) return;
  closeConversation();
  const { rt, api } = session;
  open = {
    id,
    messages: new Map(),
    pending: new Map(),
    replyCache: new Map(),
    uploading: new Set(),
    hasOlder: false,
    replyTo: undefined,
    editingId: undefined,
    readSeq: 0,
    typingSender: rt.typingSender(id, { payload: { kind: "text" } }),
  };
  const current = open;
  writeHash({ u: session.me.id, c: id });
  const entry = session.conversations.get(id);
  if (entry) entry.unread = 0;
  $("#chat").hidden = false;
  $("#chat-empty").hidden = true;
  $("#chat").dataset.id = id;
  $("#chat").dataset.loaded = "false";
  $("#messages").replaceChildren();
  renderChatHeader();
  renderTyping();
  renderReplyBar();
  renderConversations();
  $("#input").value = "";
  $("#input").focus();

  try {
    // The newest messages up to where live delivery starts; everything newer arrives (or has
    // arrived) as message.new, so together they are complete and without overlap.
    const history = await rt.loadHistory(id, { limit: HISTORY_PAGE });
    if (open !== current) return;
    for (const m of history) if (!current.messages.has(m.id)) current.messages.set(m.id, m);
    current.hasOlder = history.length === HISTORY_PAGE;
    renderMessages();
    scrollToBottom();
    scheduleMarkRead();
  } catch (error) {
    showError(error, "Loading messages");
  } finally {
    if (open === current) $("#chat").dataset.loaded = "true";
  }

  // Who is typing already (typing.start events from before we looked are not replayed).
  try {
    const typing = await api.getTyping(id);
    if (open !== current) return;
    for (const userId of typing.user_ids) if (userId !== session.me.id) rt.typing.start(id, userId);
  } catch (error) {
    showError(error, "Loading who is typing");
  }
}

function closeConversation() {
  if (!open) return;
  open.typingSender.stop();
  open.typingSender.dispose();
  open = undefined;
  $("#chat").hidden = true;
  $("#chat-empty").hidden = false;
  writeHash({ u: session.me.id });
  renderConversations();
}

function renderChatHeader() {
  if (!open) return;
  const entry = session.conversations.get(open.id);
  const presence = presenceOf(entry);
  $("#chat-title").textContent = entry ? titleOf(entry) : "…";
  $("#chat-presence").dataset.presence = presence;
  $("#chat-presence-text").textContent = presence === "unknown" ? "" : presence;
}

function renderTyping() {
  $("#typing").textContent = open ? typingText(open.id) : "";
}

/** Messages of the open conversation, oldest first, then the pending sends. */
function renderMessages() {
  const sorted = [...open.messages.values()].sort((a, b) => a.seq - b.seq);
  $("#messages").replaceChildren(...sorted.map(renderMessage), ...[...open.pending].map(renderPending));
  $("#load-older").hidden = !open.hasOlder;
}

function renderPending([clientMsgId, text]) {
  return h(
    "li",
    { class: "message mine pending", dataset: { clientMsgId } },
    h("div", { class: "meta" }, h("span", { class: "author" }, session.me.name), h("span", { class: "time" }, "sending…")),
    h("div", { class: "body" }, text),
  );
}

function renderMessage(m) {
  const mine = m.sender_id === session.me.id;
  const editing = open.editingId === m.id;
  return h(
    "li",
    {
      class: `message${mine ? " mine" : ""}`,
      id: `m-${m.id}`,
      dataset: { id: m.id, seq: m.seq, sender: nameOf(m.sender_id), replyTo: m.reply_to_id },
    },
    replyQuote(m),
    h(
      "div",
      { class: "meta" },
      h("span", { class: "author" }, nameOf(m.sender_id)),
      h("time", { class: "time", datetime: m.created_at, title: m.created_at }, formatTime(m.created_at)),
      m.is_edited ? h("span", { class: "edited", title: m.edited_at }, "(edited)") : null,
    ),
    editing ? editForm(m) : m.content ? h("div", { class: "body" }, m.content) : null,
    renderAttachments(m),
    renderReactions(m),
    editing ? null : messageActions(m, mine),
  );
}

function replyQuote(m) {
  if (!m.reply_to_id) return null;
  const target = open.messages.get(m.reply_to_id) ?? open.replyCache.get(m.reply_to_id);
  if (target === undefined) {
    fetchReplyTarget(m.reply_to_id);
    return h("div", { class: "quote" }, "↪ …");
  }
  if (target === null) return h("div", { class: "quote" }, "↪ a deleted message");
  return h(
    "div",
    {
      class: "quote",
      title: "Show the message",
      onclick: () => document.getElementById(`m-${target.id}`)?.scrollIntoView({ block: "center", behavior: "smooth" }),
    },
    "↪ ",
    h("b", {}, nameOf(target.sender_id)),
    " ",
    snippet(target.content) || (target.attachments.length ? "🖼 image" : ""),
  );
}

/** A reply to a message older than the loaded page: fetch it once for the quote. */
async function fetchReplyTarget(messageId) {
  const current = open;
  if (current.replyCache.has(messageId)) return;
  current.replyCache.set(messageId, undefined);
  let target = null;
  try {
    target = await session.api.getMessage(messageId);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) showError(error, "Loading a replied-to message");
  }
  if (open !== current) return;
  current.replyCache.set(messageId, target);
  rerenderReplies(messageId);
}

function rerenderReplies(messageId) {
  for (const el of document.querySelectorAll(`#messages [data-reply-to="${messageId}"]`)) {
    const m = open.messages.get(el.dataset.id);
    if (m) el.replaceWith(renderMessage(m));
  }
}

function renderAttachments(m) {
  if (m.attachments.length === 0) {
    if (m.type !== "image") return null;
    return h("div", { class: "attachments placeholder" }, open.uploading.has(m.id) ? "Uploading image…" : "🖼 image on its way…");
  }
  return h(
    "div",
    { class: "attachments" },
    ...m.attachments.map((a) => {
      if (a.file_type.startsWith("image/")) {
        // The thumbnail when the server made one, else the image itself (scaled by CSS).
        return h(
          "a",
          { href: a.file_url, target: "_blank", rel: "noopener", title: `${a.file_name} (${formatSize(a.file_size)})` },
          h("img", {
            class: "attachment-image",
            src: a.thumbnail_url ?? a.file_url,
            alt: a.file_name,
            width: a.width,
            height: a.height,
            loading: "lazy",
          }),
        );
      }
      return h("a", { class: "file", href: a.file_url, target: "_blank", rel: "noopener" }, `📎 ${a.file_name} (${formatSize(a.file_size)})`);
    }),
  );
}

function renderReactions(m) {
  if (m.reactions.length === 0) return null;
  const byEmoji = new Map();
  for (const r of m.reactions) byEmoji.set(r.emoji, [...(byEmoji.get(r.emoji) ?? []), r.user_id]);
  return h(
    "div",
    { class: "reactions" },
    ...[...byEmoji].map(([emoji, users]) =>
      h(
        "button",
        {
          type: "button",
          class: `reaction${users.includes(session.me.id) ? " mine" : ""}`,
          dataset: { emoji, count: users.length },
          title: users.map(nameOf).join(", "),
          onclick: () => toggleReaction(m, emoji),
        },
        `${emoji} ${users.length}`,
      ),
    ),
  );
}

function messageActions(m, mine) {
  return h(
    "div",
    { class: "actions" },
    ...QUICK_REACTIONS.map((emoji) =>
      h("button", { type: "button", class: "react", dataset: { react: emoji }, title: `React ${emoji}`, onclick: () => toggleReaction(m, emoji) }, emoji),
    ),
    h("button", { type: "button", class: "link", dataset: { action: "reply" }, onclick: () => setReplyTo(m) }, "Reply"),
    mine && m.content !== undefined
      ? h("button", { type: "button", class: "link", dataset: { action: "edit" }, onclick: () => startEdit(m) }, "Edit")
      : null,
    mine ? h("button", { type: "button", class: "link danger", dataset: { action: "delete" }, onclick: () => deleteMessage(m) }, "Delete") : null,
  );
}

function editForm(m) {
  // A re-render while editing (an event about this message) keeps what was typed so far.
  const draft = document.querySelector(`#m-${m.id} .edit-input`)?.value;
  const input = h("input", { class: "edit-input", value: draft ?? m.content ?? "", "aria-label": "Edit message" });
  const cancel = () => {
    open.editingId = undefined;
    upsertMessage(open.messages.get(m.id) ?? m);
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") cancel();
  });
  return h(
    "form",
    {
      class: "edit",
      onsubmit: async (event) => {
        event.preventDefault();
        try {
          const updated = await session.api.editMessage(m.id, input.value);
          open.editingId = undefined;
          upsertMessage(updated);
        } catch (error) {
          showError(error, "Edit");
          input.focus();
        }
      },
    },
    input,
    h("button", { type: "submit" }, "Save"),
    h("button", { type: "button", class: "link", onclick: cancel }, "Cancel"),
  );
}

function startEdit(m) {
  open.editingId = m.id;
  upsertMessage(m);
  const input = document.querySelector(`#m-${m.id} .edit-input`);
  input?.focus();
  input?.select();
}

async function deleteMessage(m) {
  if (!confirm("Delete this message for everyone?")) return;
  try {
    await session.api.deleteMessage(m.id);
    removeMessage(m.id);
  } catch (error) {
    showError(error, "Delete");
  }
}

async function toggleReaction(m, emoji) {
  const current = open.messages.get(m.id) ?? m;
  const mine = current.reactions.some((r) => r.emoji === emoji && r.user_id === session.me.id);
  try {
    if (mine) await session.api.removeReaction(m.id, emoji);
    else await session.api.addReaction(m.id, emoji);
    // The event comes back too; applying it twice changes nothing.
    changeReaction(m.id, emoji, session.me.id, !mine);
  } catch (error) {
    showError(error, "Reaction");
  }
}

function changeReaction(messageId, emoji, userId, added) {
  const m = open?.messages.get(messageId);
  if (!m) return;
  const others = m.reactions.filter((r) => !(r.emoji === emoji && r.user_id === userId));
  upsertMessage({ ...m, reactions: added ? [...others, { emoji, user_id: userId }] : others });
}

// -------------------------------------------------------------------- live message updates

function onMessageNew(event) {
  const m = event.payload;
  const entry = session.conversations.get(m.conversation_id);
  if (entry) entry.conversation = { ...entry.conversation, last_message_at: m.created_at };
  if (open?.id === m.conversation_id) {
    upsertMessage(m);
    scheduleMarkRead();
  } else if (entry && m.sender_id !== session.me.id) {
    entry.unread += 1;
  }
  renderConversations();
}

/** Inserts or replaces one message of the open conversation, in seq order. */
function upsertMessage(m) {
  if (!open || m.conversation_id !== open.id) return;
  const timeline = $("#timeline");
  const atBottom = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 80;
  open.messages.set(m.id, m);
  if (m.client_msg_id && open.pending.delete(m.client_msg_id)) {
    document.querySelector(`#messages [data-client-msg-id="${CSS.escape(m.client_msg_id)}"]`)?.remove();
  }
  const el = renderMessage(m);
  const existing = document.getElementById(`m-${m.id}`);
  if (existing) {
    existing.replaceWith(el);
  } else {
    const next = [...$("#messages").children].find((li) => li.classList.contains("pending") || Number(li.dataset.seq) > m.seq);
    $("#messages").insertBefore(el, next ?? null);
  }
  rerenderReplies(m.id);
  if (atBottom) scrollToBottom();
}

function removeMessage(id) {
  if (!open?.messages.delete(id)) return;
  document.getElementById(`m-${id}`)?.remove();
  open.replyCache.set(id, null);
  if (open.replyTo?.id === id) setReplyTo(undefined);
  rerenderReplies(id);
}

/** After a reconnect: the loaded range again, as it is now (edits, reactions, deletions). */
async function refreshOpenConversation() {
  const current = open;
  const known = [...current.messages.values()];
  if (known.length === 0) return;
  const seqs = known.map((m) => m.seq);
  const fresh = await session.api.listMessagesAfter(current.id, Math.min(...seqs) - 1, { beforeSeq: Math.max(...seqs) + 1 });
  if (open !== current) return;
  const ids = new Set(fresh.map((m) => m.id));
  for (const m of known) if (!ids.has(m.id)) removeMessage(m.id);
  for (const m of fresh) if (current.editingId !== m.id) upsertMessage(m);
}

async function loadOlder() {
  const current = open;
  const oldest = Math.min(...[...current.messages.values()].map((m) => m.seq));
  try {
    const older = await session.rt.loadHistory(current.id, { beforeSeq: oldest, limit: HISTORY_PAGE });
    if (open !== current) return;
    const timeline = $("#timeline");
    const fromBottom = timeline.scrollHeight - timeline.scrollTop;
    for (const m of older) current.messages.set(m.id, m);
    current.hasOlder = older.length === HISTORY_PAGE;
    renderMessages();
    timeline.scrollTop = timeline.scrollHeight - fromBottom; // keep the view where it was
  } catch (error) {
    showError(error, "Loading earlier messages");
  }
}

function scrollToBottom() {
  const timeline = $("#timeline");
  timeline.scrollTop = timeline.scrollHeight;
}

/** Moves my read position to the newest message shown, while the page is visible. */
let markReadTimer;
function scheduleMarkRead() {
  clearTimeout(markReadTimer);
  markReadTimer = setTimeout(async () => {
    if (!open || document.visibilityState !== "visible") return;
    const current = open;
    let newest;
    for (const m of current.messages.values()) if (!newest || m.seq > newest.seq) newest = m;
    if (!newest || newest.seq <= current.readSeq) return;
    current.readSeq = newest.seq;
    const entry = session.conversations.get(current.id);
    if (entry) entry.unread = 0;
    renderConversations();
    try {
      await session.api.markRead(current.id, newest.id);
    } catch (error) {
      // A message deleted meanwhile is a 404: the next message will move the position.
      if (!(error instanceof ApiError && error.status === 404)) showError(error, "Mark as read");
    }
  }, 300);
}

// ------------------------------------------------------------------------------ composing

function setReplyTo(m) {
  if (!open) return;
  open.replyTo = m;
  renderReplyBar();
  if (m) $("#input").focus();
}

function renderReplyBar() {
  const m = open?.replyTo;
  $("#reply-bar").hidden = !m;
  $("#reply-text").textContent = m ? `Replying to ${nameOf(m.sender_id)}: ${snippet(m.content) || "🖼 image"}` : "";
}

function wireComposer() {
  const input = $("#input");
  input.addEventListener("input", () => open?.typingSender.update(input.value));
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  $("#composer").addEventListener("submit", (event) => {
    event.preventDefault();
    sendText();
  });
  $("#reply-cancel").addEventListener("click", () => setReplyTo(undefined));
  $("#load-older").addEventListener("click", loadOlder);
  $("#file").addEventListener("change", () => {
    const file = $("#file").files?.[0];
    $("#file").value = "";
    if (file) sendImage(file);
  });
}

async function sendText() {
  const input = $("#input");
  const content = input.value.trim();
  if (!open || !content) return;
  const current = open;
  // Our own id for the message: the server echoes it in the message and its message.new, which
  // replaces the pending bubble whichever arrives first. Retries of the send reuse it.
  const clientMsgId = randomId();
  const replyTo = current.replyTo;
  current.pending.set(clientMsgId, content);
  $("#messages").append(renderPending([clientMsgId, content]));
  scrollToBottom();
  input.value = "";
  current.typingSender.stop();
  setReplyTo(undefined);
  try {
    const { message } = await session.api.sendMessage(current.id, {
      content,
      reply_to_id: replyTo?.id,
      client_msg_id: clientMsgId,
    });
    if (open === current && !current.messages.has(message.id)) upsertMessage(message);
  } catch (error) {
    showError(error, "Send");
    if (open !== current) return;
    current.pending.delete(clientMsgId);
    document.querySelector(`#messages [data-client-msg-id="${CSS.escape(clientMsgId)}"]`)?.remove();
    if (!input.value) input.value = content; // nothing is lost
    if (replyTo) setReplyTo(replyTo);
  }
}

/** An image message: the text in the composer becomes its caption, then the file is attached. */
async function sendImage(file) {
  if (!open) return;
  const current = open;
  const input = $("#input");
  const caption = input.value.trim();
  const replyTo = current.replyTo;
  let message;
  try {
    ({ message } = await session.api.sendMessage(current.id, {
      type: "image",
      content: caption || undefined,
      reply_to_id: replyTo?.id,
    }));
  } catch (error) {
    showError(error, "Send image");
    return;
  }
  if (caption && input.value.trim() === caption) input.value = "";
  setReplyTo(undefined);
  current.uploading.add(message.id);
  if (open === current && !current.messages.has(message.id)) upsertMessage(message);
  try {
    const attachment = await session.api.uploadAttachment(message.id, file, { fileName: file.name });
    current.uploading.delete(message.id);
    const latest = current.messages.get(message.id);
    if (open === current && latest && !latest.attachments.some((a) => a.id === attachment.id)) {
      upsertMessage({ ...latest, attachments: [...latest.attachments, attachment] });
    }
  } catch (error) {
    current.uploading.delete(message.id);
    showError(error, `Upload of ${file.name}`);
    // Do not leave an empty image message behind.
    session.api.deleteMessage(message.id).catch((e) => showError(e, "Delete"));
  }
}

// ------------------------------------------------------------------------------------ start

async function main() {
  let users;
  try {
    users = await loadUsers();
  } catch (error) {
    showPicker([], error.message);
    return;
  }
  const me = users.find((u) => u.id === readHash().get("u"));
  if (me) startSession(me, users);
  else showPicker(users);
}

window.addEventListener("hashchange", () => {
  // A hand-edited or bookmarked hash: another user needs a fresh page, another conversation not.
  const hash = readHash();
  if (!session || hash.get("u") !== session.me.id) location.reload();
  else if (hash.get("c") && hash.get("c") !== open?.id) openConversation(hash.get("c"));
});

main();
