"""The Lua scripts: every write of the store is one of them, run atomically by the server.

Each script is the shared :data:`PRELUDE` (key names, index upkeep, the enqueue and
dead-letter helpers) followed by its body. ``ARGV[1]`` is always the key prefix; the scripts
declare no ``KEYS`` (they derive the job, run and index keys from ids), so the store needs a
standalone Redis server (or a primary with replicas), not Redis Cluster.

Conventions:

* Times are integer microseconds since the Unix epoch, passed and stored as decimal strings.
  Lua numbers are doubles, exact up to 2^53 (year 2255 in microseconds), but ``redis.call``
  formats a number argument with 14 significant digits, so a time is never handed to Redis as
  a number: :func:`f0` formats one.
* An optional string argument is ``""`` for ``None`` and ``"=" .. value`` otherwise (so an
  empty tenant is told apart from no tenant).
* Scripts never raise for an expected refusal (Redis does not roll back a script that fails
  half-way): they check first, then write, and return a status the store turns into an
  exception. ``-1`` means "a job id is taken" (followed by the id), ``-2`` "not found".
"""

from __future__ import annotations

import hashlib

__all__ = ["PRELUDE", "SCRIPTS", "SHAS"]

PRELUDE = r"""
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
"""

_BODIES: dict[str, str] = {}

# ARGV: prefix, now, n, job fields (12 each)
_BODIES["enqueue"] = r"""
local now = ARGV[2]
local jobs = parse_jobs(4, tonumber(ARGV[3]))
local taken = check_jobs(jobs)
if taken then return {-1, taken} end
local out = write_jobs(jobs, now)
wake()
return {1, out}
"""

# ARGV: prefix, worker_id, now, lease_until, limit, token_prefix, nq (-1: any), queues...,
#       nn (-1: any), names...
_BODIES["claim"] = r"""
local wid, now, lease_until, limit, tokp = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local nowf = tonumber(now)
local nq = tonumber(ARGV[7])
local qs = {}
for i = 1, nq do qs[i] = ARGV[7 + i] end
local p = 8 + math.max(nq, 0)
local nn = tonumber(ARGV[p])
local names = nil
if nn >= 0 then
  names = {}
  for i = 1, nn do names[ARGV[p + i]] = true end
end

-- promote the due delayed jobs of the queues served
local qlist = qs
if nq < 0 then qlist = redis.call('SMEMBERS', P .. 'delayedq') end
for _, q in ipairs(qlist) do
  local dk = P .. 'delayed:' .. q
  local due = redis.call('ZRANGEBYSCORE', dk, '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    for _, id in ipairs(due) do
      local h = redis.call('HMGET', P .. 'job:' .. id, 'state', 'priority', 'run_at')
      if (h[1] == 'pending' or h[1] == 'retrying') and tonumber(h[3]) <= nowf then
        redis.call('ZADD', P .. 'ready:' .. q, f0(-tonumber(h[2])), rmember(h[3], id))
        redis.call('SADD', P .. 'readyq', q)
      end
    end
    zrem_all(dk, due)
    if redis.call('EXISTS', dk) == 0 then redis.call('SREM', P .. 'delayedq', q) end
  end
end
if nq < 0 then qlist = redis.call('SMEMBERS', P .. 'readyq') end

local restricted = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'restricted')) do restricted[q] = true end
local lanes, all = {}, {}
for _, q in ipairs(qlist) do
  local rk = P .. 'ready:' .. q
  if redis.call('EXISTS', rk) == 1 then
    local gate, skip = nil, false
    if restricted[q] then
      local c = hgetall(P .. 'queue:' .. q)
      if c.paused == '1' then
        skip = true
      elseif c.concurrency or c.rate then
        gate = {q = q, per_tenant = c.per_tenant == '1', cap = tonumber(c.concurrency),
                rate = tonumber(c.rate), size = tonumber(c.size), c = c,
                running = {}, buckets = {}, dirty = {}}
      end
    end
    if not skip then
      local lane = {key = rk, q = q, off = 0, buf = {}, pos = 1, gate = gate, rem = {}}
      lanes[#lanes + 1] = lane
      all[#all + 1] = lane
    end
  elseif nq < 0 then
    redis.call('SREM', P .. 'readyq', q)
  end
end

local function g_running(g, key)
  local v = g.running[key]
  if v == nil then
    v = tonumber(redis.call('HGET', P .. 'qrun:' .. g.q, key)) or 0
    g.running[key] = v
  end
  return v
end

local function g_bucket(g, key)
  local b = g.buckets[key]
  if b then return b end
  local raw_t, raw_at = nil, nil
  if g.per_tenant then
    local raw = redis.call('HGET', P .. 'qbucket:' .. g.q, key)
    if raw then
      local sep = string.find(raw, '|', 1, true)
      raw_t, raw_at = string.sub(raw, 1, sep - 1), string.sub(raw, sep + 1)
    end
  else
    raw_t, raw_at = g.c.tokens, g.c.tokens_at
  end
  if raw_t == nil then
    b = {t = g.size, at = nowf}
  else
    local t, at = tonumber(raw_t), tonumber(raw_at)
    local el = (nowf - at) / 1e6
    if el < 0 then el = 0 end
    b = {t = math.min(g.size, t + el * g.rate), at = math.max(nowf, at)}
  end
  g.buckets[key] = b
  return b
end

local function admits(g, key)
  if g.cap and g_running(g, key) >= g.cap then return false end
  if g.rate then return math.floor(g_bucket(g, key).t + 1e-9) >= 1 end
  return true
end

local function take(g, key)
  g.running[key] = g_running(g, key) + 1
  if g.rate then
    local b = g_bucket(g, key)
    b.t = b.t - 1
    g.dirty[key] = true
  end
end

local CH = limit + 16
local function head(l)
  if l.pos > #l.buf then
    if l.done then return nil end
    local r = redis.call('ZRANGE', l.key, l.off, l.off + CH - 1, 'WITHSCORES')
    l.off = l.off + CH
    l.buf, l.pos = {}, 1
    for i = 1, #r, 2 do l.buf[#l.buf + 1] = {r[i], tonumber(r[i + 1])} end
    if #r < 2 * CH then l.done = true end
    if #l.buf == 0 then return nil end
  end
  return l.buf[l.pos]
end

local function before(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  local ra, rb = tonumber(string.sub(a[1], 1, 16)), tonumber(string.sub(b[1], 1, 16))
  if ra ~= rb then return ra < rb end
  return a[1] < b[1]
end

local claimed = {}
local budget = limit + 1000
while #claimed < limit and #lanes > 0 and budget > 0 do
  local bi, be = nil, nil
  local i = 1
  while i <= #lanes do
    local e = head(lanes[i])
    if e == nil then
      table.remove(lanes, i)
    else
      if be == nil or before(e, be) then bi, be = i, e end
      i = i + 1
    end
  end
  if bi == nil then break end
  local l = lanes[bi]
  local g = l.gate
  if g and not g.per_tenant and not admits(g, '*') then
    table.remove(lanes, bi)  -- the whole queue is at its limit: leave its jobs be
  else
    l.pos = l.pos + 1
    budget = budget - 1
    local member = be[1]
    local id = string.sub(member, 17)
    local key = P .. 'job:' .. id
    local h = redis.call('HMGET', key, 'state', 'name', 'tenant', 'run_at', 'priority')
    if (h[1] ~= 'pending' and h[1] ~= 'retrying') or rmember(h[4], id) ~= member
        or -tonumber(h[5]) ~= be[2] then
      l.rem[#l.rem + 1] = member  -- stale: claimed, cancelled or rescheduled since
    elseif tonumber(h[4]) > nowf then
      l.rem[#l.rem + 1] = member  -- made due by a clock ahead of this claim's
      redis.call('ZADD', P .. 'delayed:' .. l.q, h[4], id)
      redis.call('SADD', P .. 'delayedq', l.q)
    elseif names and not names[h[2]] then
      -- left for a worker that knows the name
    else
      local tenant = h[3] or nil
      local ok = true
      if g then
        local gk = '*'
        if g.per_tenant then gk = tk(tenant) end
        ok = admits(g, gk)
        if ok then take(g, gk) end
      end
      if ok then
        claimed[#claimed + 1] = id
        redis.call('HINCRBY', key, 'attempt', 1)
        redis.call('HSET', key, 'state', 'running', 'worker_id', wid,
          'attempt_token', tokp .. #claimed, 'started_at', now, 'updated_at', now,
          'lease_expires_at', lease_until)
        move_state(id, h[1], 'running')
        redis.call('ZADD', P .. 'running', lease_until, id)
        running_delta(l.q, tenant, 1)
        l.rem[#l.rem + 1] = member
      end
    end
  end
end

for _, l in ipairs(all) do
  if #l.rem > 0 then
    zrem_all(l.key, l.rem)
    if redis.call('EXISTS', l.key) == 0 then redis.call('SREM', P .. 'readyq', l.q) end
  end
  local g = l.gate
  if g then
    for key, _ in pairs(g.dirty) do
      local b = g.buckets[key]
      if g.per_tenant then
        redis.call('HSET', P .. 'qbucket:' .. g.q, key, f17(b.t) .. '|' .. f0(b.at))
      else
        redis.call('HSET', P .. 'queue:' .. g.q, 'tokens', f17(b.t), 'tokens_at', f0(b.at))
      end
    end
  end
end

local out = {}
for i, id in ipairs(claimed) do out[i] = redis.call('HGETALL', P .. 'job:' .. id) end
return out
"""

