-- KEYS: the channel. ARGV: channel, payload, text, cap, notice channel,
-- publishing session ('' for the application), its seq. Reply 1 appended,
-- 0 already appended (a session's PUBLISH retried after a failure between
-- this step and moving its H: `K:pub` remembers it until then).
local pub = K .. ':pub'
local from = ARGV[6]
if from ~= '' then
  local last = redis.call('HGET', pub, from)
  if last and not gt(ARGV[7], last) then return 0 end
end
local t = clock(redis.call('HGET', K, 't'))
local s = redis.call('HINCRBY', K, 's', 1)
local id = redis.call('XADD', K .. ':log', 'MAXLEN', '~', ARGV[4], t .. '-*',
  's', s, 'p', ARGV[2], 't', ARGV[3])
redis.call('HSET', K, 't', t, 'id', id)
if from ~= '' then redis.call('HSET', pub, from, ARGV[7]) end
redis.call('PUBLISH', ARGV[5], 'c:' .. ARGV[1])
return 1
