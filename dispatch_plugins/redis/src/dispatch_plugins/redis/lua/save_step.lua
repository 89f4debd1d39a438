-- Save a step record unless a finished one is there: {1}, {0, stored record}, or {-2} (no
-- such run).
-- ARGV: prefix, run_id, seq, state, record json
if redis.call('EXISTS', P .. 'run:' .. ARGV[2]) == 0 then return {-2} end
local sk = P .. 'steps:' .. ARGV[2]
local old = redis.call('HGET', sk, ARGV[3])
if old and string.sub(old, 1, 8) ~= 'pending\n' then return {0, old} end
redis.call('HSET', sk, ARGV[3], ARGV[4] .. '\n' .. ARGV[5])
return {1}
