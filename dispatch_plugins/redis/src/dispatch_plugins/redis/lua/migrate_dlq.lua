-- Version 1 to 2, dead letters: move up to n entries from the version-1 indexes (dlq, dlq:q:,
-- dlq:n:, dlq:t:, dlq:rp, dlq:failed, which shared the entries' namespace dlq:<id>) to the
-- version-2 ones (dlqs...). Returns the number moved and the number whose entry was gone.
-- ARGV: prefix, n
local ids = redis.call('ZRANGE', P .. 'dlq', 0, tonumber(ARGV[2]) - 1)
local gone = 0
for _, id in ipairs(ids) do
  local old = {P .. 'dlq', P .. 'dlq:rp', P .. 'dlq:failed'}
  local e = hgetall(P .. 'dlq:' .. id)
  if e.id then
    old[#old + 1] = P .. 'dlq:q:' .. e.queue
    old[#old + 1] = P .. 'dlq:n:' .. e.name
    redis.call('ZADD', P .. 'dlqs', 0, id)
    redis.call('ZADD', P .. 'dlqs:q:' .. e.queue, 0, id)
    redis.call('ZADD', P .. 'dlqs:n:' .. e.name, 0, id)
    if e.tenant then
      old[#old + 1] = P .. 'dlq:t:' .. e.tenant
      redis.call('ZADD', P .. 'dlqs:t:' .. e.tenant, 0, id)
    end
    redis.call('ZADD', P .. 'dlqs:failed', e.failed_at, id)
    if e.replayed_at or redis.call('ZSCORE', P .. 'dlq:rp', id) then
      redis.call('ZADD', P .. 'dlqs:rp', 0, id)
    end
  else
    gone = gone + 1
  end
  for _, k in ipairs(old) do redis.call('ZREM', k, id) end
end
return {#ids, gone}
