-- remove_consumer: delete a consumer from the group if it holds nothing and has no heartbeat.
--
-- XGROUP DELCONSUMER drops the consumer's pending entries from reach, so the check and the
-- delete must be one step: a worker that read something in between keeps its consumer.
--
-- KEYS[1]   the queue's stream
-- KEYS[2]   the consumer's heartbeat key (rb:{Q}:worker:<name>)
-- ARGV[1]   group   ARGV[2] consumer name
--
-- Reply: 1 when removed, 0 otherwise
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #held > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
