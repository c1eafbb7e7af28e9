-- KEYS: the channel. ARGV: session, seq. The session's H now covers `seq`:
-- forget its pending append.
if redis.call('HGET', K .. ':pub', ARGV[1]) == ARGV[2] then
  redis.call('HDEL', K .. ':pub', ARGV[1])
end
return 0
