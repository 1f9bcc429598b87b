-- reverts version 9: drops the helper and puts back version 1's create_messages_partition
-- (same definition as in 000001). partitions created meanwhile stay: they hold messages, and
-- version 1's function treats an existing partition as done.

drop function ensure_messages_partitions(date, int);

comment on function create_messages_partition(date) is null;

create or replace function create_messages_partition(partition_date date)
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
