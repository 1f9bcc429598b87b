-- version 15: one index fewer written per message sent.
--
-- idx_messages_conversation (conversation_id, created_at desc) came with the original schema.
-- since version 6 every read of a conversation's messages orders and bounds by seq (history by
-- offset or by seq, search, unread counts, read positions), through idx_messages_conversation_seq
-- (conversation_id, seq). the one other query that walks a conversation's messages, the media
-- gallery (http-api.md §11.3), filters on conversation_id alone and sorts by the attachments' own
-- created_at, so the seq index serves it as well. every message sent still paid for the created_at
-- index: one more b-tree insert and its WAL on the send path (BENCHMARKS.md).
drop index if exists idx_messages_conversation;
