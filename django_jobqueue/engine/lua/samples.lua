--[[
  Add one worker's samples of a queue to the queue's histograms and to the
  time buckets its charts read, and note the queue's depths in those buckets.
  Each worker sends what it counted since its last call; buckets are keyed by
  the Redis server's clock, so every worker's counts of a moment meet in one
  bucket whatever its own clock says.

  KEYS[1] samples_prefix (this queue's samples keys start with it: <prefix>hist,
          <prefix><step>:<bucket start, s>)
  KEYS[2] pending  KEYS[3] processing
  ARGV[1] now ms (0 = server clock)
  ARGV[2] fine_step: seconds a fine bucket spans   ARGV[3] fine_keep: seconds it lives
  ARGV[4] coarse_step                              ARGV[5] coarse_keep
  ARGV[6..] counts {field, n}: added to the histograms hash and to both
          buckets; a field named "h:..." goes to the histograms hash only

  The histograms hash never expires (its counts only grow: Prometheus counters);
  buckets expire keep seconds after they were last written.
  Returns the fine bucket's start (s).
  Events: none.
]]
--@include _lib

local now_s = math.floor(now_ms(ARGV[1]) / 1000)
local pending = redis.call('LLEN', KEYS[2])
local processing = redis.call('LLEN', KEYS[3])
local hist = KEYS[1] .. 'hist'
-- {key, seconds it lives, start} of each bucket this moment falls in.
local function bucket(step, keep)
  step = tonumber(step)
  local start = now_s - now_s % step
  return {KEYS[1] .. int(step) .. ':' .. int(start), tonumber(keep), start}
end
local buckets = {bucket(ARGV[2], ARGV[3]), bucket(ARGV[4], ARGV[5])}
for i = 6, #ARGV, 2 do
  local field, n = ARGV[i], ARGV[i + 1]
  redis.call('HINCRBY', hist, field, n)
  if string.sub(field, 1, 2) ~= 'h:' then
    for _, b in ipairs(buckets) do redis.call('HINCRBY', b[1], field, n) end
  end
end
for _, b in ipairs(buckets) do
  redis.call('HSET', b[1], 'pending', pending, 'processing', processing)
  redis.call('EXPIRE', b[1], b[2])
end
return buckets[1][3]