# ARGV: prefix, now, lease_until, nw, worker (id, started_at, field, value...), n, (id, token)...
_BODIES["heartbeat"] = r"""
local now, lease_until = ARGV[2], ARGV[3]
local nw = tonumber(ARGV[4])
if nw > 0 then write_worker(5, nw) end
local p = 5 + nw
local n = tonumber(ARGV[p])
local lost = {}
for i = 0, n - 1 do
  local id, tok = ARGV[p + 1 + 2 * i], ARGV[p + 2 + 2 * i]
  local key = P .. 'job:' .. id
  local h = redis.call('HMGET', key, 'state', 'attempt_token')
  if h[1] ~= 'running' or h[2] ~= tok then
    lost[#lost + 1] = id
  else
    redis.call('HSET', key, 'lease_expires_at', lease_until, 'updated_at', now)
    redis.call('ZADD', P .. 'running', lease_until, id)
  end
end
return lost
"""

# ARGV: prefix, now, n, (id, token, kind, error, result, run_at, dlq_id)...
_BODIES["finish"] = r"""
local now = ARGV[2]
local n = tonumber(ARGV[3])
local out, woke = {}, false
for i = 0, n - 1 do
  local b = 4 + i * 7
  local id, token, kind = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local key = P .. 'job:' .. id
  local h = redis.call('HMGET', key, 'state', 'attempt_token', 'queue', 'tenant', 'priority',
    'run_at', 'attempt')
  if h[1] ~= 'running' or h[2] ~= token then
    out[i + 1] = 0
  else
    local queue, tenant = h[3], h[4] or nil
    end_running(key, id, queue, tenant, now)
    if kind == 'completed' then
      redis.call('HSET', key, 'state', 'completed', 'finished_at', now)
      set_or_del(key, 'result', opt(ARGV[b + 4]))
      move_state(id, 'running', 'completed')
      done_add(id, 'completed', queue, tenant, now)
    elseif kind == 'retry' then
      local run_at = opt(ARGV[b + 5]) or now
      redis.call('HSET', key, 'state', 'retrying', 'run_at', run_at)
      set_or_del(key, 'last_error', opt(ARGV[b + 3]))
      move_state(id, 'running', 'retrying')
      make_runnable(id, queue, h[5], run_at, now)
      woke = true
    elseif kind == 'fail' then
      local err = opt(ARGV[b + 3])
      redis.call('HSET', key, 'state', 'failed', 'finished_at', now)
      set_or_del(key, 'last_error', err)
      move_state(id, 'running', 'failed')
      done_add(id, 'failed', queue, tenant, now)
      dead_letter(hgetall(key), ARGV[b + 6], err or '', now)
    else
      local att = tonumber(h[7]) - 1
      if att < 0 then att = 0 end
      local run_at = h[6]
      if tonumber(run_at) > tonumber(now) then run_at = now end
      redis.call('HSET', key, 'state', 'pending', 'attempt', f0(att), 'run_at', run_at)
      move_state(id, 'running', 'pending')
      make_runnable(id, queue, h[5], run_at, now)
      woke = true
    end
    out[i + 1] = 1
  end
end
if woke then wake() end
return out
"""

# One bounded step of the silent-worker check: up to `chunk` worker rows after the cursor; a
# running worker silent since before `cut` is marked dead. Returns the cursor to go on from
# ('' at the end) and 1 when a row looked at is not running (its jobs are to be revoked).
# ARGV: prefix, cut, cursor ('' / '=...'), chunk
_BODIES["mark_silent"] = r"""
local cut, cursor, chunk = tonumber(ARGV[2]), opt(ARGV[3]), tonumber(ARGV[4])
local r = zchunk(P .. 'workers', cursor, '-inf', chunk)
local gone = 0
for i = 1, #r, 2 do
  local wk = P .. 'worker:' .. r[i]
  local h = redis.call('HMGET', wk, 'state', 'last_seen')
  local state = h[1]
  if state == 'running' and tonumber(h[2]) < cut then
    redis.call('HSET', wk, 'state', 'dead')
    state = 'dead'
  end
  if state and state ~= 'running' then gone = 1 end
end
local nxt = ''
if #r == 2 * chunk then nxt = zcursor(r[#r - 1], r[#r]) end
return {nxt, gone}
"""

