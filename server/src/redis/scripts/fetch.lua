-- KEYS: sessions, all in one slot (on one Redis server, any). ARGV:
-- backlog, the key prefix `P`, then per session: epoch, after, max, and
-- either -1 (read the session's channel logs here: one Redis server only,
-- since the logs live in other slots) or the number of channels the caller
-- read, then per channel: name, the cursor it read after (`<id>:<seq>`),
-- the seq of the first entry read, how many it read, and their IDs in
-- order.
-- Reply: {sessions, entries}. `sessions` holds per session {status}, {3}
-- when its cursors or subscriptions changed since the caller read them
-- (read again), or {0, dropped, then per MESSAGE above `after` (at most
-- `max`): offset, 'c', channel, entry ID | offset, 'd', payload, text}.
-- `entries` is flat quads (channel, entry ID, payload, text): each channel
-- entry this call read itself (every one a reply references, for the
-- sessions whose logs it read), once however many sessions it went to.
--
-- Numbers what was read (the channel entries and the session's direct
-- messages after their cursors), merged by stream ID: the Redis clock of
-- the node holding each log. A trimmed range counts as a gap of its exact
-- size. The inbox keeps a reference to a channel entry, never a copy.
local backlog = ARGV[1]
local P = ARGV[2]
-- What this call read itself, for the reply's `entries`.
local entries = {}
-- Log reads by channel and cursor: {first seq, IDs}, shared by every
-- session of the call at that cursor.
local ranges = {}
-- The entries in `entries`, by 'channel\0ID'.
local seen = {}

local function log_key(ch) return P .. '{c:' .. ch .. '}:log' end

local function add_entry(ch, id, f)
  seen[ch .. '\0' .. id] = true
  table.insert(entries, ch)
  table.insert(entries, id)
  table.insert(entries, f['p'])
  table.insert(entries, f['t'])
end

-- Adds one entry of `ch`'s log to `entries` unless there already (or
-- trimmed since: the caller then finds it gone).
local function load_entry(ch, id)
  if seen[ch .. '\0' .. id] then return end
  local one = redis.call('XRANGE', log_key(ch), id, id)
  if #one > 0 then add_entry(ch, id, entry_fields(one[1][2])) end
end

-- The entries of `ch`'s log after `cursor`, as a read block.
local function read_log(ch, cursor)
  local rk = ch .. '\0' .. cursor
  local r = ranges[rk]
  if r then return r end
  local after = string.match(cursor, '^(.+):%d+$')
  local found = redis.call('XRANGE', log_key(ch), '(' .. after, '+')
  r = {first = 0, ids = {}}
  for j, e in ipairs(found) do
    local f = entry_fields(e[2])
    if j == 1 then r.first = tonumber(f['s']) end
    r.ids[j] = e[1]
    add_entry(ch, e[1], f)
  end
  ranges[rk] = r
  return r
end

-- Commits the session `K` (owned at `epoch`) given what was read from its
-- `n` channels: `blocks` holds per channel {ch, cursor read after, read};
-- `local_logs` when this call reads the logs (then every entry the reply
-- references goes to `entries`). Returns its reply.
local function commit(epoch, after, max, n, blocks, local_logs)
  local st = hold(epoch)
  if st ~= 0 then return {st} end
  local subs = K .. ':subs'
  -- Cursors this call read itself cannot have moved.
  if not local_logs and redis.call('HLEN', subs) ~= n then return {3} end
  local new = {}
  local cursors = {}
  for _, b in ipairs(blocks) do
    local ch, expect, first, ids = b[1], b[2], b[3].first, b[3].ids
    if not local_logs and redis.call('HGET', subs, ch) ~= expect then return {3} end
    local k = #ids
    if k > 0 then
      local gap = first - tonumber(string.match(expect, ':(%d+)$')) - 1
      for j = 1, k do
        local id = ids[j]
        local t, q = string.match(id, '^(%d+)-(%d+)$')
        if j > 1 then gap = 0 end
        table.insert(new, {tonumber(t), tonumber(q), ch, gap, id})
      end
      table.insert(cursors, ch)
      table.insert(cursors, ids[k] .. ':' .. str(first + k - 1))
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
  local kept = redis.call('XRANGE', inbox, str(tonumber(after) + 1) .. '-0', '+', 'COUNT', max)
  for _, e in ipairs(kept) do
    local f = entry_fields(e[2])
    table.insert(out, string.match(e[1], '^(%d+)-'))
    if f['c'] then
      if local_logs then load_entry(f['c'], f['g']) end
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
local a = 3
for j = 1, #KEYS do
  K = KEYS[j]
  local epoch, after, max = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local n = tonumber(ARGV[a + 3])
  local blocks = {}
  local local_logs = n < 0
  if local_logs then
    local subs = redis.call('HGETALL', K .. ':subs')
    n = #subs / 2
    for i = 1, #subs, 2 do
      table.insert(blocks, {subs[i], subs[i + 1], read_log(subs[i], subs[i + 1])})
    end
    a = a + 4
  else
    local i = a + 4
    for _ = 1, n do
      local k = tonumber(ARGV[i + 3])
      local ids = {}
      for m = 1, k do ids[m] = ARGV[i + 3 + m] end
      table.insert(blocks, {ARGV[i], ARGV[i + 1], {first = tonumber(ARGV[i + 2]), ids = ids}})
      i = i + 4 + k
    end
    a = i
  end
  table.insert(replies, commit(epoch, after, max, n, blocks, local_logs))
end
return {replies, entries}
