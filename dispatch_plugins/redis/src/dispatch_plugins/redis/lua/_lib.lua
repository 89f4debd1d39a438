-- The helpers every script shares, run before its body (see __init__.py): key names, index
-- upkeep, the enqueue and dead-letter helpers, and the cursor walks of the bounded reads.
-- ARGV[1] is always the key prefix; the scripts declare no KEYS (they derive the job, run and
-- index keys from ids).
local P = ARGV[1] .. ':'
local TERMINAL_RUN = {completed = true, failed = true, cancelled = true}

local function opt(v)
  if v == nil or v == '' or v == false then return nil end
  return string.sub(v, 2)
end

local function f0(n) return string.format('%.0f', n) end
local function f17(n) return string.format('%.17g', n) end

-- The unique-key field of (tenant, key): the tenant's length prefix keeps the pair unambiguous.
local function ukf(tenant, key)
  if tenant == nil then return 'n|' .. key end
  return 't' .. string.len(tenant) .. ':' .. tenant .. '|' .. key
end

-- A queue's allowance key for a tenant (running counts and per-tenant buckets).
local function tk(tenant)
  if tenant == nil then return '-' end
  return '+' .. tenant
end

-- A ready-set member: run_at (16 digits) then the id; the score is -priority, so the set is in
-- claim order: priority descending, run_at, id.
local function rmember(run_at, id)
  return string.format('%016.0f', tonumber(run_at)) .. id
end

local function hgetall(key)
  local flat = redis.call('HGETALL', key)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end

local function set_or_del(key, field, value)
  if value == nil then redis.call('HDEL', key, field) else redis.call('HSET', key, field, value) end
end

local function wake() redis.call('PUBLISH', P .. 'wake', '') end

local function make_runnable(id, queue, priority, run_at, now)
  if tonumber(run_at) <= tonumber(now) then
    redis.call('ZADD', P .. 'ready:' .. queue, f0(-tonumber(priority)), rmember(run_at, id))
    redis.call('SADD', P .. 'readyq', queue)
  else
    redis.call('ZADD', P .. 'delayed:' .. queue, run_at, id)
    redis.call('SADD', P .. 'delayedq', queue)
  end
end

local function drop_runnable(id, queue, run_at)
  redis.call('ZREM', P .. 'ready:' .. queue, rmember(run_at, id))
  redis.call('ZREM', P .. 'delayed:' .. queue, id)
end

-- The finished-job indexes (score finished_at): every finished job is in done:<state>, and a
-- completed, failed or cancelled one also in its queue's and its tenant's (for throughput and
-- counts that need not intersect big sets).
local DONE_TAG = {completed = 'c', failed = 'f', cancelled = 'x'}

local function done_add(id, state, queue, tenant, at)
  redis.call('ZADD', P .. 'done:' .. state, at, id)
  local tag = DONE_TAG[state]
  redis.call('ZADD', P .. 'done' .. tag .. ':' .. queue, at, id)
  if tenant then redis.call('ZADD', P .. 'tdone' .. tag .. ':' .. tenant, at, id) end
end

local function done_rem(id, state, queue, tenant)
  redis.call('ZREM', P .. 'done:' .. state, id)
  local tag = DONE_TAG[state]
  if tag == nil then return end
  redis.call('ZREM', P .. 'done' .. tag .. ':' .. queue, id)
  if tenant then redis.call('ZREM', P .. 'tdone' .. tag .. ':' .. tenant, id) end
end

local function move_state(id, old, new)
  if old then redis.call('ZREM', P .. 'jobs:s:' .. old, id) end
  redis.call('ZADD', P .. 'jobs:s:' .. new, 0, id)
end

local function running_delta(queue, tenant, d)
  local k = P .. 'qrun:' .. queue
  if redis.call('HINCRBY', k, '*', d) <= 0 then redis.call('HDEL', k, '*') end
  local f = tk(tenant)
  if redis.call('HINCRBY', k, f, d) <= 0 then redis.call('HDEL', k, f) end
end

local NJF = 12
local function parse_jobs(start, n)
  local jobs = {}
  for i = 0, n - 1 do
    local b = start + i * NJF
    jobs[i + 1] = {
      id = ARGV[b], name = ARGV[b + 1], queue = ARGV[b + 2], payload = ARGV[b + 3],
      priority = ARGV[b + 4], max_attempts = ARGV[b + 5], timeout = opt(ARGV[b + 6]),
      run_at = ARGV[b + 7], created_at = ARGV[b + 8], uk = opt(ARGV[b + 9]),
      tenant = opt(ARGV[b + 10]), headers = opt(ARGV[b + 11]),
    }
  end
  return jobs
