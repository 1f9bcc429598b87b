-- version 14: fewer writes per message sent. every accepted message inserts a messages row and
-- a message_client_ids key; a profile of batched sends (BENCHMARKS.md) showed PostgreSQL's time
-- going to index maintenance and to the per-row foreign-key check of each new key.
--
-- 1. idx_messages_sender is dropped: no query filters messages by sender alone (histories,
--    unread counts and search all start from the conversation).
-- 2. message_client_ids loses its foreign key to conversations: a foreign key is checked by a
--    query per inserted key. what it gave was the cascade (a key must not outlive its
--    conversation), which a statement trigger on conversations now does. the send statement
--    locks each conversation row before it inserts that conversation's keys, so a conversation
--    deleted concurrently either is gone before the lock (no key is written) or waits for the
--    send to commit (and its trigger then deletes the keys).
-- 3. idx_message_client_ids_message is dropped: the trigger of version 12 that deletes a
--    message's key with the message now finds the key by its primary key — the deleted row
--    carries conversation_id, sender_id and client_msg_id, the same values as its key.

drop index if exists idx_messages_sender;

alter table message_client_ids drop constraint message_client_ids_conversation_fkey;

create function delete_conversation_client_ids() returns trigger
language plpgsql as $$
begin
    delete from message_client_ids k
    using gone g
    where k.conversation_id = g.id;
    return null;
end;
$$;

create trigger delete_conversation_client_ids
    after delete on conversations
    referencing old table as gone
    for each statement execute function delete_conversation_client_ids();

create or replace function delete_message_client_ids() returns trigger
language plpgsql as $$
begin
    delete from message_client_ids k
    using gone g
    where k.conversation_id = g.conversation_id
      and k.sender_id = g.sender_id
      and k.client_msg_id = g.client_msg_id
      and k.message_id = g.id;
    return null;
end;
$$;

drop index if exists idx_message_client_ids_message;
