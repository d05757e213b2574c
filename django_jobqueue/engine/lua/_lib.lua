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

-- Whether a pattern subscriber exists on this server, e.g. a monitor on
-- `PSUBSCRIBE queue:*:events`. NUMSUB counts exact subscribers only; NUMPAT
-- counts every pattern subscription of the server, O(1), but cannot tell which
-- channels a pattern matches, so any pattern counts: a message that matches no
-- pattern is dropped by Redis, which costs the event's encoding and a PUBLISH,
-- nothing else. Asked at most once per script run, whatever the channel, and
-- only when NUMSUB found nobody. pcall: an ACL user granted `pubsub|numsub` but
-- not `pubsub|numpat` (docs/reliability.md before pattern subscribers were
-- counted) gets patterns uncounted instead of a failed state change.
local patterns = nil
local function has_patterns()
  if patterns == nil then
    local n = redis.pcall('PUBSUB', 'NUMPAT')
    patterns = type(n) == 'number' and n > 0
  end
  return patterns
end

-- Whether anyone would see an event: a listener that wants the log, a
-- subscriber to the channel, or a pattern subscriber. Nobody: emit() skips
-- encoding and publishing, which changes nothing anyone can see (Redis drops a
-- message published to no subscriber) and spares the worker's hot path most of
-- an event's cost. Asked once per channel per script run (the hot scripts call
-- it per job). In cluster mode (a channel with a {hash tag}) a subscriber may
-- sit on another node, where this node cannot count it: there it always
-- publishes, with SPUBLISH, which pattern subscribers never receive (sharded
-- channels have no patterns: docs/signals.md).
local audience = {}
local function has_audience(channel)
  local a = audience[channel]
  if a == nil then
    a = wants_log(channel) or string.find(channel, '{', 1, true) ~= nil
      or redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0 or has_patterns()
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