# One bounded step of rescue: up to `chunk` entries of `running` after the cursor (with
# revoke = '0', only those whose lease expired before now). A job whose lease expired, or
# (revoke = '1') whose worker's row says it is dead or stopped, is retried or failed with a
# dead-letter entry (ids given; when they run out the step ends early). Returns 1 and the
# cursor to go on from, or 0 at the end, and the rescued jobs.
# ARGV: prefix, now, revoke ('1' / '0'), cursor ('' / '=...'), chunk, ndlq, dlq ids...
_BODIES["rescue"] = r"""
local now, revoke, cursor, chunk = ARGV[2], ARGV[3] == '1', opt(ARGV[4]), tonumber(ARGV[5])
local nowf = tonumber(now)
local ndlq = tonumber(ARGV[6])
local dlq0 = 6
local r = zchunk(P .. 'running', cursor, '-inf', chunk)
local out, used, last, stop = {}, 0, ARGV[4], nil
for i = 1, #r, 2 do
  local id = r[i]
  if not revoke and tonumber(r[i + 1]) >= nowf then
    stop = 'end'
    break
  end
  local key = P .. 'job:' .. id
  local j = hgetall(key)
  if j.state ~= 'running' then
    redis.call('ZREM', P .. 'running', id)
  else
    local err = nil
    local state = nil
    if j.worker_id then
      state = redis.call('HGET', P .. 'worker:' .. j.worker_id, 'state')
    end
    local expired = j.lease_expires_at and tonumber(j.lease_expires_at) < nowf
    -- why it is taken back, by what its worker's row says: a crash reads as a crash
    if state == 'dead' and (revoke or expired) then
      err = 'worker ' .. j.worker_id .. ' died: it sent no heartbeat within the worker timeout'
    elseif state == 'stopped' and (revoke or expired) then
      err = 'worker ' .. j.worker_id .. ' stopped or restarted without finishing the job'
    elseif expired then
      err = 'worker ' .. (j.worker_id or '?') ..
        ' died or stalled: its lease expired without a heartbeat'
    end
    if err then
      local fail = tonumber(j.attempt) >= tonumber(j.max_attempts)
      if fail and used >= ndlq then
        stop = 'more'
        break
      end
      end_running(key, id, j.queue, j.tenant, now)
      redis.call('HSET', key, 'last_error', err)
      if fail then
        used = used + 1
        redis.call('HSET', key, 'state', 'failed', 'finished_at', now)
        move_state(id, 'running', 'failed')
        done_add(id, 'failed', j.queue, j.tenant, now)
        dead_letter(hgetall(key), ARGV[dlq0 + used], err, now)
      else
        redis.call('HSET', key, 'state', 'retrying', 'run_at', now)
        move_state(id, 'running', 'retrying')
        make_runnable(id, j.queue, j.priority, now, now)
      end
      out[#out + 1] = redis.call('HGETALL', key)
    end
  end
  last = zcursor(id, r[i + 1])
end
if #out > 0 then wake() end
if stop == 'more' then return {1, last, out} end
if stop == nil and #r == 2 * chunk then return {1, last, out} end
return {0, '', out}
"""

# ARGV: prefix, now, job_id
_BODIES["cancel"] = r"""
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
"""

# ARGV: prefix, now, job_id
_BODIES["retry"] = r"""
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
"""

# One bounded step of a listing: walks the smallest of the index sets (all by id, score 0)
# from past the cursor, checking the others (and the excluded ones) by membership; looks at
# no more than `examine` ids and returns at most `limit` hashes. Returns the hashes, how many
# matches it skipped for the offset, and the cursor to go on from ('' at the end).
# With a preview length, each body field longer than that many bytes is left out of its hash:
# in its place comes the field '~' .. name, valued '<its length>:<its first bytes>' (cut on a
# character boundary); the step ends early once it has read `budget` bytes of such bodies.
# ARGV: prefix, base key, nkeys, keys..., nexcl, excl..., desc ('1'/'0'), after ('' / '=id'),
#       offset, limit, hash prefix, examine, preview ('' for none), budget, nbodies, bodies...
_BODIES["page"] = r"""
local keys = {ARGV[2]}
local nk = tonumber(ARGV[3])
if nk > 0 then keys = {} end
for i = 1, nk do keys[i] = ARGV[3 + i] end
local p = 4 + nk
local ne = tonumber(ARGV[p])
local excl = {}
for i = 1, ne do excl[i] = P .. ARGV[p + i] end
p = p + ne + 1
local desc, cursor = ARGV[p] == '1', opt(ARGV[p + 1])
local offset, limit, hp = tonumber(ARGV[p + 2]), tonumber(ARGV[p + 3]), P .. ARGV[p + 4]
local examine = tonumber(ARGV[p + 5])
local preview, budget = tonumber(ARGV[p + 6]), tonumber(ARGV[p + 7])
local bodies = {}
for i = 1, tonumber(ARGV[p + 8] or '0') do bodies[i] = ARGV[p + 8 + i] end
if limit <= 0 then return {{}, 0, ''} end
local copied = 0
-- A hash, with each body longer than `preview` bytes replaced by its length and first bytes.
-- HSTRLEN first: a short body is read as before, a long one is read only here, on the server.
local function item(key)
  if preview == nil then return redis.call('HGETALL', key) end
  local long = nil
  for _, f in ipairs(bodies) do
    local n = redis.call('HSTRLEN', key, f)
    if n > preview then
      long = long or {}
      long[f] = n
    end
  end
  if long == nil then return redis.call('HGETALL', key) end
  local out, short = {}, {}
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if long[f] == nil then short[#short + 1] = f end
  end
  if #short > 0 then
    local values = redis.call('HMGET', key, unpack(short))
    for i, f in ipairs(short) do
      out[#out + 1] = f
      out[#out + 1] = values[i]
    end
  end
  for f, n in pairs(long) do
    local text = redis.call('HGET', key, f)
    copied = copied + n
    -- end on a character: back off while the next byte continues a UTF-8 sequence
    local e = preview
    while e > 0 do
      local b = string.byte(text, e + 1)
      if b < 128 or b >= 192 then break end
      e = e - 1
    end
    out[#out + 1] = '~' .. f
    out[#out + 1] = f0(n) .. ':' .. string.sub(text, 1, e)
  end
  return out
end
local best, bestc = nil, nil
for i, k in ipairs(keys) do
  local c = redis.call('ZCARD', P .. k)
  if best == nil or c < bestc then best, bestc = i, c end
end
if bestc == 0 then return {{}, 0, ''} end
local driver = P .. keys[best]
local others = {}
for i, k in ipairs(keys) do if i ~= best then others[#others + 1] = P .. k end end
local out, skipped, seen, ended, full = {}, 0, 0, false, false
while #out < limit and seen < examine do
  local n = math.min(math.max(limit + offset - skipped, 64), examine - seen)
  local r
  if desc then
    local hi = '+'
    if cursor then hi = '(' .. cursor end
    r = redis.call('ZREVRANGEBYLEX', driver, hi, '-', 'LIMIT', 0, n)
  else
    local lo = '-'
    if cursor then lo = '(' .. cursor end
    r = redis.call('ZRANGEBYLEX', driver, lo, '+', 'LIMIT', 0, n)
  end
  for _, id in ipairs(r) do
    seen = seen + 1
    cursor = id
    local ok = true
    for _, o in ipairs(others) do
      if not redis.call('ZSCORE', o, id) then ok = false break end
    end
    if ok then
      for _, x in ipairs(excl) do
        if redis.call('ZSCORE', x, id) then ok = false break end
      end
    end
    if ok then
      if skipped < offset then
        skipped = skipped + 1
      else
        out[#out + 1] = item(hp .. id)
        if #out >= limit or (budget and copied >= budget) then
          full = true
          break
        end
      end
    end
  end
  if full then break end
  if #r < n then
    ended = true
    break
  end
end
if ended or cursor == nil then return {out, skipped, ''} end
return {out, skipped, '=' .. cursor}
"""

