-- version 6: a per-conversation message sequence number (http-api.md §3 "seq", §7.2, §9.3).
--
-- seq is 1, 2, 3 … per conversation, gap-free, never reused. it is allocated from a counter on
-- the conversation row, in one statement that also does what the per-insert trigger used to do:
--
--   update conversations
--   set last_seq = last_seq + 1, last_message_at = $now
--   where id = $1
--   returning last_seq
--
-- the row lock that update takes serialises senders of one conversation until the send
-- transaction commits, so two messages can never get the same seq and a rolled-back send gives
-- its number back. the old after-insert trigger took that same lock a second time, in a second
-- statement; it is dropped here so each message costs a single short statement on its
-- conversation (schema.md, "known problems").

-- the counter: the highest seq handed out in this conversation (0 = no message yet).
alter table conversations add column last_seq bigint not null default 0;

-- nullable at first so existing rows can be numbered, then made not null. no default: a message
-- inserted without a seq from the counter above is a bug and must fail.
alter table messages add column seq bigint;

-- number existing messages in the order they were sent; id breaks ties of equal created_at so
-- the numbering is deterministic.
update messages m
set seq = numbered.seq
from (
    select id,
           created_at,
           row_number() over (partition by conversation_id order by created_at, id) as seq
    from messages
) numbered
where m.id = numbered.id
  and m.created_at = numbered.created_at;

alter table messages alter column seq set not null;

-- start each counter after the messages numbered above. the updated_at trigger is switched off
-- for the backfill: this is bookkeeping, not a change of the conversation.
alter table conversations disable trigger update_conversations_updated_at;

update conversations c
set last_seq = numbered.max_seq
from (
    select conversation_id, max(seq) as max_seq
    from messages
    group by conversation_id
) numbered
where c.id = numbered.conversation_id;

alter table conversations enable trigger update_conversations_updated_at;

-- history paging (after_seq / before_seq), unread counts and read-receipt ordering all look up
-- messages of one conversation by seq. not unique: a unique index on the partitioned table
-- would have to include created_at, which makes it useless; the counter guarantees uniqueness.
create index idx_messages_conversation_seq on messages (conversation_id, seq);

-- last_message_at is now set by the seq-allocating update above.
drop trigger update_last_message_trigger on messages;
drop function update_conversation_last_message();
