-- One bounded step of count_runnable: up to `chunk` entries of one sorted set, from past the
-- cursor on, counted by queue and name when due, not excluded and of the tenant asked for.
--   ready:<queue> and delayed:<queue> (kind 'ready' / 'delayed'): the claim's own indexes, so
--   a job's queue and run_at come with its entry and only its name (and tenant) are read; a
--   walk of delayed:<queue> stops at the first job not yet due. The cursor is the last entry
--   seen (score|member); the next step starts at the first entry after it, found by bisection
--   over ranks, so entries claimed or added meanwhile shift nothing.
--   jobs:t:<tenant> (kind 'index'): a tenant's jobs by id, each job's state, queue, name and
--   run_at read from its hash; the cursor is the last id.
-- Returns the cursor to go on from ('' at the end), the number of entries looked at, and
-- (queue, name, count) triples.
-- ARGV: prefix, kind, key, queue, cursor ('' / '=...'), chunk, now, tenant (opt), nexcl,
--       excluded names...
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
