--[[
  Start jobs a worker claimed ahead of a free runner (prefetched): their runs
  begin now. Each gets one attempt more and its claim's token in "started"
  (_jobs.start_run), so that if the worker dies from here on, the job counts
  as run (reclaim.lua: retried, dead-lettered, or "lost" when at-most-once);
  before this, it would go back to pending with no attempt used. A worker
  calls this before it runs an at-most-once job, or one that waited through a
  Redis error or may have passed its TTL; for other jobs the start rides on
  its next pipeline, or on the job's own completion.
  A job whose TTL passed while it waited ends "expired" here and must not run.
  A job whose cancellation was asked (cancel.lua) is not started: its worker
  ends it "cancelled" without running it (complete.lua, mode "n").

  KEYS[1] job_prefix  KEYS[2] processing  KEYS[3] leases     KEYS[4] deadlines
  KEYS[5] unique      KEYS[6] stats       KEYS[7] events     KEYS[8] worker_jobs_prefix

  ARGV[1] now ms (0 = server clock)  ARGV[2] expired_ttl: hash TTL seconds of a job expired here (0 = keep)
  ARGV[3..] jobs {id, claim_token}, two values per job

  Returns one code per job, in order: 1 started (or started already by this
  claim), 2 its TTL had passed: expired instead, not to be run, 3 its
  cancellation was asked: not started, not to be run, 0 no such job,
  -1 the token is not the current claim's: nothing changed for that job.
  Events: started; expired.
]]
--@include _lib
--@include _jobs

local now = nil  -- the server clock is read once, when a job needs it
local ttl = tonumber(ARGV[2]) or 0
local codes = {}
for i = 3, #ARGV - 1, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local job_key = KEYS[1] .. id
  -- pcall: a key of another type (written by hand) is "no such job".
  local cur = redis.pcall('HMGET', job_key, 'status', 'claim_token', 'started', 'attempts', 'expires_at_ms',
    'name', 'queue', 'worker', 'cancel_requested_ms')
  now = now or now_ms(ARGV[1])
  if cur.err or not cur[1] then
    codes[#codes + 1] = 0
  elseif cur[1] ~= 'processing' or cur[2] ~= token then
    codes[#codes + 1] = -1
  elseif cur[3] ~= token and cur[9] then
    codes[#codes + 1] = 3
  elseif cur[3] ~= token and tonumber(cur[5]) and tonumber(cur[5]) <= now then
    local bad = check_types({KEYS[2], 'list', KEYS[3], 'zset', KEYS[4], 'zset', KEYS[5], 'hash', KEYS[6], 'hash'})
    if bad then return bad end
    redis.call('LREM', KEYS[2], -1, id)
    redis.call('ZREM', KEYS[3], id)
    drop_owner(KEYS[8], job_key, id)
    mark_expired(job_key, id, KEYS[4], KEYS[5], KEYS[6], KEYS[7], {cur[6], cur[7], cur[4]}, now, ttl)
    codes[#codes + 1] = 2
  else
    local attempts, began = start_run(job_key, token, cur[3], cur[4])
    if began and has_audience(KEYS[7]) then
      emit(KEYS[7], id, 'started', 'processing', {cur[6], cur[7], attempts}, now, {worker = cur[8]})
    end
    codes[#codes + 1] = 1
  end
end
return codes
