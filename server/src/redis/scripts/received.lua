-- ARGV: P, id, epoch, offset.
local sk = skey(ARGV[2])
local st = hold(sk, ARGV[3])
if st ~= 0 then return st end
local off = math.min(tonumber(ARGV[4]), num(redis.call('HGET', sk, 'lo')))
if off > num(redis.call('HGET', sk, 'rc')) then
  redis.call('HSET', sk, 'rc', str(off))
  redis.call('XTRIM', sk .. ':in', 'MINID', str(off + 1) .. '-0')
end
return 0
