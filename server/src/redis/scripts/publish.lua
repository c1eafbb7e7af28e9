-- ARGV: P, id, epoch, seq, has channel, channel, payload, text, cap.
-- Reply 1 applied, 2 duplicate.
local sk = skey(ARGV[2])
local st = hold(sk, ARGV[3])
if st ~= 0 then return st end
if not gt(ARGV[4], redis.call('HGET', sk, 'h')) then return 2 end
redis.call('HSET', sk, 'h', ARGV[4])
if ARGV[5] == '1' then append(ARGV[6], ARGV[7], ARGV[8], ARGV[9]) end
return 1
