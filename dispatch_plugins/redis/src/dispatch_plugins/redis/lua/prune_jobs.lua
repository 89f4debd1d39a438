-- Delete up to n jobs of one finished state that finished before `cut`, oldest first. Returns
-- the number deleted and the number of index entries looked at (fewer than n: nothing left).
-- ARGV: prefix, state, cut, n
local state, n = ARGV[2], tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', P .. 'done:' .. state, '-inf', '(' .. ARGV[3],
  'LIMIT', 0, n)
local deleted = 0
for _, id in ipairs(ids) do
  if redis.call('HGET', P .. 'job:' .. id, 'state') == state then
    deleted = deleted + delete_job(id)
  else
    redis.call('ZREM', P .. 'done:' .. state, id)
  end
end
return {deleted, #ids}
