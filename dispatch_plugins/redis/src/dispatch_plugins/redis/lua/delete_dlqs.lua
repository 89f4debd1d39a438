-- Delete the dead-letter entries given that failed before `cut`; returns how many.
-- ARGV: prefix, cut, ids...
local cut, n = tonumber(ARGV[2]), 0
for i = 3, #ARGV do
  local at = redis.call('ZSCORE', P .. 'dlqs:failed', ARGV[i])
  if at and tonumber(at) < cut then n = n + delete_dlq(ARGV[i]) end
end
return n
