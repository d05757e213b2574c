--[[
  Housekeeping that is due by the clock: drop jobs past their TTL wherever
  they wait, pop history ids whose hash CLEANUP has already expired, and keep
  the completed and failed lists within their count bounds (HISTORY,
  FAILED_HISTORY): the oldest ids past a bound leave the list and their hashes
  are deleted, so no finished hash outlives the list that leads to it.

  KEYS[1] deadlines  KEYS[2] pending  KEYS[3] scheduled  KEYS[4] processing
  KEYS[5] leases     KEYS[6] unique   KEYS[7] stats      KEYS[8] events
  KEYS[9] completed  KEYS[10] failed  KEYS[11] job_prefix
  KEYS[12] worker_jobs_prefix  KEYS[13] claiming  KEYS[14] unstamped

  ARGV[1] now ms (0 = server clock)  ARGV[2] limit: most jobs per call
  ARGV[3] expired_ttl: hash TTL seconds for expired jobs (CLEANUP's
          EXPIRED_AFTER_SECONDS; 0 = keep). No list holds an expired job, so
          purge cannot reach its hash: kept, it would stay until deleted by id.
  ARGV[4] history: completed jobs kept (HISTORY; -1 = no count bound)
  ARGV[5] failed_history: dead letters kept (FAILED_HISTORY; -1 = no count bound)

  Returns {expired ids, history ids dropped (their hash had expired),
  completed jobs trimmed past HISTORY (a count), dead letters dropped past
  FAILED_HISTORY (their ids)}. Each list loses at most `limit` ids a call.
  Counters: dropped_failed (dead letters dropped past FAILED_HISTORY).
  Events: expired.
]]
--@include _lib
--@include _jobs

local now = now_ms(ARGV[1])
local limit = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3]) or 0
local expired = {}

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local job_key = KEYS[11] .. id
  local meta = redis.call('HMGET', job_key, 'name', 'queue', 'attempts', 'status')
  local st = meta[4]
  if st == 'pending' or st == 'scheduled' or st == 'processing' then
    -- LREM is O(list) but runs once per expired job, never per sweep.
    if st == 'pending' and redis.call('LREM', KEYS[2], 1, id) == 0 then
      -- Not on pending: a worker's BLMOVE took it and died before its stamp.
      redis.call('LREM', KEYS[13], 1, id)
      redis.call('HDEL', KEYS[14], id)
    end
    if st == 'scheduled' then redis.call('ZREM', KEYS[3], id) end
    if st == 'processing' then
      redis.call('LREM', KEYS[4], -1, id)
      redis.call('ZREM', KEYS[5], id)
      drop_owner(KEYS[12], job_key, id)
    end
    release_unique(KEYS[6], job_key, id)
    redis.call('HSET', job_key, 'status', 'expired', 'finished_at_ms', int(now), 'claim_token', '')
    redis.call('HDEL', job_key, 'lease_until_ms')
    if ttl > 0 then redis.call('EXPIRE', job_key, ttl) end
    redis.call('HINCRBY', KEYS[7], 'expired', 1)
    emit(KEYS[8], id, 'expired', 'expired', meta, now)
    table.insert(expired, id)
  end
end

-- History lists hold ids oldest at the right; hashes expire oldest first.
local dropped = {}
for _, list in ipairs({KEYS[9], KEYS[10]}) do
  for _ = 1, limit do
    local id = redis.call('LINDEX', list, -1)
    if not id or redis.call('EXISTS', KEYS[11] .. id) == 1 then break end
    redis.call('RPOP', list)
    table.insert(dropped, id)
  end
end

-- Count bounds. complete.lua keeps the completed list within HISTORY as jobs
-- complete; this catches up after HISTORY was lowered on a queue where nothing
-- completes. Dead letters are written by several scripts (fail, reclaim, the
-- lost-worker sweep), so the failed list is bounded here only: it may exceed
-- FAILED_HISTORY by what fails between two sweeps. Only a hash of the list's
-- statuses is deleted: an id whose hash CLEANUP expired may name a newer job
-- by now (an id chosen by the caller).
local function trim(list, bound, statuses)
  local gone = {}
  if bound < 0 then return gone end
  local over = math.min(redis.call('LLEN', list) - bound, limit)
  if over <= 0 then return gone end
  for _, id in ipairs(redis.call('RPOP', list, over)) do
    local job_key = KEYS[11] .. id
    if statuses[redis.pcall('HGET', job_key, 'status')] then
      redis.call('DEL', job_key)
      table.insert(gone, id)
    end
  end
  return gone
end
local trimmed = trim(KEYS[9], tonumber(ARGV[4]) or -1, {completed = true, cancelled = true})
local dead = trim(KEYS[10], tonumber(ARGV[5]) or -1, {failed = true, lost = true})
if #dead > 0 then redis.call('HINCRBY', KEYS[7], 'dropped_failed', #dead) end
return {expired, dropped, #trimmed, dead}
