-- version 17: an attachment's duration is seconds with millisecond precision (http-api.md §3).
--
-- version 1 made it an integer, which can hold neither a 2.5 s voice note nor the millisecond the
-- API promises. numeric(12,3) keeps exactly three decimals (up to about 31 years). no row had a
-- duration before this version, so nothing is rounded.
alter table attachments alter column duration type numeric(12, 3);
