-- Mark a worker stopped and give up the leadership it holds.
-- ARGV: prefix, worker_id, now
local wid, now = ARGV[2], ARGV[3]
local wk = P .. 'worker:' .. wid
if redis.call('EXISTS', wk) == 1 then
  redis.call('HSET', wk, 'state', 'stopped', 'last_seen', now)
end
if redis.call('HGET', P .. 'leader', 'holder') == wid then redis.call('DEL', P .. 'leader') end
return 1
