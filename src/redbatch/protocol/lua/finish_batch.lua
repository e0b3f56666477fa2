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
-- Nothing is written until everything that could fail is checked: the argument counts, each
-- dead-letter copy within the contract's bound (MAX_VALUES), and the type of every key that
-- exists (result hashes, guard sets, reply lists, the dead stream, the delayed set). A failed
-- check returns an error before the first write: the state is unchanged and the call can be
-- sent again. Long lists go to Redis in chunks of CHUNK values (Lua's unpack fails past
-- ~8,000). OOM cannot stop the script half-way: Redis refuses a script's write for memory
-- only before its first write.
--
-- Reply: {existed, {request id, producer id, ...}, ...}: the number of items whose result
-- already existed (the first outcome wins: the stored one is re-sent to the reply key, so a
-- producer always sees the winning outcome), then per finished request with a non-empty
-- guard set its members, who must be told the stored outcome too (push_outcome.lua).
local CHUNK = 1000
-- A dead-letter copy: at most 32 fields (fields.MAX_ENTRY_FIELDS, `reason` included).
local MAX_VALUES = 64
local group, ttl, dead_maxlen = ARGV[1], ARGV[2], ARGV[3]
local n_outcomes = tonumber(ARGV[4])
local n_common = tonumber(ARGV[5])
local common = {}
for j = 6, 5 + n_common do
  common[#common + 1] = ARGV[j]
end

local function refuse(why)
  return redis.error_reply('finish_batch refused before writing anything: ' .. why)
end

-- Calls command(fixed..., chunk of list...) once per CHUNK values of list.
local function chunked(command, fixed, list)
  local total = 0
  for s = 1, #list, CHUNK do
    local args = {}
    for _, v in ipairs(fixed) do args[#args + 1] = v end
    for j = s, math.min(#list, s + CHUNK - 1) do args[#args + 1] = list[j] end
    local n = redis.call(command, unpack(args))
    if type(n) == 'number' then total = total + n end
  end
  return total
end

local function of_type(key, wanted)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == wanted
end

-- Pass 1: read the items from ARGV (no Redis call).
local items = {}
local key_at = 4
local i = 6 + n_common
while i <= #ARGV do
  local kind = ARGV[i]
  local item = {kind = kind, entry_id = ARGV[i + 1], reply_idx = 0}
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
    item.request_id, item.reply_idx, item.reply = ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4]
    item.fields, item.at = fields, key_at
    key_at = key_at + 2
    i = i + 10
  elseif kind == 'd' then
    item.due, item.member = ARGV[i + 2], ARGV[i + 3]
    i = i + 4
  elseif kind == 'g' then
    local n_result = tonumber(ARGV[i + 5])
    local n_dead = n_result and tonumber(ARGV[i + 6 + n_result])
    if n_dead == nil then return refuse('malformed arguments') end
    item.request_id = ARGV[i + 2]
    if item.request_id ~= '' then
      item.reply_idx, item.reply = tonumber(ARGV[i + 3]), ARGV[i + 4]
      item.fields = {unpack(ARGV, i + 6, i + 5 + n_result)}
      item.at = key_at
      key_at = key_at + 2
    end
    if n_dead > MAX_VALUES or n_dead % 2 ~= 0 then
      return refuse('a dead-letter copy of ' .. n_dead .. ' values (at most ' .. MAX_VALUES .. ')')
    end
    item.dead = {unpack(ARGV, i + 7 + n_result, i + 6 + n_result + n_dead)}
    i = i + 7 + n_result + n_dead
  else
    return refuse('unknown item kind ' .. tostring(kind))
  end
  items[#items + 1] = item
end
if key_at ~= 4 + 2 * n_outcomes then return refuse('outcome count does not match the items') end

-- Pass 2: every key a write below could fail on (reads only).
local result_keys, guard_keys = {}, {}
for k = 4, 3 + 2 * n_outcomes, 2 do
  result_keys[#result_keys + 1] = KEYS[k]
  guard_keys[#guard_keys + 1] = KEYS[k + 1]
end
local any_result = chunked('EXISTS', {}, result_keys) > 0
local any_guard = chunked('EXISTS', {}, guard_keys) > 0
local any_dead, any_delayed = false, false
local reply_checked = {}
for _, item in ipairs(items) do
  if item.at and any_result and not of_type(KEYS[item.at], 'hash') then
    return refuse(KEYS[item.at] .. ' is not a hash')
  end
  if item.at and any_guard and not of_type(KEYS[item.at + 1], 'set') then
    return refuse(KEYS[item.at + 1] .. ' is not a set')
  end
  if item.reply_idx > 0 and not reply_checked[item.reply_idx] then
    if not of_type(KEYS[item.reply_idx], 'list') then
      return refuse(KEYS[item.reply_idx] .. ' is not a list')
    end
    reply_checked[item.reply_idx] = true
  end
  any_dead = any_dead or (item.dead ~= nil and #item.dead > 0)
  any_delayed = any_delayed or item.kind == 'd'
end
if any_dead and not of_type(KEYS[2], 'stream') then return refuse(KEYS[2] .. ' is not a stream') end
if any_delayed and not of_type(KEYS[3], 'zset') then return refuse(KEYS[3] .. ' is not a zset') end

-- Pass 3: the writes.
local written = {}
local existed = 0
local ids = {}
local followers = {}
local replies = {}
local reply_order = {}

-- Writes the result unless one exists (then the reply re-sends the stored outcome); queues
-- the reply; tells the guard set's members. Returns whether this outcome was the first.
local function record(item)
  local result_key, guard_key = KEYS[item.at], KEYS[item.at + 1]
  local reply = item.reply
  local first = true
  if (any_result or written[result_key]) and redis.call('EXISTS', result_key) == 1 then
    first = false
    existed = existed + 1
    local stored = redis.call('HMGET', result_key, 'status', 'payload', 'error')
    local body = stored[3]
    if stored[1] == 'ok' then body = stored[2] end
    reply = cmsgpack.pack({item.request_id, stored[1] or 'error', body or ''})
  elseif #item.fields > 0 then
    if #item.fields > CHUNK then
      chunked('HSET', {result_key}, item.fields)
    else  -- the common case, without chunked's two tables and copy per call
      redis.call('HSET', result_key, unpack(item.fields))
    end
    redis.call('PEXPIRE', result_key, ttl)
    written[result_key] = true
  end
  if item.reply_idx > 0 then
    local list = replies[item.reply_idx]
    if list == nil then
      list = {}
      replies[item.reply_idx] = list
      reply_order[#reply_order + 1] = item.reply_idx
    end
    list[#list + 1] = reply
  end
  if any_guard then
    local members = redis.call('SMEMBERS', guard_key)
    if #members > 0 then
      table.insert(members, 1, item.request_id)
      followers[#followers + 1] = members
      redis.call('DEL', guard_key)
    end
  end
  return first
end

for _, item in ipairs(items) do
  ids[#ids + 1] = item.entry_id
  if item.kind == 'd' then
    redis.call('ZADD', KEYS[3], item.due, item.member)
  else
    local first = true
    if item.at then first = record(item) end
    if first and item.dead and #item.dead > 0 then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', dead_maxlen, '*', unpack(item.dead))
    end
  end
end
for _, idx in ipairs(reply_order) do
  chunked('RPUSH', {KEYS[idx]}, replies[idx])
  redis.call('PEXPIRE', KEYS[idx], ttl)
end
chunked('XACK', {KEYS[1], group}, ids)
chunked('XDEL', {KEYS[1]}, ids)
table.insert(followers, 1, existed)
return followers
