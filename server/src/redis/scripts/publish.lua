-- KEYS: the session. ARGV: epoch, seq, op. Reply a status, 1 when `seq` is
-- above H, 2 when it is not (a duplicate). `check` changes nothing; `set`
-- also moves H to `seq`.
local st = hold(ARGV[1])
if st ~= 0 then return st end
if not gt(ARGV[2], redis.call('HGET', K, 'h')) then return 2 end
if ARGV[3] == 'set' then redis.call('HSET', K, 'h', ARGV[2]) end
return 1
