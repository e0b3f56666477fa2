-- remove_consumer: delete a consumer from the group of every lane of a queue if it holds
-- nothing in any of them and has no heartbeat.
--
-- XGROUP DELCONSUMER drops the consumer's pending entries from reach, so the check and the
-- delete must be one step: a worker that read something in between keeps its consumer.
-- A lane whose stream or group is missing (deleted by an operator) holds nothing.
--
-- KEYS[1]   the consumer's heartbeat key (rb:{Q}:worker:<name>)
-- KEYS[2..] the queue's lane streams (rb:{Q}:stream:high, rb:{Q}:stream, rb:{Q}:stream:low)
-- ARGV[1]   group   ARGV[2] consumer name
--
-- Reply: 1 when removed (from every lane's group), 0 otherwise
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local present = {}
for i = 2, #KEYS do
  local held = redis.pcall('XPENDING', KEYS[i], ARGV[1], '-', '+', 1, ARGV[2])
  if type(held) == 'table' and held.err == nil then
    if #held > 0 then return 0 end
    present[#present + 1] = KEYS[i]
  end
end
for _, stream in ipairs(present) do
  redis.call('XGROUP', 'DELCONSUMER', stream, ARGV[1], ARGV[2])
end
return 1
