-- ARGV: P, id, epoch, now_ms, ttl_ms.
local id = ARGV[2]
local sk = skey(id)
local st = hold(sk, ARGV[3])
if st ~= 0 then return st end
redis.call('HSET', sk, 'cn', '0', 'la', ARGV[4])
keep(id, ARGV[5])
return 0
