-- Writing a new job, pasted by the loader (`--@include _add`) after _lib. Not
-- a script of its own. enqueue.lua, the hottest script, takes only the
-- fields from here and writes its keys inline, between its unique-key steps
-- (the whole of add_job cost it 1-2 us of Redis time a job: measured);
-- tick.lua adds its runs with add_job.

-- The fields of a new job's hash, without the caller's extra ones.
local function new_job_fields(id, status, now, delay, ttl, queue, name, payload, max_attempts)
  local fields = {
    'id', id, 'name', name, 'queue', queue, 'payload', payload,
    'status', status, 'attempts', '0', 'max_attempts', max_attempts,
    'enqueued_at_ms', int(now), 'claim_token', '',
  }
  if delay > 0 then
    table.insert(fields, 'run_at_ms'); table.insert(fields, int(now + delay))
  end
  if ttl > 0 then
    table.insert(fields, 'expires_at_ms'); table.insert(fields, int(now + ttl))
  end
  return fields
end

-- Add job `id` (its hash must not exist): its id on the pending list, or in
-- the scheduled set when delayed, first (the key most likely to be of the
-- wrong type, if someone wrote it by hand: Redis does not undo a script's
-- writes when a later command fails), then its hash, its TTL deadline, the
-- counter and the `enqueued` event. `extra` is a flat {field, value, ...}
-- list stored on the hash as it is. Returns the job's status.
local function add_job(k, id, now, delay, ttl, queue, name, payload, max_attempts, extra)
  local status = 'pending'
  if delay > 0 then status = 'scheduled' end
  local fields = new_job_fields(id, status, now, delay, ttl, queue, name, payload, max_attempts)
  for i = 1, #extra do table.insert(fields, extra[i]) end
  if delay > 0 then
    redis.call('ZADD', k.scheduled, now + delay, id)
  else
    redis.call('LPUSH', k.pending, id)
  end
  redis.call('HSET', k.job_prefix .. id, unpack(fields))
  if ttl > 0 then redis.call('ZADD', k.deadlines, now + ttl, id) end
  redis.call('HINCRBY', k.stats, 'enqueued', 1)
  emit(k.events, id, 'enqueued', status, {name, queue, 0}, now)
  return status
end
