--[[
  Cancel a job (cancel(job_id), the admin, jobq_jobs cancel): no claim token,
  anyone may ask.
  A job that waits (pending; scheduled: delayed, or waiting out a retry's
  backoff) ends here, at once, and never runs: off its list, its TTL deadline
  and unique key released, status "cancelled", onto the completed history
  (HISTORY and CLEANUP's completed TTL keep it as they keep completed jobs).
  A claimed job (processing: running, or claimed ahead and not started yet)
  is its worker's to end, so it is only asked: cancel_requested_ms on its
  hash, and its id published on the cancels channel. The worker tells the
  handler (job.cancelled), or drops the job if it has not started; it ends
  the job "cancelled" (complete.lua). A worker that claims a job whose hash
  already holds the request (handed back meanwhile) ends it without running it.
  A finished job (completed, failed, lost, expired, cancelled) is left as is.

  KEYS[1] job (the job's hash)  KEYS[2] pending  KEYS[3] scheduled  KEYS[4] claiming
  KEYS[5] completed  KEYS[6] deadlines  KEYS[7] unique  KEYS[8] stats
  KEYS[9] events     KEYS[10] cancels   KEYS[11] job_prefix

  ARGV[1] now ms (0 = server clock)  ARGV[2] id
  ARGV[3] completed_ttl: hash TTL seconds (0 = keep)
  ARGV[4] history: finished jobs the completed list keeps (HISTORY; -1 = no
          count bound, 0 = none: the hash is deleted at once)

  Returns 1 cancelled now, 2 requested (a claimed job: its worker is told),
  3 requested already (nothing changed; its worker is told again), 0 no such job, -1 the job has
  finished (nothing changed).
  A shared key of the wrong type is an error before anything is changed.
  Events: cancelled (status cancelled); cancel_requested (status processing).
]]
--@include _lib
--@include _jobs

local job_key = KEYS[1]
local id = ARGV[2]
local cur = redis.call('HMGET', job_key, 'status', 'name', 'queue', 'attempts', 'cancel_requested_ms', 'worker')
if not cur[1] then return 0 end
local st = cur[1]
if st ~= 'pending' and st ~= 'scheduled' and st ~= 'processing' then return -1 end
local now = now_ms(ARGV[1])
local meta = {cur[2], cur[3], cur[4]}

if st == 'processing' then
  local again = cur[5] ~= false
  if not again then
    redis.call('HSET', job_key, 'cancel_requested_ms', int(now))
    emit(KEYS[9], id, 'cancel_requested', 'processing', meta, now, {worker = cur[6]})
  end
  -- Always published (a handful of bytes, rarely): the workers listen on it.
  -- Published again when asked again: the first message may have been lost
  -- (its worker's listener reconnecting). Sharded in a cluster, like the
  -- events (_lib.emit).
  if not string.find(KEYS[10], '{', 1, true) or type(redis.pcall('SPUBLISH', KEYS[10], id)) ~= 'number' then
    redis.call('PUBLISH', KEYS[10], id)
  end
  if again then return 3 end
  return 2
end

-- The shared keys this writes, checked first (see _jobs.check_types).
local bad = check_types({KEYS[2], 'list', KEYS[3], 'zset', KEYS[4], 'list', KEYS[5], 'list',
  KEYS[6], 'zset', KEYS[7], 'hash', KEYS[8], 'hash'})
if bad then return bad end
if st == 'pending' then
  -- Not on pending: a worker's BLMOVE took it and its stamp has not landed;
  -- that stamp finds it gone, or cancelled, and hands out nothing.
  if redis.call('LREM', KEYS[2], 1, id) == 0 then redis.call('LREM', KEYS[4], 1, id) end
else
  redis.call('ZREM', KEYS[3], id)
end
redis.call('ZREM', KEYS[6], id)
release_unique(KEYS[7], job_key, id)
local now_text = int(now)
redis.call('HSET', job_key, 'status', 'cancelled', 'cancel_requested_ms', now_text, 'cancelled_at_ms', now_text,
  'claim_token', '')
local cap = tonumber(ARGV[4]) or 0
if cap == 0 then
  redis.call('DEL', job_key)  -- HISTORY 0: no finished job is kept
else
  local ttl = tonumber(ARGV[3]) or 0
  if ttl > 0 then redis.call('EXPIRE', job_key, ttl) end
  -- As complete.lua: ids pushed past HISTORY leave with their hashes.
  local len = redis.call('LPUSH', KEYS[5], id)
  if cap > 0 and len > cap then
    local gone = {}
    for _, old in ipairs(redis.call('RPOP', KEYS[5], math.min(len - cap, 1001))) do
      local s = redis.pcall('HGET', KEYS[11] .. old, 'status')
      if s == 'completed' or s == 'cancelled' then gone[#gone + 1] = KEYS[11] .. old end
    end
    if #gone > 0 then redis.call('DEL', unpack(gone)) end
  end
end
redis.call('HINCRBY', KEYS[8], 'cancelled', 1)
emit(KEYS[9], id, 'cancelled', 'cancelled', meta, now, {ran = false})
return 1
