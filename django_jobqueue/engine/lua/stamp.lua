--[[
  Stamp a job that BLMOVE moved from pending onto the claiming list.

  The blocking claim cannot run inside a script, so the worker does BLMOVE
  pending -> claiming, then this. It sends this call right behind the BLMOVE on
  the same connection, without the id (job_id ""): Redis runs it the moment
  BLMOVE returns, and it takes the id at the head of claiming, which is the
  one just moved (if another client's id got there first, that one needs a
  stamp as much, and ours is stamped by whoever pops it next, or handed back
  by the sweep). No second round trip on the way from an idle queue to a
  running job. If the worker dies in between, the id waits
  on the small claiming list, where reclaim.lua finds it without scanning the
  processing list, and times it from when a sweep first saw it (not from
  enqueued_at_ms, which would make a job that waited long in pending look
  overdue the moment it was moved). If a sweep already handed the id back,
  LREM finds nothing and this refuses: the worker must not run it.

  KEYS: as claim.lua (the same KEYS, built once for both).
  ARGV[1] now ms (0 = server clock)  ARGV[2] claim_token  ARGV[3] visibility_ms
  ARGV[4] worker_id  ARGV[5] job_id: the id, or "" for the head of claiming
  ARGV[6] expired_ttl? hash TTL seconds of a job dropped as expired (absent or 0 = keep)
  ARGV[7] defer_last_chance? "1": a run that is the job's only chance is left
          for the worker to start right before its handler (as claim.lua's)
  ARGV[8] global_concurrency?  ARGV[9] rate_count?  ARGV[10] rate_window_ms?
          the queue's flow limits from its settings (as claim.lua's)

  A shared key of the wrong type is an error before anything is changed.
  Returns the job hash (flat array), false when the job is not ours to run
  (reclaimed meanwhile, an orphan id, or expired by TTL) or claiming is empty
  (the BLMOVE ahead timed out), or {"paused"} when
  the queue was paused for claiming while we blocked, or {"limited", ms}
  when its flow limits let no job out now (as claim.lua says): either way
  the id goes back to the head of pending.
  Events: started; expired.
]]
--@include _lib
--@include _jobs
--@include _stamp
--@include _limits

-- The shared keys this may write, checked before the id leaves claiming
-- (see _jobs.check_types): a failure after that would leave the job on no list.
local bad = check_types({KEYS[1], 'list', KEYS[2], 'list', KEYS[3], 'zset', KEYS[5], 'zset', KEYS[6], 'hash',
  KEYS[9], 'hash', KEYS[10], 'list', KEYS[11], 'hash', KEYS[13], 'string', KEYS[14], 'hash', KEYS[15], 'zset',
  KEYS[18], 'zset'})
if bad then return bad end
local now = now_ms(ARGV[1])
local id = ARGV[5]
if id == '' then
  id = redis.call('LPOP', KEYS[10])
  if not id then return false end
elseif redis.call('LREM', KEYS[10], 1, id) == 0 then
  return false
end
redis.call('HDEL', KEYS[11], id)
if claims_paused() then
  redis.call('RPUSH', KEYS[1], id)
  return {'paused'}
end
local limits, free, wait = gate(now, ARGV[8], ARGV[9], ARGV[10])
if free <= 0 then
  redis.call('RPUSH', KEYS[1], id)
  return {'limited', int(wait)}
end
redis.call('LPUSH', KEYS[2], id)
-- The blocked runner runs the job at once: it starts now (see ARGV[7]).
local start = true
if ARGV[7] == '1' then start = 'unless last chance' end
local job = stamp(id, now, ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[6]) or 0, start)
if job then
  hold({id}, now, tonumber(ARGV[3]), ARGV[4])
  spend({id}, {ARGV[2]}, now, limits)
end
if dropped then return redis.error_reply(dropped) end
return job
