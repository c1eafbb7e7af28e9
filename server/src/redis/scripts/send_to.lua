-- ARGV: P, name, payload, text, backlog. Reply 1 sent, 0 no such name.
local id = redis.call('GET', P .. 'n:' .. ARGV[2])
if not id then return 0 end
local sk = skey(id)
if redis.call('EXISTS', sk) == 0 then return 0 end
local g = redis.call('INCR', P .. 'g')
local s = redis.call('HINCRBY', sk, 'ds', 1)
local dk = sk .. ':d'
redis.call('XADD', dk, 'MAXLEN', ARGV[5], str(g) .. '-0', 's', s, 'p', ARGV[3], 't', ARGV[4])
local ttl = redis.call('PTTL', sk)
if ttl > 0 then redis.call('PEXPIRE', dk, ttl) end
redis.call('PUBLISH', P .. 'notices', 's:' .. id)
return 1
