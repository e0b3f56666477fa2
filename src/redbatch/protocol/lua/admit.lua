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
-- Pass 1: check every request and count them (nothing is added unless all fit).
local count = 0
local i = 5
while i <= #ARGV do
  local n = tonumber(ARGV[i + 1])
  if n + 4 > 64 then
    return redis.error_reply('admit: a request of ' .. n .. ' values (at most 60)')
  end
  count = count + 1
  i = i + n + 2
end
local length = redis.call('XLEN', KEYS[1])
if max_len > 0 and length + count > max_len then
  return {0, length}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local enq = string.format('%.0f', now)
-- A call's requests mostly share one timeout: each deadline's text is made once.
local deadlines = {}
-- One argument table for every XADD, filled by index and unpacked to its length: no table
-- per request (what is left past the length from a longer request is not sent).
local args = {}
local ids = {1}
i = 5
while i <= #ARGV do
  local timeout_ms, n = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local last = i + 1 + n  -- the last field's value (payload, which stays last)
  local m = 0
  for j = i + 2, last - 2 do
    m = m + 1
    args[m] = ARGV[j]
  end
  args[m + 1] = 'enq'
  args[m + 2] = enq
  m = m + 2
  if timeout_ms > 0 then
    local deadline = deadlines[timeout_ms]
    if deadline == nil then
      deadline = string.format('%.0f', now + timeout_ms)
      deadlines[timeout_ms] = deadline
    end
    args[m + 1] = 'deadline'
    args[m + 2] = deadline
    m = m + 2
  end
  args[m + 1] = ARGV[last - 1]
  args[m + 2] = ARGV[last]
  ids[#ids + 1] = redis.call('XADD', KEYS[1], '*', unpack(args, 1, m + 2))
  i = last + 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
redis.call('ZADD', KEYS[2], seq, seq)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return ids
