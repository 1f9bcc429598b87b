-- version 9: monthly message partitions that can be created ahead of time, and after the fact
-- (schema.md, "known problems").
--
-- version 1 only created february–april 2026, so later messages pile up in messages_default,
-- and its create_messages_partition then fails for any month that already has rows there
-- (postgresql refuses a new partition whose range matches rows of the default partition). the
-- function is replaced, same name and signature, by one that moves those rows into the new
-- partition. ensure_messages_partitions creates a run of months at once; the service calls it at
-- start and periodically (api-service/src/partitions.rs), so normally the slow path below never
-- runs.
--
-- partition bounds are whole months in utc, whatever the session's time zone: version 1's
-- function used the session time zone, which made the bounds depend on the client that called it
-- (sqlx sets utc, psql uses the server's setting). the existing partitions of version 1 were
-- created in the server's time zone; on a utc server (the postgres images' default) both agree.

create or replace function create_messages_partition(partition_date date)
returns void
language plpgsql
as $$
declare
    month_start date := date_trunc('month', partition_date)::date;
    partition_name text := to_char(month_start, '"messages_y"YYYY"m"MM');
    range_start timestamptz := month_start::timestamp at time zone 'utc';
    range_end timestamptz := (month_start + interval '1 month') at time zone 'utc';
    column_list text;
    fk_tables regclass[];
    fk_names name[];
    fk_definitions text[];
    i int;
begin
    -- already there: return without taking any lock, so calling this often costs nothing.
    if to_regclass(partition_name) is not null then
        return;
    end if;

    -- creating or attaching a partition locks messages anyway; taking the strongest lock up
    -- front keeps new rows of this month from landing in messages_default while they are being
    -- moved, and serialises concurrent callers.
    lock table messages in access exclusive mode;

    -- another session may have created it while this one waited for the lock.
    if to_regclass(partition_name) is not null then
        return;
    end if;

    if not exists (
        select 1
        from messages_default
        where created_at >= range_start
          and created_at < range_end
    ) then
        execute format(
            'create table %I partition of messages for values from (%L) to (%L)',
            partition_name, range_start, range_end
        );
        return;
    end if;

    -- messages_default holds rows of this month: they have to be moved out, and a move is a
    -- delete plus an insert. the foreign keys referencing messages are all "on delete cascade",
    -- so the delete would also delete their attachments, reactions, pins and client ids. the
    -- foreign keys are therefore dropped for the duration of the move and re-added with their
    -- original names and definitions, which re-validates every referencing row. only top-level
    -- constraints (conparentid = 0) are listed: their per-partition clones come and go with them.
    select coalesce(array_agg(conrelid::regclass order by conrelid::regclass::text, conname), '{}'),
           coalesce(array_agg(conname order by conrelid::regclass::text, conname), '{}'),
           coalesce(array_agg(pg_get_constraintdef(oid) order by conrelid::regclass::text, conname), '{}')
    into fk_tables, fk_names, fk_definitions
    from pg_constraint
    where confrelid = 'messages'::regclass
      and contype = 'f'
      and conparentid = 0;

    for i in 1 .. cardinality(fk_names) loop
        execute format('alter table %s drop constraint %I', fk_tables[i], fk_names[i]);
    end loop;

    -- the rows are moved by column name, not position: a partition's columns need not be in the
    -- parent's physical order.
    select string_agg(quote_ident(attname), ', ' order by attnum)
    into column_list
    from pg_attribute
    where attrelid = 'messages'::regclass
      and attnum > 0
      and not attisdropped;

    -- built as a plain table, filled, then attached: a partition cannot be created while
    -- messages_default still holds rows of its range. attaching builds the partition's primary
    -- key and its share of every index of messages.
    execute format(
        'create table %I (like messages including defaults including constraints)',
        partition_name
    );

    execute format(
        'with moved as (
             delete from messages_default
             where created_at >= %L and created_at < %L
             returning %s
         )
         insert into %I (%s)
         select %s from moved',
        range_start, range_end, column_list, partition_name, column_list, column_list
    );

    execute format(
        'alter table messages attach partition %I for values from (%L) to (%L)',
        partition_name, range_start, range_end
    );

    for i in 1 .. cardinality(fk_names) loop
        execute format(
            'alter table %s add constraint %I %s',
            fk_tables[i], fk_names[i], fk_definitions[i]
        );
    end loop;
end;
$$;

comment on function create_messages_partition(date) is
    'creates the monthly partition messages_yYYYYmMM (utc month of the argument) if missing, moving that month''s rows out of messages_default';

-- creates the partitions of from_month's month and of the months_ahead months after it, and
-- returns how many were missing (0 when all exist). the count is "missing when looked at": a
-- concurrent caller may have created one of them in between; the service serialises its calls
-- with an advisory lock.
create function ensure_messages_partitions(from_month date, months_ahead int)
returns int
language plpgsql
as $$
declare
    month_start date;
    created int := 0;
begin
    if from_month is null or months_ahead is null or months_ahead < 0 then
        raise exception 'ensure_messages_partitions(%, %): from_month must be set and months_ahead must be >= 0',
            from_month, months_ahead;
    end if;

    for i in 0 .. months_ahead loop
        month_start := (date_trunc('month', from_month) + make_interval(months => i))::date;
        -- the name create_messages_partition gives that month
        if to_regclass(to_char(month_start, '"messages_y"YYYY"m"MM')) is null then
            perform create_messages_partition(month_start);
            created := created + 1;
        end if;
    end loop;

    return created;
end;
$$;
