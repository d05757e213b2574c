-- Shared promotion of due scheduled jobs, pasted by the loader
-- (`--@include _promote`) after _lib and _jobs. Not a script of its own.
--
-- promote(scheduled, pending, events, job_prefix, now, limit) moves at most
-- `limit` ids whose due time has come from the scheduled set to the pending
-- list (newest end, so they queue behind what is already waiting) and returns
-- how many it moved.

local function promote(scheduled, pending, events, job_prefix, now, limit)
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(due) do
    redis.call('ZREM', scheduled, id)
    local job_key = job_prefix .. id
    if redis.call('EXISTS', job_key) == 1 then
      local meta = read_meta(job_key)
      redis.call('HSET', job_key, 'status', 'pending')
      redis.call('LPUSH', pending, id)
      emit(events, id, 'promoted', 'pending', meta, now)
    end
  end
  return #due
end
