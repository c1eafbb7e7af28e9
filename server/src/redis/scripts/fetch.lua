-- ARGV: P, backlog, then four per session: id, epoch, after, max. Reply
-- {entries, sessions}: `entries` is flat triples ('c'..channel or '-',
-- payload, text), each message once however many sessions it goes to;
-- `sessions` holds one array per session: {status} or {0, offset, entry
-- index (1-based), offset, entry index, ...}.
--
-- A session's inbox holds references to channel entries (`c`, `g`), or the
-- payload itself for a message addressed to it directly: a channel entry is
-- stored once, in its log, however many sessions it is numbered for.
local backlog = ARGV[2]
local entries = {}
local entry_index = {}
-- Channel entries read in this call, by 'channel\0g': {payload, text}.
local loaded = {}
-- XRANGE results by key and cursor: every subscriber of a channel that is
-- at the same cursor shares one read.
local ranges = {}
local dropped = 0

local function range_after(key, cg)
  local rk = key .. '\0' .. cg
  local r = ranges[rk]
  if not r then
    r = redis.call('XRANGE', key, '(' .. cg .. '-0', '+')
    ranges[rk] = r
  end
  return r
end

local function add_entry(tag, p, t)
  table.insert(entries, tag)
  table.insert(entries, p)
  table.insert(entries, t)
  return #entries / 3
end

local function fetch_one(id, epoch, after, max)
  local sk = skey(id)
  local st = hold(sk, epoch)
  if st ~= 0 then return {st} end
  local new = {}
  -- Reads one source after its cursor; returns the new cursor or nil.
  local function read(key, cursor, channel)
    local cg, cs = string.match(cursor, '^(%d+):(%d+)$')
    local found = range_after(key, cg)
    if #found == 0 then return nil end
    local last_g, last_s = cg, cs
    for i, e in ipairs(found) do
      local f = entry_fields(e[2])
      local g = string.match(e[1], '^(%d+)-')
      local gap = 0
      if i == 1 then gap = tonumber(f['s']) - tonumber(cs) - 1 end
      if channel then loaded[channel .. '\0' .. g] = {f['p'], f['t']} end
      table.insert(new, {tonumber(g), channel, gap, f['p'], f['t'], g})
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
  if #new > 0 then
    table.sort(new, function(a, b) return a[1] < b[1] end)
    local lo = num(redis.call('HGET', sk, 'lo'))
    for _, e in ipairs(new) do
      lo = lo + e[3] + 1
      dropped = dropped + e[3]
      if e[2] then
        redis.call('XADD', inbox, str(lo) .. '-0', 'c', e[2], 'g', e[6])
      else
        redis.call('XADD', inbox, str(lo) .. '-0', 'p', e[4], 't', e[5])
      end
    end
    redis.call('HSET', sk, 'lo', str(lo))
    dropped = dropped + redis.call('XTRIM', inbox, 'MAXLEN', backlog)
    local ttl = redis.call('PTTL', sk)
    if ttl > 0 then redis.call('PEXPIRE', inbox, ttl) end
  end
  local out = {0}
  local kept = redis.call('XRANGE', inbox, str(tonumber(after) + 1) .. '-0', '+', 'COUNT', max)
  for _, e in ipairs(kept) do
    local f = entry_fields(e[2])
    local offset = string.match(e[1], '^(%d+)-')
    local index = nil
    if f['c'] then
      local key = f['c'] .. '\0' .. f['g']
      index = entry_index[key]
      if not index then
        local body = loaded[key]
        if not body then
          local one = redis.call('XRANGE', P .. 'c:' .. f['c'], f['g'] .. '-0', f['g'] .. '-0')
          if #one > 0 then
            local ef = entry_fields(one[1][2])
            body = {ef['p'], ef['t']}
          end
        end
        if body then
          index = add_entry('c' .. f['c'], body[1], body[2])
          entry_index[key] = index
        else
          -- The log was trimmed past a message numbered but never
          -- delivered: it is gone, the client sees a gap.
          redis.call('XDEL', inbox, e[1])
          dropped = dropped + 1
        end
      end
    else
      index = add_entry('-', f['p'], f['t'])
    end
    if index then
      table.insert(out, offset)
      table.insert(out, index)
    end
  end
  return out
end

local sessions = {}
for i = 3, #ARGV, 4 do
  table.insert(sessions, fetch_one(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]))
end
if dropped > 0 then redis.call('HINCRBY', P .. 'stats', 'dropped', dropped) end
return {entries, sessions}
