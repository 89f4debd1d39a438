-- One bounded step of the silent-worker check: up to `chunk` worker rows after the cursor; a
-- running worker silent since before `cut` is marked dead. Returns the cursor to go on from
-- ('' at the end) and 1 when a row looked at is not running (its jobs are to be revoked).
-- ARGV: prefix, cut, cursor ('' / '=...'), chunk
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
