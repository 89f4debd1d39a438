-- Fire a cron entry for the tick it is due at: move it to its next run and enqueue its job,
-- deduplicated by unique key. {0} when it is disabled or not due at that tick (fired already),
-- or fired with no job (it only moves on); {-1, id} when the job id is taken; else {1, 0 or
-- the fields of the job holding the unique key}.
-- ARGV: prefix, now, name, tick, next_run_at, njobs (0/1), job fields
local now = ARGV[2]
local key = P .. 'cron:' .. ARGV[3]
local h = redis.call('HMGET', key, 'enabled', 'next_run_at')
if h[1] ~= '1' or h[2] ~= ARGV[4] then return {0} end
local jobs = parse_jobs(7, tonumber(ARGV[6]))
if #jobs == 0 then
  redis.call('HSET', key, 'next_run_at', ARGV[5])
  return {0}
end
local taken = check_jobs(jobs)
if taken then return {-1, taken} end
redis.call('HSET', key, 'next_run_at', ARGV[5])
local out = write_jobs(jobs, now)
local jid = jobs[1].id
if out[1] ~= 0 then
  for i = 1, #out[1], 2 do if out[1][i] == 'id' then jid = out[1][i + 1] end end
end
redis.call('HSET', key, 'last_run_at', now, 'last_job_id', jid)
wake()
return {1, out[1]}
