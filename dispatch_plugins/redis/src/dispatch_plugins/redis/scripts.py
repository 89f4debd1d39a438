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
  redis.call('ZREM', P .. 'done:' .. j.state, id)
  redis.call('ZREM', P .. 'donec:' .. j.queue, id)
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
    redis.call('ZADD', P .. 'dlq:t:' .. j.tenant, 0, dlq_id)
  end
  redis.call('ZADD', P .. 'dlq', 0, dlq_id)
  redis.call('ZADD', P .. 'dlq:q:' .. j.queue, 0, dlq_id)
  redis.call('ZADD', P .. 'dlq:n:' .. j.name, 0, dlq_id)
  redis.call('ZADD', P .. 'dlq:failed', now, dlq_id)
end

local function delete_dlq(id)
  local key = P .. 'dlq:' .. id
  local e = hgetall(key)
  if not e.id then return 0 end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'dlq', id)
  redis.call('ZREM', P .. 'dlq:q:' .. e.queue, id)
  redis.call('ZREM', P .. 'dlq:n:' .. e.name, id)
  if e.tenant then redis.call('ZREM', P .. 'dlq:t:' .. e.tenant, id) end
  redis.call('ZREM', P .. 'dlq:rp', id)
  redis.call('ZREM', P .. 'dlq:failed', id)
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
      redis.call('ZADD', P .. 'done:completed', now, id)
      redis.call('ZADD', P .. 'donec:' .. queue, now, id)
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
      redis.call('ZADD', P .. 'done:failed', now, id)
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

# ARGV: prefix, now, silent_since ('' without a worker timeout), ndlq, dlq ids...
_BODIES["rescue"] = r"""
local now, silent = ARGV[2], ARGV[3]
local nowf = tonumber(now)
local ndlq = tonumber(ARGV[4])
local gone, any_gone = {}, false
if silent ~= '' then
  local cut = tonumber(silent)
  for _, wid in ipairs(redis.call('ZRANGE', P .. 'workers', 0, -1)) do
    local wk = P .. 'worker:' .. wid
    local h = redis.call('HMGET', wk, 'state', 'last_seen')
    local state = h[1]
    if state == 'running' and tonumber(h[2]) < cut then
      redis.call('HSET', wk, 'state', 'dead')
      state = 'dead'
    end
    if state and state ~= 'running' then
      gone[wid] = state
      any_gone = true
    end
  end
end
local cands
if any_gone then
  cands = redis.call('ZRANGE', P .. 'running', 0, -1)
else
  cands = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', '(' .. now)
end
local out, used, more = {}, 0, 0
for _, id in ipairs(cands) do
  local key = P .. 'job:' .. id
  local j = hgetall(key)
  if j.state ~= 'running' then
    redis.call('ZREM', P .. 'running', id)
  else
    local err = nil
    local state = j.worker_id and gone[j.worker_id]
    if state then
      err = 'worker ' .. j.worker_id .. ' is ' .. state .. ': its lease was revoked'
    elseif j.lease_expires_at and tonumber(j.lease_expires_at) < nowf then
      err = 'lease expired: worker ' .. (j.worker_id or '?') .. ' stopped heartbeating'
    end
    if err then
      local fail = tonumber(j.attempt) >= tonumber(j.max_attempts)
      if fail and used >= ndlq then
        more = 1
      else
        end_running(key, id, j.queue, j.tenant, now)
        redis.call('HSET', key, 'last_error', err)
        if fail then
          used = used + 1
          redis.call('HSET', key, 'state', 'failed', 'finished_at', now)
          move_state(id, 'running', 'failed')
          redis.call('ZADD', P .. 'done:failed', now, id)
          dead_letter(hgetall(key), ARGV[4 + used], err, now)
        else
          redis.call('HSET', key, 'state', 'retrying', 'run_at', now)
          move_state(id, 'running', 'retrying')
          make_runnable(id, j.queue, j.priority, now, now)
        end
        out[#out + 1] = redis.call('HGETALL', key)
      end
    end
  end
end
if #out > 0 then wake() end
return {more, out}
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
redis.call('ZADD', P .. 'done:cancelled', now, id)
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
redis.call('ZREM', P .. 'done:' .. s, id)
move_state(id, s, 'pending')
make_runnable(id, j.queue, j.priority, now, now)
wake()
return {1, redis.call('HGETALL', key)}
"""

# ARGV: prefix, base key, nkeys, keys..., nexcl, excl..., desc ('1'/'0'), after ('' / '=id'),
#       offset, limit, hash prefix
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
if limit <= 0 then return {} end
local best, bestc = nil, nil
for i, k in ipairs(keys) do
  local c = redis.call('ZCARD', P .. k)
  if best == nil or c < bestc then best, bestc = i, c end
