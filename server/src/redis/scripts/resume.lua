-- KEYS: the session. ARGV: lifetime_ms, now_ms, node id, ttl_ms, notice
-- channel, session id. Reply {0} (no such session), {2, name} (it had
-- expired and is now gone: free its name) or
-- {1, epoch, name, H, last_offset, {channels}}.
if redis.call('EXISTS', K) == 0 then return {0} end
local name = redis.call('HGET', K, 'name')
if redis.call('HGET', K, 'cn') ~= '1'
   and tonumber(ARGV[2]) - num(redis.call('HGET', K, 'la')) >= tonumber(ARGV[1]) then
  redis.call('DEL', unpack(session_keys()))
  return {2, name}
end
local epoch = redis.call('HINCRBY', K, 'epoch', 1)
redis.call('HSET', K, 'cn', '1', 'nd', ARGV[3])
keep(ARGV[4])
redis.call('PUBLISH', ARGV[5], 't:' .. str(epoch) .. ':' .. ARGV[6])
return {1, epoch, name, redis.call('HGET', K, 'h'), redis.call('HGET', K, 'lo'),
  redis.call('HKEYS', K .. ':subs')}
