-- Shared by every script. `ARGV[1]` is always the key prefix; the session
-- scripts take the session id and the caller's epoch as `ARGV[2..3]`.
local P = ARGV[1]
local function num(v) if v then return tonumber(v) else return 0 end end
-- Integers as decimal strings: `..` would print large ones with an exponent.
local function str(n) return string.format('%d', n) end
-- Decimal strings of any length compared as numbers (client seqs may
-- exceed what a Lua number holds exactly).
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local function skey(id) return P .. 's:' .. id end
local function hold(sk, epoch)
  local e = redis.call('HGET', sk, 'epoch')
  if not e then return -1 end
  if e ~= epoch then return -2 end
  return 0
end
local function session_keys(id)
  local sk = skey(id)
  return {sk, sk .. ':subs', sk .. ':in', sk .. ':d'}
end
local function drop_session(id)
  local sk = skey(id)
  local name = redis.call('HGET', sk, 'name')
  if name then
    local nk = P .. 'n:' .. name
    if redis.call('GET', nk) == id then redis.call('DEL', nk) end
  end
  redis.call('DEL', unpack(session_keys(id)))
end
-- Connected, and held by a node whose heartbeat has not lapsed: a crashed
-- node never detaches its sessions.
local function live(sk)
  if redis.call('HGET', sk, 'cn') ~= '1' then return false end
  local nd = redis.call('HGET', sk, 'nd')
  return nd and redis.call('EXISTS', P .. 'node:' .. nd) == 1
end
-- Every key of a session (and its name) expires `ttl` ms from now.
local function keep(id, ttl)
  for _, k in ipairs(session_keys(id)) do redis.call('PEXPIRE', k, ttl) end
  local name = redis.call('HGET', skey(id), 'name')
  if name and redis.call('GET', P .. 'n:' .. name) == id then
    redis.call('PEXPIRE', P .. 'n:' .. name, ttl)
  end
end
local function entry_fields(flat)
  local f = {}
  for j = 1, #flat, 2 do f[flat[j]] = flat[j + 1] end
  return f
end
local function append(ch, p, t, cap)
  local g = redis.call('INCR', P .. 'g')
  local s = redis.call('HINCRBY', P .. 'cseq', ch, 1)
  redis.call('XADD', P .. 'c:' .. ch, 'MAXLEN', '~', cap, str(g) .. '-0', 's', s, 'p', p, 't', t)
  redis.call('PUBLISH', P .. 'notices', 'c:' .. ch)
end
