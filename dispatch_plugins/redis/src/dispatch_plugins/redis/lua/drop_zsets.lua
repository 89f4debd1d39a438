-- Delete those of the keys that are sorted sets (version-1 dead-letter indexes left behind).
-- ARGV: prefix, keys (without the prefix)...
local n = 0
for i = 2, #ARGV do
  local k = P .. ARGV[i]
  if redis.call('TYPE', k)['ok'] == 'zset' then n = n + redis.call('DEL', k) end
end
return n
