-- Helpers for the scripts that move jobs between lists and sets, pasted by
-- the loader (`--@include _jobs`) after _lib. Not a script of its own. Kept
-- apart from _lib so that enqueue.lua, the hottest script, defines only what
-- it uses: each local function here is a closure made on every script run.

-- Redis does not undo what a script wrote before one of its commands failed,
-- so a key of the wrong type (written by hand) met half way through could
-- leave a job in no list. Scripts that move jobs check the types of the shared
-- keys they write first, and change nothing when one is wrong. `spec` is
-- {key, type, key, type, ...}; a key that does not exist yet is fine. Returns
-- an error reply for the caller to return, or nil.
local function check_types(spec)
  for i = 1, #spec, 2 do
    local t = redis.call('TYPE', spec[i])['ok']
    if t ~= 'none' and t ~= spec[i + 1] then
      return redis.error_reply('WRONGTYPE ' .. spec[i] .. ' holds a ' .. t .. ', not a ' .. spec[i + 1]
        .. ': nothing was changed')
    end
  end
  return nil
end

local function read_meta(job_key)
  return redis.call('HMGET', job_key, 'name', 'queue', 'attempts')
end

-- Forget the unique key a job held, if it still holds it.
local function release_unique(unique_key, job_key, id)
  local uk = redis.call('HGET', job_key, 'unique_key')
  if uk and uk ~= '' and redis.call('HGET', unique_key, uk) == id then
    redis.call('HDEL', unique_key, uk)
  end
end

-- Take a claimed job's id off the processing list. LREM scans from one end,
-- O(distance to the id); claims are pushed at the head (LMOVE ... LEFT), so the
-- list runs newest to oldest and the job's claim time tells which end is
-- nearer: the oldest claims (the usual ones to finish or lapse) from the tail,
-- a job claimed recently from the head. Short lists skip the look-up.
-- `len`: the list's length when the caller knows it (a batch reads it once).
-- Returns what LREM removed.
local function remove_processing(list, job_prefix, id, claimed_at, len)
  local from = -1
  local c = tonumber(claimed_at)
  if c and (len or redis.call('LLEN', list)) > 64 then
    local ends = {redis.call('LINDEX', list, 0), redis.call('LINDEX', list, -1)}
    local head = ends[1] and tonumber(redis.call('HGET', job_prefix .. ends[1], 'claimed_at_ms'))
    local tail = ends[2] and tonumber(redis.call('HGET', job_prefix .. ends[2], 'claimed_at_ms'))
    if head and tail and head - c < c - tail then from = 1 end
  end
  return redis.call('LREM', list, from, id)
end

-- Forget which worker held a job (the per-worker set of its running jobs).
local function drop_owner(owners_prefix, job_key, id)
  local worker = redis.call('HGET', job_key, 'worker')
  if worker and worker ~= '' then
    redis.call('SREM', owners_prefix .. worker, id)
  end
end

-- Append one entry to the job's error log (JSON list, newest last, capped).
local function log_error(job_key, entry, cap)
  local log = {}
  local old = redis.call('HGET', job_key, 'errors')
  if old then
    local ok, decoded = pcall(cjson.decode, old)
    if ok and type(decoded) == 'table' then log = decoded end
  end
  table.insert(log, entry)
  while #log > cap do table.remove(log, 1) end
  redis.call('HSET', job_key, 'errors', cjson.encode(log))
end

-- Finish a job for good on the failed list (the dead letter): status "failed",
-- or "lost" for an at-most-once job that cannot be handed out again. The
-- caller has already taken it off whatever list or set held it.
local function dead_letter(job_key, id, failed, deadlines, unique, stats, events, meta, now, status, reason, ttl)
  redis.call('HSET', job_key, 'status', status, 'failed_at_ms', int(now), 'claim_token', '', 'last_error', reason)
  redis.call('HDEL', job_key, 'lease_until_ms')
  redis.call('ZREM', deadlines, id)
  release_unique(unique, job_key, id)
  redis.call('LPUSH', failed, id)
  if ttl and ttl > 0 then redis.call('EXPIRE', job_key, ttl) end
  redis.call('HINCRBY', stats, status, 1)
  emit(events, id, status, status, meta, now, {error = reason})
end

-- A claimed job's run begins: one attempt more, and the claim's token in
-- "started". A job claimed ahead of a free runner (prefetched) is not started
-- until its worker says so (start.lua) or its run changes it (a completion, a
-- failure, a requeue); if its worker dies first, reclaim.lua hands it back
-- with no attempt used. Idempotent for one claim. `started` and `attempts`:
-- the hash's fields as read. Returns the attempts, and whether this started it.
local function start_run(job_key, token, started, attempts)
  local n = tonumber(attempts) or 0
  if started == token then return n, false end
  n = n + 1
  redis.call('HSET', job_key, 'started', token, 'attempts', int(n))
  return n, true
