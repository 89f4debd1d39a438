-- Cancel a pending, retrying or running job: {1, fields}, {0, state} when its state does not
-- allow it, {-2} when there is no such job.
-- ARGV: prefix, now, job_id
local now, id = ARGV[2], ARGV[3]
local key = P .. 'job:' .. id
local j = hgetall(key)
if not j.id then return {-2} end
local s = j.state
if s ~= 'pending' and s ~= 'retrying' and s ~= 'running' then return {0, s} end
if s == 'running' then
  end_running(key, id, j.queue, j.tenant, now)
else
  drop_runnable(id, j.queue, j.run_at)
end
redis.call('HSET', key, 'state', 'cancelled', 'updated_at', now, 'finished_at', now)
redis.call('HDEL', key, 'worker_id', 'attempt_token', 'lease_expires_at')
move_state(id, s, 'cancelled')
done_add(id, 'cancelled', j.queue, j.tenant, now)
return {1, redis.call('HGETALL', key)}
