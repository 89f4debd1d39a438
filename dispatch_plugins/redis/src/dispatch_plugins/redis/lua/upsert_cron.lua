-- Insert or update cron entries: an update keeps the enabled flag and run history, and moves
-- next_run_at only when the schedule (expression or timezone) changed.
-- ARGV: prefix, now, n, entries (14 fields each)
local now = ARGV[2]
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  local b = 4 + i * 14
  local name = ARGV[b]
  local key = P .. 'cron:' .. name
  local queue = opt(ARGV[b + 5])
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'name', name, 'expr', ARGV[b + 1], 'timezone', ARGV[b + 2],
      'job_name', ARGV[b + 3], 'payload', ARGV[b + 4], 'misfire', ARGV[b + 6],
      'misfire_grace', ARGV[b + 7], 'enabled', ARGV[b + 8], 'next_run_at', ARGV[b + 9],
      'created_at', ARGV[b + 12], 'updated_at', ARGV[b + 13])
    if queue then redis.call('HSET', key, 'queue', queue) end
    local lr, lj = opt(ARGV[b + 10]), opt(ARGV[b + 11])
    if lr then redis.call('HSET', key, 'last_run_at', lr) end
    if lj then redis.call('HSET', key, 'last_job_id', lj) end
    redis.call('ZADD', P .. 'crons', 0, name)
  else
    local old = redis.call('HMGET', key, 'expr', 'timezone')
    local moved = old[1] ~= ARGV[b + 1] or old[2] ~= ARGV[b + 2]
    redis.call('HSET', key, 'expr', ARGV[b + 1], 'timezone', ARGV[b + 2],
      'job_name', ARGV[b + 3], 'payload', ARGV[b + 4], 'misfire', ARGV[b + 6],
      'misfire_grace', ARGV[b + 7], 'updated_at', now)
    set_or_del(key, 'queue', queue)
    if moved then redis.call('HSET', key, 'next_run_at', ARGV[b + 9]) end
  end
end
return 1
