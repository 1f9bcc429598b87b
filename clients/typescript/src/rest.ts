/**
 * Typed REST client for api-service. One method per route of the OpenAPI document; request and
 * response types come from the generated types (src/generated/openapi.ts).
 *
 * Every method resolves with the envelope's `data` (or a {@link Page} for paginated routes) and
 * rejects with {@link ApiError} or {@link NetworkError}.
 */
import { ApiError, NetworkError, parseRetryAfter } from "./errors.js";
import type {
  Attachment,
  ChannelSummary,
  Conversation,
  ConversationDetail,
  ConversationType,
  Message,
  MessageType,
  Page,
  Pagination,
  Participant,
  ParticipantRole,
  PinnedMessage,
  Reaction,
  ReadReceipt,
  RequestBody,
  ResponseData,
  TypingState,
} from "./types.js";
import { backoffDelay, randomId, resolveToken, sleep, type TokenSource } from "./util.js";

/** How {@link MessagingApi.sendMessage} retries. */
export interface SendRetryOptions {
  /**
   * Retries after a network error, a timeout, or a 502/503/504 (default 5). The same
   * `client_msg_id` is sent every time, so the message is stored once.
   */
  retries?: number;
  /** Delay before the first retry in ms (default 250), doubling, jittered ±50 %. */
  initialDelayMs?: number;
  /** Largest delay between retries in ms (default 5,000). */
  maxDelayMs?: number;
  /**
   * Retries allowed after 429 `RATE_LIMITED`, each after `Retry-After` seconds (default 0: the
   * ApiError is thrown at once, with `retryAfter`).
   */
  rateLimitRetries?: number;
}

export interface MessagingApiOptions {
  /** api-service's base URL, e.g. `http://localhost:8082` (no trailing `/` needed). */
  baseUrl: string;
  /** The JWT, or a function returning it (called before each request). Sent as `Authorization: Bearer`. */
  token?: TokenSource;
  /** Extra headers on every request (e.g. `X-User-ID` behind the ReTiCh API gateway in header mode). */
  headers?: Record<string, string>;
  /** The `fetch` to use (default `globalThis.fetch`). */
  fetch?: typeof fetch;
  /** Per-request timeout in ms (default 30,000; uploads: 10 minutes). */
  timeoutMs?: number;
  /** Defaults for {@link MessagingApi.sendMessage}'s retries. */
  sendRetry?: SendRetryOptions;
}

/** Options every call accepts. */
export interface CallOptions {
  /** Abort the call (no retry happens after an abort). */
  signal?: AbortSignal;
}

export interface PageOptions extends CallOptions {
  /** 1 to 100 (server default 20). */
  limit?: number;
  /** 0 or more (server default 0). */
  offset?: number;
}

export interface ListConversationsOptions extends PageOptions {
  /** Filter by name (case-insensitive substring). */
  search?: string;
}

/**
 * Message history. Without `afterSeq`/`beforeSeq` (or with `offset`): newest first.
 * `beforeSeq`: `seq < beforeSeq`, newest first (scrolling back). `afterSeq`: `seq > afterSeq`,
 * **oldest first** (catching up). Both: the range, oldest first. `offset` cannot be combined
 * with either.
 */
export interface ListMessagesOptions extends PageOptions {
  afterSeq?: number;
  beforeSeq?: number;
}

/** Body of a send. `client_msg_id` is generated (a UUID) when missing. */
export interface SendMessageInput {
  /** `text` (default; requires `content`), `image`, `file`, `audio` or `video`. */
  type?: Exclude<MessageType, "system"> | (string & {});
  content?: string;
  /** Any JSON (at most 16 KiB compact). */
  metadata?: unknown;
  reply_to_id?: string;
  /** 1–64 bytes; reuse it for every retry of this message. Generated when missing. */
  client_msg_id?: string;
}

export interface SendMessageOptions extends CallOptions {
  /** Overrides the client's {@link MessagingApiOptions.sendRetry} for this send. */
  retry?: SendRetryOptions;
}

