-- reverts version 1: drops every object it created, dependents first.
--
-- the uuid-ossp extension is kept: version 1 creates it "if not exists", so it may belong to
-- the administrator or to another schema of this database, and dropping it here could break them.

drop trigger if exists update_last_message_trigger on messages;
drop trigger if exists update_conversations_updated_at on conversations;

drop function if exists create_messages_partition(date);
drop function if exists update_conversation_last_message();
drop function if exists update_updated_at_column();

-- the tables referencing messages go first; dropping messages drops every partition with it,
-- including monthly partitions created later by create_messages_partition.
drop table if exists pinned_messages;
drop table if exists read_receipts;
drop table if exists message_reactions;
drop table if exists attachments;
drop table if exists messages;
drop table if exists conversation_participants;
drop table if exists conversations;

drop type if exists message_type;
drop type if exists conversation_type;
