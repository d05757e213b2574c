--[[
  Add one batch of a worker's samples of a queue to the queue's histograms and
  to the time buckets its charts read, and note the queue's depths. A batch
  holds the runs the worker counted in one 10-second bucket (on its estimate
  of the Redis server's clock), so counts land where their runs were, however
  late they are sent.

  A batch carries the worker's sequence number: a batch sent again (its reply
  lost, or redis-py resending a pipeline) is recognised and not added twice.
  A worker's batches of one queue are sent in order, so the last number
  applied is all there is to keep.

  KEYS[1] samples_prefix (this queue's samples keys start with it: <prefix>hist,
          <prefix><step>:<bucket start, s>, <prefix>sent:<worker>)
  KEYS[2] pending  KEYS[3] processing
  ARGV[1] now ms (0 = server clock)
  ARGV[2] worker: the sending worker's id
  ARGV[3] seq: the batch's number, from 1 (0: no counts; only the depths are noted)
  ARGV[4] start: the 10-s bucket of the batch's runs, in s
  ARGV[5] fine_step: seconds a fine bucket spans   ARGV[6] fine_keep: seconds it lives
  ARGV[7] coarse_step                              ARGV[8] coarse_keep
  ARGV[9..] counts {field, n}: added to the histograms hash and to both of the
          batch's buckets; a field named "h:..." goes to the histograms hash only

  Every key is checked before the first write: a samples key holding another
  type (written by hand) makes the call write nothing.
  Returns {status, now ms}: status 1 added, 0 already added before (a resend),
  -1 a samples key holds another type.
  Events: none.
]]
--@include _lib

local now = now_ms(ARGV[1])
local now_s = math.floor(now / 1000)
local prefix = KEYS[1]
local hist = prefix .. 'hist'
local sent = prefix .. 'sent:' .. ARGV[2]
local seq = tonumber(ARGV[3])

local function bucket(step, at)
  step = tonumber(step)
  return prefix .. int(step) .. ':' .. int(at - at % step)
end
local start = tonumber(ARGV[4])
local counted = {bucket(ARGV[5], start), bucket(ARGV[7], start)}
local noted = {bucket(ARGV[5], now_s), bucket(ARGV[7], now_s)}
local keep = {tonumber(ARGV[6]), tonumber(ARGV[8])}

for _, key in ipairs({hist, counted[1], counted[2], noted[1], noted[2]}) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= 'hash' then return {-1, now} end
end
local t = redis.call('TYPE', sent)['ok']
if t ~= 'none' and t ~= 'string' then return {-1, now} end

local status = 1
if seq > 0 then
  local last = tonumber(redis.call('GET', sent))
  if last and last >= seq then
    status = 0
  else
    for i = 9, #ARGV, 2 do
      local field, n = ARGV[i], ARGV[i + 1]
      redis.call('HINCRBY', hist, field, n)
      if string.sub(field, 1, 2) ~= 'h:' then
        for _, key in ipairs(counted) do redis.call('HINCRBY', key, field, n) end
      end
    end
    redis.call('SET', sent, seq, 'EX', keep[1])
  end
end

local pending = redis.call('LLEN', KEYS[2])
local processing = redis.call('LLEN', KEYS[3])
for _, key in ipairs(noted) do
  redis.call('HSET', key, 'pending', pending, 'processing', processing)
end
for i = 1, 2 do
  -- Each bucket written lives keep seconds from its last write.
  for _, key in ipairs({counted[i], noted[i]}) do
    if redis.call('EXISTS', key) == 1 then redis.call('EXPIRE', key, keep[i]) end
  end
end
return {status, now}
