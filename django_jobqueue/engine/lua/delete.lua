--[[
  Delete a job wherever it is. With a claim token (job.delete() from its
  handler) only the current claim may do it; without one (admin, shell) any
  job that is not running may be deleted: a running job is refused, since
  its worker would go on and could not finish it. The id leaves whichever
  list holds it (an expired job is on none).

  KEYS[1] job (the job's hash)   KEYS[2] pending    KEYS[3] scheduled
  KEYS[4] processing  KEYS[5] leases     KEYS[6] completed  KEYS[7] failed
  KEYS[8] deadlines   KEYS[9] unique     KEYS[10] stats     KEYS[11] events
  KEYS[12] claiming   KEYS[13] worker_jobs_prefix

  ARGV[1] now ms (0 = server clock)  ARGV[2] id  ARGV[3] claim_token ("" = none)

  Returns 1 deleted, 0 no such job, -1 not our claim, or running when no
  token was given.
  Events: deleted.
]]
--@include _lib
--@include _jobs

local job_key = KEYS[1]
local id = ARGV[2]
local cur = redis.call('HMGET', job_key, 'status', 'claim_token', 'name', 'queue', 'attempts')
if not cur[1] then return 0 end
local st = cur[1]
if ARGV[3] ~= '' then
  if st ~= 'processing' or cur[2] ~= ARGV[3] then return -1 end
elseif st == 'processing' then
  return -1
end
-- The shared keys this may write, checked first (see _lib.check_types).
local bad = check_types({KEYS[2], 'list', KEYS[3], 'zset', KEYS[4], 'list', KEYS[5], 'zset',
  KEYS[6], 'list', KEYS[7], 'list', KEYS[8], 'zset', KEYS[9], 'hash', KEYS[10], 'hash', KEYS[12], 'list'})
if bad then return bad end
local now = now_ms(ARGV[1])
if st == 'pending' then
  redis.call('LREM', KEYS[2], 1, id)
  redis.call('LREM', KEYS[12], 1, id)
elseif st == 'scheduled' then
  redis.call('ZREM', KEYS[3], id)
elseif st == 'processing' then
  redis.call('LREM', KEYS[4], -1, id)
  redis.call('ZREM', KEYS[5], id)
  drop_owner(KEYS[13], job_key, id)
elseif st == 'completed' or st == 'cancelled' then
  redis.call('LREM', KEYS[6], 1, id)
elseif st ~= 'expired' then
  -- The dead letter holds every other finished status: failed, lost (an
  -- at-most-once job cut off, _jobs.dead_letter). Left there, the id would
  -- count in the failed depth until a sweep reached it at the tail.
  redis.call('LREM', KEYS[7], 1, id)
end
redis.call('ZREM', KEYS[8], id)
release_unique(KEYS[9], job_key, id)
redis.call('DEL', job_key)
redis.call('HINCRBY', KEYS[10], 'deleted', 1)
emit(KEYS[11], id, 'deleted', 'deleted', {cur[3], cur[4], cur[5]}, now)
return 1
