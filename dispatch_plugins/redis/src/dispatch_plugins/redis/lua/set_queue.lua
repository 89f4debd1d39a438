-- Set a queue's limits (concurrency cap, token-bucket rate, burst, per tenant), trimming or
-- dropping its buckets to fit, and wake the workers.
-- ARGV: prefix, name, concurrency, rate, burst (opts), size, per_tenant ('1'/'0')
local name = ARGV[2]
local key = P .. 'queue:' .. name
local bk = P .. 'qbucket:' .. name
local old_pt = redis.call('HGET', key, 'per_tenant')
local conc, rate, burst = opt(ARGV[3]), opt(ARGV[4]), opt(ARGV[5])
local size = tonumber(ARGV[6])
if rate == nil or (old_pt and old_pt ~= ARGV[7]) then
  redis.call('HDEL', key, 'tokens', 'tokens_at')
  redis.call('DEL', bk)
else
  local t = redis.call('HGET', key, 'tokens')
  if t and tonumber(t) > size then redis.call('HSET', key, 'tokens', f17(size)) end
  local flat = redis.call('HGETALL', bk)
  for i = 1, #flat, 2 do
    local raw = flat[i + 1]
    local sep = string.find(raw, '|', 1, true)
    if tonumber(string.sub(raw, 1, sep - 1)) > size then
      redis.call('HSET', bk, flat[i], f17(size) .. string.sub(raw, sep))
    end
  end
end
set_or_del(key, 'concurrency', conc)
set_or_del(key, 'rate', rate)
set_or_del(key, 'burst', burst)
redis.call('HSET', key, 'size', ARGV[6], 'per_tenant', ARGV[7])
redis.call('SADD', P .. 'queues', name)
if conc or rate or redis.call('HGET', key, 'paused') == '1' then
  redis.call('SADD', P .. 'restricted', name)
else
  redis.call('SREM', P .. 'restricted', name)
end
wake()
return 1
