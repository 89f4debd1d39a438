-- Move a run to a new state, checked against the states expected and its generation, and
-- enqueue its driver; a park to wait for an event that is already there is refused.
-- {1, fields}, {0} when refused, {-2} (no such run) or {-1, id} (driver id taken).
-- ARGV: prefix, now, run_id, state, expect ('' or comma list), generation (''), output,
--       error, wake_at, waiting_for (opts), ndriver, driver fields
local now, rid, state = ARGV[2], ARGV[3], ARGV[4]
local rk = P .. 'run:' .. rid
local r = hgetall(rk)
if not r.id then return {-2} end
if ARGV[5] == '' then
  if TERMINAL_RUN[r.state] then return {0} end
else
  local ok = false
  for s in string.gmatch(ARGV[5], '[^,]+') do if s == r.state then ok = true end end
  if not ok then return {0} end
end
if ARGV[6] ~= '' and ARGV[6] ~= r.generation then return {0} end
local wf = opt(ARGV[10])
if state == 'waiting' and wf and redis.call('EXISTS', P .. 'evq:' .. rid .. ':' .. wf) == 1 then
  return {0}
end
local jobs = parse_jobs(12, tonumber(ARGV[11]))
local taken = check_jobs(jobs)
if taken then return {-1, taken} end
redis.call('HSET', rk, 'state', state, 'updated_at', now)
set_or_del(rk, 'output', opt(ARGV[7]))
set_or_del(rk, 'error', opt(ARGV[8]))
set_or_del(rk, 'wake_at', opt(ARGV[9]))
set_or_del(rk, 'waiting_for', wf)
if TERMINAL_RUN[state] then redis.call('HSET', rk, 'finished_at', now) end
if state == 'sleeping' or state == 'waiting' then redis.call('HINCRBY', rk, 'generation', 1) end
redis.call('ZREM', P .. 'runs:s:' .. r.state, rid)
redis.call('ZADD', P .. 'runs:s:' .. state, 0, rid)
if #jobs > 0 then
  write_jobs(jobs, now)
  wake()
end
return {1, redis.call('HGETALL', rk)}
