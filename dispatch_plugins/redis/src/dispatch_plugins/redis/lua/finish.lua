-- Write a batch of outcomes, each fenced by its attempt token (a terminal failure writes its
-- dead-letter entry too). Returns 1 per outcome written, 0 per lease lost.
-- ARGV: prefix, now, n, (id, token, kind, error, result, run_at, dlq_id)...
local now = ARGV[2]
local n = tonumber(ARGV[3])
local out, woke = {}, false
for i = 0, n - 1 do
  local b = 4 + i * 7
  local id, token, kind = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local key = P .. 'job:' .. id
  local h = redis.call('HMGET', key, 'state', 'attempt_token', 'queue', 'tenant', 'priority',
    'run_at', 'attempt')
  if h[1] ~= 'running' or h[2] ~= token then
    out[i + 1] = 0
  else
    local queue, tenant = h[3], h[4] or nil
    end_running(key, id, queue, tenant, now)
    if kind == 'completed' then
      redis.call('HSET', key, 'state', 'completed', 'finished_at', now)
      set_or_del(key, 'result', opt(ARGV[b + 4]))
      move_state(id, 'running', 'completed')
      done_add(id, 'completed', queue, tenant, now)
    elseif kind == 'retry' then
      local run_at = opt(ARGV[b + 5]) or now
      redis.call('HSET', key, 'state', 'retrying', 'run_at', run_at)
      set_or_del(key, 'last_error', opt(ARGV[b + 3]))
      move_state(id, 'running', 'retrying')
      make_runnable(id, queue, h[5], run_at, now)
      woke = true
    elseif kind == 'fail' then
      local err = opt(ARGV[b + 3])
      redis.call('HSET', key, 'state', 'failed', 'finished_at', now)
      set_or_del(key, 'last_error', err)
      move_state(id, 'running', 'failed')
      done_add(id, 'failed', queue, tenant, now)
      dead_letter(hgetall(key), ARGV[b + 6], err or '', now)
    else
      local att = tonumber(h[7]) - 1
      if att < 0 then att = 0 end
      local run_at = h[6]
      if tonumber(run_at) > tonumber(now) then run_at = now end
      redis.call('HSET', key, 'state', 'pending', 'attempt', f0(att), 'run_at', run_at)
      move_state(id, 'running', 'pending')
      make_runnable(id, queue, h[5], run_at, now)
      woke = true
    end
    out[i + 1] = 1
  end
end
if woke then wake() end
return out
