-- move_due: put delayed retries whose time has come back into the stream.
--
-- KEYS[1]   the queue's stream
-- KEYS[2]   the queue's delayed set (score: due time, ms; member: msgpack flat array of the
--           entry's fields, old-style raw strings)
-- KEYS[3]   the queue's dead-letter stream
-- ARGV[1]   now, ms since epoch
-- ARGV[2]   at most this many per call
-- ARGV[3]   dead-letter stream max length (approximate trim)
--
-- A member that cannot be read back into an entry is dead-lettered (field `member` holds
-- it raw) instead of failing the script: one bad member must not block every retry after it.
--
-- Reply: {moved, dead_lettered}
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved, dead = 0, 0
for _, member in ipairs(due) do
  local ok, fields = pcall(cmsgpack.unpack, member)
  local added = false
  if ok and type(fields) == 'table' and #fields >= 2 and #fields % 2 == 0 then
    local reply = redis.pcall('XADD', KEYS[1], '*', unpack(fields))
    added = type(reply) ~= 'table' or reply.err == nil
  end
  if added then
    moved = moved + 1
  else
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*',
      'reason', 'unreadable delayed retry', 'member', member)
    dead = dead + 1
  end
  redis.call('ZREM', KEYS[2], member)
end
return {moved, dead}
