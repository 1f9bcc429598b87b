/**
 * The WebSocket protocol's server events (docs/websocket.md, "Server events"). Every WebSocket
 * message is one JSON object `{type, conversation_id, payload}`.
 */
import type {
  Conversation,
  ConversationDetail,
  Message,
  Participant,
  PinnedMessage,
  Reaction,
  ReadReceipt,
} from "./types.js";

interface Envelope<T extends string, P> {
  type: T;
  /** The conversation the event is about; `""` for presence events and `resync`. */
  conversation_id: string;
  payload: P;
}

/**
 * A message was stored. `catchUp` is `true` when the connection fetched it over REST (a gap, a
 * reconnect, a `resync`) instead of receiving it on the socket; the payload is then the
 * message's current state.
 */
export interface MessageNewEvent extends Envelope<"message.new", Message> {
  catchUp?: true;
}
export type MessageUpdatedEvent = Envelope<"message.updated", Message>;
export type MessageDeletedEvent = Envelope<"message.deleted", { conversation_id: string; id: string }>;
export type ReactionAddedEvent = Envelope<"reaction.added", Reaction>;
export type ReactionRemovedEvent = Envelope<"reaction.removed", { emoji: string; message_id: string; user_id: string }>;
export type ReadUpdatedEvent = Envelope<"read.updated", ReadReceipt>;
export type MessagePinnedEvent = Envelope<"message.pinned", PinnedMessage>;
export type MessageUnpinnedEvent = Envelope<"message.unpinned", { conversation_id: string; message_id: string }>;
export type ConversationJoinedEvent = Envelope<"conversation.joined", ConversationDetail>;
export type ConversationLeftEvent = Envelope<"conversation.left", { conversation_id: string; user_id: string }>;
export type ParticipantAddedEvent = Envelope<"participant.added", { conversation_id: string; participants: Participant[] }>;
export type ParticipantRemovedEvent = Envelope<"participant.removed", { conversation_id: string; user_id: string }>;
export type ParticipantUpdatedEvent = Envelope<"participant.updated", Participant>;
export type ConversationUpdatedEvent = Envelope<"conversation.updated", ConversationDetail>;
export type ConversationArchivedEvent = Envelope<"conversation.archived", Conversation>;
export type PresenceOnlineEvent = Envelope<"presence.online", { user_id: string }>;
export type PresenceOfflineEvent = Envelope<"presence.offline", { user_id: string }>;
export type PresenceSnapshotEvent = Envelope<"presence.snapshot", { online_user_ids: string[] }>;
/** The typist's payload as sent (e.g. `{kind: "text"}`) plus `user_id`. */
export type TypingStartEvent = Envelope<"typing.start", { user_id: string; [key: string]: unknown }>;
export type TypingStopEvent = Envelope<"typing.stop", { user_id: string; [key: string]: unknown }>;
/** `event_stream_interrupted` or `events_not_published`; clients treat them alike. */
export type ResyncEvent = Envelope<"resync", { reason: string }>;

/** Every event the server sends. */
export type ServerEvent =
  | MessageNewEvent
  | MessageUpdatedEvent
  | MessageDeletedEvent
  | ReactionAddedEvent
  | ReactionRemovedEvent
  | ReadUpdatedEvent
  | MessagePinnedEvent
  | MessageUnpinnedEvent
  | ConversationJoinedEvent
  | ConversationLeftEvent
  | ParticipantAddedEvent
  | ParticipantRemovedEvent
  | ParticipantUpdatedEvent
  | ConversationUpdatedEvent
  | ConversationArchivedEvent
  | PresenceOnlineEvent
  | PresenceOfflineEvent
  | PresenceSnapshotEvent
  | TypingStartEvent
  | TypingStopEvent
  | ResyncEvent;

export type ServerEventType = ServerEvent["type"];

/** The event of a given type. */
export type ServerEventOf<T extends ServerEventType> = Extract<ServerEvent, { type: T }>;

/** Events about one conversation (they go through its ordered queue). */
export type ConversationEvent = Exclude<
  ServerEvent,
  PresenceOnlineEvent | PresenceOfflineEvent | PresenceSnapshotEvent | ResyncEvent
>;

/** A parsed envelope whose `type` this client does not know (new types may be added). */
export interface UnknownEvent {
  type: string;
  conversation_id: string;
  payload: unknown;
}

const KNOWN_TYPES: ReadonlySet<string> = new Set<ServerEventType>([
  "message.new",
  "message.updated",
  "message.deleted",
  "reaction.added",
  "reaction.removed",
  "read.updated",
  "message.pinned",
  "message.unpinned",
  "conversation.joined",
  "conversation.left",
  "participant.added",
  "participant.removed",
  "participant.updated",
  "conversation.updated",
  "conversation.archived",
  "presence.online",
  "presence.offline",
  "presence.snapshot",
  "typing.start",
  "typing.stop",
  "resync",
]);

export function isKnownEvent(event: UnknownEvent): event is ServerEvent {
  return KNOWN_TYPES.has(event.type);
}

/**
 * Parses one WebSocket text message into its envelope(s). Today's gateways send exactly one JSON
 * object per message (one `JSON.parse`); older ones joined several with `"\n"`, which is split
 * only when present (a compact JSON object never contains a raw newline). Anything that is not an
 * envelope object is skipped.
 */
export function parseFrame(data: string): UnknownEvent[] {
  if (data.indexOf("\n") === -1) {
    const one = parseLine(data);
    return one ? [one] : [];
  }
  const events: UnknownEvent[] = [];
  for (const line of data.split("\n")) {
    if (!line) continue;
    const event = parseLine(line);
    if (event) events.push(event);
  }
  return events;
}

function parseLine(line: string): UnknownEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v.type !== "string") return undefined;
  return {
    type: v.type,
    conversation_id: typeof v.conversation_id === "string" ? v.conversation_id : "",
    payload: v.payload ?? {},
  };
}
