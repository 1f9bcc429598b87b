-- reverts version 5.
drop index if exists idx_messages_content_search;
