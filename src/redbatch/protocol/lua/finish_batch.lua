-- finish_batch: record the outcomes of one batch atomically.
--
-- KEYS[1]   the stream (lane) the batch's entries were read from (rb:{Q}:stream for normal,
--           rb:{Q}:stream:high, rb:{Q}:stream:low); a batch mixing lanes is one call per lane
-- KEYS[2]   the queue's dead-letter stream (rb:{Q}:dead)
-- KEYS[3]   the queue's delayed set        (rb:{Q}:delayed)
-- KEYS[4..] result keys, reply keys and guard keys referenced by index from ARGV (all
--           carry {Q})
--
-- ARGV[1]   consumer group name
-- ARGV[2]   result and reply TTL, ms
-- ARGV[3]   dead-letter stream max length (approximate trim)
-- ARGV[4..] per item, 8 fixed values then two counted runs:
--           entry id; index into KEYS of the result key (0: none); index into KEYS of the
--           reply key (0: none); the request id; the reply element (msgpack [id, status,
--           body]); index into KEYS of the request's guard set (0: none), read and deleted
--           once the request has its outcome; the due time (ms) of a delayed retry, "0" for
--           none; the delayed-set member (the entry's fields with the next attempt, a
--           msgpack flat array); n, the number of result hash values that follow, then
--           those n values (field, value, ...); m, the number of dead-letter entry values
--           that follow (0: not dead-lettered), then those m values (field, value, ...).
--           A delayed item gets no result and no reply: it is not finished.
--           Values travel as plain arguments (no msgpack to unpack here): Lua's unpack of
--           a slice of ARGV passes them to HSET/XADD as they are.
--
-- Replies are pushed once per reply key, in item order, with one PEXPIRE per key.
--
-- Reply: {existed, {request id, producer id, ...}, ...}: the number of items whose result
-- already existed (the first outcome wins: the stored one is re-sent to the reply key, so a
-- producer always sees the winning outcome), then per finished request with a non-empty
-- guard set its members, who must be told the stored outcome too (push_outcome.lua).
local ttl = ARGV[2]
local dead_maxlen = ARGV[3]
local existed = 0
local ids = {}
local followers = {}
local replies = {}
local reply_order = {}
local i = 4
while i <= #ARGV do
  local entry_id = ARGV[i]
  local result_idx = tonumber(ARGV[i + 1])
  local reply_idx = tonumber(ARGV[i + 2])
  local request_id = ARGV[i + 3]
  local reply = ARGV[i + 4]
  local guard_idx = tonumber(ARGV[i + 5])
  local due = ARGV[i + 6]
  local member = ARGV[i + 7]
  local n_result = tonumber(ARGV[i + 8])
  local result_at = i + 9
  local n_dead = tonumber(ARGV[result_at + n_result])
  local dead_at = result_at + n_result + 1
  i = dead_at + n_dead
  local first = true
  if due ~= '0' then
    redis.call('ZADD', KEYS[3], due, member)
  elseif result_idx > 0 then
    local result_key = KEYS[result_idx]
    if redis.call('EXISTS', result_key) == 1 then
      first = false
      existed = existed + 1
      local stored = redis.call('HMGET', result_key, 'status', 'payload', 'error')
      local body = stored[3]
      if stored[1] == 'ok' then body = stored[2] end
      reply = cmsgpack.pack({request_id, stored[1] or 'error', body or ''})
    elseif n_result > 0 then
      redis.call('HSET', result_key, unpack(ARGV, result_at, result_at + n_result - 1))
      redis.call('PEXPIRE', result_key, ttl)
    end
  end
  if reply_idx > 0 then
    local list = replies[reply_idx]
    if list == nil then
      list = {}
      replies[reply_idx] = list
      reply_order[#reply_order + 1] = reply_idx
    end
    list[#list + 1] = reply
  end
  if due == '0' and result_idx > 0 and guard_idx > 0 then
    local members = redis.call('SMEMBERS', KEYS[guard_idx])
    if #members > 0 then
      table.insert(members, 1, request_id)
      followers[#followers + 1] = members
      redis.call('DEL', KEYS[guard_idx])
    end
  end
  if first and n_dead > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', dead_maxlen, '*',
      unpack(ARGV, dead_at, dead_at + n_dead - 1))
  end
  ids[#ids + 1] = entry_id
end
for _, idx in ipairs(reply_order) do
  redis.call('RPUSH', KEYS[idx], unpack(replies[idx]))
  redis.call('PEXPIRE', KEYS[idx], ttl)
end
if #ids > 0 then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
end
table.insert(followers, 1, existed)
return followers
