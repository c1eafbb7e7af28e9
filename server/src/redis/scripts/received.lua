-- KEYS: the session. ARGV: epoch, offset.
local st = hold(ARGV[1])
if st ~= 0 then return st end
local off = math.min(tonumber(ARGV[2]), num(redis.call('HGET', K, 'lo')))
if off > num(redis.call('HGET', K, 'rc')) then
  redis.call('HSET', K, 'rc', str(off))
  redis.call('XTRIM', K .. ':in', 'MINID', str(off + 1) .. '-0')
end
return 0
