--[[
  Record how far a running job has got, reported by its handler: a fraction
  in 0..1 and a short message, kept on the job hash (`progress`,
  `progress_message`, `progress_at_ms`, `progress_attempt`: the run that
  reported it) until the next report, and announced as a `progress` event.
  Only the current claim may report: a worker whose claim was lost changes
  nothing. The worker limits how often it sends this (worker/job.py).

  KEYS[1] job (the job's hash)  KEYS[2] events
  ARGV[1] now ms (0 = server clock)  ARGV[2] id  ARGV[3] claim_token
  ARGV[4] fraction: a decimal in 0..1 (checked by the caller, and again here)
  ARGV[5] message: text, capped by the caller ("" = none)

  Returns 1 recorded, 0 no such job, -1 not our claim (no longer processing,
  or another claim's token). An error reply for a fraction out of 0..1.
  Events: progress (with `progress` and `message`).
]]
--@include _lib

local fraction = tonumber(ARGV[4])
-- `fraction ~= fraction`: NaN, which every comparison below lets through.
if not fraction or fraction ~= fraction or fraction < 0 or fraction > 1 then
  return redis.error_reply('ERR progress: the fraction must be a number from 0 to 1, not ' .. tostring(ARGV[4]))
end
local cur = redis.call('HMGET', KEYS[1], 'status', 'claim_token', 'name', 'queue', 'attempts')
if not cur[1] then return 0 end
if cur[1] ~= 'processing' or cur[2] ~= ARGV[3] then return -1 end
local now = now_ms(ARGV[1])
redis.call('HSET', KEYS[1], 'progress', ARGV[4], 'progress_message', ARGV[5], 'progress_at_ms', int(now),
  'progress_attempt', cur[5] or '0')
emit(KEYS[2], ARGV[2], 'progress', 'processing',
  {cur[3], cur[4], cur[5]}, now, {progress = fraction, message = ARGV[5]})
return 1
