-- push_chunks: one step of a streaming batch. Keeps each chunk in its request's chunk stream,
-- pushes each producer's chunks with one RPUSH, and says which of the batch's running
-- requests were cancelled meanwhile (a cancelled request's chunk of this step is dropped).
--
-- KEYS[1..n]  the cancel keys of the batch's requests still running (n = ARGV[2])
-- KEYS[n+1..] chunk streams and reply lists, referenced by index from ARGV
-- ARGV[1]     TTL of the chunk streams and reply lists, ms
-- ARGV[2]     n
-- ARGV[3..]   8 values per chunk: its request's position p in KEYS[1..n] (its cancel key),
--             KEYS index of its chunk stream, KEYS index of its reply list (0: none),
--             request id, attempt, seq, tag ('chunk', or 'end': the item's end mark), body
--
-- Reply: the positions p (1..n) of the cancelled requests, ascending
local ttl = ARGV[1]
local n = tonumber(ARGV[2])
local cancelled = {}
local is_cancelled = {}
for p = 1, n do
  if redis.call('EXISTS', KEYS[p]) == 1 then
    cancelled[#cancelled + 1] = p
    is_cancelled[p] = true
  end
end
local pushes, order = {}, {}
for i = 3, #ARGV, 8 do
  local p, skey, rkey = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local id, attempt, seq = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local tag, body = ARGV[i + 6], ARGV[i + 7]
  if not is_cancelled[p] then
    -- The entry id <attempt>-<seq> only grows: a chunk of an older attempt (a worker taken
    -- for dead that still runs) after a newer attempt's is refused, and dropped here.
    local added = redis.pcall('XADD', KEYS[skey], attempt .. '-' .. seq, tag, body)
    if not (type(added) == 'table' and added.err) then
      redis.call('PEXPIRE', KEYS[skey], ttl)
      if rkey > 0 then
        if not pushes[rkey] then
          pushes[rkey] = {}
          order[#order + 1] = rkey
        end
        local list = pushes[rkey]
        list[#list + 1] = cmsgpack.pack({id, tag, tonumber(attempt), tonumber(seq), body})
      end
    end
  end
end
for _, rkey in ipairs(order) do
  redis.call('RPUSH', KEYS[rkey], unpack(pushes[rkey]))
  redis.call('PEXPIRE', KEYS[rkey], ttl)
end
return cancelled
