-- ARGV: P, id, epoch, channel. The cursor starts at the present, so only
-- entries appended from now on are numbered for the session.
local sk = skey(ARGV[2])
local st = hold(sk, ARGV[3])
if st ~= 0 then return st end
local subs = sk .. ':subs'
if redis.call('HEXISTS', subs, ARGV[4]) == 0 then
  local g = redis.call('GET', P .. 'g') or '0'
  local s = redis.call('HGET', P .. 'cseq', ARGV[4]) or '0'
  redis.call('HSET', subs, ARGV[4], g .. ':' .. s)
  local ttl = redis.call('PTTL', sk)
  if ttl > 0 then redis.call('PEXPIRE', subs, ttl) end
end
return 0
