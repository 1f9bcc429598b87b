/**
 * @retich/messaging-client — a TypeScript client for ReTiCh Messaging.
 *
 * - {@link MessagingApi}: typed REST calls (types generated from the OpenAPI document).
 * - {@link RealtimeConnection}: the WebSocket connection with reconnects, ordered and complete
 *   per-conversation delivery, catch-up, typing and presence.
 * - {@link ApiError} / {@link NetworkError}: what failed calls reject with.
 */
export { MessagingApi } from "./rest.js";
export type {
  CallOptions,
  DownloadOptions,
  ListConversationsOptions,
  ListMessagesOptions,
  MessagingApiOptions,
  PageOptions,
  RawRequestOptions,
  RawResponse,
  SendMessageInput,
  SendMessageOptions,
  SendResult,
  SendRetryOptions,
  UploadOptions,
} from "./rest.js";
export { ApiError, NetworkError, parseRetryAfter } from "./errors.js";
export type { ApiErrorCode, ApiErrorInit } from "./errors.js";
export { RealtimeConnection } from "./realtime.js";
export type {
  ConnectionState,
  DisconnectInfo,
  RealtimeEventMap,
  RealtimeOptions,
  SyncInfo,
  SyncReason,
  WebSocketConstructor,
  WebSocketLike,
} from "./realtime.js";
export { SeqTracker, TrackingStoppedError } from "./seq-tracker.js";
export type { SeqSource, SeqTrackerOptions } from "./seq-tracker.js";
export { PresenceState } from "./presence.js";
export type { PresenceChange } from "./presence.js";
export { TypingIndicators, TypingSender } from "./typing.js";
export type {
  TypingChange,
  TypingFrameType,
  TypingIndicatorsOptions,
  TypingSend,
  TypingSenderOptions,
} from "./typing.js";
export { isKnownEvent, parseFrame } from "./events.js";
export type * from "./events.js";
export type * from "./types.js";
export { backoffDelay, randomId } from "./util.js";
export type { BackoffOptions, TokenSource } from "./util.js";
export type { Listener } from "./emitter.js";
