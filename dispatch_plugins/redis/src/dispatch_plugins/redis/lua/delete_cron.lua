-- Delete a cron entry; returns 1 when there was one.
-- ARGV: prefix, name
local n = redis.call('DEL', P .. 'cron:' .. ARGV[2])
redis.call('ZREM', P .. 'crons', ARGV[2])
return n
