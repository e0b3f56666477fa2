-- move_due: put delayed retries whose time has come back into the stream.
--
-- KEYS[1]   the queue's stream
-- KEYS[2]   the queue's delayed set (score: due time, ms; member: msgpack flat array of the
--           entry's fields, old-style raw strings)
-- ARGV[1]   now, ms since epoch
-- ARGV[2]   at most this many per call
--
-- Reply: how many were moved
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[1], '*', unpack(cmsgpack.unpack(member)))
  redis.call('ZREM', KEYS[2], member)
end
return #due
