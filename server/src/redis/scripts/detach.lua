-- KEYS: the session. ARGV: epoch, now_ms, ttl_ms. Reply {status, name}.
local st = hold(ARGV[1])
if st ~= 0 then return {st} end
redis.call('HSET', K, 'cn', '0', 'la', ARGV[2])
keep(ARGV[3])
return {0, redis.call('HGET', K, 'name')}
