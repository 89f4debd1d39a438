-- Upsert the worker's row (when given) and extend the leases still held, each fenced by its
-- attempt token. Returns the ids of the leases lost.
-- ARGV: prefix, now, lease_until, nw, worker (id, started_at, field, value...), n, (id, token)...
local now, lease_until = ARGV[2], ARGV[3]
local nw = tonumber(ARGV[4])
if nw > 0 then write_worker(5, nw) end
local p = 5 + nw
local n = tonumber(ARGV[p])
local lost = {}
for i = 0, n - 1 do
  local id, tok = ARGV[p + 1 + 2 * i], ARGV[p + 2 + 2 * i]
  local key = P .. 'job:' .. id
  local h = redis.call('HMGET', key, 'state', 'attempt_token')
  if h[1] ~= 'running' or h[2] ~= tok then
    lost[#lost + 1] = id
  else
    redis.call('HSET', key, 'lease_expires_at', lease_until, 'updated_at', now)
    redis.call('ZADD', P .. 'running', lease_until, id)
  end
end
return lost
