-- The job counts by state of one queue, one tenant or both, as far as they cost at most
-- `budget` (ZINTERCARD looks at (sets - 1) x the smallest set's size): per state, the count,
-- -1 and the sets to walk (smallest first) when it would cost more, or -2 when it is what the
-- others leave of the total (given first; -1 with both filters). Finished jobs are counted
-- from their queue's or tenant's finished indexes; with one filter, the costliest of the
-- running states is derived from the total.
-- ARGV: prefix, queue (opt), tenant (opt), budget
local q, t, budget = opt(ARGV[2]), opt(ARGV[3]), tonumber(ARGV[4])
local STATES = {'pending', 'running', 'retrying', 'completed', 'failed', 'cancelled'}
local rows = {}
if q == nil and t == nil then
  for _, s in ipairs(STATES) do rows[#rows + 1] = {s, redis.call('ZCARD', P .. 'jobs:s:' .. s)} end
  return {-1, rows}
end
local filters = {}
if q then filters[#filters + 1] = 'jobs:q:' .. q end
if t then filters[#filters + 1] = 'jobs:t:' .. t end
local terms = {}
for _, s in ipairs(STATES) do
  local tag, keys = DONE_TAG[s], nil
  if tag and q and t then
    keys = {'tdone' .. tag .. ':' .. t, 'done' .. tag .. ':' .. q}
  elseif tag and q then
    keys = {'done' .. tag .. ':' .. q}
  elseif tag then
    keys = {'tdone' .. tag .. ':' .. t}
  else
    keys = {'jobs:s:' .. s}
    for _, f in ipairs(filters) do keys[#keys + 1] = f end
  end
  local cards = {}
  for _, k in ipairs(keys) do cards[k] = redis.call('ZCARD', P .. k) end
  table.sort(keys, function(a, b) return cards[a] < cards[b] end)
  local cost = 0
  if #keys > 1 then cost = (#keys - 1) * cards[keys[1]] end
  terms[#terms + 1] = {s = s, keys = keys, cost = cost, active = tag == nil}
end
local total = -1
if #filters == 1 then
  total = redis.call('ZCARD', P .. filters[1])
  local worst = nil
  for _, term in ipairs(terms) do
    if term.active and (worst == nil or term.cost > worst.cost) then worst = term end
  end
  worst.derived = true
end
local order = {}
for _, term in ipairs(terms) do if not term.derived then order[#order + 1] = term end end
table.sort(order, function(a, b) return a.cost < b.cost end)
local spent = 0
for _, term in ipairs(order) do
  if #term.keys == 1 then
    term.n = redis.call('ZCARD', P .. term.keys[1])
  elseif spent + term.cost <= budget then
    spent = spent + term.cost
    local full = {}
    for i, k in ipairs(term.keys) do full[i] = P .. k end
    term.n = redis.call('ZINTERCARD', #full, unpack(full))
  end
end
for _, term in ipairs(terms) do
  local row = {term.s}
  if term.derived then
    row[2] = -2
  elseif term.n then
    row[2] = term.n
  else
    row[2] = -1
    for _, k in ipairs(term.keys) do row[#row + 1] = k end
  end
  rows[#rows + 1] = row
end
return {total, rows}
