-- Flow limits across the fleet (docs/flow-control.md), pasted by the loader
-- (`--@include _limits`) into claim.lua and stamp.lua after _lib. Not a
-- script of its own.
-- KEYS: as claim.lua
--
-- A global concurrency of N holds while fewer than N jobs of the queue are
-- claimed, jobs claimed ahead of a busy runner included: the lease set (one
-- entry per claimed job, until its claim ends by any path: a completion, a
-- failure, a requeue, a delete, an expiry, the sweep) plus the ids BLMOVE
-- moved and no stamp took yet. No counter of its own, so nothing can leak a
-- slot: a dead worker's slots come back exactly when the sweep hands its jobs
-- back.
-- A rate limit of N per window holds on the claims: the claim times of the
-- last window's jobs (server clock) sit in a sorted set, and a claim takes
-- only as many jobs as the window still allows (a sliding window, exact: no
-- window of that length ever holds more than N claims).

-- The limits in force: (global concurrency, rate count, rate window ms), 0 =
-- none. A run-time override (the limits hash, written by the admin or
-- `jobq_queues set-limit`) wins over the settings' values the caller passes.
local function flow_limits(cap_arg, rate_count_arg, rate_window_arg)
  local o = redis.call('HMGET', KEYS[14], 'global_concurrency', 'rate_count', 'rate_window_ms')
  local cap = tonumber(o[1] or cap_arg) or 0
  local rate_n, rate_ms = tonumber(rate_count_arg) or 0, tonumber(rate_window_arg) or 0
  if o[2] then rate_n, rate_ms = tonumber(o[2]) or 0, tonumber(o[3]) or 0 end
  if rate_ms <= 0 then rate_n = 0 end
  -- A window past a day (limits.py refuses one; this one was written by
  -- hand) is read as a day: claim times stay integers.
  rate_ms = math.min(math.floor(rate_ms), 86400000)
  return cap, rate_n, rate_ms
end

-- The one entry point of the claim scripts: the limits in force (`limits`:
-- cap, rate_n, rate_ms, and `on` when any applies), how many jobs they let
-- one claim take now (math.huge: no limit), and when none, how many ms until
-- the rate allows one (0: a slot of the global concurrency must free first,
-- and nobody can say when).
local function gate(now, cap_arg, rate_count_arg, rate_window_arg)
  local cap, rate_n, rate_ms = flow_limits(cap_arg, rate_count_arg, rate_window_arg)
  local limits = {cap = cap, rate_n = rate_n, rate_ms = rate_ms, on = cap > 0 or rate_n > 0}
  if not limits.on then return limits, math.huge, 0 end
  local free = math.huge
  if cap > 0 then
    free = cap - redis.call('ZCARD', KEYS[3]) - redis.call('LLEN', KEYS[10])
    if free <= 0 then return limits, 0, 0 end
  end
  if rate_n > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[15], '-inf', now - rate_ms)
    local used = redis.call('ZCARD', KEYS[15])
    if used >= rate_n then
      local oldest = redis.call('ZRANGE', KEYS[15], 0, 0, 'WITHSCORES')
      return limits, 0, math.max(1, tonumber(oldest[2]) + rate_ms - now)
    end
    free = math.min(free, rate_n - used)
  end
  return limits, free, 0
end

-- Account for the jobs a claim took (`ids`, with their claim tokens in
-- `tokens`): their claim times go into the rate's window, and each job that
-- holds a slot of the global concurrency is marked ("slot"), so the script
-- that ends its claim wakes a worker waiting for one (_jobs.free_slots).
-- `limits`: as gate() read them (nothing to do when none applies).
local function spend(ids, tokens, now, limits)
  if #ids == 0 or not limits.on then return end
  if limits.rate_n > 0 then
    local scored = {}
    for i, token in ipairs(tokens) do
      scored[2 * i - 1] = now
      scored[2 * i] = token
    end
    redis.call('ZADD', KEYS[15], unpack(scored))
    redis.call('PEXPIRE', KEYS[15], limits.rate_ms + 1000)
  end
  if limits.cap > 0 then
    for _, id in ipairs(ids) do redis.call('HSET', KEYS[8] .. id, 'slot', '1') end
  end
end
