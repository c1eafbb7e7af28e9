-- ARGV: P, name, node id, ttl_ms, random tag. Reply {0} (name taken) or
-- {1, id}.
local nk = P .. 'n:' .. ARGV[2]
local holder = redis.call('GET', nk)
if holder then
  if live(skey(holder)) then return {0} end
  drop_session(holder)
end
-- The counter keeps ids unique while Redis keeps its data; the random tag
-- keeps them unique if it loses it (an old token must never name a new
-- session).
local id = ARGV[3] .. '-' .. str(redis.call('INCR', P .. 'sid')) .. '-' .. ARGV[5]
local g = redis.call('GET', P .. 'g') or '0'
redis.call('HSET', skey(id), 'name', ARGV[2], 'epoch', '1', 'h', '0', 'lo', '0',
  'rc', '0', 'cn', '1', 'nd', ARGV[3], 'la', '0', 'dc', g .. ':0', 'ds', '0')
redis.call('SET', nk, id)
keep(id, ARGV[4])
return {1, id}
