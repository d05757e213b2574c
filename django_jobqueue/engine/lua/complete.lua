--[[
  Complete claimed jobs, one or a batch (a worker sends the jobs its runners
  finished since its last claim in one call). For each job: check its claim
  token, take the id off the processing list and the lease set, store the
  result, push the id onto the capped completed history, set the hash's
  cleanup TTL, count, publish. Ids pushed past the history's length leave it
  with their hashes (see the end). Each job is checked and changed on its own: a
  stale token refuses that job and leaves the others to complete. The lease
  set, the history and the worker's set are written once per batch (one
  command with every id) rather than once per job. A job claimed ahead whose
  start was not recorded yet counts its attempt here (_jobs.start_run).

  KEYS[1] job_prefix (a job's hash is job_prefix .. id)
  KEYS[2] processing  KEYS[3] completed  KEYS[4] leases
  KEYS[5] deadlines   KEYS[6] unique     KEYS[7] stats      KEYS[8] events
  KEYS[9] worker_jobs_prefix  KEYS[10] slots_freed  KEYS[11] pending
  KEYS[12] key_holders_prefix  KEYS[13] key_waiting_prefix  KEYS[14] waiting_keys

  ARGV[1] now ms (0 = server clock)  ARGV[2] completed_ttl: hash TTL seconds (0 = keep)
  ARGV[3] history: completed jobs kept (HISTORY; -1 = no count bound,
          0 = none: a completed job's hash is deleted at once)
  ARGV[4] result_event_bytes: largest result, in bytes, copied into the event
  ARGV[5..] jobs {id, claim_token, result, keep}, four values per job:
          result is JSON; keep is "1" keep the hash / "0" delete it (fast
          acknowledgement) / "s" not a completion: the run of a job claimed
          ahead began (start.lua's work, riding on this call: one attempt,
          once per claim) / "c" the run stopped on its cancellation
          (JobCancelled): status cancelled, no result / "n" not run: a job
          claimed ahead and cancelled before its start, no attempt used
          A completion ("1"/"0") of a job whose cancellation was asked
          (cancel_requested_ms, cancel.lua) keeps its result, but ends it
          "cancelled": it ran anyway.

  Returns one code per job, in order: 1 completed (or started), 0 no such
  job, -1 the token is not the current claim's (the job was reclaimed,
  finished, or claimed by another worker): nothing changed for that job.
  A shared key of the wrong type is an error before anything is changed.
  Events: started (a job whose start was not recorded yet), completed (with
  "result" when it is small enough); cancelled (with "ran", and "result" as
  completed has it).
]]
--@include _lib
--@include _jobs

local bad = check_types({KEYS[2], 'list', KEYS[3], 'list', KEYS[4], 'zset', KEYS[5], 'zset',
  KEYS[6], 'hash', KEYS[7], 'hash', KEYS[10], 'list', KEYS[11], 'list', KEYS[14], 'zset'})
if bad then return bad end
local now = now_ms(ARGV[1])
local ttl = tonumber(ARGV[2]) or 0
local cap = tonumber(ARGV[3]) or 0
local event_bytes = tonumber(ARGV[4]) or 0
local now_text = int(now)
local audience = has_audience(KEYS[8])
local codes = {}
local done = 0
local cancelled = 0
local freed = 0  -- claims that held a slot of the global concurrency
local processing_len = nil  -- read once, kept up to date below
-- Written once for the whole batch, one command each, after the loop:
local unleased = {}  -- ids off the lease set
local history = {}   -- ids onto the completed history
local owned = {}     -- worker id -> ids off its set of running jobs