/** What a send resolved with: the stored message, and whether this answer was a replay (200). */
export interface SendResult {
  message: Message;
  /** True when the server already had this `client_msg_id` (an earlier attempt got through). */
  replayed: boolean;
  /** How many HTTP attempts were made (1 when the first one answered). */
  attempts: number;
}

export interface UploadOptions extends CallOptions {
  /** The file name sent in the multipart part (default: the `File`'s name, else `"file"`). */
  fileName?: string;
  /**
   * The part's MIME type, bare and lowercase (`audio/ogg`, not `audio/ogg; codecs=opus`).
   * Default: the Blob's `type`; when empty the server derives it from the file name's extension.
   */
  contentType?: string;
}

export interface DownloadOptions extends CallOptions {
  /** A single byte range: `{start, end}` (inclusive), `{start}` to the end, or `{suffix: n}` (last n bytes). */
  range?: { start: number; end?: number } | { suffix: number };
}

/** Options of {@link MessagingApi.request}, the escape hatch for calls without a wrapper. */
export interface RawRequestOptions {
  query?: Record<string, string | number | undefined>;
  json?: unknown;
  form?: FormData;
  signal?: AbortSignal | undefined;
  timeoutMs?: number;
}

export interface RawResponse {
  status: number;
  body: unknown;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const UPLOAD_TIMEOUT_MS = 10 * 60_000;

/**
 * REST client for api-service.
 *
 * ```ts
 * const api = new MessagingApi({ baseUrl: "http://localhost:8082", token: () => auth.token() });
 * const conversation = await api.createConversation({ type: "group", name: "Crew", participant_ids: [bob] });
 * const { message } = await api.sendMessage(conversation.id, { content: "hello" });
 * ```
 */
export class MessagingApi {
  readonly baseUrl: string;
  private readonly token: TokenSource | undefined;
  private readonly headers: Record<string, string>;
  private readonly fetchImpl: typeof fetch;
  private readonly timeoutMs: number;
  private readonly sendRetry: Required<SendRetryOptions>;

  constructor(options: MessagingApiOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.token = options.token;
    this.headers = { ...options.headers };
    const f = options.fetch ?? globalThis.fetch;
    if (typeof f !== "function") throw new TypeError("MessagingApi: no fetch available; pass options.fetch");
    this.fetchImpl = f.bind(globalThis);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.sendRetry = {
      retries: 5,
      initialDelayMs: 250,
      maxDelayMs: 5_000,
      rateLimitRetries: 0,
      ...stripUndefined(options.sendRetry ?? {}),
    };
  }

  // ------------------------------------------------------------------ conversations

  /**
   * Creates a direct conversation, group or channel (`participant_ids`: the others, never the
   * caller). A direct conversation that already exists rejects with 409 `CONFLICT` whose
   * `error.data` is the existing ConversationDetail; {@link openDirectConversation} handles that.
   */
  async createConversation(
    body: RequestBody<"createConversation"> & { type: ConversationType | (string & {}) },
    options?: CallOptions,
  ): Promise<ResponseData<"createConversation", 201>> {
    return this.data("POST", "/conversations", { json: body, signal: options?.signal });
  }

  /** The direct conversation with `userId`: created, or the existing one (the 409's `data`). */
  async openDirectConversation(userId: string, options?: CallOptions): Promise<ConversationDetail> {
    try {
      return await this.createConversation({ type: "direct", participant_ids: [userId] }, options);
    } catch (error) {
      if (error instanceof ApiError && error.status === 409 && isObject(error.data)) {
        return error.data as ConversationDetail;
      }
      throw error;
    }
  }

  /** My conversations, archived included, newest activity first. */
  async listConversations(options?: ListConversationsOptions): Promise<Page<Conversation>> {
    return this.page("/conversations", {
      query: { limit: options?.limit, offset: options?.offset, search: options?.search },
      signal: options?.signal,
    });
  }

  /** Every conversation of mine (all pages of {@link listConversations}). */
  async listAllConversations(options?: CallOptions & { search?: string }): Promise<Conversation[]> {
    const all: Conversation[] = [];
    for (let offset = 0; ; ) {
      const page = await this.listConversations({ limit: 100, offset, search: options?.search, signal: options?.signal });
      all.push(...page.data);
      offset += page.data.length;
      if (page.data.length === 0 || offset >= page.pagination.total) return all;
    }
  }

