-- Take or renew the leader lease: a compare-and-set on its holder and expiry. Returns 1 when
-- the worker holds it.
-- ARGV: prefix, worker_id, now, expires_at
local wid, now, exp = ARGV[2], ARGV[3], ARGV[4]
local h = redis.call('HMGET', P .. 'leader', 'holder', 'expires_at')
if (not h[1]) or tonumber(h[2]) <= tonumber(now) or h[1] == wid then
  redis.call('HSET', P .. 'leader', 'holder', wid, 'expires_at', exp)
  return 1
end
return 0