# What count_runnable walks: the queues with ready or delayed jobs (sorted), how many of their
# jobs are due (every ready one and the delayed ones due by now), and with a tenant the size of
# that tenant's index (-1 without one).
# ARGV: prefix, now, tenant (opt)
_BODIES["count_runnable_plan"] = r"""
local now, tenant = ARGV[2], opt(ARGV[3])
local seen, queues = {}, {}
for _, set in ipairs({'readyq', 'delayedq'}) do
  for _, q in ipairs(redis.call('SMEMBERS', P .. set)) do
    if not seen[q] then
      seen[q] = true
      queues[#queues + 1] = q
    end
  end
end
table.sort(queues)
local due = 0
for _, q in ipairs(queues) do
  due = due + redis.call('ZCARD', P .. 'ready:' .. q)
    + redis.call('ZCOUNT', P .. 'delayed:' .. q, '-inf', now)
end
local own = -1
if tenant then own = redis.call('ZCARD', P .. 'jobs:t:' .. tenant) end
return {own, due, queues}
"""

# One bounded step of count_runnable: up to `chunk` entries of one sorted set, from past the
# cursor on, counted by queue and name when due, not excluded and of the tenant asked for.
#   ready:<queue> and delayed:<queue> (kind 'ready' / 'delayed'): the claim's own indexes, so
#   a job's queue and run_at come with its entry and only its name (and tenant) are read; a
#   walk of delayed:<queue> stops at the first job not yet due. The cursor is the last entry
#   seen (score|member); the next step starts at the first entry after it, found by bisection
#   over ranks, so entries claimed or added meanwhile shift nothing.
#   jobs:t:<tenant> (kind 'index'): a tenant's jobs by id, each job's state, queue, name and
#   run_at read from its hash; the cursor is the last id.
# Returns the cursor to go on from ('' at the end), the number of entries looked at, and
# (queue, name, count) triples.
# ARGV: prefix, kind, key, queue, cursor ('' / '=...'), chunk, now, tenant (opt), nexcl,
#       excluded names...
_BODIES["count_runnable"] = r"""
local kind, key, queue, cursor = ARGV[2], P .. ARGV[3], ARGV[4], opt(ARGV[5])
local chunk, nowf, tenant = tonumber(ARGV[6]), tonumber(ARGV[7]), opt(ARGV[8])
local excluded = {}
for i = 1, tonumber(ARGV[9]) do excluded[ARGV[9 + i]] = true end
local counts, order = {}, {}
local function add(q, name)
  if excluded[name] then return end
  local byname = counts[q]
  if byname == nil then
    byname = {}
    counts[q] = byname
  end
  if byname[name] == nil then order[#order + 1] = {q, name} end
  byname[name] = (byname[name] or 0) + 1
end
local nxt, seen = '', 0
if kind == 'index' then
  local lo = '-'
  if cursor then lo = '(' .. cursor end
  local ids = redis.call('ZRANGEBYLEX', key, lo, '+', 'LIMIT', 0, chunk)
  for _, id in ipairs(ids) do
    local h = redis.call('HMGET', P .. 'job:' .. id, 'state', 'queue', 'name', 'run_at')
    if (h[1] == 'pending' or h[1] == 'retrying') and tonumber(h[4]) <= nowf then
      add(h[2], h[3])
    end
  end
  if #ids == chunk then nxt = '=' .. ids[#ids] end
  seen = #ids
else
  local from = 0
  if cursor then
    local sep = string.find(cursor, '|', 1, true)
    local cs, cm = tonumber(string.sub(cursor, 1, sep - 1)), string.sub(cursor, sep + 1)
    local lo, hi = 0, redis.call('ZCARD', key)
    while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      local e = redis.call('ZRANGE', key, mid, mid, 'WITHSCORES')
      local es = tonumber(e[2])
      if es > cs or (es == cs and after(e[1], cm)) then hi = mid else lo = mid + 1 end
    end
    from = lo
  end
  local r = redis.call('ZRANGE', key, from, from + chunk - 1, 'WITHSCORES')
  local stop = false
  for i = 1, #r, 2 do
    seen = seen + 1
    local id, run_at
    if kind == 'ready' then
      id, run_at = string.sub(r[i], 17), tonumber(string.sub(r[i], 1, 16))
    else
      id, run_at = r[i], tonumber(r[i + 1])
    end
    if run_at > nowf then
      -- delayed entries are in run_at order; a ready one is later only for a clock behind
      if kind == 'delayed' then
        stop = true
        break
      end
    elseif tenant then
      local h = redis.call('HMGET', P .. 'job:' .. id, 'name', 'tenant')
      if h[1] and h[2] == tenant then add(queue, h[1]) end
    else
      local name = redis.call('HGET', P .. 'job:' .. id, 'name')
      if name then add(queue, name) end  -- no hash: an entry left by a deleted job
    end
  end
  if not stop and #r == 2 * chunk then nxt = '=' .. r[#r] .. '|' .. r[#r - 1] end
end
local out = {}
for _, qn in ipairs(order) do
  out[#out + 1] = qn[1]
  out[#out + 1] = qn[2]
  out[#out + 1] = counts[qn[1]][qn[2]]
end
return {nxt, seen, out}
"""

