-- reverts version 6: puts back the version 1 trigger that sets last_message_at on every insert
-- (same definition as in 000001) and drops the sequence columns. seq numbers are lost; an up
-- again renumbers the messages the same way.

create function update_conversation_last_message()
returns trigger
language plpgsql
as $$
begin
    update conversations
    set last_message_at = new.created_at
    where id = new.conversation_id;
    return new;
end;
$$;

create trigger update_last_message_trigger
    after insert on messages
    for each row
    execute function update_conversation_last_message();

drop index idx_messages_conversation_seq;

alter table messages drop column seq;

alter table conversations drop column last_seq;
