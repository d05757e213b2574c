-- Shared helpers, pasted by the loader in place of the `--@include _lib` line
-- of every script that asks for them. Not a script of its own.
--
-- Time: every script takes ARGV[1] = "now" in ms. "0" means "use the Redis
-- server's clock", so leases and schedules of workers on different machines are
-- judged against one clock; tests pass an explicit value to move time at will.

local function now_ms(arg)
  local n = tonumber(arg)
  if n and n > 0 then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as decimal strings: tostring() would give 1.7e+12 for ms timestamps.
local function int(n)
  return string.format('%d', n)
end

-- Events are also appended to a capped Redis Stream, the events log
-- `<channel>:log` (keys.py: QueueKeys.events_log), so a listener that was
-- disconnected can read what pub/sub dropped. Its key is derived from the
-- channel here, the one place that writes it, so every script keeps its KEYS
-- layout; it shares the channel's prefix (and hash tag in cluster mode), so it
-- sits in the slot of the script's other keys. MAXLEN ~ trims whole nodes: cheap.
local EVENTS_LOG_MAXLEN = 10000

-- The log is written only while an events listener has said, within the last
-- few minutes, that it reads it (`<channel>:listening`, set with a TTL by
-- events.py): with nobody to catch up, it would cost every event a write and
-- memory for nothing. Looked up once per script run.
local log_wanted = {}
local function wants_log(channel)
  local w = log_wanted[channel]
  if w == nil then
    w = redis.call('EXISTS', channel .. ':listening') == 1
    log_wanted[channel] = w
  end
  return w
end

-- Whether anyone would see an event: a listener that wants the log, or a
-- subscriber to the channel. Nobody: emit() skips encoding and publishing,
-- which changes nothing anyone can see (Redis drops a message published to no
-- subscriber) and spares the worker's hot path most of an event's cost. In
-- cluster mode (a channel with a {hash tag}) a classic subscriber may sit on
-- another node, where this node cannot count it: there it always publishes.
local audience = {}
local function has_audience(channel)
  local a = audience[channel]
  if a == nil then
    a = wants_log(channel) or string.find(channel, '{', 1, true) ~= nil
      or redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0
    audience[channel] = a
  end
  return a
end

-- Publish a state change. `meta` is {name, queue, attempts} read from the hash
-- before it changed; `raw` is optional pre-encoded JSON members appended as-is
-- (results are stored JSON already, so they are spliced in, not re-encoded).
-- The published message carries the log entry's id as "log_id", so a listener
-- can tell which log entries it has already seen.
local function emit(channel, id, event, status, meta, ts, extra, raw)
  if not has_audience(channel) then return end
  local msg = {
    id = id, queue = meta[2] or '', name = meta[1] or '', event = event,
    status = status, attempts = tonumber(meta[3]) or 0, ts_ms = ts,
  }
  if extra then
    for k, v in pairs(extra) do msg[k] = v end
  end
  local body = cjson.encode(msg)
  if raw and raw ~= '' then
    body = string.sub(body, 1, -2) .. ',' .. raw .. '}'
  end
  if wants_log(channel) then
    -- pcall: the log must never fail a state change that is already written.
    local log_id = redis.pcall('XADD', channel .. ':log', 'MAXLEN', '~', EVENTS_LOG_MAXLEN, '*', 'data', body)
    if type(log_id) == 'string' then
      body = string.sub(body, 1, -2) .. ',"log_id":"' .. log_id .. '"}'
    else
      redis.log(redis.LOG_WARNING, 'jobqueue: events log not written: ' .. tostring(log_id.err))
    end
  end
  -- A channel with a {hash tag} means cluster mode (keys.py): sharded pub/sub (Redis 7+)
  -- keeps the message on the queue's own shard instead of broadcasting it to every
  -- node (cluster.py). Where SPUBLISH is refused, classic PUBLISH still goes out.
  if not string.find(channel, '{', 1, true) or type(redis.pcall('SPUBLISH', channel, body)) ~= 'number' then
    redis.call('PUBLISH', channel, body)
  end
end

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
