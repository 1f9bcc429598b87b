-- reverts version 15: the (conversation_id, created_at desc) index of messages comes back.
create index if not exists idx_messages_conversation on messages (conversation_id, created_at desc);
