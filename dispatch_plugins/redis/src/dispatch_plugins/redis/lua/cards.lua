-- Per group of sets, the number of ids in all of them: one ZCARD, or a ZINTERCARD while the
-- groups' costs (as for count_jobs) add up to at most `budget`; else -1 and the group's sets,
-- smallest first, to walk.
-- ARGV: prefix, budget, ngroups, (nkeys, keys...)...
local budget = tonumber(ARGV[2])
local groups, p = {}, 4
for g = 1, tonumber(ARGV[3]) do
  local keys = {}
  for i = 1, tonumber(ARGV[p]) do keys[i] = ARGV[p + i] end
  p = p + #keys + 1
  local cards = {}
  for _, k in ipairs(keys) do cards[k] = redis.call('ZCARD', P .. k) end
  table.sort(keys, function(a, b) return cards[a] < cards[b] end)
  local cost = 0
  if #keys > 1 then cost = (#keys - 1) * cards[keys[1]] end
  groups[g] = {keys = keys, cost = cost, one = cards[keys[1]]}
end
local order = {}
for _, g in ipairs(groups) do order[#order + 1] = g end
table.sort(order, function(a, b) return a.cost < b.cost end)
local spent = 0
for _, g in ipairs(order) do
  if #g.keys == 1 then
    g.n = g.one
  elseif spent + g.cost <= budget then
    spent = spent + g.cost
    local full = {}
    for i, k in ipairs(g.keys) do full[i] = P .. k end
    g.n = redis.call('ZINTERCARD', #full, unpack(full))
  end
end
local out = {}
for i, g in ipairs(groups) do
  if g.n then
    out[i] = {g.n}
  else
    out[i] = {-1}
    for _, k in ipairs(g.keys) do out[i][#out[i] + 1] = k end
  end
end
return out
