-- reverts version 7: nothing prevents duplicate direct conversations any more.
drop index unique_active_direct_pair;

alter table conversations
    drop constraint direct_user_pair_ordered,
    drop column direct_user_high,
    drop column direct_user_low;
