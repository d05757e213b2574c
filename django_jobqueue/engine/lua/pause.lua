--[[
  Pause or resume a queue, separately for enqueueing ("in") and claiming
  ("out"), like Disque's QPAUSE. Workers see a claim pause at their next claim
  (within a second); a paused enqueue raises QueuePaused in the caller.

  KEYS[1] paused (string "in", "out" or "all"; absent when not paused)
  ARGV[1] action: "pause" or "resume"   ARGV[2] direction: "in", "out" or "all"

  Returns the new state: "none", "in", "out" or "all".
  Events: none.
]]

local cur = redis.call('GET', KEYS[1]) or 'none'
local has_in = cur == 'in' or cur == 'all'
local has_out = cur == 'out' or cur == 'all'
local want_in = ARGV[2] == 'in' or ARGV[2] == 'all'
local want_out = ARGV[2] == 'out' or ARGV[2] == 'all'
if ARGV[1] == 'pause' then
  has_in = has_in or want_in
  has_out = has_out or want_out
else
  has_in = has_in and not want_in
  has_out = has_out and not want_out
end
local new = 'none'
if has_in and has_out then new = 'all' elseif has_in then new = 'in' elseif has_out then new = 'out' end
if new == 'none' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], new) end
return new
