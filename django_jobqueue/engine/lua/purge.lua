--[[
  Purge one list of a queue, a chunk at a time: take up to `limit` ids from
  the oldest end of the list (or the soonest-due end of the scheduled set),
  and delete the hash of every job that is still in the state the list stands
  for, releasing its unique key and TTL deadline. An id whose hash says
  otherwise (a stale duplicate, or a hash CLEANUP already expired) is only
  dropped from the list. The caller repeats until the list is empty or it has
  purged as many ids as the list held when it started, so each call stays
  short and Redis keeps serving other clients in between.
  The processing list is never purged: its jobs are running.

  KEYS[1] purged: the list (pending, completed, failed) or sorted set (scheduled)
  KEYS[2] job_prefix   KEYS[3] deadlines   KEYS[4] unique
  KEYS[5] stats        KEYS[6] events

  ARGV[1] now ms (0 = server clock)  ARGV[2] kind: "list" or "zset"
  ARGV[3] limit: most ids per call   ARGV[4..] statuses a job on this list has
                                     (e.g. "failed", "lost" for the failed list)

  Returns {ids taken off the list, job hashes deleted, ids left on the list}.
  Events: deleted (with "reason": "purged") for every job whose hash it deleted;
  the "deleted" counter grows by as much.
]]
--@include _lib
--@include _jobs

local now = now_ms(ARGV[1])
local chunk = tonumber(ARGV[3]) or 500
local wanted = {}
for i = 4, #ARGV do wanted[ARGV[i]] = true end

local ids = {}
if ARGV[2] == 'zset' then
  local popped = redis.call('ZPOPMIN', KEYS[1], chunk)
  for i = 1, #popped, 2 do table.insert(ids, popped[i]) end
else
  -- The oldest ids sit at the right (LPUSH adds at the left).
  ids = redis.call('RPOP', KEYS[1], chunk) or {}
end

local deleted = 0
for _, id in ipairs(ids) do
  local job_key = KEYS[2] .. id
  local cur = redis.call('HMGET', job_key, 'status', 'name', 'queue', 'attempts')
  if cur[1] and wanted[cur[1]] then
    redis.call('ZREM', KEYS[3], id)
    release_unique(KEYS[4], job_key, id)
    redis.call('DEL', job_key)
    deleted = deleted + 1
    emit(KEYS[6], id, 'deleted', 'deleted', {cur[2], cur[3], cur[4]}, now, {reason = 'purged'})
  end
end
if deleted > 0 then redis.call('HINCRBY', KEYS[5], 'deleted', deleted) end

local left
if ARGV[2] == 'zset' then left = redis.call('ZCARD', KEYS[1]) else left = redis.call('LLEN', KEYS[1]) end
return {#ids, deleted, left}
