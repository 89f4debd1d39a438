-- Set an unfinished run's version, checked against its generation: {1, fields}, {0}, or {-2}.
-- ARGV: prefix, run_id, version, generation, now
local rk = P .. 'run:' .. ARGV[2]
local h = redis.call('HMGET', rk, 'state', 'generation')
if not h[1] then return {-2} end
if TERMINAL_RUN[h[1]] or h[2] ~= ARGV[4] then return {0} end
redis.call('HSET', rk, 'version', ARGV[3], 'updated_at', ARGV[5])
return {1, redis.call('HGETALL', rk)}
