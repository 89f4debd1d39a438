-- Give up the leader lease, when the worker holds it.
-- ARGV: prefix, worker_id
if redis.call('HGET', P .. 'leader', 'holder') == ARGV[2] then redis.call('DEL', P .. 'leader') end
return 1
