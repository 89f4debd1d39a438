"""Build a big backlog of finished jobs fast, straight into the keyspace (version 2), for the
tests that measure how long the store's scripts hold up the server."""

from __future__ import annotations

import redis

# Writes jobs first .. first + n - 1 of one tenant and queue, finished in [t0, t0 + span) (a
# spread, not in id order); every `fail_every`-th one failed, with its dead-letter entry, the
# others completed. Ids sort before the store's own TypeIDs of today.
# ARGV: prefix, first, n, t0, span, tenant, queue, fail_every
_BULK = r"""
local P = ARGV[1] .. ':'
local first, n = tonumber(ARGV[2]), tonumber(ARGV[3])
local t0, span = tonumber(ARGV[4]), tonumber(ARGV[5])
local tenant, queue, fail_every = ARGV[6], ARGV[7], tonumber(ARGV[8])
local adds = {}
local function add(key, score, member)
  local t = adds[key]
  if t == nil then
    t = {}
    adds[key] = t
  end
  t[#t + 1] = score
  t[#t + 1] = member
end
for i = first, first + n - 1 do
  local id = string.format('job_01%024d', i)
  local at = string.format('%.0f', t0 + (i * 7919) % span)
  local failed = fail_every > 0 and i % fail_every == 0
  local state, name, tag = 'completed', 'ok.job', 'c'
  if failed then state, name, tag = 'failed', 'bad.job', 'f' end
  redis.call('HSET', P .. 'job:' .. id, 'id', id, 'name', name, 'queue', queue, 'payload', '{}',
    'state', state, 'priority', '0', 'attempt', '1', 'max_attempts', '1', 'run_at', at,
    'created_at', at, 'updated_at', at, 'started_at', at, 'finished_at', at, 'tenant', tenant)
  add('jobs', 0, id)
  add('jobs:s:' .. state, 0, id)
  add('jobs:q:' .. queue, 0, id)
  add('jobs:n:' .. name, 0, id)
  add('jobs:t:' .. tenant, 0, id)
  add('done:' .. state, at, id)
  add('done' .. tag .. ':' .. queue, at, id)
  add('tdone' .. tag .. ':' .. tenant, at, id)
  if failed then
    local eid = string.format('dlq_01%024d', i)
    redis.call('HSET', P .. 'dlq:' .. eid, 'id', eid, 'job_id', id, 'name', name,
      'queue', queue, 'payload', '{}', 'error', 'boom', 'attempts', '1', 'max_attempts', '1',
      'priority', '0', 'failed_at', at, 'tenant', tenant)
    add('dlqs', 0, eid)
    add('dlqs:q:' .. queue, 0, eid)
    add('dlqs:n:' .. name, 0, eid)
    add('dlqs:t:' .. tenant, 0, eid)
    add('dlqs:failed', at, eid)
  end
end
for key, t in pairs(adds) do
  for i = 1, #t, 1000 do
    redis.call('ZADD', P .. key, unpack(t, i, math.min(i + 999, #t)))
  end
end
redis.call('SADD', P .. 'qnames', queue)
return n
"""


def build_finished(
    client: redis.Redis,
    prefix: str,
    *,
    count: int,
    t0_us: int,
    span_us: int,
    tenant: str,
    queue: str,
    fail_every: int,
    chunk: int = 20_000,
) -> None:
    """Write ``count`` finished jobs (see ``_BULK``) in scripts of ``chunk`` jobs."""
    script = client.register_script(_BULK)
    for first in range(0, count, chunk):
        n = min(chunk, count - first)
        script(args=[prefix, first, n, t0_us, span_us, tenant, queue, fail_every])
