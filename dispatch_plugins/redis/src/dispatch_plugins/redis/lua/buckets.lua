-- One bounded step of a throughput count over one finished index: from `from` on, up to
-- `steps` buckets (of `width`) that hold entries, each found with one ZRANGEBYSCORE and counted
-- with one ZCOUNT. Returns where to go on from ('' at the end) and (slot, count) pairs.
-- ARGV: prefix, key, from (inclusive), width, steps
local key, from, width = P .. ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
for _ = 1, tonumber(ARGV[5]) do
  local first = redis.call('ZRANGEBYSCORE', key, from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #first == 0 then return {'', out} end
  local slot = math.floor(tonumber(first[2]) / width)
  local hi = f0((slot + 1) * width)
  out[#out + 1] = f0(slot)
  out[#out + 1] = redis.call('ZCOUNT', key, first[2], '(' .. hi)
  from = hi
end
return {from, out}
