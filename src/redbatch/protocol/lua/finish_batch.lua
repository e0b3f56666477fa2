-- finish_batch: record the outcomes of one batch atomically.
--
-- KEYS[1]   the stream (lane) the batch's entries were read from (rb:{Q}:stream for normal,
--           rb:{Q}:stream:high, rb:{Q}:stream:low); a batch mixing lanes is one call per lane
-- KEYS[2]   the queue's dead-letter stream (rb:{Q}:dead)
-- KEYS[3]   the queue's delayed set        (rb:{Q}:delayed)
-- KEYS[4..] for each item with an outcome, in item order, its result key then its guard
--           key (the set of producer ids waiting on a request submitted with its own id);
--           after them the reply keys, referenced by index from ARGV (all carry {Q})
--
-- ARGV[1]   consumer group name
-- ARGV[2]   result and reply TTL, ms
-- ARGV[3]   dead-letter stream max length (approximate trim)
-- ARGV[4]   m, the number of items with an outcome (the result/guard key pairs in KEYS)
-- ARGV[5]   c, then c values: result hash fields common to the batch's "r" items (field,
--           value, ...: worker, start, end, batch)
-- then per item a kind and its values:
--   "r" a request that ran and ends (ok, error, cancelled, expired): entry id, request id,
--       index into KEYS of the reply key (0: none), the reply element (msgpack [id, status,
--       body]), status, body, attempt, enq, ct ("" for msgpack, which is not stored). Its
--       result hash is status, payload (ok) or error (otherwise), [ct,] attempt, enq and
--       the common fields. Eight short arguments: packing them is a worker's main cost.
--   "g" anything else with an outcome or a dead letter: entry id, request id ("" when the
--       entry cannot be addressed: no result, reply or guard), index of the reply key,
--       the reply element, n then n result hash values (field, value, ...), m then m
--       dead-letter entry values (0: not dead-lettered).
--   "d" a retry for later (not finished: no result, no reply): entry id, due time (ms),
--       the delayed-set member (the entry's fields with the next attempt, msgpack).
--
-- Replies are pushed once per reply key, in item order, with one PEXPIRE per key. One EXISTS
-- over all result keys, and one over all guard keys, spares the per-item checks in the
-- common case where no result exists yet and no request was submitted with its own id.
--
-- Reply: {existed, {request id, producer id, ...}, ...}: the number of items whose result
-- already existed (the first outcome wins: the stored one is re-sent to the reply key, so a
-- producer always sees the winning outcome), then per finished request with a non-empty
-- guard set its members, who must be told the stored outcome too (push_outcome.lua).
local ttl = ARGV[2]
local dead_maxlen = ARGV[3]
local n_outcomes = tonumber(ARGV[4])
local n_common = tonumber(ARGV[5])
local common = {}
for j = 6, 5 + n_common do
  common[#common + 1] = ARGV[j]
end
local any_result, any_guard = false, false
if n_outcomes > 0 then
  local result_keys, guard_keys = {}, {}
  for k = 4, 3 + 2 * n_outcomes, 2 do
    result_keys[#result_keys + 1] = KEYS[k]
    guard_keys[#guard_keys + 1] = KEYS[k + 1]
  end
  any_result = redis.call('EXISTS', unpack(result_keys)) > 0
  any_guard = redis.call('EXISTS', unpack(guard_keys)) > 0
end
local written = {}
local existed = 0
local ids = {}
local followers = {}
local replies = {}
local reply_order = {}
local key_at = 4

-- Writes the result unless one exists (then the reply re-sends the stored outcome); pushes
-- the reply; tells the guard set's members. Returns whether this outcome was the first.
local function record(request_id, reply_idx, reply, fields)
  local result_key, guard_key = KEYS[key_at], KEYS[key_at + 1]
  key_at = key_at + 2
  local first = true
  if (any_result or written[result_key]) and redis.call('EXISTS', result_key) == 1 then
    first = false
    existed = existed + 1
    local stored = redis.call('HMGET', result_key, 'status', 'payload', 'error')
    local body = stored[3]
    if stored[1] == 'ok' then body = stored[2] end
    reply = cmsgpack.pack({request_id, stored[1] or 'error', body or ''})
  elseif #fields > 0 then
    redis.call('HSET', result_key, unpack(fields))
    redis.call('PEXPIRE', result_key, ttl)
    written[result_key] = true
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
  if any_guard then
    local members = redis.call('SMEMBERS', guard_key)
    if #members > 0 then
      table.insert(members, 1, request_id)
      followers[#followers + 1] = members
      redis.call('DEL', guard_key)
    end
  end
  return first
end

local i = 6 + n_common
while i <= #ARGV do
  local kind = ARGV[i]
  ids[#ids + 1] = ARGV[i + 1]
  if kind == 'r' then
    local status, body, ct = ARGV[i + 5], ARGV[i + 6], ARGV[i + 9]
    local fields = {'status', status, status == 'ok' and 'payload' or 'error', body,
      'attempt', ARGV[i + 7], 'enq', ARGV[i + 8]}
    if ct ~= '' then
      fields[#fields + 1] = 'ct'
      fields[#fields + 1] = ct
    end
    for _, value in ipairs(common) do
      fields[#fields + 1] = value
    end
    record(ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4], fields)
    i = i + 10
  elseif kind == 'd' then
    redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  else
    local request_id = ARGV[i + 2]
    local n_result = tonumber(ARGV[i + 5])
    local result_at = i + 6
    local n_dead = tonumber(ARGV[result_at + n_result])
    local dead_at = result_at + n_result + 1
    local first = true
    if request_id ~= '' then
      local fields = {}
      for j = result_at, result_at + n_result - 1 do
        fields[#fields + 1] = ARGV[j]
      end
      first = record(request_id, tonumber(ARGV[i + 3]), ARGV[i + 4], fields)
    end
    if first and n_dead > 0 then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', dead_maxlen, '*',
        unpack(ARGV, dead_at, dead_at + n_dead - 1))
    end
    i = dead_at + n_dead
  end
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
