--[[
  Claim the next pending job without blocking: promote due scheduled jobs,
  LMOVE the oldest pending id onto the processing list, and stamp it (claim
  token, claimed_at_ms, attempts + 1, lease) in the same script, so a claim
  under load costs one round trip and leaves no moved-but-unstamped window.
  The worker falls back to BLMOVE + stamp.lua only when this finds nothing.

  KEYS[1] pending   KEYS[2] processing  KEYS[3] leases    KEYS[4] scheduled
  KEYS[5] deadlines KEYS[6] stats       KEYS[7] events    KEYS[8] job prefix
  KEYS[9] unique    KEYS[10] claiming   KEYS[11] unstamped
  KEYS[12] worker-jobs prefix  KEYS[13] paused

  ARGV[1] now ms (0 = server clock)  ARGV[2] claim token  ARGV[3] visibility ms
  ARGV[4] worker id                  ARGV[5] max scheduled jobs to promote

  Returns the job hash as a flat field/value array, false when nothing is
  pending, or {"paused"} when the queue is paused for claiming. Ids without a hash and jobs past their TTL are dropped on the way
  (at most 100 per call, so one call stays short).
  Events: promoted, started; expired for jobs dropped by TTL.
]]
--@include _lib
--@include _promote
--@include _stamp

if claims_paused() then return {'paused'} end
local now = now_ms(ARGV[1])
promote(KEYS[4], KEYS[1], KEYS[7], KEYS[8], now, tonumber(ARGV[5]) or 100)
for _ = 1, 100 do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not id then return false end
  local job = stamp(id, now, ARGV[2], tonumber(ARGV[3]), ARGV[4])
  if job then return job end
end
return false