# ARGV: prefix, nq (-1: any), queues...
_BODIES["next_run_at"] = r"""
local nq = tonumber(ARGV[2])
local qs = {}
if nq < 0 then
  local seen = {}
  for _, q in ipairs(redis.call('SMEMBERS', P .. 'readyq')) do seen[q] = true end
  for _, q in ipairs(redis.call('SMEMBERS', P .. 'delayedq')) do seen[q] = true end
  for q, _ in pairs(seen) do qs[#qs + 1] = q end
else
  for i = 1, nq do qs[i] = ARGV[2 + i] end
end
local restricted = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'restricted')) do restricted[q] = true end
local best = nil
for _, q in ipairs(qs) do
  if not (restricted[q] and redis.call('HGET', P .. 'queue:' .. q, 'paused') == '1') then
    local r = redis.call('ZRANGE', P .. 'ready:' .. q, 0, 0)
    if #r > 0 then
      local t = tonumber(string.sub(r[1], 1, 16))
      if best == nil or t < best then best = t end
    end
    local d = redis.call('ZRANGE', P .. 'delayed:' .. q, 0, 0, 'WITHSCORES')
    if #d > 0 then
      local t = tonumber(d[2])
      if best == nil or t < best then best = t end
    end
  end
end
if best == nil then return false end
return f0(best)
"""

# ARGV: prefix, now, dlq_id, new_job_id
_BODIES["replay_dlq"] = r"""
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
"""

# ARGV: prefix, worker (id, started_at, field, value...)
_BODIES["register_worker"] = r"""
write_worker(2, #ARGV - 1)
return 1
"""

# ARGV: prefix, worker_id, now
_BODIES["deregister_worker"] = r"""
local wid, now = ARGV[2], ARGV[3]
local wk = P .. 'worker:' .. wid
if redis.call('EXISTS', wk) == 1 then
  redis.call('HSET', wk, 'state', 'stopped', 'last_seen', now)
end
if redis.call('HGET', P .. 'leader', 'holder') == wid then redis.call('DEL', P .. 'leader') end
return 1
"""

# ARGV: prefix, worker_id, now, expires_at
_BODIES["acquire_leadership"] = r"""
local wid, now, exp = ARGV[2], ARGV[3], ARGV[4]
local h = redis.call('HMGET', P .. 'leader', 'holder', 'expires_at')
if (not h[1]) or tonumber(h[2]) <= tonumber(now) or h[1] == wid then
  redis.call('HSET', P .. 'leader', 'holder', wid, 'expires_at', exp)
  return 1
end
return 0
"""

# ARGV: prefix, worker_id
_BODIES["release_leadership"] = r"""
if redis.call('HGET', P .. 'leader', 'holder') == ARGV[2] then redis.call('DEL', P .. 'leader') end
return 1
"""

# ARGV: prefix, now, n, entries (14 fields each)
_BODIES["upsert_cron"] = r"""
local now = ARGV[2]
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  local b = 4 + i * 14
  local name = ARGV[b]
  local key = P .. 'cron:' .. name
  local queue = opt(ARGV[b + 5])
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'name', name, 'expr', ARGV[b + 1], 'timezone', ARGV[b + 2],
      'job_name', ARGV[b + 3], 'payload', ARGV[b + 4], 'misfire', ARGV[b + 6],
      'misfire_grace', ARGV[b + 7], 'enabled', ARGV[b + 8], 'next_run_at', ARGV[b + 9],
      'created_at', ARGV[b + 12], 'updated_at', ARGV[b + 13])
    if queue then redis.call('HSET', key, 'queue', queue) end
    local lr, lj = opt(ARGV[b + 10]), opt(ARGV[b + 11])
    if lr then redis.call('HSET', key, 'last_run_at', lr) end
    if lj then redis.call('HSET', key, 'last_job_id', lj) end
    redis.call('ZADD', P .. 'crons', 0, name)
  else
    local old = redis.call('HMGET', key, 'expr', 'timezone')
    local moved = old[1] ~= ARGV[b + 1] or old[2] ~= ARGV[b + 2]
    redis.call('HSET', key, 'expr', ARGV[b + 1], 'timezone', ARGV[b + 2],
      'job_name', ARGV[b + 3], 'payload', ARGV[b + 4], 'misfire', ARGV[b + 6],
      'misfire_grace', ARGV[b + 7], 'updated_at', now)
    set_or_del(key, 'queue', queue)
    if moved then redis.call('HSET', key, 'next_run_at', ARGV[b + 9]) end
  end
end
return 1
"""

# ARGV: prefix, name, enabled ('1'/'0'), next_run_at, now
_BODIES["set_cron_enabled"] = r"""
local key = P .. 'cron:' .. ARGV[2]
if redis.call('EXISTS', key) == 0 then return {-2} end
redis.call('HSET', key, 'enabled', ARGV[3], 'updated_at', ARGV[5])
if ARGV[3] == '1' then redis.call('HSET', key, 'next_run_at', ARGV[4]) end
return {1, redis.call('HGETALL', key)}
"""

# ARGV: prefix, now, name, tick, next_run_at, njobs (0/1), job fields
_BODIES["fire_cron"] = r"""
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
"""

# ARGV: prefix, name
_BODIES["delete_cron"] = r"""
local n = redis.call('DEL', P .. 'cron:' .. ARGV[2])
redis.call('ZREM', P .. 'crons', ARGV[2])
return n
"""

# ARGV: prefix, name, concurrency, rate, burst (opts), size, per_tenant ('1'/'0')
_BODIES["set_queue"] = r"""
local name = ARGV[2]
local key = P .. 'queue:' .. name
local bk = P .. 'qbucket:' .. name
local old_pt = redis.call('HGET', key, 'per_tenant')
local conc, rate, burst = opt(ARGV[3]), opt(ARGV[4]), opt(ARGV[5])
local size = tonumber(ARGV[6])
if rate == nil or (old_pt and old_pt ~= ARGV[7]) then
  redis.call('HDEL', key, 'tokens', 'tokens_at')
  redis.call('DEL', bk)
else
  local t = redis.call('HGET', key, 'tokens')
  if t and tonumber(t) > size then redis.call('HSET', key, 'tokens', f17(size)) end
  local flat = redis.call('HGETALL', bk)
  for i = 1, #flat, 2 do
    local raw = flat[i + 1]
    local sep = string.find(raw, '|', 1, true)
    if tonumber(string.sub(raw, 1, sep - 1)) > size then
      redis.call('HSET', bk, flat[i], f17(size) .. string.sub(raw, sep))
    end
  end
end
set_or_del(key, 'concurrency', conc)
set_or_del(key, 'rate', rate)
set_or_del(key, 'burst', burst)
redis.call('HSET', key, 'size', ARGV[6], 'per_tenant', ARGV[7])
redis.call('SADD', P .. 'queues', name)
if conc or rate or redis.call('HGET', key, 'paused') == '1' then
  redis.call('SADD', P .. 'restricted', name)
else
  redis.call('SREM', P .. 'restricted', name)
end
wake()
return 1
"""

# ARGV: prefix, name, paused ('1'/'0')
_BODIES["pause_queue"] = r"""
local name = ARGV[2]
local key = P .. 'queue:' .. name
redis.call('HSET', key, 'paused', ARGV[3])
redis.call('SADD', P .. 'queues', name)
local c = redis.call('HMGET', key, 'concurrency', 'rate')
if ARGV[3] == '1' or c[1] or c[2] then
  redis.call('SADD', P .. 'restricted', name)
else
  redis.call('SREM', P .. 'restricted', name)
end
if ARGV[3] == '0' then wake() end
return 1
"""

