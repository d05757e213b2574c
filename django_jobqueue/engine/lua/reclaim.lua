--[[
  Hand jobs whose lease ran out back to pending (at-least-once delivery).

  Only ids whose lease deadline has passed are read (ZRANGEBYSCORE on the
  lease set), so a sweep costs O(log n + due), not O(jobs in flight).
  A job whose attempts are used up, or that was redelivered more than its
  max_deliveries, is dead-lettered instead of run again, so a job that kills
  its worker every time cannot loop forever. An at-most-once job is never
  handed out again: it is dead-lettered with status "lost".
  Two cases come first: a job whose TTL has passed ends "expired" (once,
  whether it had started or not), and a job that was claimed ahead but never
  started (its "started" field does not hold the claim's token) goes back to
  the head of pending with no attempt used, in either delivery mode: as far
  as Redis knows it never ran (its additional_deliveries counts the lost
  claim, but never dead-letters it).
  Ids stuck on the claiming list (a worker died between BLMOVE and its stamp)
  are timed from the first sweep that saw them, and handed back after
  2 x visibility. The jobs of named workers (whose heartbeat lapsed, or that
  restarted) are reclaimed at once, found through each worker's set of job ids.

  KEYS[1] pending    KEYS[2] processing  KEYS[3] leases     KEYS[4] claiming
  KEYS[5] unstamped  KEYS[6] failed      KEYS[7] deadlines  KEYS[8] unique
  KEYS[9] stats      KEYS[10] events     KEYS[11] job_prefix
  KEYS[12] worker_jobs_prefix  KEYS[13] slots_freed
  KEYS[14] key_holders_prefix  KEYS[15] key_waiting_prefix  KEYS[16] waiting_keys

  ARGV[1] now ms (0 = server clock)  ARGV[2] visibility_ms  ARGV[3] limit: most ids per call
  ARGV[4] failed_ttl: hash TTL seconds for dead-lettered jobs (0 = keep)
  ARGV[5] expired_ttl: hash TTL seconds for expired jobs (0 = keep)
  ARGV[6..] worker_ids: workers whose running jobs are reclaimed now, whatever their lease

  Returns {reclaimed ids, dead-lettered ids, expired ids}.
  Events: reclaimed (status pending), failed, lost, expired.
]]
--@include _lib
--@include _jobs

-- The shared keys this may write, checked first (see _lib.check_types): a
-- sweep that stopped half way could leave a job on no list.
local bad = check_types({KEYS[1], 'list', KEYS[2], 'list', KEYS[3], 'zset', KEYS[4], 'list',
  KEYS[5], 'hash', KEYS[6], 'list', KEYS[7], 'zset', KEYS[8], 'hash', KEYS[9], 'hash', KEYS[13], 'list', KEYS[16], 'zset'})
if bad then return bad end

local now = now_ms(ARGV[1])
local visibility = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local failed_ttl = tonumber(ARGV[4]) or 0
local expired_ttl = tonumber(ARGV[5]) or 0
local reclaimed, dead, expired = {}, {}, {}

local function give_back(id, job_key, meta, reason, started, expires)
  if expires and expires <= now then
    mark_expired(job_key, id, KEYS[7], KEYS[8], KEYS[9], KEYS[10], meta, now, expired_ttl)
    table.insert(expired, id)
    return
  end
  if not started then
    -- Counted as a delivery (its claim was lost; an at-least-once job claimed
    -- ahead may have begun before its start reached Redis), never as a reason
    -- to dead-letter: as far as Redis knows it never ran.
    redis.call('HSET', job_key, 'status', 'pending', 'claim_token', '')
    redis.call('HINCRBY', job_key, 'additional_deliveries', 1)
    redis.call('HDEL', job_key, 'lease_until_ms')
    redis.call('RPUSH', KEYS[1], id)
    redis.call('HINCRBY', KEYS[9], 'reclaimed', 1)
    emit(KEYS[10], id, 'reclaimed', 'pending', meta, now, {reason = reason .. ' (never started: no attempt used)'})
    table.insert(reclaimed, id)
    return
  end
  local attempts = tonumber(meta[3]) or 0
  local opts = redis.call('HMGET', job_key, 'max_attempts', 'delivery', 'max_deliveries', 'additional_deliveries')
  local max_attempts = tonumber(opts[1]) or 0
  local max_deliveries = tonumber(opts[3]) or 0
  local deliveries = (tonumber(opts[4]) or 0) + 1
  local verdict = nil
  if opts[2] == 'at-most-once' then
    verdict = 'lost'
    reason = 'lost: ' .. reason .. ' (at-most-once: never handed out twice)'
  elseif max_attempts > 0 and attempts >= max_attempts then
    verdict = 'failed'
  elseif max_deliveries > 0 and deliveries > max_deliveries then
    verdict = 'failed'
    reason = reason .. ' (redelivered more than max_deliveries=' .. max_deliveries .. ')'
  end
  if verdict then
    log_error(job_key, {attempt = attempts, error = reason, ts_ms = now}, 10)
    dead_letter(job_key, id, KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], meta, now, verdict, reason, failed_ttl)
    table.insert(dead, id)
    return
  end
  redis.call('HSET', job_key, 'status', 'pending', 'claim_token', '', 'last_error', reason)
  redis.call('HDEL', job_key, 'lease_until_ms')
  redis.call('HSET', job_key, 'additional_deliveries', deliveries)
  -- Back at the head of the line: it has waited its turn once already.
  redis.call('RPUSH', KEYS[1], id)
  redis.call('HINCRBY', KEYS[9], 'reclaimed', 1)
  emit(KEYS[10], id, 'reclaimed', 'pending', meta, now, {reason = reason})
  table.insert(reclaimed, id)
