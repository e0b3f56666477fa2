-- admit: add requests to a queue's stream unless that would pass its length bound.
--
-- All or nothing: a full queue rejects the whole call (the producer raises QueueFull);
-- requests are never trimmed to make room.
--
-- KEYS[1]   the stream (lane) of the requests' priority
-- ARGV[1]   max_queue_len (entries waiting or in flight in this lane; 0 = no bound)
-- ARGV[2..] per request: the number of field values that follow (n), then n values
--           (field, value, field, value, ...)
--
-- Reply: {1, id, id, ...} when added, {0, current_length} when the queue is full
local max_len = tonumber(ARGV[1])
local requests = {}
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  requests[#requests + 1] = {i + 1, i + n}
  i = i + n + 1
end
local length = redis.call('XLEN', KEYS[1])
if max_len > 0 and length + #requests > max_len then
  return {0, length}
end
local ids = {1}
for _, span in ipairs(requests) do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(ARGV, span[1], span[2]))
end
return ids