# ARGV: prefix, now, run_id, npairs, run pairs..., driver job fields
_BODIES["create_run"] = r"""
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
"""

# ARGV: prefix, now, run_id, state, expect ('' or comma list), generation (''), output,
#       error, wake_at, waiting_for (opts), ndriver, driver fields
_BODIES["update_run"] = r"""
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
"""

# ARGV: prefix, run_id, version, generation, now
_BODIES["set_run_version"] = r"""
local rk = P .. 'run:' .. ARGV[2]
local h = redis.call('HMGET', rk, 'state', 'generation')
if not h[1] then return {-2} end
if TERMINAL_RUN[h[1]] or h[2] ~= ARGV[4] then return {0} end
redis.call('HSET', rk, 'version', ARGV[3], 'updated_at', ARGV[5])
return {1, redis.call('HGETALL', rk)}
"""

# ARGV: prefix, run_id, seq, state, record json
_BODIES["save_step"] = r"""
if redis.call('EXISTS', P .. 'run:' .. ARGV[2]) == 0 then return {-2} end
local sk = P .. 'steps:' .. ARGV[2]
local old = redis.call('HGET', sk, ARGV[3])
if old and string.sub(old, 1, 8) ~= 'pending\n' then return {0, old} end
redis.call('HSET', sk, ARGV[3], ARGV[4] .. '\n' .. ARGV[5])
return {1}
"""

# ARGV: prefix, now, run_id, event_id, name, created_at, tenant (opt), event json, driver fields
_BODIES["send_event"] = r"""
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
"""

# ARGV: prefix, run_id, name, seq
_BODIES["take_event"] = r"""
local rid, name, seq = ARGV[2], ARGV[3], ARGV[4]
local ck = P .. 'evc:' .. rid
local cf = seq .. '|' .. name
local prev = redis.call('HGET', ck, cf)
if prev then return redis.call('HGET', P .. 'ev:' .. rid, prev) end
local qk = P .. 'evq:' .. rid .. ':' .. name
local first = redis.call('ZRANGE', qk, 0, 0)
if #first == 0 then return false end
redis.call('ZREM', qk, first[1])
redis.call('HSET', ck, cf, first[1])
return redis.call('HGET', P .. 'ev:' .. rid, first[1])
"""

# -- bounded reads ---------------------------------------------------------------------------------
#
# Every script below does a bounded amount of work per call: the store calls it again from the
# cursor it returns, so other clients' commands run in between (see docs/redis.md, Limits).

# The job counts by state of one queue, one tenant or both, as far as they cost at most
# `budget` (ZINTERCARD looks at (sets - 1) x the smallest set's size): per state, the count,
# -1 and the sets to walk (smallest first) when it would cost more, or -2 when it is what the
# others leave of the total (given first; -1 with both filters). Finished jobs are counted
# from their queue's or tenant's finished indexes; with one filter, the costliest of the
# running states is derived from the total.
# ARGV: prefix, queue (opt), tenant (opt), budget
_BODIES["count_jobs"] = r"""
local q, t, budget = opt(ARGV[2]), opt(ARGV[3]), tonumber(ARGV[4])
local STATES = {'pending', 'running', 'retrying', 'completed', 'failed', 'cancelled'}
local rows = {}
if q == nil and t == nil then
  for _, s in ipairs(STATES) do rows[#rows + 1] = {s, redis.call('ZCARD', P .. 'jobs:s:' .. s)} end
  return {-1, rows}
end
local filters = {}
if q then filters[#filters + 1] = 'jobs:q:' .. q end
if t then filters[#filters + 1] = 'jobs:t:' .. t end
local terms = {}
for _, s in ipairs(STATES) do
  local tag, keys = DONE_TAG[s], nil
  if tag and q and t then
    keys = {'tdone' .. tag .. ':' .. t, 'done' .. tag .. ':' .. q}
  elseif tag and q then
    keys = {'done' .. tag .. ':' .. q}
  elseif tag then
    keys = {'tdone' .. tag .. ':' .. t}
  else
    keys = {'jobs:s:' .. s}
    for _, f in ipairs(filters) do keys[#keys + 1] = f end
  end
  local cards = {}
  for _, k in ipairs(keys) do cards[k] = redis.call('ZCARD', P .. k) end
  table.sort(keys, function(a, b) return cards[a] < cards[b] end)
  local cost = 0
  if #keys > 1 then cost = (#keys - 1) * cards[keys[1]] end
  terms[#terms + 1] = {s = s, keys = keys, cost = cost, active = tag == nil}
end
local total = -1
if #filters == 1 then
  total = redis.call('ZCARD', P .. filters[1])
  local worst = nil
  for _, term in ipairs(terms) do
    if term.active and (worst == nil or term.cost > worst.cost) then worst = term end
  end
  worst.derived = true
end
local order = {}
for _, term in ipairs(terms) do if not term.derived then order[#order + 1] = term end end
table.sort(order, function(a, b) return a.cost < b.cost end)
local spent = 0
for _, term in ipairs(order) do
  if #term.keys == 1 then
    term.n = redis.call('ZCARD', P .. term.keys[1])
  elseif spent + term.cost <= budget then
    spent = spent + term.cost
    local full = {}
    for i, k in ipairs(term.keys) do full[i] = P .. k end
    term.n = redis.call('ZINTERCARD', #full, unpack(full))
  end
end
for _, term in ipairs(terms) do
  local row = {term.s}
  if term.derived then
    row[2] = -2
  elseif term.n then
    row[2] = term.n
  else
    row[2] = -1
    for _, k in ipairs(term.keys) do row[#row + 1] = k end
  end
  rows[#rows + 1] = row
end
return {total, rows}
"""

# Per group of sets, the number of ids in all of them: one ZCARD, or a ZINTERCARD while the
# groups' costs (as for count_jobs) add up to at most `budget`; else -1 and the group's sets,
# smallest first, to walk.
# ARGV: prefix, budget, ngroups, (nkeys, keys...)...
_BODIES["cards"] = r"""
local budget = tonumber(ARGV[2])
local groups, p = {}, 4
for g = 1, tonumber(ARGV[3]) do
  local keys = {}
  for i = 1, tonumber(ARGV[p]) do keys[i] = ARGV[p + i] end
  p = p + #keys + 1
  local cards = {}
  for _, k in ipairs(keys) do cards[k] = redis.call('ZCARD', P .. k) end
  table.sort(keys, function(a, b) return cards[a] < cards[b] end)
  local cost = 0
  if #keys > 1 then cost = (#keys - 1) * cards[keys[1]] end
  groups[g] = {keys = keys, cost = cost, one = cards[keys[1]]}
end
local order = {}
for _, g in ipairs(groups) do order[#order + 1] = g end
table.sort(order, function(a, b) return a.cost < b.cost end)
local spent = 0
for _, g in ipairs(order) do
  if #g.keys == 1 then
    g.n = g.one
  elseif spent + g.cost <= budget then
    spent = spent + g.cost
    local full = {}
    for i, k in ipairs(g.keys) do full[i] = P .. k end
    g.n = redis.call('ZINTERCARD', #full, unpack(full))
  end
end
local out = {}
for i, g in ipairs(groups) do
  if g.n then
    out[i] = {g.n}
  else
    out[i] = {-1}
    for _, k in ipairs(g.keys) do out[i][#out[i] + 1] = k end
  end
end
return out
"""

