--[[
  Stamp a job that BLMOVE moved from pending onto the claiming list.

  The blocking claim cannot run inside a script, so the worker does BLMOVE
  pending -> claiming, then this. If the worker dies in between, the id waits
  on the small claiming list, where reclaim.lua finds it without scanning the
  processing list, and times it from when a sweep first saw it (not from
  enqueued_at_ms, which would make a job that waited long in pending look
  overdue the moment it was moved). If a sweep already handed the id back,
  LREM finds nothing and this refuses: the worker must not run it.

  KEYS: as claim.lua.
  ARGV[1] now ms  ARGV[2] claim token  ARGV[3] visibility ms  ARGV[4] worker id
  ARGV[5] job id  ARGV[6] hash TTL seconds of a job dropped as expired (0 = keep)

  Returns the job hash (flat array), false when the job is not ours to run
  (reclaimed meanwhile, an orphan id, or expired by TTL), or {"paused"} when
  the queue was paused for claiming while we blocked: the id goes back to the
  head of pending.
  Events: started; expired.
]]
--@include _lib
--@include _stamp

local now = now_ms(ARGV[1])
local id = ARGV[5]
if redis.call('LREM', KEYS[10], 1, id) == 0 then
  return false
end
redis.call('HDEL', KEYS[11], id)
if claims_paused() then
  redis.call('RPUSH', KEYS[1], id)
  return {'paused'}
end
redis.call('LPUSH', KEYS[2], id)
return stamp(id, now, ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[6]) or 0)
