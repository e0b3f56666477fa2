-- leave: a producer stops waiting for a request submitted with its own id (its wait timed
-- out). The request is cancelled only when no other producer waits for it: several
-- producers may have joined it (admit_once), and one giving up must not cancel it for all.
--
-- KEYS[1]   the request's guard set (rb:{Q}:guard:<id>): the producers waiting for it
-- KEYS[2]   the request's cancel key
-- ARGV[1]   the leaving producer's id   ARGV[2] the cancel key's TTL, ms
--
-- Reply: 1 cancelled (it was the last waiter), 0 not cancelled (others wait, or the request
-- has its outcome already: the guard is gone)
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('SCARD', KEYS[1]) > 0 then
  return 0
end
-- Last waiter: keep the id guarded (a later submit of it joins, and gets `cancelled`).
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
