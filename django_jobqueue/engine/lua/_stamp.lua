-- Shared claim stamping, pasted by the loader (`--@include _stamp`) into
-- claim.lua and stamp.lua after _lib and _jobs. Not a script of its own.
--
-- Its code uses the KEYS of the claim scripts by number, so only scripts
-- that declare those KEYS may include it (the loader checks):
-- KEYS: as claim.lua
--
-- stamp(id, now, token, visibility, worker, expired_ttl, start) is called once
-- the id sits near the head of the processing list. `start`: the job's run
-- begins now (one attempt more, and "started" = the token; see _jobs.start_run);
-- "unless last chance": so, unless that run is the job's only chance
-- (at-most-once, or its last attempt), which its worker starts itself right
-- before the handler; false: it is claimed ahead for a runner not yet free,
-- and its attempts stay as they are until its worker starts it. It returns the job hash (flat
-- HGETALL) when the job is ours to run, or false when the id had to be dropped
-- (no hash, or a key of another type: the entry is an orphan; a status other
-- than pending: a stale entry), was set to wait for a slot of its concurrency
-- key (see _jobs.lua), or was expired by its TTL (its hash then gets
-- expired_ttl seconds to live, as expire.lua gives it; 0 = keep), and the
-- caller tries the next. Once done, the caller passes the ids it got to
-- hold(), which writes their leases and their worker's set for the whole
-- batch: one command each instead of two per job.

-- True when the queue is paused for claiming (QPAUSE out / all).
local function claims_paused()
  local p = redis.call('GET', KEYS[13])
  return p == 'out' or p == 'all'
end

-- The error of the last job key stamp() found holding another type than a
-- hash: the caller reports it (a worker logs it) rather than fail the claim.
local dropped = nil

