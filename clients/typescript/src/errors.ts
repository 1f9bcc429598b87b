/**
 * Errors surfaced by the client. Every failed REST call rejects with one of these; nothing is
 * swallowed.
 *
 * - {@link ApiError}: the server answered with an error status (4xx/5xx). Carries the HTTP
 *   status and the error envelope's `code`, `message` and `details`, plus `retryAfter` for 429.
 * - {@link NetworkError}: no answer (connection refused or dropped, DNS, timeout). The request
 *   may or may not have reached the server.
 */

/** Error codes the API documents (docs/api.md). Other strings may appear for non-JSON answers. */
export type ApiErrorCode =
  | "VALIDATION_ERROR"
  | "BAD_REQUEST"
  | "UNAUTHORIZED"
  | "FORBIDDEN"
  | "NOT_FOUND"
  | "CONFLICT"
  | "PAYLOAD_TOO_LARGE"
  | "RATE_LIMITED"
  | "INTERNAL_ERROR";

export interface ApiErrorInit {
  status: number;
  code: string;
  message: string;
  details?: Record<string, string> | undefined;
  retryAfter?: number | undefined;
  data?: unknown;
  method: string;
  url: string;
}

/**
 * The server answered with an error. `code` is the envelope's `code` (`"NOT_FOUND"`,
 * `"RATE_LIMITED"`, …); answers without a JSON error envelope (a plain-text 404 for an unknown
 * path, an empty 405, a proxy's 502) get `code` `"HTTP_<status>"`.
 */
export class ApiError extends Error {
  override readonly name = "ApiError";
  /** HTTP status, e.g. 404. */
  readonly status: number;
  /** The envelope's `code` (branch on this), or `HTTP_<status>` without an envelope. */
  readonly code: ApiErrorCode | (string & {});
  /** Field → reason; only with `VALIDATION_ERROR`. */
  readonly details: Readonly<Record<string, string>> | undefined;
  /** Seconds to wait before retrying, from `Retry-After` (429, and 503 from a draining server). */
  readonly retryAfter: number | undefined;
  /**
   * The envelope's `data` next to the error, if any. Creating a direct conversation that already
   * exists answers 409 with the existing ConversationDetail here.
   */
  readonly data: unknown;
  /** The request that failed. */
  readonly method: string;
  readonly url: string;

  constructor(init: ApiErrorInit) {
    super(init.message);
    this.status = init.status;
    this.code = init.code;
    this.details = init.details;
    this.retryAfter = init.retryAfter;
    this.data = init.data;
    this.method = init.method;
    this.url = init.url;
  }

  /** True for 429 `RATE_LIMITED`. */
  get isRateLimited(): boolean {
    return this.status === 429;
  }
}

/**
 * The request got no HTTP answer: the connection failed or dropped, or it timed out. `cause` is
 * the platform's error. A send is retried automatically after this (with the same
 * `client_msg_id`); other calls are not.
 */
export class NetworkError extends Error {
  override readonly name = "NetworkError";
  readonly method: string;
  readonly url: string;
  /** True when the request was aborted by the client's own timeout. */
  readonly timedOut: boolean;

  constructor(message: string, init: { method: string; url: string; cause?: unknown; timedOut?: boolean }) {
    super(message, { cause: init.cause });
    this.method = init.method;
    this.url = init.url;
    this.timedOut = init.timedOut ?? false;
  }
}

/** Parses `Retry-After` (delay-seconds or an HTTP date) into whole seconds. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, Math.ceil((date - now) / 1000));
}
