--[[
  Replay a finished job (dead-lettered, lost, expired or completed): back to the
  pending list with a fresh attempt budget. Its error log, result and
  additional_deliveries stay on the hash, so the replay keeps its history.

  KEYS[1] job hash  KEYS[2] pending  KEYS[3] completed  KEYS[4] failed
  KEYS[5] stats     KEYS[6] events   KEYS[7] unique     KEYS[8] deadlines

  ARGV[1] now ms (0 = server clock)  ARGV[2] id

  Returns 1 replayed, 0 no such job, -1 the job is not finished (nothing changed).
  Events: requeued (status pending).
]]
--@include _lib
--@include _jobs

local job_key = KEYS[1]
local id = ARGV[2]
local cur = redis.call('HMGET', job_key, 'status', 'name', 'queue', 'attempts', 'unique_key')
if not cur[1] then return 0 end
local st = cur[1]
if st ~= 'failed' and st ~= 'lost' and st ~= 'expired' and st ~= 'completed' then return -1 end
-- The shared keys this may write, checked first (see _lib.check_types).
local bad = check_types({KEYS[2], 'list', KEYS[3], 'list', KEYS[4], 'list', KEYS[5], 'hash',
  KEYS[7], 'hash', KEYS[8], 'zset'})
if bad then return bad end
local now = now_ms(ARGV[1])
if st == 'failed' or st == 'lost' then redis.call('LREM', KEYS[4], 1, id) end
if st == 'completed' then redis.call('LREM', KEYS[3], 1, id) end
-- A replay must not outlive the job's own clean-up or its old TTL.
redis.call('PERSIST', job_key)
redis.call('HDEL', job_key, 'expires_at_ms')
redis.call('ZREM', KEYS[8], id)
local replays = redis.call('HINCRBY', job_key, 'replays', 1)
redis.call('HSET', job_key, 'status', 'pending', 'attempts', '0', 'claim_token', '',
  'replayed_at_ms', int(now))
if cur[5] and cur[5] ~= '' and not redis.call('HGET', KEYS[7], cur[5]) then
  redis.call('HSET', KEYS[7], cur[5], id)
end
redis.call('LPUSH', KEYS[2], id)
redis.call('HINCRBY', KEYS[5], 'replayed', 1)
emit(KEYS[6], id, 'requeued', 'pending', {cur[2], cur[3], 0}, now, {replays = replays})
return 1
