--[[
  Take the records of workers whose heartbeat lapsed, so their jobs can be
  reclaimed at once. Taking is atomic: of two sweepers, one gets each record.

  KEYS[1] workers (sorted set id -> last beat ms)  KEYS[2] worker_prefix (of workers' hashes)
  ARGV[1] now ms (0 = server clock)  ARGV[2] lapse_ms  ARGV[3] limit: most records

  Returns a flat array: worker id, its "queues" field (JSON list of queue
  names), ...; the records are deleted.
  Events: none.
]]
--@include _lib

local now = now_ms(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]), 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local queues = redis.call('HGET', KEYS[2] .. id, 'queues') or ''
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', KEYS[2] .. id)
  table.insert(out, id); table.insert(out, queues)
end
return out
