-- KEYS: the session. ARGV: epoch, channel, the channel's position now
-- (`<last id>:<seq>`), so only entries appended from now on are numbered
-- for the session.
local st = hold(ARGV[1])
if st ~= 0 then return st end
local subs = K .. ':subs'
if redis.call('HEXISTS', subs, ARGV[2]) == 0 then
  redis.call('HSET', subs, ARGV[2], ARGV[3])
  local ttl = redis.call('PTTL', K)
  if ttl > 0 then redis.call('PEXPIRE', subs, ttl) end
end
return 0
