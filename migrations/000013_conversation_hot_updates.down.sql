-- reverts version 13: the index on last_message_at and the default fillfactor come back.
alter table conversations reset (fillfactor);
create index if not exists idx_conversations_last_message on conversations (last_message_at desc nulls last);
