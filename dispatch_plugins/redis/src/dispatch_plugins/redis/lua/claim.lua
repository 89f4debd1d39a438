-- Claim up to `limit` jobs: promote the due delayed jobs of the queues served, then take the
-- ready ones in claim order across them, past paused queues and within the queues'
-- concurrency caps and token buckets. Returns the claimed jobs' fields.
-- ARGV: prefix, worker_id, now, lease_until, limit, token_prefix, nq (-1: any), queues...,
--       nn (-1: any), names...
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
