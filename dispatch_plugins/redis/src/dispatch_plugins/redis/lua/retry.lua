-- Run a failed or cancelled job again, now: {1, fields}, {0, state}, or {-2} (no such job).
-- ARGV: prefix, now, job_id
local now, id = ARGV[2], ARGV[3]
local key = P .. 'job:' .. id
local j = hgetall(key)
if not j.id then return {-2} end
local s = j.state
if s ~= 'failed' and s ~= 'cancelled' then return {0, s} end
redis.call('HSET', key, 'state', 'pending', 'attempt', '0', 'run_at', now, 'updated_at', now)
redis.call('HDEL', key, 'finished_at', 'last_error')
done_rem(id, s, j.queue, j.tenant)
move_state(id, s, 'pending')
make_runnable(id, j.queue, j.priority, now, now)
wake()
return {1, redis.call('HGETALL', key)}
