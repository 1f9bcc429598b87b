-- version 8: idempotent sends with a client-chosen id (http-api.md §7.1 "client_msg_id").
--
-- (conversation, sender, client_msg_id) must be unique in the database so that concurrent
-- retries insert one message. a unique index on the partitioned messages table would have to
-- include created_at, and each retry has its own created_at, so it would not catch them.
-- instead the keys live in a plain table with that primary key. the send transaction inserts
-- the key right after the message:
--
--   insert into message_client_ids
--       (conversation_id, sender_id, client_msg_id, message_id, message_created_at)
--   values ($1, $2, $3, $4, $5)
--   on conflict do nothing
--
-- no row inserted means a replay (or a concurrent twin that committed first): the service rolls
-- back, which also returns the seq it took, and answers with the message the existing key
-- points to.

-- echoed in the message resource; null when the client sent none (such messages have no row in
-- message_client_ids). 64 = the limit of §7.1, checked by the service with its own message.
alter table messages add column client_msg_id varchar(64);

create table message_client_ids (
    conversation_id uuid not null,
    sender_id uuid not null,
    client_msg_id varchar(64) not null,
    message_id uuid not null,
    message_created_at timestamp with time zone not null,

    primary key (conversation_id, sender_id, client_msg_id),
    constraint message_client_ids_conversation_fkey
        foreign key (conversation_id) references conversations (id) on delete cascade,
    constraint message_client_ids_message_fkey
        foreign key (message_id, message_created_at) references messages (id, created_at) on delete cascade
);

-- a key dies with its message: without this index every deleted message would scan the whole
-- table to find its key.
create index idx_message_client_ids_message on message_client_ids (message_id, message_created_at);
