--[[
  Record a failed attempt of a claimed job, then retry it or dead-letter it.

  KEYS[1] job (the job's hash)  KEYS[2] processing  KEYS[3] pending
  KEYS[4] scheduled  KEYS[5] failed      KEYS[6] leases     KEYS[7] deadlines
  KEYS[8] unique     KEYS[9] stats       KEYS[10] events    KEYS[11] worker_jobs_prefix
  KEYS[12] slots_freed  KEYS[13] key_holders_prefix  KEYS[14] key_waiting_prefix
  KEYS[15] waiting_keys  KEYS[16] job_prefix

  ARGV[1] now ms (0 = server clock)  ARGV[2] id  ARGV[3] claim_token
  ARGV[4] error text  ARGV[5] traceback text ("" = none)
  ARGV[6] retry_delay_ms when retried (0 = straight back to pending)
  ARGV[7] mode: "auto" retries while attempts < max_attempts (0 = unlimited)
          unless the job is at-most-once, "terminal" dead-letters now, "lost"
          dead-letters with status lost (an at-most-once job whose run was cut off)
  ARGV[8] failed_ttl: hash TTL seconds once dead-lettered (0 = keep)

  Returns 1 retrying, 2 dead-lettered (failed list), 0 no such job,
  -1 the token is not the current claim's: nothing changed.
  Events: started (a job claimed ahead whose start was not recorded yet);
  retrying (status pending or scheduled), failed, lost; all carry "error".
]]
--@include _lib
--@include _jobs

local job_key = KEYS[1]
local id = ARGV[2]
local cur = redis.call('HMGET', job_key, 'status', 'claim_token', 'name', 'queue',
  'attempts', 'max_attempts', 'delivery', 'started', 'slot', 'concurrency_key')
if not cur[1] then return 0 end
if cur[1] ~= 'processing' or cur[2] ~= ARGV[3] then return -1 end
-- The shared keys this may write, checked first: Redis keeps what a script
-- wrote before a failing command, so a key of the wrong type met half way
-- could leave the job on no list (see _lib.check_types).
local bad = check_types({KEYS[2], 'list', KEYS[3], 'list', KEYS[4], 'zset', KEYS[5], 'list',
  KEYS[6], 'zset', KEYS[7], 'zset', KEYS[8], 'hash', KEYS[9], 'hash', KEYS[12], 'list', KEYS[15], 'zset'})
if bad then return bad end

local now = now_ms(ARGV[1])
-- A job claimed ahead whose start rode on nothing yet: this attempt counts.
local attempts, began = start_run(job_key, ARGV[3], cur[8], cur[5])
local meta = {cur[3], cur[4], attempts}
if began and has_audience(KEYS[10]) then
  emit(KEYS[10], id, 'started', 'processing', meta, now, {worker = redis.call('HGET', job_key, 'worker')})
end
local max_attempts = tonumber(cur[6]) or 0
local err = ARGV[4]

redis.call('LREM', KEYS[2], -1, id)
redis.call('ZREM', KEYS[6], id)
drop_owner(KEYS[11], job_key, id)
redis.call('HSET', job_key, 'last_error', err, 'last_traceback', ARGV[5],
  'failed_at_ms', int(now), 'claim_token', '')
redis.call('HDEL', job_key, 'lease_until_ms', 'slot')
if cur[9] then free_slots(KEYS[12], 1) end
release_key(KEYS[13], KEYS[14], KEYS[15], KEYS[3], KEYS[16], id, cur[10])
log_error(job_key, {attempt = attempts, error = err, ts_ms = now}, 10)

local retry = ARGV[7] == 'auto' and cur[7] ~= 'at-most-once'
  and (max_attempts == 0 or attempts < max_attempts)
if retry then
  local delay = tonumber(ARGV[6]) or 0
  local status = 'pending'
  if delay > 0 then
    status = 'scheduled'
    redis.call('ZADD', KEYS[4], now + delay, id)
    redis.call('HSET', job_key, 'status', status, 'run_at_ms', int(now + delay))
  else
    redis.call('HSET', job_key, 'status', status)
    redis.call('LPUSH', KEYS[3], id)
  end
  redis.call('HINCRBY', KEYS[9], 'retried', 1)
  emit(KEYS[10], id, 'retrying', status, meta, now, {error = err, retry_at_ms = now + delay})
  return 1
end

local status = 'failed'
if ARGV[7] == 'lost' then status = 'lost' end
dead_letter(job_key, id, KEYS[5], KEYS[7], KEYS[8], KEYS[9], KEYS[10], meta, now, status, err,
  tonumber(ARGV[8]) or 0)
return 2
