-- admit: add requests to a queue's stream unless that would pass its length bound.
--
-- All or nothing: a full queue rejects the whole call (the producer raises QueueFull);
-- requests are never trimmed to make room.
--
-- Idempotent on re-send: an admission carries its producer's sequence number; one already
-- applied (its reply was lost and redis-py or the producer sent it again) adds nothing.
-- The set of applied numbers forgets those below the producer's low-water mark (numbers it
-- will never send again), so it holds about as many members as admissions in flight.
--
-- Server time: each entry gets `enq` (now, Redis's clock) and, when it has a timeout,
-- `deadline` = enq + timeout; no producer clock is involved. They go before the last field
-- given, so `payload` (written last by producers) stays last.
--
-- A request that would pass 64 values with `enq` and `deadline` (fields.MAX_ENTRY_FIELDS)
-- fails the whole call before anything is added (a worker could only dead-letter it; Lua
-- cannot unpack ~8,000 values).
--
-- KEYS[1]   the stream (lane) of the requests' priority
-- KEYS[2]   the producer's applied admissions (sorted set rb:{Q}:admitted:<producer id>)
-- ARGV[1]   max_queue_len (entries waiting or in flight in this lane; 0 = no bound)
-- ARGV[2]   this admission's sequence number (> 0)
-- ARGV[3]   the producer's low-water mark: numbers below it are never re-sent
-- ARGV[4]   TTL of KEYS[2], ms
-- ARGV[5..] per request: its timeout in ms (0 = none), the number of field values that
--           follow (n), then n values (field, value, field, value, ...)
--
-- Reply: {1, id, id, ...} when added, {0, current_length} when the queue is full,
-- {4} when this admission was applied before (nothing added now)
local seq = ARGV[2]
if redis.call('ZSCORE', KEYS[2], seq) then
  return {4}
end
local max_len = tonumber(ARGV[1])
local requests = {}
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  if n + 4 > 64 then
    return redis.error_reply('admit: a request of ' .. n .. ' values (at most 60)')
  end
  requests[#requests + 1] = {tonumber(ARGV[i]), i + 2, i + 1 + n}
  i = i + n + 2
end
local length = redis.call('XLEN', KEYS[1])
if max_len > 0 and length + #requests > max_len then
  return {0, length}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = {1}
for _, r in ipairs(requests) do
  local fields = {}
  for j = r[2], r[3] - 2 do
    fields[#fields + 1] = ARGV[j]
  end
  fields[#fields + 1] = 'enq'
  fields[#fields + 1] = string.format('%.0f', now)
  if r[1] > 0 then
    fields[#fields + 1] = 'deadline'
    fields[#fields + 1] = string.format('%.0f', now + r[1])
  end
  fields[#fields + 1] = ARGV[r[3] - 1]  -- the last field (payload) stays last
  fields[#fields + 1] = ARGV[r[3]]
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(fields))
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
redis.call('ZADD', KEYS[2], seq, seq)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return ids