end
if bestc == 0 then return {} end
local driver = P .. keys[best]
local others = {}
for i, k in ipairs(keys) do if i ~= best then others[#others + 1] = P .. k end end
local out, skipped = {}, 0
local CH = math.max(limit + offset, 64)
while #out < limit do
  local r
  if desc then
    local hi = '+'
    if cursor then hi = '(' .. cursor end
    r = redis.call('ZREVRANGEBYLEX', driver, hi, '-', 'LIMIT', 0, CH)
  else
    local lo = '-'
    if cursor then lo = '(' .. cursor end
    r = redis.call('ZRANGEBYLEX', driver, lo, '+', 'LIMIT', 0, CH)
  end
  for _, id in ipairs(r) do
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
        out[#out + 1] = redis.call('HGETALL', hp .. id)
        if #out >= limit then break end
      end
    end
  end
  if #r < CH then break end
  cursor = r[#r]
end
return out
"""

# ARGV: prefix, nfilters, filter keys...
_BODIES["count_jobs"] = r"""
local nf = tonumber(ARGV[2])
local fk = {}
for i = 1, nf do fk[i] = P .. ARGV[2 + i] end
local out = {}
for _, s in ipairs({'pending', 'running', 'retrying', 'completed', 'failed', 'cancelled'}) do
  local c
  if nf == 0 then
    c = redis.call('ZCARD', P .. 'jobs:s:' .. s)
  else
    c = redis.call('ZINTERCARD', nf + 1, P .. 'jobs:s:' .. s, unpack(fk))
  end
  out[#out + 1] = s
  out[#out + 1] = c
end
return out
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
-- Whether a sorts after b byte-wise, as sorted sets order members (Lua's own comparison of
-- strings follows the server's locale).
local function after(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x > y end
  end
  return #a > #b
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

# ARGV: prefix, since, queue (opt), tenant (opt)
_BODIES["throughput"] = r"""
local since = ARGV[2]
local q, t = opt(ARGV[3]), opt(ARGV[4])
local out = {}
for _, s in ipairs({'completed', 'failed'}) do
  local r = redis.call('ZRANGEBYSCORE', P .. 'done:' .. s, since, '+inf', 'WITHSCORES')
  local times = {}
  for i = 1, #r, 2 do
    local id = r[i]
    local ok = true
    if q and not redis.call('ZSCORE', P .. 'jobs:q:' .. q, id) then ok = false end
    if ok and t and not redis.call('ZSCORE', P .. 'jobs:t:' .. t, id) then ok = false end
    if ok then times[#times + 1] = r[i + 1] end
  end
  out[#out + 1] = times
end
return out
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
redis.call('ZADD', P .. 'dlq:rp', 0, eid)
wake()
return {1, redis.call('HGETALL', P .. 'job:' .. nid)}
"""

# ARGV: prefix, nkeys, keys..., replayed ('' / '1' / '0'), before ('' or time)
_BODIES["count_dlq"] = r"""
local nk = tonumber(ARGV[2])
local keys = {}
for i = 1, nk do keys[i] = P .. ARGV[2 + i] end
local replayed, before = ARGV[3 + nk], ARGV[4 + nk]
local rp = P .. 'dlq:rp'
if before == '' then
  local function card(ks)
    if #ks == 0 then return redis.call('ZCARD', P .. 'dlq') end
    if #ks == 1 then return redis.call('ZCARD', ks[1]) end
    return redis.call('ZINTERCARD', #ks, unpack(ks))
  end
  if replayed == '' then return card(keys) end
  local with = {rp}
  for _, k in ipairs(keys) do with[#with + 1] = k end
  local r = card(with)
  if replayed == '1' then return r end
  return card(keys) - r
end
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'dlq:failed', '-inf', '(' .. before)) do
  local ok = true
  for _, k in ipairs(keys) do
    if not redis.call('ZSCORE', k, id) then ok = false break end
  end
  if ok and replayed ~= '' then
    local is = redis.call('ZSCORE', rp, id) and '1' or '0'
    if is ~= replayed then ok = false end
  end
  if ok then n = n + 1 end
end
return n
"""

# ARGV: prefix, before, nkeys, keys..., limit ('' = none)
_BODIES["purge_dlq"] = r"""
local before = ARGV[2]
local nk = tonumber(ARGV[3])
local keys = {}
for i = 1, nk do keys[i] = P .. ARGV[3 + i] end
local limit = tonumber(ARGV[4 + nk])
local doomed, off = {}, 0
while limit == nil or #doomed < limit do
  local r = redis.call('ZRANGEBYSCORE', P .. 'dlq:failed', '-inf', '(' .. before, 'LIMIT', off, 500)
  for _, id in ipairs(r) do
    local ok = true
    for _, k in ipairs(keys) do
      if not redis.call('ZSCORE', k, id) then ok = false break end
    end
    if ok then
      doomed[#doomed + 1] = id
      if limit and #doomed >= limit then break end
    end
  end
  if #r < 500 then break end
  off = off + 500
end
for _, id in ipairs(doomed) do delete_dlq(id) end
return #doomed
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

_BODIES["list_workers"] = r"""
local out = {}
for _, wid in ipairs(redis.call('ZRANGE', P .. 'workers', 0, -1)) do
  out[#out + 1] = redis.call('HGETALL', P .. 'worker:' .. wid)
end
return {redis.call('HGET', P .. 'leader', 'holder') or '', out}
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

_BODIES["list_cron"] = r"""
local out = {}
for _, name in ipairs(redis.call('ZRANGE', P .. 'crons', 0, -1)) do
  out[#out + 1] = redis.call('HGETALL', P .. 'cron:' .. name)
end
return out
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

# ARGV: prefix, since (exclusive), now (inclusive)
_BODIES["list_queues"] = r"""
local since, now = ARGV[2], ARGV[3]
local names = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do names[q] = true end
for _, q in ipairs(redis.call('SMEMBERS', P .. 'qnames')) do
  if not names[q] then
    if redis.call('EXISTS', P .. 'jobs:q:' .. q) == 1 then
      names[q] = false
    else
      redis.call('SREM', P .. 'qnames', q)
    end
  end
end
local out = {}
for q, row in pairs(names) do
  local cfg = {}
  if row then cfg = redis.call('HGETALL', P .. 'queue:' .. q) end
  local depth = redis.call('ZCARD', P .. 'ready:' .. q) + redis.call('ZCARD', P .. 'delayed:' .. q)
  local running = tonumber(redis.call('HGET', P .. 'qrun:' .. q, '*')) or 0
  local done = redis.call('ZCOUNT', P .. 'donec:' .. q, '(' .. since, now)
  out[#out + 1] = {q, cfg, depth, running, done}
end
return out
"""

# ARGV: prefix, limit, cut completed, failed, cancelled, dlq, workers ('' = keep)
_BODIES["prune"] = r"""
local limit = tonumber(ARGV[2])
local n = 0
local kinds = {{'completed', ARGV[3]}, {'failed', ARGV[4]}, {'cancelled', ARGV[5]}}
for _, kc in ipairs(kinds) do
  local state, cut = kc[1], kc[2]
  if cut ~= '' then
    local ids = redis.call('ZRANGEBYSCORE', P .. 'done:' .. state, '-inf', '(' .. cut,
      'LIMIT', 0, limit)
    for _, id in ipairs(ids) do
      if redis.call('HGET', P .. 'job:' .. id, 'state') == state then
        n = n + delete_job(id)
      else
        redis.call('ZREM', P .. 'done:' .. state, id)
      end
    end
  end
end
if ARGV[6] ~= '' then
  local ids = redis.call('ZRANGEBYSCORE', P .. 'dlq:failed', '-inf', '(' .. ARGV[6],
    'LIMIT', 0, limit)
  for _, id in ipairs(ids) do n = n + delete_dlq(id) end
end
if ARGV[7] ~= '' then
  local cut, k = tonumber(ARGV[7]), 0
  for _, wid in ipairs(redis.call('ZRANGE', P .. 'workers', 0, -1)) do
    if k >= limit then break end
    local wk = P .. 'worker:' .. wid
    local h = redis.call('HMGET', wk, 'state', 'last_seen')
    if not h[1] then
      redis.call('ZREM', P .. 'workers', wid)
    elseif h[1] ~= 'running' and tonumber(h[2]) < cut then
      redis.call('DEL', wk)
      redis.call('ZREM', P .. 'workers', wid)
      k = k + 1
    end
  end
  n = n + k
end
return n
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

# ARGV: prefix, version
_BODIES["migrate"] = r"""
local v = redis.call('GET', P .. 'schema')
if v then return tonumber(v) end
redis.call('SET', P .. 'schema', ARGV[2])
return 0
"""

SCRIPTS: dict[str, str] = {name: PRELUDE + body for name, body in _BODIES.items()}
SHAS: dict[str, str] = {
    name: hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
    for name, text in SCRIPTS.items()
}
