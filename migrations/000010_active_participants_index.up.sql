-- version 10: an index for "the active participants of one conversation".
--
-- that set is read on almost every request: the participants of a ConversationDetail
-- (http-api.md §3), member_count of every channel in discover (§5.3), ownership succession
-- when an owner leaves (§6.3), the audience of every event. idx_participants_conversation also
-- indexes the rows of people who left, which only grow; this partial index holds the active
-- rows alone and makes member counts an index-only scan.
--
-- looked at and left out:
-- - membership checks and re-activation (§6.1, §6.4) go through unique_participant
--   (conversation_id, user_id); re-adding someone who left updates that row (left_at = null),
--   so the constraint needs no change.
-- - history, unread counts and read positions use idx_messages_conversation_seq (version 6).
-- - the media gallery (§11.3) lists attachments of one conversation, but attachments carry no
--   conversation_id: no index on attachments alone can select them. the query walks the
--   conversation's messages (idx_messages_conversation) and joins attachments through
--   idx_attachments_message, which is indexed access per message. making it independent of the
--   number of messages would need a denormalised attachments.conversation_id filled by the
--   service: a schema change of its own, not an index.
create index idx_participants_conversation_active
    on conversation_participants (conversation_id)
    where left_at is null;
