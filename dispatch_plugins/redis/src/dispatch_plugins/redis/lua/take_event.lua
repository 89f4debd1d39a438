-- Consume the oldest event of that name for the step `seq` (the same one again when asked
-- twice); false when there is none.
-- ARGV: prefix, run_id, name, seq
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
