-- version 13: the per-message bump of a conversation (last_seq, last_message_at, and updated_at by
-- its trigger) becomes a HOT update.
--
-- every accepted message updates its conversation's row. last_message_at was indexed, so each of
-- those updates was a non-HOT update: a new entry in every index of conversations and a dead row
-- version that only vacuum could reclaim. an active conversation's row is updated thousands of
-- times a second under load (BENCHMARKS.md): its index entries and dead versions piled up
-- faster than any vacuum schedule, and every later lookup of the row walked them.
--
-- no query reads idx_conversations_last_message: the conversation list starts from the caller's
-- participant rows and sorts those few conversations. without it no indexed column changes, and
-- fillfactor 70 leaves room on each page for the new versions, so the update stays on its page
-- and old versions are pruned in place by the next access — no vacuum needed.
drop index if exists idx_conversations_last_message;
alter table conversations set (fillfactor = 70);