-- Set a field's value in a flat HGETALL reply: at index i, or appended.
local function patch(flat, i, field, value)
  if i then
    flat[i] = value
  else
    flat[#flat + 1] = field
    flat[#flat + 1] = value
  end
end

-- Concurrency keys found with every slot held during this script run.
local full_keys = {}

-- The claim time and lease deadline of the last stamp, as text.
local stamped_at, now_text, deadline_text = nil, nil, nil

local function stamp(id, now, token, visibility, worker, expired_ttl, start)
  local job_key = KEYS[8] .. id
  -- One read: the whole hash, which goes back to the worker (patched below
  -- with what this stamp writes), and from which the checks take their fields.
  -- pcall: a key of another type written by hand must not stop the claim
  -- half way (Redis keeps what a script wrote before an error).
  local flat = redis.pcall('HGETALL', job_key)
  if flat.err or #flat == 0 then
    -- An id with no hash (deleted by hand, or expired by CLEANUP while
    -- listed), or whose key holds another type: dropped, and the latter
    -- reported to the worker (see `dropped` above).
    redis.call('LREM', KEYS[2], 1, id)
    redis.call('HINCRBY', KEYS[6], 'orphans', 1)
    if flat.err then
      dropped = flat.err .. ' (job ' .. id .. ': its id was dropped from the queue)'
    end
    redis.log(redis.LOG_WARNING, 'jobqueue: dropped id without a job hash: ' .. id .. ' ' .. (dropped or ''))
    return false
  end
  -- One pass over the reply: the fields the checks read, and where the
  -- fields this stamp writes sit in it. (A field -> index table and a
  -- closure per job cost more here than the commands: this runs for every job.)
  local status, name, queue, attempts, expires, delivery, max_attempts, key, key_slots
  local i_status, i_token, i_claimed, i_lease, i_worker, i_attempts
  for i = 2, #flat, 2 do
    local k = flat[i - 1]
    if k == 'status' then status, i_status = flat[i], i
    elseif k == 'attempts' then attempts, i_attempts = flat[i], i
    elseif k == 'claim_token' then i_token = i
    elseif k == 'name' then name = flat[i]
    elseif k == 'queue' then queue = flat[i]
    elseif k == 'expires_at_ms' then expires = tonumber(flat[i])
    elseif k == 'claimed_at_ms' then i_claimed = i
    elseif k == 'lease_until_ms' then i_lease = i
    elseif k == 'worker' then i_worker = i
    elseif k == 'delivery' then delivery = flat[i]
    elseif k == 'max_attempts' then max_attempts = tonumber(flat[i])
    elseif k == 'concurrency_key' then key = flat[i]
    elseif k == 'concurrency' then key_slots = tonumber(flat[i]) or 1
    end
  end
  if status ~= 'pending' then
    -- A stale second entry for a job that has moved on (expired, deleted,
    -- already claimed): never hand it out twice.
    redis.call('LREM', KEYS[2], 1, id)
    return false
  end
  if expires and expires <= now then
    redis.call('LREM', KEYS[2], 1, id)
    mark_expired(job_key, id, KEYS[5], KEYS[9], KEYS[6], KEYS[7], {name, queue, attempts}, now, expired_ttl)
    return false
  end
  if key and key ~= '' and key_lists_usable(KEYS[16] .. key, KEYS[17] .. key) then
    key_slots = math.max(key_slots or 1, 1)
    local holders = KEYS[16] .. key
    if full_keys[key] or (redis.call('SCARD', holders) >= key_slots
        and key_holders(holders, KEYS[8], key) >= key_slots) then
      -- Every slot of its key is held: it waits on the key's list, off
      -- pending, until a holder's claim ends (_jobs.release_key) or the
      -- sweep finds a slot free; the jobs behind it go on meanwhile. (No
      -- claim ends during this script: a key found full stays full.)
      full_keys[key] = true
      redis.call('LREM', KEYS[2], 1, id)
      redis.call('LPUSH', KEYS[17] .. key, id)
      redis.call('ZADD', KEYS[18], 'NX', now, key)
      return false
    end
    redis.call('SADD', holders, id)
  end
  if now ~= stamped_at then  -- the same for every job of a claim: formatted once
    stamped_at, now_text, deadline_text = now, int(now), int(now + visibility)
  end
  -- A run that is the job's only chance (at-most-once, or its last attempt)
  -- starts only when its handler is about to be called (start.lua): a worker
  -- killed between the claim and the handler must not use up that chance.
  if start == 'unless last chance' and (delivery == 'at-most-once' or (max_attempts and max_attempts > 0
      and (tonumber(attempts) or 0) + 1 >= max_attempts)) then
    start = false
  end
  if start then
    local tries = (tonumber(attempts) or 0) + 1
    local tries_text = int(tries)
    redis.call('HSET', job_key, 'status', 'processing', 'claim_token', token, 'claimed_at_ms', now_text,
      'lease_until_ms', deadline_text, 'worker', worker, 'attempts', tries_text, 'started', token)
    if has_audience(KEYS[7]) then
      emit(KEYS[7], id, 'started', 'processing', {name, queue, tries}, now, {worker = worker})
    end
    patch(flat, i_attempts, 'attempts', tries_text)
    flat[#flat + 1] = 'started'  -- a stale "started" field says another claim's token
    flat[#flat + 1] = token
  else
    redis.call('HSET', job_key, 'status', 'processing', 'claim_token', token, 'claimed_at_ms', now_text,
      'lease_until_ms', deadline_text, 'worker', worker)
  end
  -- The reply goes back as the hash now stands.
  patch(flat, i_status, 'status', 'processing')
  patch(flat, i_token, 'claim_token', token)
  patch(flat, i_claimed, 'claimed_at_ms', now_text)
  patch(flat, i_lease, 'lease_until_ms', deadline_text)
  patch(flat, i_worker, 'worker', worker)
  return flat
end

-- The leases of the ids stamp() accepted (all taken at `now`, so one deadline
-- and one ZADD), and their worker's set of running jobs (one SADD).
local function hold(ids, now, visibility, worker)
  if #ids == 0 then return end
  local scored = {}
  local deadline = now + visibility
  for i, id in ipairs(ids) do
    scored[2 * i - 1] = deadline
    scored[2 * i] = id
  end
  redis.call('ZADD', KEYS[3], unpack(scored))
  if worker ~= '' then redis.call('SADD', KEYS[12] .. worker, unpack(ids)) end
end
