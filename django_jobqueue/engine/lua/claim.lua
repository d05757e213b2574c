--[[
  Claim the next pending job(s) without blocking: promote due scheduled jobs,
  move the oldest pending ids onto the processing list (as LMOVE RIGHT LEFT
  would, one command for a whole batch), and stamp each (claim token,
  claimed_at_ms, attempts + 1, lease) in the same script, so a claim under
  load costs one round trip and leaves no moved-but-unstamped window.
  The worker falls back to BLMOVE + stamp.lua only when this finds nothing.

  KEYS[1] pending    KEYS[2] processing  KEYS[3] leases     KEYS[4] scheduled
  KEYS[5] deadlines  KEYS[6] stats       KEYS[7] events     KEYS[8] job_prefix
  KEYS[9] unique     KEYS[10] claiming   KEYS[11] unstamped
  KEYS[12] worker_jobs_prefix (the claiming worker's set is worker_jobs_prefix .. worker)
  KEYS[13] paused (string: "in", "out" or "all" when paused)
  KEYS[14] limits (hash: the flow limits set at run time)  KEYS[15] rate_log
  KEYS[16] key_holders_prefix  KEYS[17] key_waiting_prefix  KEYS[18] waiting_keys
  stamp.lua, _stamp.lua and _limits.lua use these KEYS too; claiming and
  unstamped are for stamp.lua.

  ARGV[1] now ms (0 = server clock)  ARGV[2] claim_token  ARGV[3] visibility_ms
  ARGV[4] worker_id                  ARGV[5] promote_limit: most scheduled jobs to promote
  ARGV[6] expired_ttl? hash TTL seconds of a job dropped as expired (absent or 0 = keep)
  ARGV[7] count? how many jobs to claim (absent or 0: one, returned unnested)
  ARGV[8] start? how many of them start now, the first ones (absent or "": all;
          see _jobs.start_run): the others are claimed ahead for runners not
          yet free, and keep their attempts until their worker starts them
  ARGV[9] defer_last_chance? "1": of those, a run that is the job's only
          chance (at-most-once, or its last attempt) is left for the worker to
          start right before its handler (start.lua), so a worker killed
          before then never uses it up
  ARGV[10] global_concurrency? most jobs of the queue claimed at once, fleet-wide
          (absent, "" or 0: none), unless the limits hash says otherwise
  ARGV[11] rate_count? most jobs handed out per window (absent, "" or 0: none)
  ARGV[12] rate_window_ms? the rate's window (see _limits.lua)
  ARGV[13] claim_ahead? "1": the caller's jobs are short, so a queue with a
          global concurrency alone may have jobs claimed ahead (within its
          free slots); otherwise a limited queue's claim takes only the jobs
          that start now

  A job whose concurrency key has all its slots held waits on the key's list
  instead (_jobs.lua, concurrency keys), and the claim goes on to the next.
  Returns the job hash as a flat field/value array (or, with a count, a list
  of up to that many such arrays, each with its own claim token), false (or an
  empty list) when nothing is pending, {"paused"} when the queue is paused
  for claiming, or {"limited", ms} when jobs wait but none may go out now
  (ms: until the rate allows one; 0: until a slot of the global concurrency
  frees; 1: every id this call looked at was set aside for its concurrency
  key or dropped, and more wait: look again). A claim takes no more jobs
  than the limits allow, and on a limited queue none ahead (at most as many
  as start now, none when none start) unless ARGV[13] allows it: a job held
  for a busy runner holds its slot. Ids without a hash and jobs past their TTL are dropped on the
  way (at most 100 per call beyond the jobs claimed, so one call stays short).
  An id whose job key holds another type than a hash is dropped too, and
  reported: as an error reply, or with a count as a string among the arrays
  (the claim goes on past it).
  A shared key of the wrong type is an error before anything is changed.
  Events: promoted, started; expired for jobs dropped by TTL.
]]
--@include _lib
--@include _jobs
--@include _promote
--@include _stamp
--@include _limits

if claims_paused() then return {'paused'} end
local bad = check_types({KEYS[1], 'list', KEYS[2], 'list', KEYS[3], 'zset', KEYS[4], 'zset',
  KEYS[5], 'zset', KEYS[6], 'hash', KEYS[9], 'hash', KEYS[14], 'hash', KEYS[15], 'zset', KEYS[18], 'zset'})
if bad then return bad end
local now = now_ms(ARGV[1])
local want = tonumber(ARGV[7]) or 0
local starting = tonumber(ARGV[8]) or math.huge
local function nothing()
  if want == 0 then return false end
  return {}
end
local limits, free, wait = gate(now, ARGV[10], ARGV[11], ARGV[12])
if free <= 0 then
  -- Limited only while jobs wait: with none, an empty queue is empty.
  if redis.call('LLEN', KEYS[1]) == 0 then return nothing() end
  return {'limited', int(wait)}
end
if limits.on and want > 0 then
  want = math.min(want, free)
  -- No claiming ahead, but for short jobs under a global concurrency alone:
  -- a job held for a busy runner holds a slot that another worker's idle
  -- runner could use, and under a rate limit it would start later than its
  -- claim, so starts could bunch past the rate.
  if limits.rate_n > 0 or ARGV[13] ~= '1' then
    if starting == 0 then return nothing() end
    want = math.min(want, starting)
  end
end
local start_now = true
if ARGV[9] == '1' then start_now = 'unless last chance' end
promote(KEYS[4], KEYS[1], KEYS[7], KEYS[8], now, tonumber(ARGV[5]) or 100)
local visibility = tonumber(ARGV[3])
local expired_ttl = tonumber(ARGV[6]) or 0
local batch, held, tokens = {}, {}, {}
local looked, limit = 0, 100 + want
while looked < limit do
  -- The oldest ids (the tail of pending) go to the head of processing in the
  -- order one LMOVE RIGHT LEFT each would leave them, in three commands
  -- instead of one per job. Ids dropped on the way (orphans, stale entries,
  -- expired jobs) leave room for more, up to `limit` ids in all.
  local n = math.min(math.max(want - #held, 1), limit - looked)
  local oldest_first = {}
  if n == 1 then  -- one id (a single claim): one command
    local id = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
    if not id then break end
    oldest_first[1] = id
  else
    local ids = redis.call('LRANGE', KEYS[1], -n, -1)
    if #ids == 0 then break end
    for i = #ids, 1, -1 do oldest_first[#oldest_first + 1] = ids[i] end
    -- LPUSH first: on a full Redis (maxmemory) the first write of a script is
    -- refused if it may grow memory, and then nothing at all has changed.
    redis.call('LPUSH', KEYS[2], unpack(oldest_first))
    redis.call('LTRIM', KEYS[1], 0, -#ids - 1)
  end
  looked = looked + #oldest_first
  for _, id in ipairs(oldest_first) do
    -- One random token per call, made unique per job of a batch by a suffix.
    local token = ARGV[2]
    if want > 0 then token = ARGV[2] .. '.' .. (#held + 1) end
    local job = stamp(id, now, token, visibility, ARGV[4], expired_ttl, #held < starting and start_now)
    if job then
      held[#held + 1] = id
      tokens[#tokens + 1] = token
      if want == 0 then
        hold(held, now, visibility, ARGV[4])
        spend(held, tokens, now, limits)
        return job
      end
      batch[#batch + 1] = job
    elseif dropped then
      if want == 0 then return redis.error_reply(dropped) end
      -- Reported in the reply, among the jobs: a string, not a job's array.
      table.insert(batch, dropped)
      dropped = nil
    end
  end
  if #held >= want and want > 0 then break end
end
hold(held, now, visibility, ARGV[4])
spend(held, tokens, now, limits)
if #held == 0 and looked >= limit and redis.call('LLEN', KEYS[1]) > 0 then
  -- Every id looked at was set aside (its concurrency key full) or dropped,
  -- and more wait: not empty. The caller looks again at once.
  return {'limited', '1'}
end
if want == 0 then return false end
return batch
