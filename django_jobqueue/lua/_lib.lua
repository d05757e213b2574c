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
