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
  ARGV[6] hash TTL seconds of a job dropped as expired (0 = keep)
  ARGV[7] how many jobs to claim (absent or 0: one, returned unnested)

  Returns the job hash as a flat field/value array (or, with ARGV[7], a list
  of up to that many such arrays, each with its own claim token), false (or an
  empty list) when nothing is pending, or {"paused"} when the queue is paused
  for claiming. Ids without a hash and jobs past their TTL are dropped on the
  way (at most 100 per call beyond the jobs claimed, so one call stays short).
  A shared key of the wrong type is an error before anything is changed.
  Events: promoted, started; expired for jobs dropped by TTL.
]]
--@include _lib
--@include _promote
--@include _stamp

if claims_paused() then return {'paused'} end
local bad = check_types({KEYS[1], 'list', KEYS[2], 'list', KEYS[3], 'zset', KEYS[4], 'zset',
  KEYS[5], 'zset', KEYS[6], 'hash', KEYS[9], 'hash'})
if bad then return bad end
local now = now_ms(ARGV[1])
local want = tonumber(ARGV[7]) or 0
promote(KEYS[4], KEYS[1], KEYS[7], KEYS[8], now, tonumber(ARGV[5]) or 100)
local batch = {}
for _ = 1, 100 + want do
  local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not id then break end
  -- One random token per call, made unique per job of a batch by a suffix.
  local token = ARGV[2]
  if want > 0 then token = ARGV[2] .. '.' .. (#batch + 1) end
  local job = stamp(id, now, token, tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[6]) or 0)
  if job then
    if want == 0 then return job end
    table.insert(batch, job)
    if #batch >= want then break end
  end
end
if want == 0 then return false end
return batch
