-- Store an event for a run and, when the run waits for it, wake it: make its timer job due
-- or enqueue the driver. {1} woke it, {0} stored only, {-2} (no such run in that tenant) or
-- {-1, id} (driver id taken).
-- ARGV: prefix, now, run_id, event_id, name, created_at, tenant (opt), event json, driver fields
local now, rid, eid, name = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local rk = P .. 'run:' .. rid
local r = hgetall(rk)
if not r.id or r.tenant ~= opt(ARGV[7]) then return {-2} end
local wakes = r.state == 'waiting' and r.waiting_for == name
local key, holder, jobs = nil, nil, {}
if wakes then
  key = 'wf:' .. rid .. ':' .. r.generation
  holder = redis.call('HGET', P .. 'uniq', ukf(r.tenant, key))
  if not holder then
    jobs = parse_jobs(9, 1)
    jobs[1].uk = key
    local taken = check_jobs(jobs)
    if taken then return {-1, taken} end
  end
end
redis.call('HSET', P .. 'ev:' .. rid, eid, ARGV[8])
redis.call('ZADD', P .. 'evq:' .. rid .. ':' .. name, ARGV[6], eid)
if not wakes then return {0} end
redis.call('HSET', rk, 'state', 'running', 'updated_at', now)
redis.call('HDEL', rk, 'waiting_for', 'wake_at')
redis.call('ZREM', P .. 'runs:s:waiting', rid)
redis.call('ZADD', P .. 'runs:s:running', 0, rid)
if holder then
  local jk = P .. 'job:' .. holder
  local h = redis.call('HMGET', jk, 'state', 'run_at', 'queue', 'priority')
  if h[1] == 'pending' and tonumber(h[2]) > tonumber(now) then
    drop_runnable(holder, h[3], h[2])
    redis.call('HSET', jk, 'run_at', now, 'updated_at', now)
    make_runnable(holder, h[3], h[4], now, now)
  end
else
  write_jobs(jobs, now)
end
wake()
return {1}
