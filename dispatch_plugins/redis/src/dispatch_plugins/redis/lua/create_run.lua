-- Create a workflow run and enqueue its driver job: {1}, {0, fields} when the run exists
-- already, or {-1, id} when the driver's id is taken.
-- ARGV: prefix, now, run_id, npairs, run pairs..., driver job fields
local now, rid = ARGV[2], ARGV[3]
local rk = P .. 'run:' .. rid
if redis.call('EXISTS', rk) == 1 then return {0, redis.call('HGETALL', rk)} end
local np = tonumber(ARGV[4])
local fields = {}
for i = 1, np do fields[i] = ARGV[4 + i] end
local jobs = parse_jobs(5 + np, 1)
local taken = check_jobs(jobs)
if taken then return {-1, taken} end
redis.call('HSET', rk, unpack(fields))
index_run(rid, hgetall(rk))
write_jobs(jobs, now)
wake()
return {1}
