--[[
  Bring one schedule's state in Redis in step with its definition (a worker
  starting, or jobq_schedules). A schedule met for the first time, or whose
  definition changed, starts from its first tick from now; one whose
  definition is unchanged keeps its next tick, so a restarted worker neither
  repeats nor skips one. The first tick is never one already run: of the two
  the caller computed, the first after the last run's tick is taken (the
  caller read the time a round trip ago). Atomic, and safe to run from many
  workers at once.

  KEYS[1] schedule (the schedule's hash)   KEYS[2] schedules   KEYS[3] schedules_owed

  ARGV[1] name   ARGV[2] spec: the definition as JSON   ARGV[3] spec_hash: its digest
  ARGV[4] first_ms: its first tick from now ("" = none: it has ended, and
          stays in schedules with an infinite score, never due)
  ARGV[5] second_ms: the tick after that ("" = none)
  ARGV[6] paused ("1": defined paused)

  Returns 1 when the state was (re)started, 0 when it was kept.
]]
local name, spec, spec_hash = ARGV[1], ARGV[2], ARGV[3]
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[1], 'defined_paused', '1')
else
  redis.call('HDEL', KEYS[1], 'defined_paused')
end
if redis.call('HGET', KEYS[1], 'spec_hash') == spec_hash then return 0 end
redis.call('HSET', KEYS[1], 'spec', spec, 'spec_hash', spec_hash, 'name', name)
redis.call('HDEL', KEYS[1], 'owed_ms')
redis.call('SREM', KEYS[3], name)
local last = tonumber(redis.call('HGET', KEYS[1], 'last_tick_ms')) or -1
local first = ARGV[4]
if first ~= '' and tonumber(first) <= last then first = ARGV[5] end
if first == '' then
  redis.call('HDEL', KEYS[1], 'next_ms')
  redis.call('ZADD', KEYS[2], '+inf', name)
else
  redis.call('HSET', KEYS[1], 'next_ms', first)
  redis.call('ZADD', KEYS[2], first, name)
end
return 1
