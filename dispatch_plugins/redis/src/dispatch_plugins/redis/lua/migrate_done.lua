-- Version 1 to 2, finished jobs: add up to `chunk` entries of done:<state> after the cursor to
-- their queue's and tenant's finished indexes. Returns the cursor to go on from ('' at the end).
-- ARGV: prefix, state, cursor ('' / '=...'), chunk
local state, chunk = ARGV[2], tonumber(ARGV[4])
local r = zchunk(P .. 'done:' .. state, opt(ARGV[3]), '-inf', chunk)
for i = 1, #r, 2 do
  local h = redis.call('HMGET', P .. 'job:' .. r[i], 'state', 'queue', 'tenant')
  if h[1] == state then done_add(r[i], state, h[2], h[3] or nil, r[i + 1]) end
end
if #r == 2 * chunk then return zcursor(r[#r - 1], r[#r]) end
return ''
