--[[
  Extend the lease of a claimed job (Disque's WORKING): the job stays ours for
  another visibility period from now. Never past the job's TTL deadline.

  KEYS[1] job (the job's hash)  KEYS[2] leases
  ARGV[1] now ms (0 = server clock)  ARGV[2] id  ARGV[3] claim_token
  ARGV[4] lease_ms: the lease's length

  Returns the new lease deadline in ms, 0 no such job, -1 not our claim.
  Events: none (a lease renewal is not a state change).
]]
--@include _lib

local cur = redis.call('HMGET', KEYS[1], 'status', 'claim_token', 'expires_at_ms')
if not cur[1] then return 0 end
if cur[1] ~= 'processing' or cur[2] ~= ARGV[3] then return -1 end
local now = now_ms(ARGV[1])
local deadline = now + tonumber(ARGV[4])
local expires = tonumber(cur[3])
if expires and expires < deadline then deadline = expires end
redis.call('ZADD', KEYS[2], deadline, ARGV[2])
redis.call('HSET', KEYS[1], 'lease_until_ms', int(deadline))
return deadline
