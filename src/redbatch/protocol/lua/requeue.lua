-- requeue: move entries held by one consumer back to the stream, atomically per entry.
--
-- Used by the scheduler for dead or hung workers (mode "retry": attempt + 1 for an entry
-- the worker had started, i.e. delivery count >= 2, dead-lettered past max_attempts) and by
-- a draining worker for entries it read but never started (mode "handback": same attempt).
-- Each entry is handled only if it is still pending to from_consumer: a second scheduler, or
-- the worker finishing it meanwhile, makes it a no-op.
--
-- KEYS[1]   the stream (lane) the entries are pending in; they are re-added to it (one call
--           per lane: rb:{Q}:stream for normal, rb:{Q}:stream:high, rb:{Q}:stream:low)
-- KEYS[2]   the queue's dead-letter stream
-- KEYS[3..] result and reply keys referenced by index from ARGV (all carry {Q})
--
-- ARGV[1] group   ARGV[2] from_consumer   ARGV[3] mode ("retry" | "handback")
-- ARGV[4] max_attempts   ARGV[5] result/reply TTL, ms   ARGV[6] dead-letter max length
-- ARGV[7] now, ms since epoch   ARGV[8] reason (for the dead letter and the dead result)
-- ARGV[9..] 5 values per entry: entry id; index into KEYS of its result key (0: unknown id);
--           index into KEYS of its reply key (0: none); request id ("" if unknown); index
--           into KEYS of its guard set (0: none), read and deleted when it is dead-lettered
--
-- An entry with more than MAX_FIELDS fields (more than the wire contract allows; Redis takes
-- any XADD) is dead-lettered as a bounded copy (the first MAX_FIELDS - 1 fields, names and
-- values other than the payload cut to their bounds) in either mode: re-added, it could
-- never be read back into a request. Key types are checked before the first write, so an
-- error leaves the state unchanged and every entry still pending.
--
-- Reply: {requeued, dead_lettered, skipped, {request id, producer id, ...}, ...}: the last
-- part lists, per dead-lettered request, the members of its guard set (idempotent submit),
-- who must be told the stored outcome too (push_outcome.lua)
local group, from, mode = ARGV[1], ARGV[2], ARGV[3]
local max_attempts = tonumber(ARGV[4])
local ttl, dead_maxlen, now, reason = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local requeued, dead, skipped = 0, 0, 0
local followers = {}
-- The wire contract's bounds (fields.MAX_ENTRY_FIELDS, MAX_FIELD_NAME_BYTES, MAX_FIELD_BYTES).
local MAX_FIELDS, MAX_NAME, MAX_VALUE = 32, 64, 1024

local function of_type(key, wanted)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == wanted
end
if not of_type(KEYS[2], 'stream') then
  return redis.error_reply('requeue refused before writing anything: ' .. KEYS[2] .. ' is not a stream')
end
for i = 9, #ARGV, 5 do
  for offset, wanted in pairs({[1] = 'hash', [2] = 'list', [4] = 'set'}) do
    local idx = tonumber(ARGV[i + offset])
    if idx > 0 and not of_type(KEYS[idx], wanted) then
      return redis.error_reply('requeue refused before writing anything: ' .. KEYS[idx] ..
        ' is not a ' .. wanted)
    end
  end
end

-- The first MAX_FIELDS - 1 fields of an entry, cut to their bounds (room for `reason`).
local function bounded(flat)
  local out, seen = {}, {}
  for j = 1, #flat, 2 do
    if #out >= 2 * (MAX_FIELDS - 1) then break end
    local name = string.sub(flat[j], 1, MAX_NAME)
    if not seen[name] then
      seen[name] = true
      out[#out + 1] = name
      out[#out + 1] = name == 'payload' and flat[j + 1] or string.sub(flat[j + 1], 1, MAX_VALUE)
    end
  end
  return out
end

local function field(flat, name)
  for j = 1, #flat, 2 do
    if flat[j] == name then return flat[j + 1] end
  end
  return nil
end

local function with_attempt(flat, attempt)
  local out, seen = {}, false
  for j = 1, #flat, 2 do
    out[#out + 1] = flat[j]
    if flat[j] == 'attempt' then
      out[#out + 1] = attempt
      seen = true
    else
      out[#out + 1] = flat[j + 1]
    end
  end
  if not seen then
    -- keep 'payload' last, as producers write it
    table.insert(out, 1, attempt)
    table.insert(out, 1, 'attempt')
  end
  return out
end

for i = 9, #ARGV, 5 do
  local entry_id = ARGV[i]
  local result_idx, reply_idx = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local request_id = ARGV[i + 3]
  local guard_idx = tonumber(ARGV[i + 4])
  local pending = redis.call('XPENDING', KEYS[1], group, entry_id, entry_id, 1)
  if #pending == 0 or pending[1][2] ~= from then
    skipped = skipped + 1
  else
    local entries = redis.call('XRANGE', KEYS[1], entry_id, entry_id)
    if #entries > 0 then
      local flat = entries[1][2]
      local attempt = tonumber(field(flat, 'attempt') or '1') or 1
      -- Only a started entry (the worker set its delivery count to 2 before running it)
      -- used up an attempt; one merely read when its worker died goes back as it was.
      if mode == 'retry' and tonumber(pending[1][4]) >= 2 then attempt = attempt + 1 end
      local why, tried = reason, attempt - 1
      local oversized = #flat > 2 * MAX_FIELDS
      if oversized then
        why = (#flat / 2) .. ' fields: the wire contract allows at most ' .. MAX_FIELDS
      end
      if oversized or (mode == 'retry' and attempt > max_attempts) then
        local dead_entry = bounded(flat)
        dead_entry[#dead_entry + 1] = 'reason'
        dead_entry[#dead_entry + 1] = why
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', dead_maxlen, '*', unpack(dead_entry))
        if result_idx > 0 and redis.call('EXISTS', KEYS[result_idx]) == 0 then
          redis.call('HSET', KEYS[result_idx], 'status', 'dead', 'error', why,
            'worker', from, 'attempt', tostring(tried), 'enq', field(flat, 'enq') or '0',
            'start', '0', 'end', now, 'batch', '0')
          redis.call('PEXPIRE', KEYS[result_idx], ttl)
          if reply_idx > 0 then
            redis.call('RPUSH', KEYS[reply_idx], cmsgpack.pack({request_id, 'dead', why}))
            redis.call('PEXPIRE', KEYS[reply_idx], ttl)
          end
        end
        if guard_idx > 0 then
          local members = redis.call('SMEMBERS', KEYS[guard_idx])
          if #members > 0 then
            table.insert(members, 1, request_id)
            followers[#followers + 1] = members
            redis.call('DEL', KEYS[guard_idx])
          end
        end
        dead = dead + 1
      else
        redis.call('XADD', KEYS[1], '*', unpack(with_attempt(flat, tostring(attempt))))
        requeued = requeued + 1
      end
    end
    redis.call('XACK', KEYS[1], group, entry_id)
    redis.call('XDEL', KEYS[1], entry_id)
  end
end
local reply = {requeued, dead, skipped}
for _, group in ipairs(followers) do reply[#reply + 1] = group end
return reply
