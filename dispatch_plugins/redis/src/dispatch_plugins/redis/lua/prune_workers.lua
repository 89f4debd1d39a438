-- Look at up to n worker rows after the cursor; delete those not running and last seen before
-- `cut`. Returns the number deleted and the cursor to go on from ('' at the end).
-- ARGV: prefix, cut, cursor ('' / '=...'), n
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