for i = 5, #ARGV - 3, 4 do
  local id, token, result, keep = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local job_key = KEYS[1] .. id
  -- pcall: a key of another type (written by hand) is "no such job" for this
  -- id, and must not stop the batch half way.
  -- (name, queue and attempts, for the event, only when someone listens)
  local cur
  cur = redis.pcall('HMGET', job_key, 'status', 'claim_token', 'claimed_at_ms', 'worker', 'unique_key',
    'expires_at_ms', 'started', 'attempts', 'name', 'queue', 'cancel_requested_ms', 'slot', 'concurrency_key')
  if cur.err or not cur[1] then
    codes[#codes + 1] = 0
  elseif cur[1] ~= 'processing' or cur[2] ~= token then
    codes[#codes + 1] = -1
  elseif keep == 's' then
    local attempts, began = start_run(job_key, token, cur[7], cur[8])
    if began and audience then
      emit(KEYS[8], id, 'started', 'processing', {cur[9], cur[10], attempts}, now, {worker = cur[4]})
    end
    codes[#codes + 1] = 1
  else
    processing_len = processing_len or redis.call('LLEN', KEYS[2])
    processing_len = processing_len - remove_processing(KEYS[2], KEYS[1], id, cur[3], processing_len)
    unleased[#unleased + 1] = id
    if cur[12] then freed = freed + 1 end
    release_key(KEYS[12], KEYS[13], KEYS[14], KEYS[11], KEYS[1], id, cur[13])
    if cur[6] then redis.call('ZREM', KEYS[5], id) end  -- only jobs with a TTL are in it
    local worker, unique = cur[4], cur[5]
    if worker and worker ~= '' then
      local ids = owned[worker]
      if not ids then ids = {}; owned[worker] = ids end
      ids[#ids + 1] = id
    end
    if unique and unique ~= '' and redis.call('HGET', KEYS[6], unique) == id then
      redis.call('HDEL', KEYS[6], unique)
    end
    -- A job claimed ahead whose start rode on nothing yet: it started, and
    -- ran, under this claim (see _jobs.start_run).
    local attempts = cur[8] or '0'
    local status = 'completed'
    if keep == 'c' or keep == 'n' or cur[11] then status = 'cancelled' end
    if keep == 'n' then
      result = ''  -- never ran: no attempt, no start
    elseif cur[7] ~= token then
      attempts = int((tonumber(attempts) or 0) + 1)
      if audience then
        emit(KEYS[8], id, 'started', 'processing', {cur[9], cur[10], attempts}, now, {worker = worker})
      end
    end
    if keep == '0' then
      redis.call('DEL', job_key)
    elseif status == 'cancelled' then
      redis.call('HSET', job_key, 'status', status, 'completed_at_ms', now_text, 'cancelled_at_ms', now_text,
        'claim_token', '', 'attempts', attempts)
      if keep == '1' then redis.call('HSET', job_key, 'result', result) end
      redis.call('HDEL', job_key, 'lease_until_ms', 'slot')
      history[#history + 1] = id
      if ttl > 0 then redis.call('EXPIRE', job_key, ttl) end
    else
      redis.call('HSET', job_key, 'status', 'completed', 'completed_at_ms', now_text,
        'result', result, 'claim_token', '', 'attempts', attempts)
      redis.call('HDEL', job_key, 'lease_until_ms', 'slot')
      history[#history + 1] = id
      if ttl > 0 then redis.call('EXPIRE', job_key, ttl) end
    end
    if audience then  -- else the result would be copied for nothing
      local raw = nil
      if result ~= '' and #result <= event_bytes then raw = '"result":' .. result end
      local extra = nil
      if status == 'cancelled' then extra = {ran = keep ~= 'n'} end
      emit(KEYS[8], id, status, status, {cur[9], cur[10], attempts}, now, extra, raw)
    end
    codes[#codes + 1] = 1
    done = done + 1
    if status == 'cancelled' then cancelled = cancelled + 1 end
  end
end
if done > 0 then
  redis.call('ZREM', KEYS[4], unpack(unleased))
  -- The history bounds retention by count: an id that leaves the completed
  -- list takes its hash with it, so every completed hash kept is one the list
  -- leads to (a hash left behind would hold memory until its TTL, or for ever
  -- without one, and nothing would count it). LPUSH replies the length, so a
  -- list within its bound costs nothing more; past it, one RPOP and one DEL
  -- per batch, and a status read per id leaving. A lowered HISTORY shrinks a
  -- long list by at most 1000 more per batch, so no single call stalls Redis;
  -- the sweep (expire.lua) trims too, for a queue where nothing completes.
  if #history > 0 then
    local leaving = history  -- HISTORY 0: every job just completed
    if cap ~= 0 then
      leaving = {}
      local len = redis.call('LPUSH', KEYS[3], unpack(history))  -- the last completed ends up at the head
      if cap > 0 and len > cap then
        leaving = redis.call('RPOP', KEYS[3], math.min(len - cap, #history + 1000))
      end
    end
    local gone = {}
    for _, id in ipairs(leaving) do
      -- Only a completed job's hash: an id whose hash CLEANUP expired may
      -- name a newer job by now (an id chosen by the caller), which stays.
      local s = redis.pcall('HGET', KEYS[1] .. id, 'status')
      if s == 'completed' or s == 'cancelled' then gone[#gone + 1] = KEYS[1] .. id end
    end
    if #gone > 0 then redis.call('DEL', unpack(gone)) end
  end
  if done > cancelled then redis.call('HINCRBY', KEYS[7], 'completed', done - cancelled) end
  if cancelled > 0 then redis.call('HINCRBY', KEYS[7], 'cancelled', cancelled) end
  free_slots(KEYS[10], freed)
  -- Last: the one key not type-checked above.
  for worker, ids in pairs(owned) do redis.call('SREM', KEYS[9] .. worker, unpack(ids)) end
end
return codes
