--[[
  Complete a claimed job: check the claim token, take the id off the
  processing list and the lease set, store the result, push the id onto the
  capped completed history, set the hash's cleanup TTL, count, publish.

  KEYS[1] job hash   KEYS[2] processing  KEYS[3] completed  KEYS[4] leases
  KEYS[5] deadlines  KEYS[6] unique      KEYS[7] stats      KEYS[8] events
  KEYS[9] worker-jobs prefix

  ARGV[1] now ms (0 = server clock)  ARGV[2] id  ARGV[3] claim token
  ARGV[4] result JSON                ARGV[5] hash TTL seconds (0 = keep)
  ARGV[6] history length             ARGV[7] "1" keep the hash, "0" delete it
                                      (fast acknowledgement)
  ARGV[8] largest result, in bytes, copied into the event

  Returns 1 completed, 0 no such job, -1 the token is not the current claim's
  (the job was reclaimed, finished, or claimed by another worker): nothing changed.
  Events: completed (with "result" when it is small enough).
]]
--@include _lib

local job_key = KEYS[1]
local id = ARGV[2]
local cur = redis.call('HMGET', job_key, 'status', 'claim_token', 'name', 'queue', 'attempts')
if not cur[1] then return 0 end
if cur[1] ~= 'processing' or cur[2] ~= ARGV[3] then return -1 end

local now = now_ms(ARGV[1])
local meta = {cur[3], cur[4], cur[5]}
-- Scan from the tail: the oldest claims sit there and finish first.
redis.call('LREM', KEYS[2], -1, id)
redis.call('ZREM', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
drop_owner(KEYS[9], job_key, id)
release_unique(KEYS[6], job_key, id)
redis.call('HINCRBY', KEYS[7], 'completed', 1)

if ARGV[7] == '0' then
  redis.call('DEL', job_key)
else
  redis.call('HSET', job_key, 'status', 'completed', 'completed_at_ms', int(now),
    'result', ARGV[4], 'claim_token', '')
  redis.call('HDEL', job_key, 'lease_until_ms')
  local cap = tonumber(ARGV[6]) or 0
  if cap > 0 then
    redis.call('LPUSH', KEYS[3], id)
    redis.call('LTRIM', KEYS[3], 0, cap - 1)
  end
  local ttl = tonumber(ARGV[5]) or 0
  if ttl > 0 then redis.call('EXPIRE', job_key, ttl) end
end

local raw = nil
if #ARGV[4] <= (tonumber(ARGV[8]) or 0) then raw = '"result":' .. ARGV[4] end
emit(KEYS[8], id, 'completed', 'completed', meta, now, nil, raw)
return 1
