--[[
  Add a batch of jobs of one kind with the same options (enqueue_many): the
  work of enqueue.lua for each, in one script call, so a bulk enqueue pays the
  per-call cost once per batch. The batch is atomic: all of it or none.
  Jobs have no unique key here (enqueue() takes one per job).

  KEYS[1] pending     KEYS[2] scheduled   KEYS[3] deadlines   KEYS[4] stats
  KEYS[5] events (the channel)            KEYS[6] job_prefix
  KEYS[7] paused (string: "in", "out" or "all" when paused)

  ARGV[1] now ms (0 = server clock)   ARGV[2] delay_ms (0 = now)
  ARGV[3] ttl_ms (0 = none)           ARGV[4] queue   ARGV[5] name
  ARGV[6] max_attempts                ARGV[7] extra_count: E, how many extra
                                      field/value pairs follow (stored on every
                                      hash as they are)
  ARGV[8..] extra_and_jobs {key, value}: the E extra field/value pairs
          (ARGV[8] to ARGV[7 + 2E]), then per job: id, payload JSON

  Returns -1 when the queue is paused for enqueueing (nothing is written),
  else one code per job, in order: 1 added, 0 a job with this id exists
  already (the same batch resent after its reply was lost; left as it is).
  A shared key of the wrong type is an error before anything is written.
  Events: enqueued (status pending or scheduled), one per job added.
]]
--@include _lib
--@include _jobs

local paused = redis.call('GET', KEYS[7])
if paused == 'in' or paused == 'all' then return -1 end
local bad = check_types({KEYS[1], 'list', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'hash'})
if bad then return bad end

local now = now_ms(ARGV[1])
local delay = tonumber(ARGV[2]) or 0
local ttl = tonumber(ARGV[3]) or 0
local queue, name = ARGV[4], ARGV[5]
local n_extra = tonumber(ARGV[7]) or 0
local status = 'pending'
if delay > 0 then status = 'scheduled' end

-- The fields every job of the batch shares; id and payload are set per job.
local common = {
  'name', name, 'queue', queue, 'status', status, 'attempts', '0',
  'max_attempts', ARGV[6], 'enqueued_at_ms', int(now), 'claim_token', '',
}
if delay > 0 then
  table.insert(common, 'run_at_ms'); table.insert(common, int(now + delay))
end
if ttl > 0 then
  table.insert(common, 'expires_at_ms'); table.insert(common, int(now + ttl))
end
for i = 8, 7 + 2 * n_extra do table.insert(common, ARGV[i]) end

local codes, pending_ids, added = {}, {}, 0
for i = 8 + 2 * n_extra, #ARGV - 1, 2 do
  local id, payload = ARGV[i], ARGV[i + 1]
  local job_key = KEYS[6] .. id
  if redis.call('EXISTS', job_key) == 1 then
    table.insert(codes, 0)
  else
    redis.call('HSET', job_key, 'id', id, 'payload', payload, unpack(common))
    if delay > 0 then
      redis.call('ZADD', KEYS[2], now + delay, id)
    else
      table.insert(pending_ids, id)
    end
    if ttl > 0 then redis.call('ZADD', KEYS[3], now + ttl, id) end
    emit(KEYS[5], id, 'enqueued', status, {name, queue, 0}, now)
    table.insert(codes, 1)
    added = added + 1
  end
end
-- One LPUSH for the batch, in order: the first job is the first out.
if #pending_ids > 0 then redis.call('LPUSH', KEYS[1], unpack(pending_ids)) end
if added > 0 then redis.call('HINCRBY', KEYS[4], 'enqueued', added) end
return codes
