"""The Lua scripts of the Redis Cluster broker, each on the keys of one queue (one slot).

Key order is ``QueueKeys``' order unless a script says otherwise. A list item is a 32-char
tag followed by the envelope. Returned, expired and due-parked messages are pushed right,
so they are the next popped; new ones are pushed left.
"""

from __future__ import annotations

#: KEYS: ready, wake. ARGV: items. Announces a push onto an empty queue (waiters wake).
PUBLISH = """
local n = redis.call('LPUSH', KEYS[1], unpack(ARGV))
if n == #ARGV then redis.call('SPUBLISH', KEYS[2], '1') end
return n
"""

#: KEYS: ready, held, lease, owner, count, parked, parkedmsg.
#: ARGV: now, lease end, owner, limit. Returns tag, count, envelope per claimed message.
CLAIM = """
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, 1000)
for _, tag in ipairs(due) do
  local env = redis.call('HGET', KEYS[7], tag)
  if env then redis.call('RPUSH', KEYS[1], tag .. env) end
  redis.call('HDEL', KEYS[7], tag)
  redis.call('ZREM', KEYS[6], tag)
end
-- claims whose lease ran out: their owner died with its whole node
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for _, tag in ipairs(expired) do
  local env = redis.call('HGET', KEYS[2], tag)
  if env then redis.call('RPUSH', KEYS[1], tag .. env) end
  redis.call('HDEL', KEYS[2], tag)
  redis.call('ZREM', KEYS[3], tag)
  redis.call('HDEL', KEYS[4], tag)
end
local out = {}
for _ = 1, tonumber(ARGV[4]) do
  local item = redis.call('RPOP', KEYS[1])
  if not item then break end
  local tag = string.sub(item, 1, 32)
  local env = string.sub(item, 33)
  redis.call('HSET', KEYS[2], tag, env)
  redis.call('ZADD', KEYS[3], ARGV[2], tag)
  redis.call('HSET', KEYS[4], tag, ARGV[3])
  local count = redis.call('HINCRBY', KEYS[5], tag, 1)
  out[#out + 1] = tag
  out[#out + 1] = count
  out[#out + 1] = env
end
return out
"""

#: KEYS: held, lease, owner, count. ARGV: tags.
ACK = """
redis.call('HDEL', KEYS[1], unpack(ARGV))
redis.call('ZREM', KEYS[2], unpack(ARGV))
redis.call('HDEL', KEYS[3], unpack(ARGV))
redis.call('HDEL', KEYS[4], unpack(ARGV))
return #ARGV
"""

#: KEYS: ready, held, lease, owner, wake. ARGV: tag, owner. Only the holder hands back.
REQUEUE = """
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
local env = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if not env then return 0 end
if redis.call('RPUSH', KEYS[1], ARGV[1] .. env) == 1 then redis.call('SPUBLISH', KEYS[5], '1') end
return 1
"""

#: KEYS: ready, held, lease, owner, count, parked, parkedmsg, wake.
#: ARGV: tag, owner, due time, now. Parking is not a delivery: the count is given back.
PARK = """
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
local env = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if not env then return 0 end
if redis.call('HINCRBY', KEYS[5], ARGV[1], -1) <= 0 then redis.call('HDEL', KEYS[5], ARGV[1]) end
if tonumber(ARGV[3]) <= tonumber(ARGV[4]) then
  redis.call('RPUSH', KEYS[1], ARGV[1] .. env)
else
  redis.call('ZADD', KEYS[6], ARGV[3], ARGV[1])
  redis.call('HSET', KEYS[7], ARGV[1], env)
end
redis.call('SPUBLISH', KEYS[8], '1')
return 1
"""

#: KEYS: parked, parkedmsg, wake. ARGV: tag, envelope, due time.
PUBLISH_PARKED = """
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('SPUBLISH', KEYS[3], '1')
return 1
"""

#: KEYS: lease, owner. ARGV: owner, lease end. Extends every claim ``owner`` holds here.
RENEW = """
local all = redis.call('HGETALL', KEYS[2])
local n = 0
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[2], all[i])
    n = n + 1
  end
end
return n
"""

#: KEYS: ready, held, lease, owner, wake. ARGV: owner. Hands back all ``owner`` holds here.
RECOVER = """
local all = redis.call('HGETALL', KEYS[4])
local n = 0
for i = 1, #all, 2 do
  if all[i + 1] == ARGV[1] then
    local tag = all[i]
    local env = redis.call('HGET', KEYS[2], tag)
    if env then
      redis.call('RPUSH', KEYS[1], tag .. env)
      n = n + 1
    end
    redis.call('HDEL', KEYS[2], tag)
    redis.call('ZREM', KEYS[3], tag)
    redis.call('HDEL', KEYS[4], tag)
  end
end
if n > 0 then redis.call('SPUBLISH', KEYS[5], '1') end
return n
"""

#: KEYS: ready, parked, lease. ARGV: now. Ready messages and those the next claim takes.
SIZE = """
return redis.call('LLEN', KEYS[1]) + redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[1])
  + redis.call('ZCOUNT', KEYS[3], '-inf', ARGV[1])
"""

#: KEYS: ready. Deletes the ready messages; returns how many.
PURGE = """
local n = redis.call('LLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
"""

#: KEYS: lease, parked. The next time something on this queue falls due (or false).
NEXT_DUE = """
local a = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local b = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local best = false
if a[2] then best = tonumber(a[2]) end
if b[2] and (not best or tonumber(b[2]) < best) then best = tonumber(b[2]) end
if best then return tostring(best) end
return false
"""
