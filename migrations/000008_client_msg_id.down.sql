-- reverts version 8: sends are no longer idempotent; the stored client ids are lost.
drop table message_client_ids;

alter table messages drop column client_msg_id;
