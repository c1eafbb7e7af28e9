-- KEYS: the session. ARGV: name, node id, ttl_ms. A fresh session, held by
-- epoch 1 and connected.
redis.call('HSET', K, 'name', ARGV[1], 'epoch', '1', 'h', '0', 'lo', '0',
  'rc', '0', 'cn', '1', 'nd', ARGV[2], 'la', '0', 'dc', '0-0:0', 'ds', '0', 'dt', '0')
keep(ARGV[3])
return 1
