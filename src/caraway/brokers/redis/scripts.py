"""Lua sources for the Redis transport's atomic steps (claim, restore, park, dead-letter, renew).

Each script moves a message between places in one step, so a crash between two commands
cannot leave it nowhere. Envelopes are never re-encoded in Lua (cjson would turn ``[]`` into
``{}`` and round numbers): scripts only decode them to read the tag and routing, and move the
original bytes. A claim is recorded as ``unacked[tag]`` (kombu's ``[envelope, exchange,
routing_key]``), ``unacked_index[tag] = time``, ``caraway.claims[tag] = fetch_id .. owner``
(fetch ids are 32 hex chars) and a member of ``caraway.owner.<owner>``.
"""

from __future__ import annotations

# Shared helper: forget every trace of a claim except what the caller moves elsewhere.
_RELEASE = """
local function owner_of(holder)
  if not holder then return nil end
  return string.sub(holder, 33)
end
local function release(unacked, index, claims, prefix, tag)
  redis.call('HDEL', unacked, tag)
  redis.call('ZREM', index, tag)
  local holder = redis.call('HGET', claims, tag)
  if holder then
    redis.call('HDEL', claims, tag)
    redis.call('SREM', prefix .. 'caraway.owner.' .. owner_of(holder), tag)
  end
end
"""

_DEAD = """
local function bury(dead, dead_index, dead_seq, record, failed_at)
  local id = redis.call('INCR', dead_seq)
  redis.call('HSET', dead, id, record)
  redis.call('ZADD', dead_index, failed_at, id)
  return id
end
"""

# Reading an envelope's routing without decoding it: cjson.decode of a 1 KB envelope costs
# more than all of a claim's writes. A key followed by '":' can only be a key (inside a JSON
# string the quote after it would be escaped), so a key found once, with a plain string
# value, is the one the full decode would find; anything else goes to cjson. The search
# starts after the body when the envelope opens with it (kombu's and caraway's layout):
# no key can sit in a string, so nothing is missed, and the body (most of a large task's
# bytes) is passed over once, by skip(), instead of twice for each of the three keys.
_PEEK = """
local function skip(env)
  local open = nil
  if string.sub(env, 1, 10) == '{"body": "' then open = 11
  elseif string.sub(env, 1, 9) == '{"body":"' then open = 10 end
  if not open then return 1 end
  return string.find(env, '"', open, true) or 1
end
local function peek(env, name, from)
  local key = '"' .. name .. '":'
  local first = string.find(env, key, from, true)
  if not first or string.find(env, key, first + #key, true) then return nil end
  local open = first + #key
  if string.sub(env, open, open) == ' ' then open = open + 1 end
  if string.sub(env, open, open) ~= '"' then return nil end
  local close = string.find(env, '"', open + 1, true)
  if not close then return nil end
  local value = string.sub(env, open + 1, close - 1)
  if string.find(value, '\\\\', 1, true) then return nil end
  return value
end
"""

