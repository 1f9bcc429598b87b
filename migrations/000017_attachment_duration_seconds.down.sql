-- reverts version 17: durations become whole seconds again (rounded to the nearest).
alter table attachments alter column duration type integer using round(duration)::integer;
