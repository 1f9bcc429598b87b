-- reverts version 14: the message-id index of keys, the version 12 key cleanup, the foreign key
-- of keys to conversations, and the sender index of messages come back.
create index if not exists idx_message_client_ids_message
    on message_client_ids (message_id, message_created_at);

create or replace function delete_message_client_ids() returns trigger
language plpgsql as $$
begin
    delete from message_client_ids k
    using gone g
    where k.message_id = g.id and k.message_created_at = g.created_at;
    return null;
end;
$$;

drop trigger delete_conversation_client_ids on conversations;
drop function delete_conversation_client_ids();

-- keys whose conversation is gone would fail the constraint.
delete from message_client_ids k
where not exists (select 1 from conversations c where c.id = k.conversation_id);

alter table message_client_ids
    add constraint message_client_ids_conversation_fkey
    foreign key (conversation_id) references conversations (id) on delete cascade;

create index if not exists idx_messages_sender on messages (sender_id, created_at desc);
