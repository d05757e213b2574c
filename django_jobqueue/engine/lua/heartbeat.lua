--[[
  Register a worker or renew its heartbeat, on the Redis server's clock.

  KEYS[1] workers (sorted set id -> last beat ms)  KEYS[2] worker (this worker's hash)
  ARGV[1] now ms (0 = server clock)  ARGV[2] worker_id
  ARGV[3..] fields {field, value} to store on the worker's hash (state, jobs, ...)

  Returns the beat time in ms.
  Events: none.
]]
--@include _lib

local now = now_ms(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
local fields = {'beat_ms', int(now)}
for i = 3, #ARGV, 2 do
  table.insert(fields, ARGV[i]); table.insert(fields, ARGV[i + 1])
end
redis.call('HSET', KEYS[2], unpack(fields))
return now
