--[[
  Move scheduled jobs that are due onto the pending list.

  KEYS[1] scheduled  KEYS[2] pending  KEYS[3] events  KEYS[4] job_prefix
  ARGV[1] now ms (0 = server clock)  ARGV[2] limit: most jobs per call

  Returns {number moved, ms until the next scheduled job is due or -1}.
  Events: promoted.
]]
--@include _lib
--@include _jobs
--@include _promote

local now = now_ms(ARGV[1])
local moved = promote(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now, tonumber(ARGV[2]))
local next_due = -1
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[2] then next_due = math.max(0, tonumber(head[2]) - now) end
return {moved, next_due}
