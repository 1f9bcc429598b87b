-- reverts version 16: the single-column participant indexes of versions 1 and 10 come back.
drop index if exists idx_participants_conversation_active;
create index idx_participants_conversation_active
    on conversation_participants (conversation_id)
    where left_at is null;
create index if not exists idx_participants_user on conversation_participants (user_id)
    where left_at is null;
create index if not exists idx_participants_conversation
    on conversation_participants (conversation_id);
