-- drops the column together with the sequence it owns.
alter table conversation_participants drop column join_seq;
