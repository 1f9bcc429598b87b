-- version 12: message_client_ids loses its foreign key to messages; a statement trigger on
-- messages takes over the one thing it did, deleting a message's key with the message.
--
-- a foreign key is checked on every insert of a key, and a reference to the partitioned messages
-- table is checked by a query over every partition, run once per row through SPI: in a profile
-- of batched sends (BENCHMARKS.md) it was about a quarter of PostgreSQL's time. what the key
-- needs is the cascade: a key must not outlive its message, or a retry with that client_msg_id
-- could never insert again. the send statement writes the key and its message together, so the
-- reference is never dangling when written.
--
-- the trigger is per statement on the partitioned table, so it fires for deletes through
-- messages (the service only soft-deletes; this is for deletes by hand) and not for deletes
-- addressed to one partition — which is how create_messages_partition moves rows out of
-- messages_default, re-inserting them with their keys still valid.

alter table message_client_ids drop constraint message_client_ids_message_fkey;

create function delete_message_client_ids() returns trigger
language plpgsql as $$
begin
    delete from message_client_ids k
    using gone g
    where k.message_id = g.id and k.message_created_at = g.created_at;
    return null;
end;
$$;

create trigger delete_message_client_ids
    after delete on messages
    referencing old table as gone
    for each statement execute function delete_message_client_ids();
