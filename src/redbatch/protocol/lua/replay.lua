-- replay: move one dead letter back into the lane it came from, as a fresh first attempt.
--
-- One atomic step: the dead letter is re-added to its lane's stream (its `priority` field,
-- default normal) without `reason`, `attempt` (so attempt 1) and `deadline` (its producer's
-- wait is long over: kept, the re-run would only end `expired`), with the audit fields
-- `replayed` (how many times this request was replayed, counting this one) and
-- `replayed_at` (ms); the request's `dead` result is deleted (results are write-once: left
-- in place, the re-run's outcome would never be written) and the dead letter is deleted.
-- Everything is checked inside the call, so replaying one dead letter twice, or one
-- purged meanwhile, is a no-op. A result other than `dead` is never deleted: the request
-- has another outcome already, and a re-run could not change it.
--
-- KEYS[1]   the queue's dead-letter stream (rb:{Q}:dead)
-- KEYS[2]   the request's result key (rb:{Q}:result:<id>)
-- KEYS[3..] the queue's lane streams (rb:{Q}:stream:high, rb:{Q}:stream, rb:{Q}:stream:low)
-- ARGV[1]   the dead letter's entry id in KEYS[1]
-- ARGV[2]   the request id the caller read from it (must still be its `id` field)
-- ARGV[3]   now, ms since epoch (the `replayed_at` value)
-- ARGV[4]   the default priority (a dead letter without a `priority` field goes to its lane)
-- ARGV[5..] the priority of each lane stream, in the order of KEYS[3..]
--
-- Reply: {1, new entry id, priority, replayed count} replayed; {0} the dead letter is gone;
-- {-1, id field} the entry's id is not ARGV[2]; {-2, status} the request has a result that
-- is not `dead`; {-3, priority} the dead letter names an unknown priority; {-4, fields} it
-- has more fields than an entry may (a dead letter written before the contract's bound)
local lanes = {}
for j = 5, #ARGV do lanes[ARGV[j]] = KEYS[j - 2] end
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {0} end
local flat = found[1][2]
-- fields.MAX_ENTRY_FIELDS, plus the dead letter's `reason`: more could not be unpacked.
if #flat > 2 * 33 then return {-4, tostring(#flat / 2)} end
local fields = {}
for j = 1, #flat, 2 do fields[flat[j]] = flat[j + 1] end
if fields['id'] ~= ARGV[2] then return {-1, fields['id'] or ''} end
local priority = fields['priority'] or ARGV[4]
local stream = lanes[priority]
if stream == nil then return {-3, priority} end
local status = redis.call('HGET', KEYS[2], 'status')
if status and status ~= 'dead' then return {-2, status} end
local count = (tonumber(fields['replayed'] or '0') or 0) + 1
local drop = {reason = true, attempt = true, deadline = true, replayed = true, replayed_at = true}
-- the audit fields first: 'payload' stays last, as producers write it
local entry = {'replayed', tostring(count), 'replayed_at', ARGV[3]}
for j = 1, #flat, 2 do
  if not drop[flat[j]] then
    entry[#entry + 1] = flat[j]
    entry[#entry + 1] = flat[j + 1]
  end
end
local new_id = redis.call('XADD', stream, '*', unpack(entry))
redis.call('DEL', KEYS[2])
redis.call('XDEL', KEYS[1], ARGV[1])
return {1, new_id, priority, count}
