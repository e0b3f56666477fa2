-- sizes: one queue's sizes for `redbatch status`'s summary of many queues; reads only.
--
-- One call instead of five commands: at 10,000 queues the client's work per command, not
-- Redis's, decides whether the summary takes well under a second.
--
-- KEYS[1]   the high lane's stream (rb:{Q}:stream:high)
-- KEYS[2]   the normal lane's stream (rb:{Q}:stream)
-- KEYS[3]   the low lane's stream (rb:{Q}:stream:low)
-- KEYS[4]   the delayed set (rb:{Q}:delayed)
-- KEYS[5]   the dead stream (rb:{Q}:dead)
--
-- Reply: {entries in the three lanes (XLEN summed: waiting + in flight), ZCARD of the delayed
-- set, XLEN of the dead stream}; a missing key counts 0
local length = 0
for i = 1, 3 do
  length = length + redis.call('XLEN', KEYS[i])
end
return {length, redis.call('ZCARD', KEYS[4]), redis.call('XLEN', KEYS[5])}
