-- version 1: the schema every existing retich messaging database already has.
--
-- this file must stay equivalent to the original golang-migrate version 1 (schema.md, "version 1"):
-- a database created by the old service is recorded "at version 5" and is upgraded in place by
-- versions 6 and up, so nothing here may be renamed, tightened or "fixed". every known problem of
-- this schema is corrected by a later version instead.

-- uuid_generate_v4() is the default of every primary key. "if not exists": the extension may
-- already have been installed by an administrator.
create extension if not exists "uuid-ossp";

create type conversation_type as enum ('direct', 'group', 'channel');

create type message_type as enum ('text', 'image', 'file', 'audio', 'video', 'system');

create table conversations (
    id uuid primary key default uuid_generate_v4(),
    type conversation_type not null default 'direct',
    name varchar(100),                      -- null for direct conversations
    description text,
    avatar_url varchar(500),
    creator_id uuid,                        -- null for direct conversations
    is_archived boolean default false,
    last_message_at timestamp with time zone,
    created_at timestamp with time zone default now(),
    updated_at timestamp with time zone default now()
);

-- a participant row is never deleted: leaving sets left_at (null = active).
create table conversation_participants (
    id uuid primary key default uuid_generate_v4(),
    conversation_id uuid not null references conversations (id) on delete cascade,
    user_id uuid not null,
    role varchar(20) default 'member',      -- 'owner', 'admin' or 'member'
    nickname varchar(100),
    is_muted boolean default false,
    muted_until timestamp with time zone,
    last_read_at timestamp with time zone,
    last_read_message_id uuid,
    joined_at timestamp with time zone default now(),
    left_at timestamp with time zone,

    constraint unique_participant unique (conversation_id, user_id)
);

-- messages are partitioned by month of created_at. a primary key of a partitioned table must
-- contain the partition key, hence (id, created_at), and every reference to a message carries
-- both columns.
create table messages (
    id uuid not null default uuid_generate_v4(),
    conversation_id uuid not null,
    sender_id uuid not null,
    type message_type default 'text',
    content text,
    metadata jsonb,
    reply_to_id uuid,
    is_edited boolean default false,
    edited_at timestamp with time zone,
    is_deleted boolean default false,
    deleted_at timestamp with time zone,
    created_at timestamp with time zone default now(),

    primary key (id, created_at)
) partition by range (created_at);

create table messages_y2026m02 partition of messages
    for values from ('2026-02-01') to ('2026-03-01');

create table messages_y2026m03 partition of messages
    for values from ('2026-03-01') to ('2026-04-01');

create table messages_y2026m04 partition of messages
    for values from ('2026-04-01') to ('2026-05-01');

-- catches every row outside the monthly partitions (see create_messages_partition below).
create table messages_default partition of messages default;

create table attachments (
    id uuid primary key default uuid_generate_v4(),
    message_id uuid not null,
    message_created_at timestamp with time zone not null,
    file_name varchar(255) not null,
    file_type varchar(100) not null,        -- mime type
    file_size bigint not null,              -- bytes
    file_url varchar(500) not null,
    thumbnail_url varchar(500),
    width integer,
    height integer,
    duration integer,                       -- seconds, audio and video
    created_at timestamp with time zone default now(),

    foreign key (message_id, message_created_at) references messages (id, created_at) on delete cascade
);

create table message_reactions (
    id uuid primary key default uuid_generate_v4(),
    message_id uuid not null,
    message_created_at timestamp with time zone not null,
    user_id uuid not null,
    emoji varchar(50) not null,
    created_at timestamp with time zone default now(),

    constraint unique_reaction unique (message_id, user_id, emoji),
    foreign key (message_id, message_created_at) references messages (id, created_at) on delete cascade
);

-- one receipt per (conversation, user); last_read_message_id has no foreign key because the
-- message's created_at is not stored here.
create table read_receipts (
    id uuid primary key default uuid_generate_v4(),
    conversation_id uuid not null references conversations (id) on delete cascade,
    user_id uuid not null,
    last_read_message_id uuid not null,
    last_read_at timestamp with time zone default now(),

    constraint unique_read_receipt unique (conversation_id, user_id)
);

create table pinned_messages (
    id uuid primary key default uuid_generate_v4(),
    conversation_id uuid not null references conversations (id) on delete cascade,
    message_id uuid not null,
    message_created_at timestamp with time zone not null,
    pinned_by uuid not null,
    pinned_at timestamp with time zone default now(),

    constraint unique_pin unique (conversation_id, message_id),
    foreign key (message_id, message_created_at) references messages (id, created_at) on delete cascade
);

create index idx_conversations_last_message on conversations (last_message_at desc nulls last);
create index idx_conversations_type on conversations (type);

create index idx_participants_conversation on conversation_participants (conversation_id);
create index idx_participants_user on conversation_participants (user_id) where left_at is null;
create index idx_participants_user_conversations on conversation_participants (user_id, conversation_id) where left_at is null;

-- indexes on the partitioned table: postgresql creates (and names) one per partition.
create index idx_messages_conversation on messages (conversation_id, created_at desc);
create index idx_messages_sender on messages (sender_id, created_at desc);
create index idx_messages_reply on messages (reply_to_id) where reply_to_id is not null;

create index idx_attachments_message on attachments (message_id);
create index idx_reactions_message on message_reactions (message_id);
create index idx_read_receipts_conversation on read_receipts (conversation_id);
create index idx_pinned_messages_conversation on pinned_messages (conversation_id);

-- every update of a conversation bumps updated_at.
create function update_updated_at_column()
returns trigger
language plpgsql
as $$
begin
    new.updated_at = now();
    return new;
end;
$$;

create trigger update_conversations_updated_at
    before update on conversations
    for each row
    execute function update_updated_at_column();

-- every new message moves its conversation's last_message_at (dropped by version 6: the service
-- does it in the statement that allocates the message's seq).
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

-- creates the monthly partition messages_yYYYYmMM holding partition_date, if missing. this
-- version fails when messages_default already holds rows of that month; version 9 replaces it.
create function create_messages_partition(partition_date date)
returns void
language plpgsql
as $$
declare
    partition_name text;
    start_date date;
    end_date date;
begin
    partition_name := 'messages_y' || to_char(partition_date, 'YYYY') || 'm' || to_char(partition_date, 'MM');
    start_date := date_trunc('month', partition_date);
    end_date := start_date + interval '1 month';

    execute format(
        'create table if not exists %I partition of messages for values from (%L) to (%L)',
        partition_name,
        start_date,
        end_date
    );
end;
$$;
