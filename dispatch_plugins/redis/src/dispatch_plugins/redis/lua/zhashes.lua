-- The hashes (prefix .. member) of up to `chunk` members of a sorted set after the cursor; a
-- member without a hash is skipped. Returns the cursor to go on from ('' at the end) and them.
-- ARGV: prefix, key, hash prefix, cursor ('' / '=...'), chunk
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