end

-- The id of the first job that would be written under an id in use, or nil.
local function check_jobs(jobs)
  local keys, ids = {}, {}
  for _, j in ipairs(jobs) do
    local dedupe = false
    if j.uk then
      local f = ukf(j.tenant, j.uk)
      if keys[f] or redis.call('HEXISTS', P .. 'uniq', f) == 1 then dedupe = true end
      keys[f] = true
    end
    if not dedupe then
      if ids[j.id] or redis.call('EXISTS', P .. 'job:' .. j.id) == 1 then return j.id end
      ids[j.id] = true
    end
  end
  return nil
end

local function write_job(j, now)
  local key = P .. 'job:' .. j.id
  redis.call('HSET', key, 'id', j.id, 'name', j.name, 'queue', j.queue, 'payload', j.payload,
    'state', 'pending', 'priority', j.priority, 'attempt', '0', 'max_attempts', j.max_attempts,
    'run_at', j.run_at, 'created_at', j.created_at, 'updated_at', j.created_at)
  if j.timeout then redis.call('HSET', key, 'timeout', j.timeout) end
  if j.headers then redis.call('HSET', key, 'headers', j.headers) end
  if j.uk then
    redis.call('HSET', key, 'unique_key', j.uk)
    redis.call('HSET', P .. 'uniq', ukf(j.tenant, j.uk), j.id)
  end
  if j.tenant then
    redis.call('HSET', key, 'tenant', j.tenant)
    redis.call('ZADD', P .. 'jobs:t:' .. j.tenant, 0, j.id)
  end
  redis.call('ZADD', P .. 'jobs', 0, j.id)
  redis.call('ZADD', P .. 'jobs:s:pending', 0, j.id)
  redis.call('ZADD', P .. 'jobs:q:' .. j.queue, 0, j.id)
  redis.call('ZADD', P .. 'jobs:n:' .. j.name, 0, j.id)
  redis.call('SADD', P .. 'qnames', j.queue)
  make_runnable(j.id, j.queue, j.priority, j.run_at, now)
end

-- Write the jobs check_jobs accepted; per job, 0 when it was written as given, else the
-- stored fields of the job holding its unique key.
local function write_jobs(jobs, now)
  local out = {}
  for i, j in ipairs(jobs) do
    local holder = nil
    if j.uk then holder = redis.call('HGET', P .. 'uniq', ukf(j.tenant, j.uk)) end
    if holder then
      out[i] = redis.call('HGETALL', P .. 'job:' .. holder)
    else
      write_job(j, now)
      out[i] = 0
    end
  end
  return out
end

local function delete_job(id)
  local key = P .. 'job:' .. id
  local j = hgetall(key)
  if not j.id then return 0 end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'jobs', id)
  redis.call('ZREM', P .. 'jobs:s:' .. j.state, id)
  redis.call('ZREM', P .. 'jobs:q:' .. j.queue, id)
  redis.call('ZREM', P .. 'jobs:n:' .. j.name, id)
  if j.tenant then redis.call('ZREM', P .. 'jobs:t:' .. j.tenant, id) end
  done_rem(id, j.state, j.queue, j.tenant)
  if j.unique_key then
    local f = ukf(j.tenant, j.unique_key)
    if redis.call('HGET', P .. 'uniq', f) == id then redis.call('HDEL', P .. 'uniq', f) end
  end
  return 1
end

local function dead_letter(j, dlq_id, err, now)
  local key = P .. 'dlq:' .. dlq_id
  redis.call('HSET', key, 'id', dlq_id, 'job_id', j.id, 'name', j.name, 'queue', j.queue,
    'payload', j.payload, 'error', err, 'attempts', j.attempt, 'max_attempts', j.max_attempts,
    'priority', j.priority, 'failed_at', now)
  if j.timeout then redis.call('HSET', key, 'timeout', j.timeout) end
  if j.headers then redis.call('HSET', key, 'headers', j.headers) end
  if j.tenant then
    redis.call('HSET', key, 'tenant', j.tenant)
    redis.call('ZADD', P .. 'dlqs:t:' .. j.tenant, 0, dlq_id)
  end
  redis.call('ZADD', P .. 'dlqs', 0, dlq_id)
  redis.call('ZADD', P .. 'dlqs:q:' .. j.queue, 0, dlq_id)
  redis.call('ZADD', P .. 'dlqs:n:' .. j.name, 0, dlq_id)
  redis.call('ZADD', P .. 'dlqs:failed', now, dlq_id)
