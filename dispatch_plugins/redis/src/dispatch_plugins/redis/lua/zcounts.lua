-- ZCOUNT of each (key, min, max).
-- ARGV: prefix, n, (key, min, max)...
local out = {}
for i = 0, tonumber(ARGV[2]) - 1 do
  local b = 3 + 3 * i
  out[i + 1] = redis.call('ZCOUNT', P .. ARGV[b], ARGV[b + 1], ARGV[b + 2])
end
return out
