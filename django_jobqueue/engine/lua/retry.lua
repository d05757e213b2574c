--[[
  Replay a finished job (dead-lettered, lost, expired, completed or cancelled): back to the
  pending list with a fresh attempt budget. Its error log, result and
  additional_deliveries stay on the hash, so the replay keeps its history.
  A job with a unique key is unfinished again once replayed, so it must hold
  its key again, as enqueue.lua would make it: it takes the key when no
  unfinished job holds it, and is refused when another one does (two
  unfinished holders of one key would defeat the key).

  KEYS[1] job (the job's hash)  KEYS[2] pending  KEYS[3] completed  KEYS[4] failed
  KEYS[5] stats     KEYS[6] events   KEYS[7] unique     KEYS[8] deadlines
  KEYS[9] job_prefix (to look up a unique key's holder)

  ARGV[1] now ms (0 = server clock)  ARGV[2] id

  Returns 1 replayed, 0 no such job, -1 the job is not finished, -2 another
  unfinished job holds its unique key (nothing changed in either case).
  Events: requeued (status pending).
]]
--@include _lib
--@include _jobs

local job_key = KEYS[1]
local id = ARGV[2]
local cur = redis.call('HMGET', job_key, 'status', 'name', 'queue', 'attempts', 'unique_key')
if not cur[1] then return 0 end
local st = cur[1]
if st ~= 'failed' and st ~= 'lost' and st ~= 'expired' and st ~= 'completed' and st ~= 'cancelled' then
  return -1
end
-- The shared keys this may write, checked first (see _lib.check_types).
local bad = check_types({KEYS[2], 'list', KEYS[3], 'list', KEYS[4], 'list', KEYS[5], 'hash',
  KEYS[7], 'hash', KEYS[8], 'zset'})
if bad then return bad end
local unique = cur[5]
if unique and unique ~= '' then
  -- As enqueue.lua decides: a holder that is gone or finished holds nothing.
  local holder = redis.call('HGET', KEYS[7], unique)
  if holder and holder ~= id then
    local held = redis.call('HGET', KEYS[9] .. holder, 'status')
    if held == 'pending' or held == 'scheduled' or held == 'processing' then return -2 end
  end
end
local now = now_ms(ARGV[1])
if st == 'failed' or st == 'lost' then redis.call('LREM', KEYS[4], 1, id) end
if st == 'completed' or st == 'cancelled' then redis.call('LREM', KEYS[3], 1, id) end
-- A replay must not outlive the job's own clean-up or its old TTL.
redis.call('PERSIST', job_key)
redis.call('HDEL', job_key, 'expires_at_ms')
-- A replay runs: a cancellation asked of an earlier run is not its worker's to obey.
redis.call('HDEL', job_key, 'cancel_requested_ms', 'cancelled_at_ms')
redis.call('ZREM', KEYS[8], id)
local replays = redis.call('HINCRBY', job_key, 'replays', 1)
redis.call('HSET', job_key, 'status', 'pending', 'attempts', '0', 'claim_token', '',
  'replayed_at_ms', int(now))
if unique and unique ~= '' then redis.call('HSET', KEYS[7], unique, id) end
redis.call('LPUSH', KEYS[2], id)
redis.call('HINCRBY', KEYS[5], 'replayed', 1)
emit(KEYS[6], id, 'requeued', 'pending', {cur[2], cur[3], 0}, now, {replays = replays})
return 1
