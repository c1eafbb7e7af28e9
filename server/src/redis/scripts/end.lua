-- KEYS: the session. ARGV: epoch, or '*' for whoever holds it (a session
-- whose name was taken). Reply {status, name}.
if ARGV[1] ~= '*' then
  local st = hold(ARGV[1])
  if st ~= 0 then return {st} end
end
local name = redis.call('HGET', K, 'name')
redis.call('DEL', unpack(session_keys()))
if not name then return {-1} end
return {0, name}
