-- Write a worker's row (replacing any) and index it by start time.
-- ARGV: prefix, worker (id, started_at, field, value...)
write_worker(2, #ARGV - 1)
return 1
