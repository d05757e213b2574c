--[[
  One step of a schedule, decided once however many schedulers try: when its
  next tick is still the one the caller expected (expected_ms), and the caller
  holds the definition Redis holds, move the tick on to next_ms and enqueue
  the runs the caller planned for the ticks that came, in the same atomic
  call; a caller that comes second finds the tick moved on and changes
  nothing. Or, with owed = "1", enqueue the run a schedule with overlap
  "queue" owes, once its last run has finished.

  KEYS[1] schedule (the schedule's hash)   KEYS[2] schedules   KEYS[3] schedules_owed
  KEYS[4] pending   KEYS[5] scheduled   KEYS[6] deadlines   KEYS[7] stats
  KEYS[8] events (the channel)   KEYS[9] job_prefix
  KEYS[10] schedule_runs (the ids of its latest runs, newest first, at most 20)
  KEYS[11] paused (the queue's pause flag: no run while it refuses enqueues)

  ARGV[1] now ms (0 = server clock)   ARGV[2] name   ARGV[3] expected_ms
  ARGV[4] next_ms ("" = none: the schedule has ended; its score becomes +inf)
  ARGV[5] overlap ("skip", "allow" or "queue")   ARGV[6] queue   ARGV[7] job: the job's name
  ARGV[8] payload JSON   ARGV[9] max_attempts   ARGV[10] ttl_ms (0 = none)
  ARGV[11] missed: ticks passed over as too late (counted, and reported once)
  ARGV[12] owed ("1": release the owed run; expected_ms and next_ms are then unused)
  ARGV[13] spec_hash: the caller's definition (schedule_sync.lua wrote Redis's)
  ARGV[14] planned_ms: the time the caller planned for (refused when it is
           ahead of this script's clock by more than a second: its clock is wrong)
  ARGV[15..] runs {tick_ms, id, delay_ms}: a run per tick to enqueue, in order

  Overlap: with "skip" or "queue", while the schedule's last run is
  unfinished, "skip" passes the ticks over and "queue" owes one run (the
  newest tick); otherwise only the newest tick of the step runs (its runs
  would overlap one another) and the others are passed over. "allow" runs each. No run is enqueued while the schedule is paused (by an
  operator, or defined so) or its queue refuses enqueues. A step that enqueues
  serves the run owed, if any. Each run's hash carries schedule and
  scheduled_for_ms.
  Every key's type is checked before anything is written.

  Returns {enqueued ids...}, or a refusal that changed nothing: {-1, the next
  tick now ("inf" once ended, "" when the schedule is gone)}, {-2} (another
  definition), {-3} (the caller's clock is ahead).
  Events: enqueued (each run), schedule_fired (each run, with the schedule and
  the tick), schedule_skipped (with the reason: missed, paused, overlap).
]]
--@include _lib
--@include _jobs
--@include _add

local bad = check_types({KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'set', KEYS[4], 'list', KEYS[5], 'zset',
                         KEYS[6], 'zset', KEYS[7], 'hash', KEYS[10], 'list'})
if bad then return bad end

local name = ARGV[2]
local now = now_ms(ARGV[1])
if (tonumber(ARGV[14]) or 0) > now + 1000 then return {-3} end
local state = redis.call('HMGET', KEYS[1], 'spec_hash', 'paused', 'defined_paused', 'last_job', 'owed_ms')
local current = redis.call('ZSCORE', KEYS[2], name)
if not current or not state[1] then return {-1, ''} end  -- gone (retired): nothing to write back
if state[1] ~= ARGV[13] then return {-2} end
local k = {pending = KEYS[4], scheduled = KEYS[5], deadlines = KEYS[6], stats = KEYS[7], events = KEYS[8],
           job_prefix = KEYS[9]}
local queue, job = ARGV[6], ARGV[7]
local meta = {job, queue, 0}
local queue_paused = redis.call('GET', KEYS[11])
local paused = state[2] or state[3] or queue_paused == 'in' or queue_paused == 'all'

local function unfinished(id)
  if not id then return false end
  local status = redis.call('HGET', KEYS[9] .. id, 'status')
  return status and status ~= 'completed' and status ~= 'failed' and status ~= 'expired' and status ~= 'lost'
    and status ~= 'cancelled'
end

local function skipped(tick, reason, count)
  redis.call('HINCRBY', KEYS[1], 'skipped', count)
  redis.call('HSET', KEYS[1], 'last_skip', reason, 'last_skip_ms', int(now))
  emit(KEYS[8], '', 'schedule_skipped', '', meta, now,
       {schedule = name, reason = reason, count = count, scheduled_for_ms = tonumber(tick)})
end

local function run(tick, id, delay)
  if redis.call('EXISTS', KEYS[9] .. id) == 1 then return nil end
  local status = add_job(k, id, now, delay, tonumber(ARGV[10]) or 0, queue, job, ARGV[8], ARGV[9],
                         {'schedule', name, 'scheduled_for_ms', tick})
  redis.call('HSET', KEYS[1], 'last_job', id, 'last_tick_ms', tick, 'last_fired_ms', int(now))
  redis.call('LPUSH', KEYS[10], id)
  redis.call('LTRIM', KEYS[10], 0, 19)
  redis.call('HINCRBY', KEYS[1], 'fired', 1)
  emit(KEYS[8], id, 'schedule_fired', status, meta, now, {schedule = name, scheduled_for_ms = tonumber(tick)})
  return id
end

local runs = {}
for i = 15, #ARGV - 2, 3 do
  table.insert(runs, {tick = ARGV[i], id = ARGV[i + 1], delay = tonumber(ARGV[i + 2]) or 0})
end
local fired = {}
local busy = unfinished(state[4])

-- The owed run, when its time has come (the last run finished, nothing paused).
local function release_owed(id)
  if not state[5] or busy or paused then return end
  redis.call('SREM', KEYS[3], name)
  redis.call('HDEL', KEYS[1], 'owed_ms')
  local added = run(state[5], id, 0)
  if added then
    table.insert(fired, added)
    busy = true
  end
end

if ARGV[12] == '1' then
  if runs[1] then release_owed(runs[1].id) end
  return fired
end

if current ~= ARGV[3] then return {-1, current} end
if ARGV[4] == '' then
  redis.call('ZADD', KEYS[2], '+inf', name)
  redis.call('HDEL', KEYS[1], 'next_ms')
else
  redis.call('ZADD', KEYS[2], ARGV[4], name)
  redis.call('HSET', KEYS[1], 'next_ms', ARGV[4])
end
local missed = tonumber(ARGV[11]) or 0
if missed > 0 then skipped(ARGV[3], 'missed', missed) end
if #runs == 0 then return fired end
if paused then
  skipped(runs[1].tick, 'paused', #runs)
  return fired
end
local overlap = ARGV[5]
if state[5] and not busy then
  -- The run owed is served by this step's run: the last run has finished since.
  redis.call('SREM', KEYS[3], name)
  redis.call('HDEL', KEYS[1], 'owed_ms')
end
if overlap ~= 'allow' then
  local newest = runs[#runs]
  if busy then
    if overlap == 'queue' then
      redis.call('HSET', KEYS[1], 'owed_ms', newest.tick)
      redis.call('SADD', KEYS[3], name)
    else
      skipped(runs[1].tick, 'overlap', #runs)
    end
    return fired
  end
  -- The step's runs would overlap one another: the newest tick runs.
  if #runs > 1 then skipped(runs[1].tick, 'overlap', #runs - 1) end
  runs = {newest}
end
for _, r in ipairs(runs) do
  local added = run(r.tick, r.id, r.delay)
  if added then table.insert(fired, added) end
end
return fired
