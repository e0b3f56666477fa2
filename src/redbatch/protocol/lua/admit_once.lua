-- admit_once: add a request with a caller-chosen id unless that id is already known.
--
-- Idempotent submit: an id whose outcome is stored gets that outcome pushed to the caller's
-- reply list; an id still waiting or running gets the caller added to its guard set (the
-- worker tells every member when the first outcome is written); otherwise the request is
-- added, within the queue's length bound, and its guard created.
--
-- KEYS[1]   the stream (lane) of the request's priority; max_queue_len bounds this lane
-- KEYS[2]   the request's result key
-- KEYS[3]   the request's guard set (rb:{Q}:guard:<id>)
-- KEYS[4]   the caller's reply list
-- ARGV[1]   max_queue_len (0 = no bound)   ARGV[2] the caller's producer id
-- ARGV[3]   guard TTL, ms   ARGV[4] reply list TTL, ms   ARGV[5] the request id
-- ARGV[6]   the request's timeout in ms (0 = none)
-- ARGV[7..] the entry's fields and values
--
-- The entry gets `enq` (now, Redis's clock) and, with a timeout, `deadline` = enq + timeout,
-- before its last field (`payload` stays last).
-- A re-sent admission (lost reply) finds the guard it created and joins itself: no repeat.
--
-- Reply: {1, stream id} added; {2} answered from the stored result; {3} joined a waiting
-- request; {0, length} the queue is full
-- An entry past 64 values with `enq` and `deadline` (fields.MAX_ENTRY_FIELDS) fails before
-- anything is written.
if (#ARGV - 6) + 4 > 64 then return redis.error_reply('admit_once: more than 60 values') end
if redis.call('EXISTS', KEYS[2]) == 1 then
  local stored = redis.call('HMGET', KEYS[2], 'status', 'payload', 'error')
  local body = stored[3]
  if stored[1] == 'ok' then body = stored[2] end
  redis.call('RPUSH', KEYS[4], cmsgpack.pack({ARGV[5], stored[1] or 'error', body or ''}))
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
  return {2}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('SADD', KEYS[3], ARGV[2])
  return {3}
end
local max_len = tonumber(ARGV[1])
local length = redis.call('XLEN', KEYS[1])
if max_len > 0 and length >= max_len then
  return {0, length}
end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = {}
for j = 7, #ARGV - 2 do
  fields[#fields + 1] = ARGV[j]
end
fields[#fields + 1] = 'enq'
fields[#fields + 1] = string.format('%.0f', now)
local timeout = tonumber(ARGV[6])
if timeout > 0 then
  fields[#fields + 1] = 'deadline'
  fields[#fields + 1] = string.format('%.0f', now + timeout)
end
fields[#fields + 1] = ARGV[#ARGV - 1]  -- the last field (payload) stays last
fields[#fields + 1] = ARGV[#ARGV]
return {1, redis.call('XADD', KEYS[1], '*', unpack(fields))}
