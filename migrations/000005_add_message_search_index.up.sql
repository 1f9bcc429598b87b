-- version 5: full-text search on message content (http-api.md §7.3).
--
-- the search query must use exactly this expression,
--   to_tsvector('french', coalesce(content, '')) @@ plainto_tsquery('french', $q),
-- or the planner cannot use the index. built on the partitioned table, so every partition
-- (present and future) gets its own gin index.
create index if not exists idx_messages_content_search
    on messages using gin (to_tsvector('french', coalesce(content, '')));
