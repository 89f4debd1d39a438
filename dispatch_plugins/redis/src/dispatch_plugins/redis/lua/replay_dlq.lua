-- Enqueue a dead-letter entry's job again under a new id and mark the entry replayed:
-- {1, fields}, {-1, id} when the id is taken, {-2} when there is no such entry.
-- ARGV: prefix, now, dlq_id, new_job_id
local now, eid, nid = ARGV[2], ARGV[3], ARGV[4]
local ek = P .. 'dlq:' .. eid
local e = hgetall(ek)
if not e.id then return {-2} end
local j = {id = nid, name = e.name, queue = e.queue, payload = e.payload, priority = e.priority,
  max_attempts = e.max_attempts, timeout = e.timeout, run_at = now, created_at = now,
  tenant = e.tenant, headers = e.headers}
local taken = check_jobs({j})
if taken then return {-1, taken} end
write_job(j, now)
redis.call('HSET', ek, 'replayed_at', now, 'replay_job_id', nid)
redis.call('ZADD', P .. 'dlqs:rp', 0, eid)
wake()
return {1, redis.call('HGETALL', P .. 'job:' .. nid)}
