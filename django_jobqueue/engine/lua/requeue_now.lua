--[[
  Move an unfinished job to the head of pending, from the shell or the admin:
  a scheduled job runs now; a running job's claim is revoked (its worker can
  no longer finish it: at-least-once, the job runs again, counted as an
  additional delivery); a pending job jumps the line. Finished jobs are
  refused: replay them with retry.lua. A running at-most-once job is refused
  too: handing it out again could run it twice, which its delivery mode
  forbids (reclaim marks such a job lost only once its worker is gone; here
  the worker may well be running it still).

  KEYS[1] job (the job's hash)  KEYS[2] pending  KEYS[3] scheduled  KEYS[4] processing
  KEYS[5] leases    KEYS[6] stats    KEYS[7] events     KEYS[8] worker_jobs_prefix

  ARGV[1] now ms (0 = server clock)  ARGV[2] id

  Returns 1 done, 0 no such job, -1 the job is finished, -2 the job is
  at-most-once and running (nothing changed in either case).
  Events: requeued (status pending).
]]
--@include _lib
--@include _jobs

local job_key = KEYS[1]
local id = ARGV[2]
local cur = redis.call('HMGET', job_key, 'status', 'name', 'queue', 'attempts', 'delivery')
if not cur[1] then return 0 end
local st = cur[1]
if st ~= 'scheduled' and st ~= 'pending' and st ~= 'processing' then return -1 end
if st == 'processing' and cur[5] == 'at-most-once' then return -2 end
local now = now_ms(ARGV[1])
if st == 'scheduled' then
  redis.call('ZREM', KEYS[3], id)
elseif st == 'pending' then
  redis.call('LREM', KEYS[2], 1, id)
else
  redis.call('LREM', KEYS[4], -1, id)
  redis.call('ZREM', KEYS[5], id)
  drop_owner(KEYS[8], job_key, id)
  redis.call('HINCRBY', job_key, 'additional_deliveries', 1)
  redis.call('HDEL', job_key, 'lease_until_ms')
end
redis.call('HSET', job_key, 'status', 'pending', 'claim_token', '')
redis.call('RPUSH', KEYS[2], id)
redis.call('HINCRBY', KEYS[6], 'requeued', 1)
emit(KEYS[7], id, 'requeued', 'pending', {cur[2], cur[3], cur[4]}, now, {from = st})
return 1