  /** Public channels, largest first. */
  async discoverChannels(options?: ListConversationsOptions): Promise<Page<ChannelSummary>> {
    return this.page("/conversations/discover", {
      query: { limit: options?.limit, offset: options?.offset, search: options?.search },
      signal: options?.signal,
    });
  }

  /** One conversation with its active participants. */
  async getConversation(conversationId: string, options?: CallOptions): Promise<ResponseData<"getConversation", 200>> {
    return this.data("GET", `/conversations/${seg(conversationId)}`, { signal: options?.signal });
  }

  /** Changes name, description or avatar (owner or admin). */
  async updateConversation(
    conversationId: string,
    body: RequestBody<"updateConversation">,
    options?: CallOptions,
  ): Promise<ResponseData<"updateConversation", 200>> {
    return this.data("PUT", `/conversations/${seg(conversationId)}`, { json: body, signal: options?.signal });
  }

  /** Archives the conversation (owner). There is no unarchive. */
  async archiveConversation(
    conversationId: string,
    options?: CallOptions,
  ): Promise<ResponseData<"archiveConversation", 200>> {
    return this.data("DELETE", `/conversations/${seg(conversationId)}`, { signal: options?.signal });
  }

  /** Joins a public channel; resolves with my Participant. */
  async joinChannel(conversationId: string, options?: CallOptions): Promise<ResponseData<"joinChannel", 201>> {
    return this.data("POST", `/conversations/${seg(conversationId)}/join`, { signal: options?.signal });
  }

  // ------------------------------------------------------------------ participants

  /** Adds participants; resolves with those actually added or re-activated. */
  async addParticipants(
    conversationId: string,
    userIds: string[],
    options?: CallOptions,
  ): Promise<ResponseData<"addParticipants", 201>> {
    const body: RequestBody<"addParticipants"> = { participant_ids: userIds };
    return this.data("POST", `/conversations/${seg(conversationId)}/participants`, { json: body, signal: options?.signal });
  }

  /** Changes a participant's role; `owner` transfers ownership. */
  async changeParticipantRole(
    conversationId: string,
    userId: string,
    role: ParticipantRole | (string & {}),
    options?: CallOptions,
  ): Promise<ResponseData<"changeParticipantRole", 200>> {
    const body: RequestBody<"changeParticipantRole"> = { role };
    return this.data("PUT", `/conversations/${seg(conversationId)}/participants/${seg(userId)}`, {
      json: body,
      signal: options?.signal,
    });
  }

  /** Removes a participant, or leaves when `userId` is the caller. */
  async removeParticipant(conversationId: string, userId: string, options?: CallOptions): Promise<void> {
    await this.request("DELETE", `/conversations/${seg(conversationId)}/participants/${seg(userId)}`, {
      signal: options?.signal,
    });
  }

  // ------------------------------------------------------------------ messages