# ZCOUNT of each (key, min, max).
# ARGV: prefix, n, (key, min, max)...
_BODIES["zcounts"] = r"""
local out = {}
for i = 0, tonumber(ARGV[2]) - 1 do
  local b = 3 + 3 * i
  out[i + 1] = redis.call('ZCOUNT', P .. ARGV[b], ARGV[b + 1], ARGV[b + 2])
end
return out
"""

# One bounded step of a walk: up to `chunk` entries of the sorted set `driver` in score order,
# after the cursor (else from the first with a score >= lo), stopping at the first with a score
# >= hi. An entry matches when it is in every `in` set, in no `out` set and (with a score key)
# has a score there below `below`. Returns the cursor to go on from ('' at the end), the number
# of matches and, with a bucket width, the matches by bucket of their driver score (slot,
# count...). With mode '1' the matches are dead-letter entries, deleted (at most `max`); with
# mode 'ids' the matches are returned instead, each with its score in the score key (score,
# id...).
# ARGV: prefix, driver, cursor ('' / '=...'), chunk, lo, hi, nin, in keys..., nout, out keys...,
#       score key (''), below, width (''), mode ('0' / '1' / 'ids'), max ('' = no bound)
_WALK = r"""
local driver, cursor, chunk = P .. ARGV[2], opt(ARGV[3]), tonumber(ARGV[4])
local lo, hi = ARGV[5], ARGV[6]
local hif = nil
if hi ~= '+inf' then hif = tonumber(hi) end
local p = 7
local ins = {}
for i = 1, tonumber(ARGV[p]) do ins[i] = P .. ARGV[p + i] end
p = p + #ins + 1
local outs = {}
for i = 1, tonumber(ARGV[p]) do outs[i] = P .. ARGV[p + i] end
p = p + #outs + 1
local sk, below = ARGV[p], tonumber(ARGV[p + 1])
if sk ~= '' then sk = P .. sk end
local width = tonumber(ARGV[p + 2])
local purge, collect, left = ARGV[p + 3] == '1', ARGV[p + 3] == 'ids', tonumber(ARGV[p + 4])
local found = {}
local r = zchunk(driver, cursor, lo, chunk)
local n, slots, order, stopped = 0, {}, {}, false
for i = 1, #r, 2 do
  local id, sc = r[i], tonumber(r[i + 1])
  if hif and sc >= hif then
    stopped = true
    break
  end
  local ok = true
  for _, k in ipairs(ins) do
    if not redis.call('ZSCORE', k, id) then ok = false break end
  end
  if ok then
    for _, k in ipairs(outs) do
      if redis.call('ZSCORE', k, id) then ok = false break end
    end
  end
  local v = nil
  if ok and sk ~= '' then
    v = redis.call('ZSCORE', sk, id)
    if not v or tonumber(v) >= below then ok = false end
  end
  if ok then
    n = n + 1
    if collect then
      found[#found + 1] = v or r[i + 1]
      found[#found + 1] = id
    end
    if width then
      local slot = math.floor(sc / width)
      if slots[slot] == nil then
        order[#order + 1] = slot
        slots[slot] = 0
      end
      slots[slot] = slots[slot] + 1
    end
    if purge then
      delete_dlq(id)
      if left then
        left = left - 1
        if left <= 0 then
          stopped = true
          break
        end
      end
    end
  end
end
local nxt = ''
if not stopped and #r == 2 * chunk then nxt = zcursor(r[#r - 1], r[#r]) end
local flat = found
for _, slot in ipairs(order) do
  flat[#flat + 1] = f0(slot)
  flat[#flat + 1] = slots[slot]
end
return {nxt, n, flat}
"""
_BODIES["walk"] = _WALK
_BODIES["purge_walk"] = _WALK  # the same script, under a name that says it writes

# One bounded step of a throughput count over one finished index: from `from` on, up to
# `steps` buckets (of `width`) that hold entries, each found with one ZRANGEBYSCORE and counted
# with one ZCOUNT. Returns where to go on from ('' at the end) and (slot, count) pairs.
# ARGV: prefix, key, from (inclusive), width, steps
_BODIES["buckets"] = r"""
local key, from, width = P .. ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
for _ = 1, tonumber(ARGV[5]) do
  local first = redis.call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #first == 0 then return {'', out} end
  local slot = math.floor(tonumber(first[2]) / width)
  local hi = f0((slot + 1) * width)
  out[#out + 1] = f0(slot)
  out[#out + 1] = redis.call('ZCOUNT', key, first[2], '(' .. hi)
  from = hi
end
return {from, out}
"""

# The hashes (prefix .. member) of up to `chunk` members of a sorted set after the cursor; a
# member without a hash is skipped. Returns the cursor to go on from ('' at the end) and them.
# ARGV: prefix, key, hash prefix, cursor ('' / '=...'), chunk
_BODIES["zhashes"] = r"""
local chunk = tonumber(ARGV[5])
local r = zchunk(P .. ARGV[2], opt(ARGV[4]), '-inf', chunk)
local out = {}
for i = 1, #r, 2 do
  local h = redis.call('HGETALL', P .. ARGV[3] .. r[i])
  if #h > 0 then out[#out + 1] = h end
end
local nxt = ''
if #r == 2 * chunk then nxt = zcursor(r[#r - 1], r[#r]) end
return {nxt, out}
"""

# The figures of some queues: row (limits, paused), depth, running, completed in (since, now].
# A name left in qnames by a queue with neither a row nor a job is dropped.
# ARGV: prefix, since (exclusive), now (inclusive), names...
_BODIES["queue_stats"] = r"""
local since, now = ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV do
  local q = ARGV[i]
  local row = redis.call('SISMEMBER', P .. 'queues', q) == 1
  if not row and redis.call('EXISTS', P .. 'jobs:q:' .. q) == 0 then
    redis.call('SREM', P .. 'qnames', q)
  else
    local cfg = {}
    if row then cfg = redis.call('HGETALL', P .. 'queue:' .. q) end
    local depth = redis.call('ZCARD', P .. 'ready:' .. q)
      + redis.call('ZCARD', P .. 'delayed:' .. q)
    local running = tonumber(redis.call('HGET', P .. 'qrun:' .. q, '*')) or 0
    local done = redis.call('ZCOUNT', P .. 'donec:' .. q, '(' .. since, now)
    out[#out + 1] = {q, cfg, depth, running, done}
  end
end
return out
"""

