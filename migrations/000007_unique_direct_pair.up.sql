-- version 7: at most one active direct conversation per unordered pair of users (http-api.md
-- §5.1 "DM uniqueness"; schema.md, "known problems").
--
-- a direct conversation stores its two users as a canonical pair, the smaller uuid (postgresql
-- uuid order, i.e. bytewise) in direct_user_low. a unique index on the pair turns "A→B while
-- B→A exists", including two concurrent creates, into a unique violation of
-- unique_active_direct_pair, which the service maps to the 409 answer. the pair is only kept
-- while both users are active: when either leaves, the service sets both columns to null in the
-- same transaction, which frees the pair for a new conversation. group and channel rows keep
-- null.

alter table conversations
    add column direct_user_low uuid,
    add column direct_user_high uuid,
    -- both null, or both set in canonical order on a direct conversation; "low < high" also
    -- rules out a conversation with oneself. the "is not null" tests are needed: a comparison
    -- with null is null, and a check that evaluates to null passes.
    add constraint direct_user_pair_ordered check (
        (direct_user_low is null and direct_user_high is null)
        or (
            type = 'direct'
            and direct_user_low is not null
            and direct_user_high is not null
            and direct_user_low < direct_user_high
        )
    );

-- backfill: every direct conversation whose two participants are both still active gets its
-- pair. existing data may already hold several such conversations for one pair; only the most
-- recently created one (ties broken by id) keeps it, the others stay null so the index below
-- can be built. they stay readable and usable; they simply no longer block a new conversation.
-- the updated_at trigger is off during the backfill: this is bookkeeping, not a change.
alter table conversations disable trigger update_conversations_updated_at;

with active_pairs as (
    select p.conversation_id,
           (array_agg(p.user_id order by p.user_id))[1] as user_low,
           (array_agg(p.user_id order by p.user_id))[2] as user_high
    from conversation_participants p
    join conversations c on c.id = p.conversation_id
    where c.type = 'direct'
      and p.left_at is null
    group by p.conversation_id
    having count(*) = 2
),
newest_first as (
    select a.conversation_id,
           a.user_low,
           a.user_high,
           row_number() over (
               partition by a.user_low, a.user_high
               order by c.created_at desc nulls last, c.id desc
           ) as rank
    from active_pairs a
    join conversations c on c.id = a.conversation_id
)
update conversations c
set direct_user_low = n.user_low,
    direct_user_high = n.user_high
from newest_first n
where c.id = n.conversation_id
  and n.rank = 1;

alter table conversations enable trigger update_conversations_updated_at;

-- partial: conversations without a pair (groups, channels, direct conversations someone left)
-- take no room in the index and never conflict.
create unique index unique_active_direct_pair
    on conversations (direct_user_low, direct_user_high)
    where direct_user_low is not null;
