-- What count_runnable walks: the queues with ready or delayed jobs (sorted), how many of their
-- jobs are due (every ready one and the delayed ones due by now), and with a tenant the size of
-- that tenant's index (-1 without one).
-- ARGV: prefix, now, tenant (opt)
local now, tenant = ARGV[2], opt(ARGV[3])
local seen, queues = {}, {}
for _, set in ipairs({'readyq', 'delayedq'}) do
  for _, q in ipairs(redis.call('SMEMBERS', P .. set)) do
    if not seen[q] then
      seen[q] = true
      queues[#queues + 1] = q
    end
  end
end
table.sort(queues)
local due = 0
for _, q in ipairs(queues) do
  due = due + redis.call('ZCARD', P .. 'ready:' .. q)
    + redis.call('ZCOUNT', P .. 'delayed:' .. q, '-inf', now)
end
local own = -1
if tenant then own = redis.call('ZCARD', P .. 'jobs:t:' .. tenant) end
return {own, due, queues}