  /**
   * Sends a message. A `client_msg_id` is generated when the input has none, and the send is
   * retried with it after a network error, a timeout or a 502/503/504 — the server stores the
   * message once whatever the number of attempts. 429 rejects with an {@link ApiError} whose
   * `retryAfter` says how long to wait (or is retried when `rateLimitRetries` allows it).
   */
  async sendMessage(conversationId: string, input: SendMessageInput, options?: SendMessageOptions): Promise<SendResult> {
    const policy = { ...this.sendRetry, ...stripUndefined(options?.retry ?? {}) };
    const body: RequestBody<"sendMessage"> = { ...input, client_msg_id: input.client_msg_id ?? randomId() };
    const path = `/conversations/${seg(conversationId)}/messages`;
    let failures = 0;
    let rateLimited = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        const { status, body: response } = await this.request("POST", path, { json: body, signal: options?.signal });
        return { message: (response as { data: Message }).data, replayed: status === 200, attempts: attempt };
      } catch (error) {
        if (options?.signal?.aborted) throw error;
        let delay: number;
        if (error instanceof ApiError && error.status === 429) {
          if (rateLimited >= policy.rateLimitRetries) throw error;
          rateLimited++;
          delay = (error.retryAfter ?? 1) * 1000;
        } else if (error instanceof NetworkError || (error instanceof ApiError && [502, 503, 504].includes(error.status))) {
          if (failures >= policy.retries) throw error;
          delay = backoffDelay(failures, { initialDelayMs: policy.initialDelayMs, maxDelayMs: policy.maxDelayMs });
          failures++;
        } else {
          throw error;
        }
        await sleep(delay, options?.signal);
      }
    }
  }

  /** Sends a text message (see {@link sendMessage}). */
  async sendText(
    conversationId: string,
    content: string,
    extra?: Omit<SendMessageInput, "content" | "type">,
    options?: SendMessageOptions,
  ): Promise<Message> {
    return (await this.sendMessage(conversationId, { ...extra, type: "text", content }, options)).message;
  }

  /** History (see {@link ListMessagesOptions} for the orders). */
  async listMessages(conversationId: string, options?: ListMessagesOptions): Promise<Page<Message>> {
    return this.page(`/conversations/${seg(conversationId)}/messages`, {
      query: {
        limit: options?.limit,
        offset: options?.offset,
        after_seq: options?.afterSeq,
        before_seq: options?.beforeSeq,
      },
      signal: options?.signal,
    });
  }

  /**
   * Every message with `seq > afterSeq` (optionally `< beforeSeq`), oldest first: pages of
   * `pageSize` (default 100) with a moving `after_seq` until a page comes back short.
   */
  async listMessagesAfter(
    conversationId: string,
    afterSeq: number,
    options?: CallOptions & { beforeSeq?: number; pageSize?: number; onPage?: (messages: Message[]) => void },
  ): Promise<Message[]> {
    const limit = options?.pageSize ?? 100;
    const all: Message[] = [];
    let after = afterSeq;
    for (;;) {
      const page = await this.listMessages(conversationId, {
        afterSeq: after,
        beforeSeq: options?.beforeSeq,
        limit,
        signal: options?.signal,
      });
      options?.onPage?.(page.data);
      all.push(...page.data);
      for (const m of page.data) after = Math.max(after, m.seq);
      if (page.data.length < limit) return all;
    }
  }

  /** Full-text search in a conversation (`q` at most 200 bytes). */
  async searchMessages(conversationId: string, q: string, options?: PageOptions): Promise<Page<Message>> {
    return this.page(`/conversations/${seg(conversationId)}/messages/search`, {
      query: { q, limit: options?.limit, offset: options?.offset },
      signal: options?.signal,
    });
  }

  /** One message. */
  async getMessage(messageId: string, options?: CallOptions): Promise<ResponseData<"getMessage", 200>> {
    return this.data("GET", `/messages/${seg(messageId)}`, { signal: options?.signal });
  }

  /** Edits a message's content (the sender only). */
  async editMessage(messageId: string, content: string, options?: CallOptions): Promise<ResponseData<"editMessage", 200>> {
    const body: RequestBody<"editMessage"> = { content };
    return this.data("PUT", `/messages/${seg(messageId)}`, { json: body, signal: options?.signal });
  }

  /** Deletes a message (the sender, or an owner/admin). */
  async deleteMessage(messageId: string, options?: CallOptions): Promise<void> {
    await this.request("DELETE", `/messages/${seg(messageId)}`, { signal: options?.signal });
  }

  /** Who is typing in the conversation now. */
  async getTyping(conversationId: string, options?: CallOptions): Promise<TypingState> {
    return this.data("GET", `/conversations/${seg(conversationId)}/typing`, { signal: options?.signal });
  }

  // ------------------------------------------------------------------ reactions

  /** Reacts to a message (409 when I already have this emoji on it). */
  async addReaction(messageId: string, emoji: string, options?: CallOptions): Promise<Reaction> {
    const body: RequestBody<"addReaction"> = { emoji };
    return this.data("POST", `/messages/${seg(messageId)}/reactions`, { json: body, signal: options?.signal });
  }

  /** A message's reactions. */
  async listReactions(messageId: string, options?: CallOptions): Promise<Reaction[]> {
    return this.data("GET", `/messages/${seg(messageId)}/reactions`, { signal: options?.signal });
  }

  /** Removes my reaction (204 also when there was none). */
  async removeReaction(messageId: string, emoji: string, options?: CallOptions): Promise<void> {
    await this.request("DELETE", `/messages/${seg(messageId)}/reactions/${seg(emoji)}`, { signal: options?.signal });
  }

  // ------------------------------------------------------------------ read receipts

  /** Marks the conversation read up to a message (moves forward only). */
  async markRead(conversationId: string, lastReadMessageId: string, options?: CallOptions): Promise<ReadReceipt> {
    const body: RequestBody<"markRead"> = { last_read_message_id: lastReadMessageId };
    return this.data("POST", `/conversations/${seg(conversationId)}/read`, { json: body, signal: options?.signal });
  }

  /** Everyone's read position in the conversation. */
  async listReadReceipts(conversationId: string, options?: CallOptions): Promise<ReadReceipt[]> {
    return this.data("GET", `/conversations/${seg(conversationId)}/read`, { signal: options?.signal });
  }

  // ------------------------------------------------------------------ pins

  /** Pins a message (owner or admin). */
  async pinMessage(conversationId: string, messageId: string, options?: CallOptions): Promise<PinnedMessage> {
    const body: RequestBody<"pinMessage"> = { message_id: messageId };
    return this.data("POST", `/conversations/${seg(conversationId)}/pins`, { json: body, signal: options?.signal });
  }

  /** The conversation's pinned messages. */
  async listPins(conversationId: string, options?: CallOptions): Promise<PinnedMessage[]> {
    return this.data("GET", `/conversations/${seg(conversationId)}/pins`, { signal: options?.signal });
  }

  /** Unpins a message (204 also when it was not pinned). */
  async unpinMessage(conversationId: string, messageId: string, options?: CallOptions): Promise<void> {
    await this.request("DELETE", `/conversations/${seg(conversationId)}/pins/${seg(messageId)}`, { signal: options?.signal });
  }

  // ------------------------------------------------------------------ attachments

  /**
   * Uploads a file to a message (multipart part `file`). Images up to 10 MiB, other types up to
   * 50 MiB; the type must be allowed and match the content (docs/api.md, "Uploads").
   */
  async uploadAttachment(messageId: string, file: Blob, options?: UploadOptions): Promise<Attachment> {
    const name = options?.fileName ?? (file as { name?: string }).name ?? "file";
    const type = options?.contentType ?? file.type;
    const part = type && type !== file.type ? new Blob([file], { type }) : file;
    const form = new FormData();
    form.append("file", part, name);
    return this.data("POST", `/messages/${seg(messageId)}/attachments`, {
      form,
      signal: options?.signal,
      timeoutMs: Math.max(this.timeoutMs, UPLOAD_TIMEOUT_MS),
    });
  }

  /** A message's attachments, oldest first. */
  async listAttachments(messageId: string, options?: CallOptions): Promise<Attachment[]> {
    return this.data("GET", `/messages/${seg(messageId)}/attachments`, { signal: options?.signal });
  }

  /** Every attachment of a conversation, newest first (paginated). */
  async listMedia(conversationId: string, options?: PageOptions): Promise<Page<Attachment>> {
    return this.page(`/conversations/${seg(conversationId)}/media`, {
      query: { limit: options?.limit, offset: options?.offset },
      signal: options?.signal,
    });
  }

  /**
   * Downloads a stored file: `fileUrl` is an Attachment's `file_url` (any host; no token is sent,
   * downloads are public) or a bare stored name (fetched from this API's `/uploads/`).
   * Resolves with the `Response` (200, or 206 for a range) so it can be streamed, or read with
   * `.arrayBuffer()` / `.blob()`; rejects with {@link ApiError} (404, 416) otherwise.
   */
  async downloadFile(fileUrl: string, options?: DownloadOptions): Promise<Response> {
    const url = /^[a-z][a-z0-9+.-]*:/i.test(fileUrl) ? fileUrl : `${this.baseUrl}/uploads/${seg(fileUrl)}`;
    const headers: Record<string, string> = {};
    const range = options?.range;
    if (range) {
      headers.Range = "suffix" in range ? `bytes=-${range.suffix}` : `bytes=${range.start}-${range.end ?? ""}`;
    }
    const response = await this.fetchWithTimeout("GET", url, { headers }, options?.signal, UPLOAD_TIMEOUT_MS);
    if (response.status !== 200 && response.status !== 206) {
      throw await toApiError("GET", url, response);
    }
    return response;
  }

  // ------------------------------------------------------------------ plumbing

  private async data<T>(method: string, path: string, init: RawRequestOptions): Promise<T> {
    const { body } = await this.request(method, path, init);
    return (body as { data: T }).data;
  }

  private async page<T>(path: string, init: RawRequestOptions): Promise<Page<T>> {
    const { body } = await this.request("GET", path, init);
    const { data, pagination } = body as { data: T[]; pagination: Pagination };
    return { data, pagination };
  }

  /** One HTTP request; resolves with a 2xx answer's status and parsed JSON (undefined when empty). */
  async request(method: string, path: string, init: RawRequestOptions = {}): Promise<RawResponse> {
    let url = this.baseUrl + path;
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(init.query ?? {})) {
      if (value !== undefined && value !== null) params.set(key, String(value));
    }
    const qs = params.toString();
    if (qs) url += `?${qs}`;

    const headers: Record<string, string> = { Accept: "application/json", ...this.headers };
    const token = await resolveToken(this.token);
    if (token) headers.Authorization = `Bearer ${token}`;
    let body: string | FormData | undefined;
    if (init.form) {
      body = init.form;
    } else if (init.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(init.json);
    }
    const response = await this.fetchWithTimeout(method, url, { headers, body }, init.signal, init.timeoutMs ?? this.timeoutMs);
    if (!response.ok) throw await toApiError(method, url, response);
    const text = await readText(method, url, response);
    return { status: response.status, body: text ? JSON.parse(text) : undefined };
  }

  private async fetchWithTimeout(
    method: string,
    url: string,
    init: { headers: Record<string, string>; body?: string | FormData | undefined },
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): Promise<Response> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort(new Error(`timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const onAbort = () => controller.abort(signal?.reason);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const response = await this.fetchImpl(url, {
        method,
        headers: init.headers,
        body: init.body ?? null,
        signal: controller.signal,
      });
      return response;
    } catch (error) {
      if (signal?.aborted) throw signal.reason ?? error;
      throw new NetworkError(
        timedOut ? `${method} ${url}: timed out after ${timeoutMs} ms` : `${method} ${url}: ${describe(error)}`,
        { method, url, cause: error, timedOut },
      );
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }
}

async function readText(method: string, url: string, response: Response): Promise<string> {
  try {
    return await response.text();
  } catch (error) {
    // The connection dropped while the body was read.
    throw new NetworkError(`${method} ${url}: ${describe(error)}`, { method, url, cause: error });
  }
}

async function toApiError(method: string, url: string, response: Response): Promise<ApiError> {
  let text = "";
  try {
    text = await response.text();
  } catch {
    // keep the status alone
  }
  let code = `HTTP_${response.status}`;
  let message = text.trim() || response.statusText || `HTTP ${response.status}`;
  let details: Record<string, string> | undefined;
  let data: unknown;
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown }; data?: unknown };
    if (isObject(parsed) && isObject(parsed.error)) {
      if (typeof parsed.error.code === "string") code = parsed.error.code;
      if (typeof parsed.error.message === "string") message = parsed.error.message;
      if (isObject(parsed.error.details)) details = parsed.error.details as Record<string, string>;
      data = parsed.data;
    }
  } catch {
    // not JSON: a plain-text answer
  }
  return new ApiError({
    status: response.status,
    code,
    message,
    details,
    data,
    retryAfter: parseRetryAfter(response.headers.get("Retry-After")),
    method,
    url,
  });
}

function seg(value: string): string {
  return encodeURIComponent(value);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return cause instanceof Error ? `${error.message} (${cause.message})` : error.message;
  }
  return String(error);
}