#: KEYS: unacked, unacked_index, claims, owner set, deliveries, schedule, dead, dead index,
#:       dead seq, then the queue list keys in claim order.
#: ARGV: limit, now, holder (fetch id .. owner), prefix, promote limit, expect empty ('1'
#:       when the last claim from these lists found nothing), then one unprefixed list key
#:       per queue key (reported back so the caller knows where each came from).
#: Returns {next_due_or_empty, dead_ids, key1, env1, count1, tag1, key2, ...} where dead_ids
#: lists (comma-separated) what this claim set aside, so the caller can log it.
#:
#: Redis counts every call a script makes, and an idle fleet claims once a second per
#: node: so the schedule is read once unless something is due, and the lists are asked
#: with one EXISTS instead of a RPOP each once one is found empty (or before any, when the
#: last claim found nothing), so an idle claim from 50 queues is 3 calls, not 203.
CLAIM = (
    _DEAD
    + _PEEK
    + """
local unacked, index, claims, owner_set = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local deliveries, schedule = KEYS[5], KEYS[6]
local limit, now, holder, prefix = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]

local buried = {}
-- Promote due parked messages first (whoever runs this first moves them, exactly once).
local nxt = redis.call('ZRANGE', schedule, 0, 0, 'WITHSCORES')
local soonest = nxt[2] and tonumber(nxt[2])
local due = {}
if soonest and soonest <= tonumber(now) then
  due = redis.call('ZRANGE', schedule, '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[5]))
end
for _, member in ipairs(due) do
  redis.call('ZREM', schedule, member)
  local colon = string.find(member, ':', 1, true)
  local n = colon and tonumber(string.sub(member, 1, colon - 1))
  if n then
    local key = string.sub(member, colon + 1, colon + n)
    redis.call('RPUSH', prefix .. key, string.sub(member, colon + n + 1))
  else
    local record = cjson.encode({queue = '', reason = 'malformed schedule entry',
                                 failed_at = tonumber(now), envelope = member})
    buried[#buried + 1] = bury(KEYS[7], KEYS[8], KEYS[9], record, now)
  end
end

if #due > 0 then nxt = redis.call('ZRANGE', schedule, 0, 0, 'WITHSCORES') end

-- how many of KEYS[from..] hold messages (a missing key is an empty list), in slices:
-- unpack() is bounded by Lua's stack
local function filled(from)
  local n = 0
  for first = from, #KEYS, 1000 do
    n = n + redis.call('EXISTS', unpack(KEYS, first, math.min(first + 999, #KEYS)))
  end
  return n
end

local out = {'', ''}
local taken = 0
-- lists not yet visited that hold messages; unknown (nil) until one is found empty
local left = nil
if ARGV[6] == '1' then left = filled(10) end
-- the claims' writes, one command per structure for the batch
local held, indexed, holders, owned, tags = {}, {}, {}, {}, {}
for i = 10, #KEYS do
  if taken >= limit or left == 0 then break end
  local key, name = KEYS[i], ARGV[i - 3]
  local popped = 0
  while taken < limit do
    local env = redis.call('RPOP', key)
    if not env then break end
    popped = popped + 1
    local from = skip(env)
    local tag, exchange, rkey = peek(env, 'delivery_tag', from), peek(env, 'exchange', from),
                                peek(env, 'routing_key', from)
    if not (tag and exchange and rkey) then
      local ok, msg = pcall(cjson.decode, env)
      tag, exchange, rkey = nil, '', name
      if ok and type(msg) == 'table' and type(msg['properties']) == 'table' then
        local props = msg['properties']
        tag = props['delivery_tag']
        local info = props['delivery_info']
        if type(info) == 'table' then
          if type(info['exchange']) == 'string' then exchange = info['exchange'] end
          if type(info['routing_key']) == 'string' then rkey = info['routing_key'] end
        end
      end
    end
    if type(tag) ~= 'string' or tag == '' then
      -- kombu would crash on it too; set it aside instead of losing or looping on it
      local record = cjson.encode({queue = name, reason = 'envelope without a delivery_tag',
                                   failed_at = tonumber(now), envelope = env})
      buried[#buried + 1] = bury(KEYS[7], KEYS[8], KEYS[9], record, now)
    else
      held[#held + 1] = tag
      held[#held + 1] = '[' .. env .. ', ' .. cjson.encode(exchange) .. ', '
                        .. cjson.encode(rkey) .. ']'
      indexed[#indexed + 1] = now
      indexed[#indexed + 1] = tag
      holders[#holders + 1] = tag
      holders[#holders + 1] = holder
      owned[#owned + 1] = tag
      out[#out + 1] = name
      out[#out + 1] = env
      out[#out + 1] = redis.call('HINCRBY', deliveries, tag, 1)
      out[#out + 1] = tag
      taken = taken + 1
    end
  end
  if left then
    if popped > 0 then left = left - 1 end
  elseif popped == 0 and i < #KEYS then
    left = filled(i + 1)
  end
end
-- in slices: unpack() is bounded by Lua's stack
for first = 1, #owned, 1000 do
  local last = math.min(first + 999, #owned)
  redis.call('HSET', unacked, unpack(held, 2 * first - 1, 2 * last))
  redis.call('ZADD', index, unpack(indexed, 2 * first - 1, 2 * last))
  redis.call('HSET', claims, unpack(holders, 2 * first - 1, 2 * last))
  redis.call('SADD', owner_set, unpack(owned, first, last))
end

if nxt[2] then out[1] = nxt[2] end
out[2] = table.concat(buried, ',')
return out
"""
)

#: Put claimed messages back at the head of their lists (consumed next), but only those
#: still claimed (and, when an owner is named, claimed by it; when a cutoff is given, not
#: renewed since). KEYS: unacked, unacked_index, claims.
#: ARGV: prefix, cutoff ('+inf' = any age), then (tag, owner or '', list key, envelope)...
RESTORE = (
    _RELEASE
    + """
local unacked, index, claims, prefix, cutoff = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
local restored = 0
for i = 3, #ARGV, 4 do
  local tag, owner, key, env = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local ok = redis.call('HEXISTS', unacked, tag) == 1
  if ok and owner ~= '' then
    ok = owner_of(redis.call('HGET', claims, tag)) == owner
  end
  if ok and cutoff ~= '+inf' then
    local score = redis.call('ZSCORE', index, tag)
    ok = (not score) or tonumber(score) <= tonumber(cutoff)
  end
  if ok then
    release(unacked, index, claims, prefix, tag)
    redis.call('RPUSH', prefix .. key, env)
    restored = restored + 1
  elseif owner ~= '' then
    redis.call('SREM', prefix .. 'caraway.owner.' .. owner, tag)
  end
end
return restored
"""
)

