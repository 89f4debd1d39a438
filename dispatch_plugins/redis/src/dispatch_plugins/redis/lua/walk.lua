-- One bounded step of a walk: up to `chunk` entries of the sorted set `driver` in score order,
-- after the cursor (else from the first with a score >= lo), stopping at the first with a score
-- >= hi. An entry matches when it is in every `in` set, in no `out` set and (with a score key)
-- has a score there below `below`. Returns the cursor to go on from ('' at the end), the number
-- of matches and, with a bucket width, the matches by bucket of their driver score (slot,
-- count...). With mode '1' the matches are dead-letter entries, deleted (at most `max`); with
-- mode 'ids' the matches are returned instead, each with its score in the score key (score,
-- id...).
-- ARGV: prefix, driver, cursor ('' / '=...'), chunk, lo, hi, nin, in keys..., nout, out keys...,
--       score key (''), below, width (''), mode ('0' / '1' / 'ids'), max ('' = no bound)
-- Run as `walk` when it reads and as `purge_walk` (mode '1') when it deletes: only a read is
-- run again after a dropped connection.
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
