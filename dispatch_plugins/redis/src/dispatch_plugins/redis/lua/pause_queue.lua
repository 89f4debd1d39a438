-- Pause or resume a queue (a resumed queue wakes the workers).
-- ARGV: prefix, name, paused ('1'/'0')
local name = ARGV[2]
local key = P .. 'queue:' .. name
redis.call('HSET', key, 'paused', ARGV[3])
redis.call('SADD', P .. 'queues', name)
local c = redis.call('HMGET', key, 'concurrency', 'rate')
if ARGV[3] == '1' or c[1] or c[2] then
  redis.call('SADD', P .. 'restricted', name)
else
  redis.call('SREM', P .. 'restricted', name)
end
if ARGV[3] == '0' then wake() end
return 1
