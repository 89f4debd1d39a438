-- One bounded step of a listing: walks the smallest of the index sets (all by id, score 0)
-- from past the cursor, checking the others (and the excluded ones) by membership; looks at
-- no more than `examine` ids and returns at most `limit` hashes. Returns the hashes, how many
-- matches it skipped for the offset, and the cursor to go on from ('' at the end).
-- With a preview length, each body field longer than that many bytes is left out of its hash:
-- in its place comes the field '~' .. name, valued '<its length>:<its first bytes>' (cut on a
-- character boundary); the step ends early once it has read `budget` bytes of such bodies.
-- ARGV: prefix, base key, nkeys, keys..., nexcl, excl..., desc ('1'/'0'), after ('' / '=id'),
--       offset, limit, hash prefix, examine, preview ('' for none), budget, nbodies, bodies...
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
