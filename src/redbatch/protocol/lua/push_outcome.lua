-- push_outcome: tell more producers the stored outcome of one request.
--
-- Used after finish_batch/requeue report producers that joined a request through its guard
-- set (idempotent submit): each gets the same outcome the first producer got.
--
-- KEYS[1]   the request's result key
-- KEYS[2..] the reply lists to push to
-- ARGV[1]   the request id   ARGV[2] reply list TTL, ms
--
-- Reply: how many lists were told (0 if the result is gone)
local stored = redis.call('HMGET', KEYS[1], 'status', 'payload', 'error')
if not stored[1] then return 0 end
local body = stored[3]
if stored[1] == 'ok' then body = stored[2] end
local reply = cmsgpack.pack({ARGV[1], stored[1], body or ''})
for i = 2, #KEYS do
  redis.call('RPUSH', KEYS[i], reply)
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return #KEYS - 1
