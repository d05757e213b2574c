--[[
  Bring one schedule's state in Redis in step with its definition (a worker
  starting, or jobq_schedules). A schedule met for the first time, or whose
  definition changed, starts from the first tick its caller computed; one
  whose definition is unchanged keeps its next tick, so a restarted worker
  neither repeats nor skips one. Atomic, and safe to run from many workers at
  once: they all write the same thing.

  KEYS[1] schedule (the schedule's hash)   KEYS[2] schedules   KEYS[3] schedules_owed

  ARGV[1] name   ARGV[2] spec: the definition as JSON (compared as text)
  ARGV[3] first_ms: its first tick from now ("" = none: it has ended, and
          stays in schedules with an infinite score, never due)
  ARGV[4] paused ("1": defined paused)

  Returns 1 when the state was (re)started from first_ms, 0 when it was kept.
]]
local name, spec, first = ARGV[1], ARGV[2], ARGV[3]
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'defined_paused', '1')
else
  redis.call('HDEL', KEYS[1], 'defined_paused')
end
if redis.call('HGET', KEYS[1], 'spec') == spec then return 0 end
redis.call('HSET', KEYS[1], 'spec', spec, 'name', name)
redis.call('HDEL', KEYS[1], 'owed_ms')
redis.call('SREM', KEYS[3], name)
if first == '' then
  redis.call('HDEL', KEYS[1], 'next_ms')
  redis.call('ZADD', KEYS[2], '+inf', name)
else
  redis.call('HSET', KEYS[1], 'next_ms', first)
  redis.call('ZADD', KEYS[2], first, name)
end
return 1
