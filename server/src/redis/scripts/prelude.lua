-- Shared by every script. Each script touches one hash slot: `KEYS[1]` is
-- the base key of a session (`P{s:<id>}`), of a channel (`P{c:<channel>}`)
-- or of a name (`P{n:<name>}`), and every other key a script touches is
-- that base key plus a suffix, so it hashes to the same slot.
local K = KEYS[1]
local function num(v) if v then return tonumber(v) else return 0 end end
-- Integers as decimal strings: `..` would print large ones with an exponent.
local function str(n) return string.format('%d', n) end
-- Decimal strings of any length compared as numbers (client seqs may
-- exceed what a Lua number holds exactly).
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
-- 0 when `epoch` holds the session `K`; -1 unknown session, -2 fenced.
local function hold(epoch)
  local e = redis.call('HGET', K, 'epoch')
  if not e then return -1 end
  if e ~= epoch then return -2 end
  return 0
end
local function session_keys() return {K, K .. ':subs', K .. ':in', K .. ':d'} end
-- Every key of the session `K` expires `ttl` ms from now.
local function keep(ttl)
  for _, k in ipairs(session_keys()) do redis.call('PEXPIRE', k, ttl) end
end
local function entry_fields(flat)
  local f = {}
  for j = 1, #flat, 2 do f[flat[j]] = flat[j + 1] end
  return f
end
-- The time part of the next ID of a stream whose last time part is `last`:
-- the Redis clock in microseconds, never below `last`, so a stream's IDs
-- only grow even when the clock steps back (`XADD <t>-*` then picks the
-- sequence).
local function clock(last)
  local now = redis.call('TIME')
  local t = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local l = num(last)
  if l > t then t = l end
  return str(t)
end
