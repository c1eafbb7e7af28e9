-- KEYS: sessions, all in one slot (on one Redis server, any). ARGV:
-- backlog, then per session: epoch, after, max, the number of channels the
-- caller read, then per channel: name, the cursor it read after
-- (`<id>:<seq>`), the seq of the first entry read, how many it read, and
-- their IDs in order.
-- Reply: per session {status}, {3} when its cursors or subscriptions
-- changed since the caller read them (read again), or {0, dropped, then
-- per MESSAGE above `after` (at most `max`): offset, 'c', channel, entry ID
-- | offset, 'd', payload, text}.
--
-- Numbers what was read (the channel entries and the session's direct
-- messages after their cursors), merged by stream ID: the Redis clock of
-- the node holding each log. A trimmed range counts as a gap of its exact
-- size. The inbox keeps a reference to a channel entry, never a copy.
local backlog = ARGV[1]

-- Commits the session `K` whose arguments start at ARGV[a]; returns its
-- reply.
local function commit(a)
  local n = tonumber(ARGV[a + 3])
  local blocks = {}
  local i = a + 4
  for _ = 1, n do
    table.insert(blocks, i)
    i = i + 4 + tonumber(ARGV[i + 3])
  end
  local st = hold(ARGV[a])
  if st ~= 0 then return {st} end
  local subs = K .. ':subs'
  if redis.call('HLEN', subs) ~= n then return {3} end
  local new = {}
  local cursors = {}
  for _, b in ipairs(blocks) do
    local ch, expect, first, k = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    if redis.call('HGET', subs, ch) ~= expect then return {3} end
    local i = b + 4
    if k > 0 then
      local gap = first - tonumber(string.match(expect, ':(%d+)$')) - 1
      for j = 0, k - 1 do
        local id = ARGV[i + j]
        local t, q = string.match(id, '^(%d+)-(%d+)$')
        if j > 0 then gap = 0 end
        table.insert(new, {tonumber(t), tonumber(q), ch, gap, id})
      end
      table.insert(cursors, ch)
      table.insert(cursors, ARGV[i + k - 1] .. ':' .. str(first + k - 1))
    end
  end
  local dk = K .. ':d'
  local did, ds = string.match(redis.call('HGET', K, 'dc'), '^(.+):(%d+)$')
  local direct = redis.call('XRANGE', dk, '(' .. did, '+')
  for j, e in ipairs(direct) do
    local f = entry_fields(e[2])
    local t, q = string.match(e[1], '^(%d+)-(%d+)$')
    local gap = 0
    if j == 1 then gap = tonumber(f['s']) - tonumber(ds) - 1 end
    table.insert(new, {tonumber(t), tonumber(q), '', gap, f['p'], f['t']})
    if j == #direct then
      redis.call('HSET', K, 'dc', e[1] .. ':' .. f['s'])
      redis.call('XTRIM', dk, 'MINID', t .. '-' .. str(tonumber(q) + 1))
    end
  end
  if #cursors > 0 then redis.call('HSET', subs, unpack(cursors)) end
  local dropped = 0
  local inbox = K .. ':in'
  if #new > 0 then
    -- Stream IDs order entries of one log; across logs, ties go by channel.
    table.sort(new, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      if a[2] ~= b[2] then return a[2] < b[2] end
      return a[3] < b[3]
    end)
    local lo = num(redis.call('HGET', K, 'lo'))
    for _, e in ipairs(new) do
      lo = lo + e[4] + 1
      dropped = dropped + e[4]
      if e[3] ~= '' then
        redis.call('XADD', inbox, str(lo) .. '-0', 'c', e[3], 'g', e[5])
      else
        redis.call('XADD', inbox, str(lo) .. '-0', 'p', e[5], 't', e[6])
      end
    end
    redis.call('HSET', K, 'lo', str(lo))
    dropped = dropped + redis.call('XTRIM', inbox, 'MAXLEN', backlog)
    local ttl = redis.call('PTTL', K)
    if ttl > 0 then redis.call('PEXPIRE', inbox, ttl) end
  end
  local out = {0, dropped}
  local kept = redis.call('XRANGE', inbox, str(tonumber(ARGV[a + 1]) + 1) .. '-0', '+', 'COUNT', ARGV[a + 2])
  for _, e in ipairs(kept) do
    local f = entry_fields(e[2])
    table.insert(out, string.match(e[1], '^(%d+)-'))
    if f['c'] then
      table.insert(out, 'c')
      table.insert(out, f['c'])
      table.insert(out, f['g'])
    else
      table.insert(out, 'd')
      table.insert(out, f['p'])
      table.insert(out, f['t'])
    end
  end
  return out
end

local replies = {}
local a = 2
for j = 1, #KEYS do
  K = KEYS[j]
  local reply = commit(a)
  table.insert(replies, reply)
  local n = tonumber(ARGV[a + 3])
  a = a + 4
  for _ = 1, n do a = a + 4 + tonumber(ARGV[a + 3]) end
end
return replies
