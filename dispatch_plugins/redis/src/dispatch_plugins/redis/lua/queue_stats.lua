-- The figures of some queues: row (limits, paused), depth, running, completed in (since, now].
-- A name left in qnames by a queue with neither a row nor a job is dropped.
-- ARGV: prefix, since (exclusive), now (inclusive), names...
local since, now = ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV do
  local q = ARGV[i]
  local row = redis.call('SISMEMBER', P .. 'queues', q) == 1
  if not row and redis.call('EXISTS', P .. 'jobs:q:' .. q) == 0 then
    redis.call('SREM', P .. 'qnames', q)
  else
    local cfg = {}
    if row then cfg = redis.call('HGETALL', P .. 'queue:' .. q) end
    local depth = redis.call('ZCARD', P .. 'ready:' .. q)
      + redis.call('ZCARD', P .. 'delayed:' .. q)
    local running = tonumber(redis.call('HGET', P .. 'qrun:' .. q, '*')) or 0
    local done = redis.call('ZCOUNT', P .. 'donec:' .. q, '(' .. since, now)
    out[#out + 1] = {q, cfg, depth, running, done}
  end
end
return out
