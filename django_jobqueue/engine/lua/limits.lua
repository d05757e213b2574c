--[[
  Change a queue's flow limits at run time (engine/limits.py set_limits): the
  overrides in the limits hash win over the settings' values until cleared,
  and every change is recorded, with who made it and the overrides before
  and after, in the capped limits log. Claims read the hash on each call, so
  workers follow a change at their next claim.

  KEYS[1] limits  KEYS[2] limits_log
  ARGV[1] record: JSON object describing the change (who, when, what)
  ARGV[2] log_length: most records kept
  ARGV[3] clear: space-separated fields to delete first ("" = none)
  ARGV[4..] fields: field, value pairs to set

  Returns the record as stored (JSON, with "before" and "after").
  Events: none.
]]

-- Both keys' types first: Redis keeps what a script wrote before an error.
local function wrong_type(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. key .. ' holds a ' .. t .. ', not a ' .. want .. ': nothing was changed')
  end
  return nil
end
local bad = wrong_type(KEYS[1], 'hash') or wrong_type(KEYS[2], 'list')
if bad then return bad end
local function snapshot()
  local flat = redis.call('HGETALL', KEYS[1])
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out
end
local record = cjson.decode(ARGV[1])
record.before = snapshot()
for field in string.gmatch(ARGV[3], '%S+') do redis.call('HDEL', KEYS[1], field) end
if #ARGV >= 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
record.after = snapshot()
local stored = cjson.encode(record)
redis.call('LPUSH', KEYS[2], stored)
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return stored
