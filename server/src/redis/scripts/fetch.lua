-- ARGV: P, id, epoch, after, max, backlog. Reply {status} or
-- {0, offset, 'c'..channel or '-', payload, text, ...}.
local id = ARGV[2]
local sk = skey(id)
local st = hold(sk, ARGV[3])
if st ~= 0 then return {st} end
local new = {}
-- Reads one source after its cursor; returns the new cursor or nil.
local function read(key, cursor, channel)
  local cg, cs = string.match(cursor, '^(%d+):(%d+)$')
  local entries = redis.call('XRANGE', key, '(' .. cg .. '-0', '+')
  if #entries == 0 then return nil end
  local last_g, last_s = cg, cs
  for i, e in ipairs(entries) do
    local f = entry_fields(e[2])
    local g = string.match(e[1], '^(%d+)-')
    local gap = 0
    if i == 1 then gap = tonumber(f['s']) - tonumber(cs) - 1 end
    table.insert(new, {tonumber(g), channel, gap, f['p'], f['t']})
    last_g, last_s = g, f['s']
  end
  return last_g .. ':' .. last_s
end
local subs_key = sk .. ':subs'
local subs = redis.call('HGETALL', subs_key)
for j = 1, #subs, 2 do
  local cursor = read(P .. 'c:' .. subs[j], subs[j + 1], subs[j])
  if cursor then redis.call('HSET', subs_key, subs[j], cursor) end
end
local dk = sk .. ':d'
local dcursor = read(dk, redis.call('HGET', sk, 'dc'), false)
if dcursor then
  redis.call('HSET', sk, 'dc', dcursor)
  local dg = string.match(dcursor, '^(%d+):')
  redis.call('XTRIM', dk, 'MINID', str(tonumber(dg) + 1) .. '-0')
end
local inbox = sk .. ':in'
local dropped = 0
if #new > 0 then
  table.sort(new, function(a, b) return a[1] < b[1] end)
  local lo = num(redis.call('HGET', sk, 'lo'))
  for _, e in ipairs(new) do
    lo = lo + e[3] + 1
    dropped = dropped + e[3]
    if e[2] then
      redis.call('XADD', inbox, str(lo) .. '-0', 'c', e[2], 'p', e[4], 't', e[5])
    else
      redis.call('XADD', inbox, str(lo) .. '-0', 'p', e[4], 't', e[5])
    end
  end
  redis.call('HSET', sk, 'lo', str(lo))
  dropped = dropped + redis.call('XTRIM', inbox, 'MAXLEN', ARGV[6])
  local ttl = redis.call('PTTL', sk)
  if ttl > 0 then redis.call('PEXPIRE', inbox, ttl) end
end
if dropped > 0 then redis.call('HINCRBY', P .. 'stats', 'dropped', dropped) end
local out = {0}
local kept = redis.call('XRANGE', inbox, str(tonumber(ARGV[4]) + 1) .. '-0', '+', 'COUNT', ARGV[5])
for _, e in ipairs(kept) do
  local f = entry_fields(e[2])
  table.insert(out, string.match(e[1], '^(%d+)-'))
  if f['c'] then table.insert(out, 'c' .. f['c']) else table.insert(out, '-') end
  table.insert(out, f['p'])
  table.insert(out, f['t'])
end
return out