end

local function delete_dlq(id)
  local key = P .. 'dlq:' .. id
  local e = hgetall(key)
  if not e.id then
    -- no entry: drop what an index may still hold of it
    redis.call('ZREM', P .. 'dlqs', id)
    redis.call('ZREM', P .. 'dlqs:rp', id)
    redis.call('ZREM', P .. 'dlqs:failed', id)
    return 0
  end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'dlqs', id)
  redis.call('ZREM', P .. 'dlqs:q:' .. e.queue, id)
  redis.call('ZREM', P .. 'dlqs:n:' .. e.name, id)
  if e.tenant then redis.call('ZREM', P .. 'dlqs:t:' .. e.tenant, id) end
  redis.call('ZREM', P .. 'dlqs:rp', id)
  redis.call('ZREM', P .. 'dlqs:failed', id)
  return 1
end

-- A running job leaves its lease and the running counts.
local function end_running(key, id, queue, tenant, now)
  redis.call('HDEL', key, 'worker_id', 'attempt_token', 'lease_expires_at')
  redis.call('HSET', key, 'updated_at', now)
  redis.call('ZREM', P .. 'running', id)
  running_delta(queue, tenant, -1)
end

local function index_run(id, r)
  redis.call('ZADD', P .. 'runs', 0, id)
  redis.call('ZADD', P .. 'runs:s:' .. r.state, 0, id)
  redis.call('ZADD', P .. 'runs:n:' .. r.name, 0, id)
  if r.tenant then redis.call('ZADD', P .. 'runs:t:' .. r.tenant, 0, id) end
  if r.parent_run_id then redis.call('ZADD', P .. 'runs:p:' .. r.parent_run_id, 0, id) end
  if r.correlation_key then redis.call('ZADD', P .. 'runs:c:' .. r.correlation_key, 0, id) end
end

local function write_worker(start, n)
  local id, started = ARGV[start], ARGV[start + 1]
  local key = P .. 'worker:' .. id
  local fields = {}
  for i = start + 2, start + n - 1 do fields[#fields + 1] = ARGV[i] end
  redis.call('DEL', key)
  redis.call('HSET', key, 'id', id, 'started_at', started, unpack(fields))
  redis.call('ZADD', P .. 'workers', started, id)
end

local function zrem_all(key, members)
  for i = 1, #members, 500 do
    redis.call('ZREM', key, unpack(members, i, math.min(i + 499, #members)))
  end
end

-- Whether a sorts after b byte-wise, as sorted sets order members (Lua's own comparison of
-- strings follows the server's locale).
local function after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
end

-- The rank of the first entry of `key` after (score, member), the entry itself gone or not:
-- bisection over the ranks of the entries with that score, so entries added or removed
-- meanwhile shift nothing. `score` is the string Redis gave for it.
local function rank_after(key, score, member)
  local lo = redis.call('ZCOUNT', key, '-inf', '(' .. score)
  local hi = redis.call('ZCOUNT', key, '-inf', score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local e = redis.call('ZRANGE', key, mid, mid)
    if #e == 0 or after(e[1], member) then hi = mid else lo = mid + 1 end
  end
  return lo
end

-- Up to n entries of sorted set `key` in order (a flat member, score list), after the cursor
-- ('score|member' as zcursor makes it) or, without one, from the first with a score >= lo.
local function zchunk(key, cursor, lo, n)
  local from = 0
  if cursor then
    local sep = string.find(cursor, '|', 1, true)
    from = rank_after(key, string.sub(cursor, 1, sep - 1), string.sub(cursor, sep + 1))
  elseif lo ~= '-inf' then
    from = redis.call('ZCOUNT', key, '-inf', '(' .. lo)
  end
  return redis.call('ZRANGE', key, from, from + n - 1, 'WITHSCORES')
end

local function zcursor(member, score) return '=' .. score .. '|' .. member end
