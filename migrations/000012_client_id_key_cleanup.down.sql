drop trigger delete_message_client_ids on messages;
drop function delete_message_client_ids();

-- keys whose message is gone (deleted through one partition) would fail the constraint.
delete from message_client_ids k
where not exists (
    select 1 from messages m where m.id = k.message_id and m.created_at = k.message_created_at
);

alter table message_client_ids
    add constraint message_client_ids_message_fkey
    foreign key (message_id, message_created_at) references messages (id, created_at) on delete cascade;
