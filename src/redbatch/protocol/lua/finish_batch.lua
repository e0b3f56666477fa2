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
-- over all result and guard keys (then, only if some exist, one over each kind) spares the
-- per-item checks in the common case where no result exists yet and no request was
-- submitted with its own id. In that case an "r" item costs no table: it is read from ARGV
-- where it stands and written with one HSET and one PEXPIRE (the script's own work per
-- request was about as much Redis CPU as its commands').
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
local first_common, last_common = 6, 5 + n_common
-- An "r" item's HSET in one call without a table: its 8 or 10 values and the common ones.
local r_in_one_call = n_common + 10 <= CHUNK

local function refuse(why)
  return redis.error_reply('finish_batch refused before writing anything: ' .. why)
end

-- Calls command(fixed..., chunk of list...) once per CHUNK values of list; fixed holds at
-- most two values (passed as arguments: no table built and copied per call).
local function chunked(command, fixed, list)
  local total, n_fixed, n_list = 0, #fixed, #list
  for s = 1, n_list, CHUNK do
    local e = math.min(n_list, s + CHUNK - 1)
    local n
    if n_fixed == 0 then
      n = redis.call(command, unpack(list, s, e))
    elseif n_fixed == 1 then
      n = redis.call(command, fixed[1], unpack(list, s, e))
    else
      n = redis.call(command, fixed[1], fixed[2], unpack(list, s, e))
    end
    if type(n) == 'number' then total = total + n end
  end
  return total
end

local function of_type(key, wanted)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == wanted
end

-- The "r" item at ARGV[i] as a table (the rare paths: its result exists, a guard set exists,
-- its request id came twice, or the common fields are too many for one call).
local function r_item(i, at)
  local status, body, ct = ARGV[i + 5], ARGV[i + 6], ARGV[i + 9]
  local fields = {'status', status, status == 'ok' and 'payload' or 'error', body,
    'attempt', ARGV[i + 7], 'enq', ARGV[i + 8]}
  if ct ~= '' then
    fields[#fields + 1] = 'ct'
    fields[#fields + 1] = ct
  end
  for j = first_common, last_common do
    fields[#fields + 1] = ARGV[j]
  end
  return {kind = 'r', entry_id = ARGV[i + 1], request_id = ARGV[i + 2],
    reply_idx = tonumber(ARGV[i + 3]), reply = ARGV[i + 4], fields = fields, at = at}
end

-- Pass 1: read the items from ARGV (no Redis call). An "r" item (the common case) is only
-- its index into ARGV: no table per item; every other item is a table.
local items = {}
local n_items = 0
local key_at = 4
local i = 6 + n_common
local n_argv = #ARGV
while i <= n_argv do
  local kind = ARGV[i]
  n_items = n_items + 1
  if kind == 'r' then
    items[n_items] = i
    key_at = key_at + 2
    i = i + 10
  else
    local item = {kind = kind, entry_id = ARGV[i + 1], reply_idx = 0}
    if kind == 'd' then
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
    items[n_items] = item
  end
end
if i ~= n_argv + 1 then return refuse('malformed arguments') end
if key_at ~= 4 + 2 * n_outcomes then return refuse('outcome count does not match the items') end

-- Pass 2: every key a write below could fail on (reads only). One EXISTS over all result
-- and guard keys (a slice of KEYS, no table); only when some exist, one over each kind.
local any_result, any_guard = false, false
local any_existing = false
for s = 4, 3 + 2 * n_outcomes, CHUNK do
  if redis.call('EXISTS', unpack(KEYS, s, math.min(3 + 2 * n_outcomes, s + CHUNK - 1))) > 0 then
    any_existing = true
    break
  end
end
if any_existing then
  local result_keys, guard_keys = {}, {}
  for k = 4, 3 + 2 * n_outcomes, 2 do
    result_keys[#result_keys + 1] = KEYS[k]
    guard_keys[#guard_keys + 1] = KEYS[k + 1]
  end
  any_result = chunked('EXISTS', {}, result_keys) > 0
  any_guard = chunked('EXISTS', {}, guard_keys) > 0
end
local any_dead, any_delayed = false, false
local reply_checked = {}
-- The reply-key index of each distinct ARGV value an "r" item names it by (0: none).
local reply_at = {}
key_at = 4
for n = 1, n_items do
  local item = items[n]
  local at, reply_idx
  if type(item) == 'number' then
    at = key_at
    key_at = key_at + 2
    local idx_arg = ARGV[item + 3]
    reply_idx = reply_at[idx_arg]
    if reply_idx == nil then
      reply_idx = tonumber(idx_arg)
      if reply_idx == nil then return refuse('malformed arguments') end
      reply_at[idx_arg] = reply_idx
    end
  else
    at, reply_idx = item.at, item.reply_idx
    if at then key_at = key_at + 2 end
    any_dead = any_dead or (item.dead ~= nil and #item.dead > 0)
    any_delayed = any_delayed or item.kind == 'd'
  end
  if at and any_result and not of_type(KEYS[at], 'hash') then
    return refuse(KEYS[at] .. ' is not a hash')
  end
  if at and any_guard and not of_type(KEYS[at + 1], 'set') then
    return refuse(KEYS[at + 1] .. ' is not a set')
  end
  if reply_idx > 0 and not reply_checked[reply_idx] then
    if not of_type(KEYS[reply_idx], 'list') then
      return refuse(KEYS[reply_idx] .. ' is not a list')
    end
    reply_checked[reply_idx] = true
  end
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

-- Queues a reply for the reply key KEYS[reply_idx], in item order.
local function queue_reply(reply_idx, reply)
  local list = replies[reply_idx]
  if list == nil then
    list = {}
    replies[reply_idx] = list
    reply_order[#reply_order + 1] = reply_idx
  end
  list[#list + 1] = reply
end

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
  if item.reply_idx > 0 then queue_reply(item.reply_idx, reply) end
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

local slow_r = any_result or any_guard or not r_in_one_call
key_at = 4
for n = 1, n_items do
  local item = items[n]
  if type(item) == 'number' then
    -- An "r" item: ARGV[item + 1..9] are entry id, request id, reply-key index, reply,
    -- status, body, attempt, enq, ct.
    local result_key = KEYS[key_at]
    ids[n] = ARGV[item + 1]
    if slow_r or written[result_key] then
      record(r_item(item, key_at))
    else
      local status, ct = ARGV[item + 5], ARGV[item + 9]
      local body_field = status == 'ok' and 'payload' or 'error'
      if ct == '' then
        redis.call('HSET', result_key, 'status', status, body_field, ARGV[item + 6],
          'attempt', ARGV[item + 7], 'enq', ARGV[item + 8],
          unpack(ARGV, first_common, last_common))
      else
        redis.call('HSET', result_key, 'status', status, body_field, ARGV[item + 6],
          'attempt', ARGV[item + 7], 'enq', ARGV[item + 8], 'ct', ct,
          unpack(ARGV, first_common, last_common))
      end
      redis.call('PEXPIRE', result_key, ttl)
      written[result_key] = true
      local reply_idx = reply_at[ARGV[item + 3]]
      if reply_idx > 0 then queue_reply(reply_idx, ARGV[item + 4]) end
    end
    key_at = key_at + 2
  else
    ids[n] = item.entry_id
    if item.at then key_at = key_at + 2 end
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
end
for _, idx in ipairs(reply_order) do
  chunked('RPUSH', {KEYS[idx]}, replies[idx])
  redis.call('PEXPIRE', KEYS[idx], ttl)
end
chunked('XACK', {KEYS[1], group}, ids)
chunked('XDEL', {KEYS[1]}, ids)
table.insert(followers, 1, existed)
return followers
