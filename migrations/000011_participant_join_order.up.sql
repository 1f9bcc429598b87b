-- version 11: a stable order for participants who joined in the same transaction.
--
-- ConversationDetail lists participants by joined_at, ties in insertion order (creator first,
-- then participant_ids order; http-api.md §3). Rows inserted by one transaction share now(), so
-- joined_at alone cannot order them, and ids are random. join_seq is taken from a sequence on
-- every insert and again when a former participant is re-activated, so (joined_at, join_seq)
-- is the order the rows were (re)added in. Existing rows get numbers in table order.
alter table conversation_participants add column join_seq bigserial;