end

-- End a job whose TTL passed: status "expired", once. The caller has already
-- taken it off whatever list or set held it (pending, processing, leases).
local function mark_expired(job_key, id, deadlines, unique, stats, events, meta, now, ttl)
  redis.call('ZREM', deadlines, id)
  release_unique(unique, job_key, id)
  redis.call('HSET', job_key, 'status', 'expired', 'finished_at_ms', int(now), 'claim_token', '')
  redis.call('HDEL', job_key, 'lease_until_ms')
  if ttl and ttl > 0 then redis.call('EXPIRE', job_key, ttl) end
  redis.call('HINCRBY', stats, 'expired', 1)
  emit(events, id, 'expired', 'expired', meta, now)
end

-- Claims holding a slot of the queue's global concurrency (marked "slot" by
-- _limits.spend) ended: wake as many workers waiting for one (they block on
-- the list, see keys.py slots_freed). Tokens nobody takes are capped and
-- expire; a stale one costs a waiting worker one claim that finds no room.
local function free_slots(list, n)
  if n == 0 then return end
  local tokens = {}
  for i = 1, math.min(n, 10) do tokens[i] = '1' end
  redis.call('LPUSH', list, unpack(tokens))
  -- Few and short-lived: a waiter blocks at most a second at a time, so an
  -- older token woke nobody and would only cost a claim that finds no room.
  redis.call('LTRIM', list, 0, 9)
  redis.call('PEXPIRE', list, 1000)
end

-- Concurrency keys (@job(concurrency_key=..., concurrency=N)): at most N
-- claimed jobs per key value, fleet-wide. A key's slots are held by the ids
-- in its set (holders_prefix .. key), read lazily: a member whose job is no
-- longer claimed under that key (finished, handed back, deleted: by any path)
-- holds nothing and is dropped when the set is read, so no path can leak a
-- slot. A job claimed while its key is full waits on the key's list
-- (waiting_prefix .. key, oldest at the tail), off pending, so the jobs
-- behind it go on; the key sits in the waiting_keys sorted set while its
-- list has jobs.

-- Whether a key's holders set and waiting list hold what their names say (or
-- do not exist). Keys of another type (written by hand) make the key no limit
-- at all, logged, rather than a script error half way through a job's move.
local function key_lists_usable(holders, waiting)
  local h = redis.call('TYPE', holders)['ok']
  local w = redis.call('TYPE', waiting)['ok']
  if (h == 'none' or h == 'set') and (w == 'none' or w == 'list') then return true end
  redis.log(redis.LOG_WARNING, 'jobqueue: concurrency key ignored, a key of another type: ' .. holders .. ' ' .. h
    .. ', ' .. waiting .. ' ' .. w)
  return false
end

-- How many of the key's holders are still claimed under it (stale ones dropped).
local function key_holders(holders, job_prefix, key)
  local live = 0
  for _, id in ipairs(redis.call('SMEMBERS', holders)) do
    local cur = redis.pcall('HMGET', job_prefix .. id, 'status', 'concurrency_key')
    if type(cur) == 'table' and cur[1] == 'processing' and cur[2] == key then
      live = live + 1
    else
      redis.call('SREM', holders, id)
    end
  end
  return live
end

-- Hand up to n of the key's waiting jobs back to the head of pending, the
-- oldest first; ids whose job no longer waits (cancelled, deleted, expired
-- while it waited) are dropped on the way. Returns how many went back.
local function unpark(waiting_prefix, waiting_keys, pending, job_prefix, key, n)
  local list = waiting_prefix .. key
  local moved, looked = 0, 0
  while moved < n and looked < 100 do
    local id = redis.call('RPOP', list)
    if not id then break end
    looked = looked + 1
    if redis.pcall('HGET', job_prefix .. id, 'status') == 'pending' then
      redis.call('RPUSH', pending, id)
      moved = moved + 1
    end
  end
  if redis.call('EXISTS', list) == 0 then redis.call('ZREM', waiting_keys, key) end
  return moved
end

-- A claim under a concurrency key ended: its slot is free, and the key's
-- oldest waiting job goes back to the head of pending to take it.
local function release_key(holders_prefix, waiting_prefix, waiting_keys, pending, job_prefix, id, key)
  if not key or key == '' or not key_lists_usable(holders_prefix .. key, waiting_prefix .. key) then return end
  redis.call('SREM', holders_prefix .. key, id)
  unpark(waiting_prefix, waiting_keys, pending, job_prefix, key, 1)
end
