--[[
  Add one job: write its hash and put its id on the pending list, or in the
  scheduled set when it is not due yet. One round trip, atomic.

  KEYS[1] job (the job's hash)  KEYS[2] pending     KEYS[3] scheduled
  KEYS[4] deadlines             KEYS[5] unique      KEYS[6] stats
  KEYS[7] events (the channel)  KEYS[8] job_prefix (to look up a unique key's holder)
  KEYS[9] paused (string: "in", "out" or "all" when paused)

  ARGV[1] now ms (0 = server clock)   ARGV[2] id          ARGV[3] delay_ms (0 = now)
  ARGV[4] ttl_ms (0 = none)           ARGV[5] unique_key ("" = none)
  ARGV[6] queue   ARGV[7] name   ARGV[8] payload JSON   ARGV[9] max_attempts
  ARGV[10..] extra {field, value}: more fields stored on the hash as they are

  Returns 1 when added (the caller knows the id: a bare integer is the
  cheapest reply), {0, holder_id} when an unfinished job already holds the
  unique key, {0, id} when a job with this id exists already (the same call
  resent after its reply was lost), -1 when the queue is paused for
  enqueueing (in the last three cases nothing is written).
  The id goes on its list (the key most likely to be of the wrong type, if
  someone wrote it by hand) before anything else is written: Redis does not
  undo a script's writes when a later command fails.
  Events: enqueued (status pending or scheduled).
]]
--@include _lib
--@include _add

-- One read for two flags: the pause state, and whether an events listener
-- wants the events log (emit() would look that up with a call of its own).
local flags = redis.call('MGET', KEYS[9], KEYS[7] .. ':listening')
local paused = flags[1]
if paused == 'in' or paused == 'all' then return -1 end
log_wanted[KEYS[7]] = flags[2] ~= false

local now = now_ms(ARGV[1])
local id = ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, id} end
local delay = tonumber(ARGV[3]) or 0
local ttl = tonumber(ARGV[4]) or 0
local unique = ARGV[5]

if unique ~= '' then
  local holder = redis.call('HGET', KEYS[5], unique)
  if holder then
    local st = redis.call('HGET', KEYS[8] .. holder, 'status')
    if st == 'pending' or st == 'scheduled' or st == 'processing' then
      return {0, holder}
    end
  end
end

local status = 'pending'
if delay > 0 then status = 'scheduled' end

local fields = new_job_fields(id, status, now, delay, ttl, ARGV[6], ARGV[7], ARGV[8], ARGV[9])
if unique ~= '' then
  table.insert(fields, 'unique_key'); table.insert(fields, unique)
end
for i = 10, #ARGV, 2 do
  table.insert(fields, ARGV[i]); table.insert(fields, ARGV[i + 1])
end
if delay > 0 then
  redis.call('ZADD', KEYS[3], now + delay, id)
else
  redis.call('LPUSH', KEYS[2], id)
end
redis.call('HSET', KEYS[1], unpack(fields))
if unique ~= '' then redis.call('HSET', KEYS[5], unique, id) end
if ttl > 0 then
  redis.call('ZADD', KEYS[4], now + ttl, id)
end
redis.call('HINCRBY', KEYS[6], 'enqueued', 1)
emit(KEYS[7], id, 'enqueued', status, {ARGV[7], ARGV[6], 0}, now)
return 1
