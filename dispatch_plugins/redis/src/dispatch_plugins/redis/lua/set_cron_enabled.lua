-- Enable (with its next run) or disable a cron entry: {1, fields}, or {-2} (no such entry).
-- ARGV: prefix, name, enabled ('1'/'0'), next_run_at, now
local key = P .. 'cron:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return {-2} end
redis.call('HSET', key, 'enabled', ARGV[3], 'updated_at', ARGV[5])
if ARGV[3] == '1' then redis.call('HSET', key, 'next_run_at', ARGV[4]) end
return {1, redis.call('HGETALL', key)}
