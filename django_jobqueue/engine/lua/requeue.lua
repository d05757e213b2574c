--[[
  Put a claimed job back to wait, by its own worker's choice: job.requeue(),
  an okay_to_run deferral, or a worker shutting down before it ran the job.

  KEYS[1] job (the job's hash)  KEYS[2] processing  KEYS[3] pending
  KEYS[4] scheduled  KEYS[5] leases     KEYS[6] stats      KEYS[7] events
  KEYS[8] worker_jobs_prefix  KEYS[9] failed  KEYS[10] deadlines  KEYS[11] unique
  KEYS[12] slots_freed  KEYS[13] key_holders_prefix  KEYS[14] key_waiting_prefix
  KEYS[15] waiting_keys  KEYS[16] job_prefix

  ARGV[1] now ms (0 = server clock)  ARGV[2] id  ARGV[3] claim_token
  ARGV[4] delay_ms (0 = pending now)
  ARGV[5] count_attempt: "1" the attempt counts (a job claimed ahead whose
          start was not recorded yet counts it now), "0" give the attempt back
          (if this claim started the job; one never started used none)
  ARGV[6] place: "front" to be claimed next, "back" to queue behind the others
  ARGV[7] event name (requeued, deferred, released, nacked); also the stats counter
  ARGV[8] counter: job hash counter to increment ("" = none; "nacks" for a nack)
  ARGV[9] error text to record as last_error ("" = none)
  ARGV[10] failed_ttl: hash TTL seconds if dead-lettered (0 = keep)

  Returns 1 done, 2 dead-lettered instead (a nack past the job's max_nacks),
  0 no such job, -1 not our claim: nothing changed.
  Events: started (a job claimed ahead whose start was not recorded yet);
  the one named by `event`, with status pending or scheduled; failed.
]]
--@include _lib
--@include _jobs

local job_key = KEYS[1]
local id = ARGV[2]
local cur = redis.call('HMGET', job_key, 'status', 'claim_token', 'name', 'queue', 'attempts', 'started', 'slot', 'concurrency_key')
if not cur[1] then return 0 end
if cur[1] ~= 'processing' or cur[2] ~= ARGV[3] then return -1 end
-- The shared keys this may write, checked first (see _lib.check_types).
local bad = check_types({KEYS[2], 'list', KEYS[3], 'list', KEYS[4], 'zset', KEYS[5], 'zset',
  KEYS[6], 'hash', KEYS[9], 'list', KEYS[10], 'zset', KEYS[11], 'hash', KEYS[12], 'list', KEYS[15], 'zset'})
if bad then return bad end
local now = now_ms(ARGV[1])
local attempts = tonumber(cur[5]) or 0
if ARGV[5] == '1' then
  local began
  attempts, began = start_run(job_key, ARGV[3], cur[6], cur[5])
  if began and has_audience(KEYS[7]) then
    emit(KEYS[7], id, 'started', 'processing', {cur[3], cur[4], attempts}, now,
      {worker = redis.call('HGET', job_key, 'worker')})
  end
elseif cur[6] == ARGV[3] and attempts > 0 then
  attempts = redis.call('HINCRBY', job_key, 'attempts', -1)
  redis.call('HDEL', job_key, 'started')
elseif ARGV[7] == 'nacked' and cur[6] ~= ARGV[3] and has_audience(KEYS[7]) then
  -- A run of a job claimed ahead, nacked before its start was recorded: it
  -- began all the same (a deferral or a hand-back is no run).
  emit(KEYS[7], id, 'started', 'processing', {cur[3], cur[4], attempts + 1}, now,
    {worker = redis.call('HGET', job_key, 'worker')})
end
redis.call('LREM', KEYS[2], -1, id)
redis.call('ZREM', KEYS[5], id)
drop_owner(KEYS[8], job_key, id)
redis.call('HSET', job_key, 'claim_token', '')
redis.call('HDEL', job_key, 'lease_until_ms', 'slot')
if cur[7] then free_slots(KEYS[12], 1) end
release_key(KEYS[13], KEYS[14], KEYS[15], KEYS[3], KEYS[16], id, cur[8])
local count = 0
if ARGV[8] ~= '' then count = redis.call('HINCRBY', job_key, ARGV[8], 1) end
if ARGV[9] ~= '' then
  redis.call('HSET', job_key, 'last_error', ARGV[9])
  log_error(job_key, {attempt = attempts, error = ARGV[9], ts_ms = now}, 10)
end
if ARGV[8] == 'nacks' then
  local max_nacks = tonumber(redis.call('HGET', job_key, 'max_nacks')) or 0
  if max_nacks > 0 and count > max_nacks then
    local reason = 'nacked ' .. count .. ' times (max_nacks=' .. max_nacks .. ')'
    if ARGV[9] ~= '' then reason = reason .. ': ' .. ARGV[9] end
    dead_letter(job_key, id, KEYS[9], KEYS[10], KEYS[11], KEYS[6], KEYS[7], {cur[3], cur[4], attempts}, now,
      'failed', reason, tonumber(ARGV[10]) or 0)
    return 2
  end
end
local delay = tonumber(ARGV[4]) or 0
local status = 'pending'
if delay > 0 then
  status = 'scheduled'
  redis.call('ZADD', KEYS[4], now + delay, id)
  redis.call('HSET', job_key, 'status', status, 'run_at_ms', int(now + delay))
else
  redis.call('HSET', job_key, 'status', status)
  if ARGV[6] == 'front' then
    redis.call('RPUSH', KEYS[3], id)
  else
    redis.call('LPUSH', KEYS[3], id)
  end
end
redis.call('HINCRBY', KEYS[6], ARGV[7], 1)
emit(KEYS[7], id, ARGV[7], status, {cur[3], cur[4], attempts}, now, {run_at_ms = now + delay})
return 1
