-- KEYS: the name key. ARGV: op, then
-- `claim` expected holder ('' = none), new holder, ttl_ms: reply 1 when the
--   name held `expected` and now holds the new one, else 0;
-- `keep` holder, ttl_ms: the name expires ttl_ms from now if it holds it;
-- `release` holder: the name is free if it held it.
local holder = redis.call('GET', K) or ''
if ARGV[1] == 'claim' then
  if holder ~= ARGV[2] then return 0 end
  redis.call('SET', K, ARGV[3], 'PX', ARGV[4])
  return 1
end
if holder ~= ARGV[2] then return 0 end
if ARGV[1] == 'keep' then
  redis.call('PEXPIRE', K, ARGV[3])
else
  redis.call('DEL', K)
end
return 1
