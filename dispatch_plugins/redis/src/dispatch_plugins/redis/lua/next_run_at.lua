-- The earliest due time of the served queues' runnable jobs (paused queues left out), or
-- false when they have none.
-- ARGV: prefix, nq (-1: any), queues...
local nq = tonumber(ARGV[2])
local qs = {}
if nq < 0 then
  local seen = {}
  for _, q in ipairs(redis.call('SMEMBERS', P .. 'readyq')) do seen[q] = true end
  for _, q in ipairs(redis.call('SMEMBERS', P .. 'delayedq')) do seen[q] = true end
  for q, _ in pairs(seen) do qs[#qs + 1] = q end
else
  for i = 1, nq do qs[i] = ARGV[2 + i] end
end
local restricted = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'restricted')) do restricted[q] = true end
local best = nil
for _, q in ipairs(qs) do
  if not (restricted[q] and redis.call('HGET', P .. 'queue:' .. q, 'paused') == '1') then
    local r = redis.call('ZRANGE', P .. 'ready:' .. q, 0, 0)
    if #r > 0 then
      local t = tonumber(string.sub(r[1], 1, 16))
      if best == nil or t < best then best = t end
    end
    local d = redis.call('ZRANGE', P .. 'delayed:' .. q, 0, 0, 'WITHSCORES')
    if #d > 0 then
      local t = tonumber(d[2])
      if best == nil or t < best then best = t end
    end
  end
end
if best == nil then return false end
return f0(best)
