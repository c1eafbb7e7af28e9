-- KEYS: the session. ARGV: ttl_ms. Reply {1, name} when the session exists
-- (its keys now expire ttl_ms from now), else {0}.
if redis.call('EXISTS', K) == 0 then return {0} end
keep(ARGV[1])
return {1, redis.call('HGET', K, 'name')}
