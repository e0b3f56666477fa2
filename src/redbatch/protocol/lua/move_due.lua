-- move_due: put delayed retries whose time has come back into their lane's stream.
--
-- KEYS[1]   the queue's delayed set (score: due time, ms; member: msgpack flat array of the
--           entry's fields, old-style raw strings, with `priority` when not the default)
-- KEYS[2]   the queue's dead-letter stream
-- KEYS[3..] the queue's lane streams (rb:{Q}:stream:high, rb:{Q}:stream, rb:{Q}:stream:low)
-- ARGV[1]   now, ms since epoch
-- ARGV[2]   at most this many per call
-- ARGV[3]   dead-letter stream max length (approximate trim)
-- ARGV[4]   the default priority (a member without a `priority` field goes to its lane)
-- ARGV[5..] the priority of each lane stream, in the order of KEYS[3..]
--
-- A member that cannot be read back into an entry, has more fields than the wire contract
-- allows (MAX_FIELDS: Lua could not unpack it), names an unknown priority, or that its lane
-- refuses, is dead-lettered (field `member` holds its first MAX_MEMBER bytes, `reason` says
-- why) instead of failing the script: one bad member must not block every retry after it.
-- The dead stream's type is checked before the first write.
--
-- Reply: {moved, dead_lettered}
-- fields.MAX_ENTRY_FIELDS, plus the `priority` a member may carry besides.
local MAX_FIELDS = 33
local MAX_MEMBER = 65536
local lanes = {}
for j = 5, #ARGV do lanes[ARGV[j]] = KEYS[j - 2] end
local dead_type = redis.call('TYPE', KEYS[2])['ok']
if dead_type ~= 'none' and dead_type ~= 'stream' then
  return redis.error_reply('move_due refused before writing anything: ' .. KEYS[2] ..
    ' is not a stream')
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved, dead = 0, 0
for _, member in ipairs(due) do
  local ok, fields = pcall(cmsgpack.unpack, member)
  local reason = 'unreadable delayed retry'
  local added = false
  if ok and type(fields) == 'table' and #fields > 2 * MAX_FIELDS then
    reason = 'delayed retry of ' .. (#fields / 2) .. ' fields: the wire contract allows 32'
  elseif ok and type(fields) == 'table' and #fields >= 2 and #fields % 2 == 0 then
    local priority = ARGV[4]
    for j = 1, #fields, 2 do
      if fields[j] == 'priority' then priority = fields[j + 1] end
    end
    local stream = lanes[priority]
    if stream == nil then
      reason = 'delayed retry with unknown priority'
    else
      local reply = redis.pcall('XADD', stream, '*', unpack(fields))
      added = type(reply) ~= 'table' or reply.err == nil
      if not added then reason = 'its lane refused it: ' .. tostring(reply.err) end
    end
  end
  if added then
    moved = moved + 1
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'reason', reason,
      'member', string.sub(member, 1, MAX_MEMBER))
    dead = dead + 1
  end
  redis.call('ZREM', KEYS[1], member)
end
return {moved, dead}
