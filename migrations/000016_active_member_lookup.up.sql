-- version 16: "is this user an active member of this conversation" reads one index entry.
--
-- that check runs on nearly every request (the MEMBER step of http-api.md) and once per message
-- in the send statement. of the indexes that could answer it, three led with one of its two
-- columns only and filtered the other on every row of that prefix:
-- - idx_participants_conversation_active (conversation_id) where left_at is null (version 10),
-- - idx_participants_conversation (conversation_id) (version 1),
-- - idx_participants_user (user_id) where left_at is null (version 1).
-- the planner took one of them: in a group of 1,000, 999 rows fetched and removed by the filter
-- for one membership check, for every message sent there; a 100,000-member channel would read
-- 100,000. which one it takes depends on statistics (with none yet, every candidate costs the
-- same and the first wins), so every index that can serve the check must be exact.
--
-- after this version the candidates are unique_participant (conversation_id, user_id),
-- idx_participants_user_conversations (user_id, conversation_id) where left_at is null, and
-- idx_participants_conversation_active, now (conversation_id, user_id) where left_at is null: one
-- probe each, at any size. the two single-column indexes dropped were prefixes of the first two
-- (same predicate for idx_participants_user), so every query they served is served as before;
-- idx_participants_conversation_active keeps its name and its leading column, so the active
-- participants of a conversation and member counts (index-only) read it as before. a deployment
-- with a large conversation_participants may prefer to build the new index beforehand with
-- `create index concurrently` under another name.
drop index if exists idx_participants_conversation;
drop index if exists idx_participants_user;
drop index if exists idx_participants_conversation_active;
create index idx_participants_conversation_active
    on conversation_participants (conversation_id, user_id)
    where left_at is null;
