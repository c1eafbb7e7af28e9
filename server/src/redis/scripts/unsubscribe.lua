-- ARGV: P, id, epoch, channel.
local sk = skey(ARGV[2])
local st = hold(sk, ARGV[3])
if st ~= 0 then return st end
redis.call('HDEL', sk .. ':subs', ARGV[4])
return 0
