-- reverts version 10.
drop index idx_participants_conversation_active;
