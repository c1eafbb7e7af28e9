-- KEYS: the session. ARGV: epoch, channel.
local st = hold(ARGV[1])
if st ~= 0 then return st end
redis.call('HDEL', K .. ':subs', ARGV[2])
return 0
