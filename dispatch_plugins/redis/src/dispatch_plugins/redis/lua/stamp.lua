-- Stamp the keyspace version.
-- ARGV: prefix, version
redis.call('SET', P .. 'schema', ARGV[2])
return 1
