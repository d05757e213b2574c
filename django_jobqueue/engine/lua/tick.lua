--[[
  One step of a schedule, decided once however many schedulers try: when its
  next tick is still the one the caller read (expected_ms), move it on to
  next_ms and enqueue the runs the caller computed for the ticks that came,
  in the same atomic call; a caller that comes second finds the tick moved on
  and changes nothing. Or, with owed = "1", enqueue the run a schedule with
  overlap "queue" owes, once its last run has finished.

  KEYS[1] schedule (the schedule's hash)   KEYS[2] schedules   KEYS[3] schedules_owed
  KEYS[4] pending   KEYS[5] scheduled   KEYS[6] deadlines   KEYS[7] stats
  KEYS[8] events (the channel)   KEYS[9] job_prefix
  KEYS[10] schedule_runs (the ids of its latest runs, newest first, at most 20)

  ARGV[1] now ms (0 = server clock)   ARGV[2] name   ARGV[3] expected_ms
  ARGV[4] next_ms ("" = none: the schedule has ended; its score becomes +inf)
  ARGV[5] overlap ("skip", "allow" or "queue")   ARGV[6] queue   ARGV[7] job: the job's name
  ARGV[8] payload JSON   ARGV[9] max_attempts   ARGV[10] ttl_ms (0 = none)
  ARGV[11] missed: ticks passed over as too late (counted, and reported once)
  ARGV[12] owed ("1": release the owed run; expected_ms and next_ms are then unused)
  ARGV[13..] runs {tick_ms, id, delay_ms}: a run per tick to enqueue, in order

  A run is not enqueued while the schedule is paused (by an operator, or
  defined so), nor, with overlap "skip", while its last run is unfinished;
  with "queue" the newest such tick is owed instead, and enqueued when the
  last run finishes. Each run's hash carries schedule and scheduled_for_ms.
  Returns {enqueued ids...}; when the tick had moved on already, the
  schedule's next tick now (a string: "inf" once it has ended), or false when
  the schedule is gone.
  Events: enqueued (each run), schedule_fired (each run, with the schedule and
  the tick), schedule_skipped (with the reason: missed, paused, overlap).
]]
--@include _lib
--@include _add

local name = ARGV[2]
local now = now_ms(ARGV[1])
local k = {pending = KEYS[4], scheduled = KEYS[5], deadlines = KEYS[6], stats = KEYS[7], events = KEYS[8],
           job_prefix = KEYS[9]}
local queue, job = ARGV[6], ARGV[7]
local meta = {job, queue, 0}

local function unfinished(id)
  if not id then return false end
  local status = redis.call('HGET', KEYS[9] .. id, 'status')
  return status and status ~= 'completed' and status ~= 'failed' and status ~= 'expired' and status ~= 'lost'
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

local paused = redis.call('HGET', KEYS[1], 'paused') or redis.call('HGET', KEYS[1], 'defined_paused')
local fired = {}
local runs = {}
for i = 13, #ARGV - 2, 3 do
  table.insert(runs, {tick = ARGV[i], id = ARGV[i + 1], delay = tonumber(ARGV[i + 2]) or 0})
end

if ARGV[12] == '1' then
  local owed = redis.call('HGET', KEYS[1], 'owed_ms')
  redis.call('SREM', KEYS[3], name)
  redis.call('HDEL', KEYS[1], 'owed_ms')
  if not owed or not runs[1] or unfinished(redis.call('HGET', KEYS[1], 'last_job')) then return fired end
  if paused then skipped(owed, 'paused', 1); return fired end
  local id = run(owed, runs[1].id, runs[1].delay)
  if id then table.insert(fired, id) end
  return fired
end

local current = redis.call('ZSCORE', KEYS[2], name)
if current ~= ARGV[3] then return current end
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
for _, r in ipairs(runs) do
  if overlap ~= 'allow' and unfinished(redis.call('HGET', KEYS[1], 'last_job')) then
    if overlap == 'queue' then
      redis.call('HSET', KEYS[1], 'owed_ms', r.tick)
      redis.call('SADD', KEYS[3], name)
    else
      skipped(r.tick, 'overlap', 1)
    end
  else
    local added = run(r.tick, r.id, r.delay)
    if added then table.insert(fired, added) end
  end
end
return fired
