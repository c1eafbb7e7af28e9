-- ARGV: P, id, lifetime_ms, now_ms, node id, ttl_ms. Reply {0} or
-- {1, epoch, name, H, last_offset, {channels}}.
local id = ARGV[2]
local sk = skey(id)
if redis.call('EXISTS', sk) == 0 then return {0} end
if redis.call('HGET', sk, 'cn') ~= '1'
   and tonumber(ARGV[4]) - num(redis.call('HGET', sk, 'la')) >= tonumber(ARGV[3]) then
  drop_session(id)
  return {0}
end
local epoch = redis.call('HINCRBY', sk, 'epoch', 1)
redis.call('HSET', sk, 'cn', '1', 'nd', ARGV[5])
keep(id, ARGV[6])
local name = redis.call('HGET', sk, 'name')
redis.call('PUBLISH', P .. 'notices', 't:' .. str(epoch) .. ':' .. id)
return {1, epoch, name, redis.call('HGET', sk, 'h'), redis.call('HGET', sk, 'lo'),
  redis.call('HKEYS', sk .. ':subs')}
