/**
 * Resource types, taken from the generated OpenAPI types (src/generated/openapi.ts, made by
 * `npm run generate`), so they follow the served document.
 */
import type { components, operations } from "./generated/openapi.js";

export type { components, operations, paths } from "./generated/openapi.js";

type Schemas = components["schemas"];

export type Message = Schemas["Message"];
export type Attachment = Schemas["Attachment"];
export type Conversation = Schemas["Conversation"];
export type ConversationDetail = Schemas["ConversationDetail"];
export type ChannelSummary = Schemas["ChannelSummary"];
export type Participant = Schemas["Participant"];
export type Reaction = Schemas["Reaction"];
export type ReactionRef = Schemas["ReactionRef"];
export type ReadReceipt = Schemas["ReadReceipt"];
export type PinnedMessage = Schemas["PinnedMessage"];
export type TypingState = Schemas["TypingState"];
export type Pagination = Schemas["Pagination"];
export type ErrorBody = Schemas["ErrorBody"];

/** Request bodies. */
export type CreateConversationBody = Schemas["CreateConversation"];
export type UpdateConversationBody = Schemas["UpdateConversation"];
export type SendMessageBody = Schemas["SendMessage"];
export type EditMessageBody = Schemas["EditMessage"];

/** `direct`, `group` or `channel`. */
export type ConversationType = "direct" | "group" | "channel";
/** `owner`, `admin` or `member`. */
export type ParticipantRole = "owner" | "admin" | "member";
/** `text`, `image`, `file`, `audio`, `video` (and `system`, which clients cannot send). */
export type MessageType = "text" | "image" | "file" | "audio" | "video" | "system";

/** A page of a paginated list: the items and the server's `pagination`. */
export interface Page<T> {
  data: T[];
  pagination: Pagination;
}

// ---- helpers that read request and response types off the generated operations ----

type JsonContent<T> = T extends { content: { "application/json": infer B } } ? B : never;

/** The JSON request body of an operation. */
export type RequestBody<K extends keyof operations> = operations[K] extends {
  requestBody?: infer R;
}
  ? JsonContent<NonNullable<R>>
  : never;

/** The envelope's `data` of an operation's response with status `S`. */
export type ResponseData<
  K extends keyof operations,
  S extends keyof operations[K]["responses"],
> = JsonContent<operations[K]["responses"][S]> extends { data: infer D } ? D : never;
