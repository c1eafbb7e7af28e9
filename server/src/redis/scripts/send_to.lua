-- KEYS: the session. ARGV: payload, text, backlog, notice channel, session
-- id. Reply 1 sent, 0 no such session.
if redis.call('EXISTS', K) == 0 then return 0 end
local t = clock(redis.call('HGET', K, 'dt'))
local s = redis.call('HINCRBY', K, 'ds', 1)
local dk = K .. ':d'
redis.call('XADD', dk, 'MAXLEN', ARGV[3], t .. '-*', 's', s, 'p', ARGV[1], 't', ARGV[2])
redis.call('HSET', K, 'dt', t)
local ttl = redis.call('PTTL', K)
if ttl > 0 then redis.call('PEXPIRE', dk, ttl) end
redis.call('PUBLISH', ARGV[4], 's:' .. ARGV[5])
return 1
