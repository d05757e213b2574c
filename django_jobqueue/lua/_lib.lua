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

-- Publish a state change. `meta` is {name, queue, attempts} read from the hash
-- before it changed; `raw` is optional pre-encoded JSON members appended as-is
-- (results are stored JSON already, so they are spliced in, not re-encoded).
local function emit(channel, id, event, status, meta, ts, extra, raw)
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
  redis.call('PUBLISH', channel, body)
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
