-- One bounded step of rescue: up to `chunk` entries of `running` after the cursor (with
-- revoke = '0', only those whose lease expired before now). A job whose lease expired, or
-- (revoke = '1') whose worker's row says it is dead or stopped, is retried or failed with a
-- dead-letter entry (ids given; when they run out the step ends early). Returns 1 and the
-- cursor to go on from, or 0 at the end, and the rescued jobs.
-- ARGV: prefix, now, revoke ('1' / '0'), cursor ('' / '=...'), chunk, ndlq, dlq ids...
local now, revoke, cursor, chunk = ARGV[2], ARGV[3] == '1', opt(ARGV[4]), tonumber(ARGV[5])
local nowf = tonumber(now)
local ndlq = tonumber(ARGV[6])
local dlq0 = 6
local r = zchunk(P .. 'running', cursor, '-inf', chunk)
local out, used, last, stop = {}, 0, ARGV[4], nil
for i = 1, #r, 2 do
  local id = r[i]
  if not revoke and tonumber(r[i + 1]) >= nowf then
    stop = 'end'
    break
  end
  local key = P .. 'job:' .. id
  local j = hgetall(key)
  if j.state ~= 'running' then
    redis.call('ZREM', P .. 'running', id)
  else
    local err = nil
    local state = nil
    if j.worker_id then
      state = redis.call('HGET', P .. 'worker:' .. j.worker_id, 'state')
    end
    local expired = j.lease_expires_at and tonumber(j.lease_expires_at) < nowf
    -- why it is taken back, by what its worker's row says: a crash reads as a crash
    if state == 'dead' and (revoke or expired) then
      err = 'worker ' .. j.worker_id .. ' died: it sent no heartbeat within the worker timeout'
    elseif state == 'stopped' and (revoke or expired) then
      err = 'worker ' .. j.worker_id .. ' stopped or restarted without finishing the job'
    elseif expired then
      err = 'worker ' .. (j.worker_id or '?') ..
        ' died or stalled: its lease expired without a heartbeat'
    end
    if err then
      local fail = tonumber(j.attempt) >= tonumber(j.max_attempts)
      if fail and used >= ndlq then
        stop = 'more'
        break
      end
      end_running(key, id, j.queue, j.tenant, now)
      redis.call('HSET', key, 'last_error', err)
      if fail then
        used = used + 1
        redis.call('HSET', key, 'state', 'failed', 'finished_at', now)
        move_state(id, 'running', 'failed')
        done_add(id, 'failed', j.queue, j.tenant, now)
        dead_letter(hgetall(key), ARGV[dlq0 + used], err, now)
      else
        redis.call('HSET', key, 'state', 'retrying', 'run_at', now)
        move_state(id, 'running', 'retrying')
        make_runnable(id, j.queue, j.priority, now, now)
      end
      out[#out + 1] = redis.call('HGETALL', key)
    end
  end
  last = zcursor(id, r[i + 1])
end
if #out > 0 then wake() end
if stop == 'more' then return {1, last, out} end
if stop == nil and #r == 2 * chunk then return {1, last, out} end
return {0, '', out}