# -- retention, in bounded steps ----------------------------------------------------------------

# Delete up to n jobs of one finished state that finished before `cut`, oldest first. Returns
# the number deleted and the number of index entries looked at (fewer than n: nothing left).
# ARGV: prefix, state, cut, n
_BODIES["prune_jobs"] = r"""
local state, n = ARGV[2], tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', P .. 'done:' .. state, '-inf', '(' .. ARGV[3],
  'LIMIT', 0, n)
local deleted = 0
for _, id in ipairs(ids) do
  if redis.call('HGET', P .. 'job:' .. id, 'state') == state then
    deleted = deleted + delete_job(id)
  else
    redis.call('ZREM', P .. 'done:' .. state, id)
  end
end
return {deleted, #ids}
"""

# Delete up to n dead-letter entries that failed before `cut`, oldest first; returns as
# prune_jobs does.
# ARGV: prefix, cut, n
_BODIES["prune_dlq"] = r"""
local ids = redis.call('ZRANGEBYSCORE', P .. 'dlqs:failed', '-inf', '(' .. ARGV[2],
  'LIMIT', 0, tonumber(ARGV[3]))
local deleted = 0
for _, id in ipairs(ids) do deleted = deleted + delete_dlq(id) end
return {deleted, #ids}
"""

# Delete the dead-letter entries given that failed before `cut`; returns how many.
# ARGV: prefix, cut, ids...
_BODIES["delete_dlqs"] = r"""
local cut, n = tonumber(ARGV[2]), 0
for i = 3, #ARGV do
  local at = redis.call('ZSCORE', P .. 'dlqs:failed', ARGV[i])
  if at and tonumber(at) < cut then n = n + delete_dlq(ARGV[i]) end
end
return n
"""

# Look at up to n worker rows after the cursor; delete those not running and last seen before
# `cut`. Returns the number deleted and the cursor to go on from ('' at the end).
# ARGV: prefix, cut, cursor ('' / '=...'), n
_BODIES["prune_workers"] = r"""
local cut, n = tonumber(ARGV[2]), tonumber(ARGV[4])
local r = zchunk(P .. 'workers', opt(ARGV[3]), '-inf', n)
local deleted = 0
for i = 1, #r, 2 do
  local wid = r[i]
  local wk = P .. 'worker:' .. wid
  local h = redis.call('HMGET', wk, 'state', 'last_seen')
  if not h[1] then
    redis.call('ZREM', P .. 'workers', wid)
  elseif h[1] ~= 'running' and tonumber(h[2]) < cut then
    redis.call('DEL', wk)
    redis.call('ZREM', P .. 'workers', wid)
    deleted = deleted + 1
  end
end
local nxt = ''
if #r == 2 * n then nxt = zcursor(r[#r - 1], r[#r]) end
return {deleted, nxt}
"""

# -- the keyspace version and its migrations -----------------------------------------------------

# The keyspace's version: the stamp, else 1 when keys of an unstamped keyspace are there (an
# older store that never ran migrate), else (a fresh keyspace) 0 after stamping `version`.
# ARGV: prefix, version
_BODIES["migrate"] = r"""
local v = redis.call('GET', P .. 'schema')
if v then return tonumber(v) end
if redis.call('EXISTS', P .. 'jobs', P .. 'dlq', P .. 'dlqs', P .. 'workers', P .. 'crons',
    P .. 'runs', P .. 'queues', P .. 'qnames') > 0 then
  return 1
end
redis.call('SET', P .. 'schema', ARGV[2])
return 0
"""

# ARGV: prefix, version
_BODIES["stamp"] = r"""
redis.call('SET', P .. 'schema', ARGV[2])
return 1
"""

# Version 1 to 2, dead letters: move up to n entries from the version-1 indexes (dlq, dlq:q:,
# dlq:n:, dlq:t:, dlq:rp, dlq:failed, which shared the entries' namespace dlq:<id>) to the
# version-2 ones (dlqs...). Returns the number moved and the number whose entry was gone.
# ARGV: prefix, n
_BODIES["migrate_dlq"] = r"""
local ids = redis.call('ZRANGE', P .. 'dlq', 0, tonumber(ARGV[2]) - 1)
local gone = 0
for _, id in ipairs(ids) do
  local old = {P .. 'dlq', P .. 'dlq:rp', P .. 'dlq:failed'}
  local e = hgetall(P .. 'dlq:' .. id)
  if e.id then
    old[#old + 1] = P .. 'dlq:q:' .. e.queue
    old[#old + 1] = P .. 'dlq:n:' .. e.name
    redis.call('ZADD', P .. 'dlqs', 0, id)
    redis.call('ZADD', P .. 'dlqs:q:' .. e.queue, 0, id)
    redis.call('ZADD', P .. 'dlqs:n:' .. e.name, 0, id)
    if e.tenant then
      old[#old + 1] = P .. 'dlq:t:' .. e.tenant
      redis.call('ZADD', P .. 'dlqs:t:' .. e.tenant, 0, id)
    end
    redis.call('ZADD', P .. 'dlqs:failed', e.failed_at, id)
    if e.replayed_at or redis.call('ZSCORE', P .. 'dlq:rp', id) then
      redis.call('ZADD', P .. 'dlqs:rp', 0, id)
    end
  else
    gone = gone + 1
  end
  for _, k in ipairs(old) do redis.call('ZREM', k, id) end
end
return {#ids, gone}
"""

# Version 1 to 2, finished jobs: add up to `chunk` entries of done:<state> after the cursor to
# their queue's and tenant's finished indexes. Returns the cursor to go on from ('' at the end).
# ARGV: prefix, state, cursor ('' / '=...'), chunk
_BODIES["migrate_done"] = r"""
local state, chunk = ARGV[2], tonumber(ARGV[4])
local r = zchunk(P .. 'done:' .. state, opt(ARGV[3]), '-inf', chunk)
for i = 1, #r, 2 do
  local h = redis.call('HMGET', P .. 'job:' .. r[i], 'state', 'queue', 'tenant')
  if h[1] == state then done_add(r[i], state, h[2], h[3] or nil, r[i + 1]) end
end
if #r == 2 * chunk then return zcursor(r[#r - 1], r[#r]) end
return ''
"""

# Delete those of the keys that are sorted sets (version-1 dead-letter indexes left behind).
# ARGV: prefix, keys (without the prefix)...
_BODIES["drop_zsets"] = r"""
local n = 0
for i = 2, #ARGV do
  local k = P .. ARGV[i]
  if redis.call('TYPE', k)['ok'] == 'zset' then n = n + redis.call('DEL', k) end
end
return n
"""

SCRIPTS: dict[str, str] = {name: PRELUDE + body for name, body in _BODIES.items()}
SHAS: dict[str, str] = {
    name: hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
    for name, text in SCRIPTS.items()
}
