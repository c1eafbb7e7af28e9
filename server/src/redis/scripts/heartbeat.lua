-- ARGV: P, node id, node ttl_ms, session ttl_ms, session ids held.
redis.call('SET', P .. 'node:' .. ARGV[2], '1', 'PX', ARGV[3])
for i = 5, #ARGV do
  if redis.call('EXISTS', skey(ARGV[i])) == 1 then keep(ARGV[i], ARGV[4]) end
end
return 0
