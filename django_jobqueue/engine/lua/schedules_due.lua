--[[
  The schedules of a queue that a scheduler should act on now, by the Redis
  server's clock: those whose next tick has come, and those owing a run
  (overlap "queue") whose last run has finished. Reads only; the scheduler
  then calls tick.lua for each.

  KEYS[1] schedules   KEYS[2] schedules_owed   KEYS[3] schedule_prefix   KEYS[4] job_prefix

  ARGV[1] now ms (0 = server clock)   ARGV[2] limit: at most this many due schedules

  Returns {now, {name, next_ms, ...}, {owed name, ...}}.
]]
--@include _lib

local now = now_ms(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local ready = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local last = redis.call('HGET', KEYS[3] .. name, 'last_job')
  local status = last and redis.call('HGET', KEYS[4] .. last, 'status')
  if not status or status == 'completed' or status == 'failed' or status == 'expired' or status == 'lost'
    or status == 'cancelled' then
    table.insert(ready, name)
  end
end
return {int(now), due, ready}