#: Give back messages claimed and never started (a busy or stopping consumer), as though
#: never handed out: the claim's delivery count is taken back and the envelope goes back
#: unmarked, to the head of its list. Only those ``owner`` still holds. Walked last to first,
#: so the first given is consumed first. KEYS: unacked, unacked_index, claims, deliveries.
#: ARGV: prefix, owner, then (tag, list key, envelope)...
GIVE_BACK = (
    _RELEASE
    + """
local unacked, index, claims, deliveries = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, owner = ARGV[1], ARGV[2]
local given = 0
for i = #ARGV - 2, 3, -3 do
  local tag, key, env = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HEXISTS', unacked, tag) == 1
      and owner_of(redis.call('HGET', claims, tag)) == owner then
    release(unacked, index, claims, prefix, tag)
    if redis.call('HINCRBY', deliveries, tag, -1) <= 0 then
      redis.call('HDEL', deliveries, tag)
    end
    redis.call('RPUSH', prefix .. key, env)
    given = given + 1
  else
    redis.call('SREM', prefix .. 'caraway.owner.' .. owner, tag)
  end
end
return given
"""
)

#: Move a claimed message to the schedule. KEYS: unacked, unacked_index, claims,
#: deliveries, schedule. ARGV: prefix, tag, owner, eta, member (``<len>:<list key><env>``).
PARK = (
    _RELEASE
    + """
local unacked, index, claims, prefix, tag = KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2]
if owner_of(redis.call('HGET', claims, tag)) ~= ARGV[3]
    or redis.call('HEXISTS', unacked, tag) == 0 then
  redis.call('SREM', prefix .. 'caraway.owner.' .. ARGV[3], tag)
  return 0
end
release(unacked, index, claims, prefix, tag)
-- a parked message starts its delivery count afresh: waiting is not a failure
redis.call('HDEL', KEYS[4], tag)
redis.call('ZADD', KEYS[5], ARGV[4], ARGV[5])
return 1
"""
)

#: Move a claimed message to the dead-letter store. KEYS: unacked, unacked_index, claims,
#: deliveries, dead, dead index, dead seq. ARGV: prefix, tag, record JSON, failed_at.
DEAD_LETTER = (
    _RELEASE
    + _DEAD
    + """
release(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
return bury(KEYS[5], KEYS[6], KEYS[7], ARGV[3], ARGV[4])
"""
)

#: Requeue dead letters that still exist. KEYS: dead, dead index.
#: ARGV: prefix, then (id, list key, envelope)...
REQUEUE_DEAD = """
local n = 0
for i = 2, #ARGV, 3 do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[2], ARGV[i])
    redis.call('LPUSH', ARGV[1] .. ARGV[i + 1], ARGV[i + 2])
    n = n + 1
  end
end
return n
"""

#: Refresh the index score of every live claim of one owner; drop stale set members.
#: KEYS: unacked_index, claims, owner set. ARGV: owner, now.
RENEW = """
local n = 0
for _, tag in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local holder = redis.call('HGET', KEYS[2], tag)
  local mine = holder and string.sub(holder, 33) == ARGV[1]
  if mine and redis.call('ZSCORE', KEYS[1], tag) then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], tag)
    n = n + 1
  else
    redis.call('SREM', KEYS[3], tag)
    if mine then redis.call('HDEL', KEYS[2], tag) end
  end
end
return n
"""

#: Release a mutex only if we still hold it (kombu's unacked_mutex protocol).
RELEASE_MUTEX = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


#: KEYS: unacked, unacked_index, claims, deliveries, the owner's set.  ARGV: delivery tags.
#: One script per owner: a sweep or a claim running between an ack's commands could
#: otherwise see a claim half forgotten. Returns how many tags it was given.
ACK = """
local n = #ARGV
for first = 1, n, 500 do
  local last = math.min(first + 499, n)
  redis.call('HDEL', KEYS[1], unpack(ARGV, first, last))
  redis.call('ZREM', KEYS[2], unpack(ARGV, first, last))
  redis.call('HDEL', KEYS[3], unpack(ARGV, first, last))
  redis.call('HDEL', KEYS[4], unpack(ARGV, first, last))
  redis.call('SREM', KEYS[5], unpack(ARGV, first, last))
end
return n
"""
