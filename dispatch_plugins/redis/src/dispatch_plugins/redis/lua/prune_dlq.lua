-- Delete up to n dead-letter entries that failed before `cut`, oldest first; returns as
-- prune_jobs does.
-- ARGV: prefix, cut, n
local ids = redis.call('ZRANGEBYSCORE', P .. 'dlqs:failed', '-inf', '(' .. ARGV[2],
  'LIMIT', 0, tonumber(ARGV[3]))
local deleted = 0
for _, id in ipairs(ids) do deleted = deleted + delete_dlq(id) end
return {deleted, #ids}