end

local function reclaim_claimed(id, reason)
  local job_key = KEYS[11] .. id
  remove_processing(KEYS[2], KEYS[11], id, redis.call('HGET', job_key, 'claimed_at_ms'))
  redis.call('ZREM', KEYS[3], id)
  drop_owner(KEYS[12], job_key, id)
  local meta = redis.call('HMGET', job_key, 'name', 'queue', 'attempts', 'status', 'claim_token', 'started',
    'expires_at_ms', 'slot', 'concurrency_key')
  if meta[8] then
    redis.call('HDEL', job_key, 'slot')
    free_slots(KEYS[13], 1)
  end
  release_key(KEYS[14], KEYS[15], KEYS[16], KEYS[1], KEYS[11], id, meta[9])
  if meta[4] ~= 'processing' then
    if not meta[4] then redis.call('HINCRBY', KEYS[9], 'orphans', 1) end
    return
  end
  give_back(id, job_key, {meta[1], meta[2], meta[3]}, reason, meta[6] and meta[6] == meta[5], tonumber(meta[7]))
end

-- 1. The jobs of lost workers. A set member whose hash names another worker
--    (or is no longer processing) is stale and only dropped.
for i = 6, #ARGV do
  local set = KEYS[12] .. ARGV[i]
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local cur = redis.call('HMGET', KEYS[11] .. id, 'worker', 'status')
    if cur[1] == ARGV[i] and cur[2] == 'processing' then
      reclaim_claimed(id, 'worker lost (heartbeat lapsed or restarted)')
    end
  end
  redis.call('DEL', set)
end

-- 2. Leases past their deadline.
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  reclaim_claimed(id, 'lease expired (visibility timeout)')
end

-- 3. Ids moved by BLMOVE but never stamped.
local stuck = redis.call('LRANGE', KEYS[4], 0, limit - 1)
for _, id in ipairs(stuck) do
  local first_seen = tonumber(redis.call('HGET', KEYS[5], id))
  if not first_seen then
    redis.call('HSET', KEYS[5], id, int(now))
  elseif now - first_seen >= 2 * visibility then
    redis.call('LREM', KEYS[4], 1, id)
    redis.call('HDEL', KEYS[5], id)
    local job_key = KEYS[11] .. id
    local meta = read_meta(job_key)
    if meta[1] then
      -- Never stamped, so never handed to a worker: no delivery counted.
      redis.call('RPUSH', KEYS[1], id)
      redis.call('HINCRBY', KEYS[9], 'reclaimed', 1)
      emit(KEYS[10], id, 'reclaimed', 'pending', meta, now, {reason = 'claim never stamped'})
      table.insert(reclaimed, id)
    else
      redis.call('HINCRBY', KEYS[9], 'orphans', 1)
    end
  end
end
-- Forget first-seen marks of ids that left the claiming list some other way.
if #stuck == 0 and redis.call('EXISTS', KEYS[5]) == 1 then
  redis.call('DEL', KEYS[5])
end

-- 4. Keys with jobs waiting for a slot whose holders' claims ended by a path
--    that hands no waiting job back (a delete, an expiry, an admin requeue):
--    their free slots go to waiting jobs here. Keys looked at move to the
--    back of the line (scored now), so every key's turn comes.
local looked_at = {}
if limit > 0 then looked_at = redis.call('ZRANGE', KEYS[16], 0, limit - 1) end
local stale_budget = limit  -- ids of jobs gone away dropped per sweep, all keys together
for _, key in ipairs(looked_at) do
  local waiting = KEYS[15] .. key
  local oldest = nil
  if not key_lists_usable(KEYS[14] .. key, waiting) then
    redis.call('ZREM', KEYS[16], key)  -- no limit there any more (a key of another type)
  else
    -- Ids whose job no longer waits (cancelled, deleted, expired) leave
    -- first: the oldest job still waiting says how many slots its key has.
    while stale_budget > 0 do
      oldest = redis.call('LINDEX', waiting, -1)
      if not oldest or redis.pcall('HGET', KEYS[11] .. oldest, 'status') == 'pending' then break end
      redis.call('RPOP', waiting)
      stale_budget = stale_budget - 1
      oldest = nil
    end
  end
  if not oldest then
    if redis.call('EXISTS', waiting) == 0 then redis.call('ZREM', KEYS[16], key) end
  else
    local slots = math.max(tonumber(redis.pcall('HGET', KEYS[11] .. oldest, 'concurrency')) or 1, 1)
    local free = slots - key_holders(KEYS[14] .. key, KEYS[11], key)
    if free > 0 then unpark(KEYS[15], KEYS[16], KEYS[1], KEYS[11], key, free) end
    if redis.call('ZSCORE', KEYS[16], key) then redis.call('ZADD', KEYS[16], now, key) end
  end
end

return {reclaimed, dead, expired}
