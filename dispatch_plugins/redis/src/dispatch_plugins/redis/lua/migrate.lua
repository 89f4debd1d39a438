-- The keyspace's version: the stamp, else 1 when keys of an unstamped keyspace are there (an
-- older store that never ran migrate), else (a fresh keyspace) 0 after stamping `version`.
-- ARGV: prefix, version
local v = redis.call('GET', P .. 'schema')
if v then return tonumber(v) end
if redis.call('EXISTS', P .. 'jobs', P .. 'dlq', P .. 'dlqs', P .. 'workers', P .. 'crons',
    P .. 'runs', P .. 'queues', P .. 'qnames') > 0 then
  return 1
end
redis.call('SET', P .. 'schema', ARGV[2])
return 0
