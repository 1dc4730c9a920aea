"""The Lua scripts of the Redis store (state/redis.py; SPEC.md S-1401):
each check-and-count one script that the server runs atomically, on its
own clock (``redis.call('TIME')``), so that hosts with skewed clocks agree.

Lua 5.1: numbers are doubles, so milliseconds since the epoch stay exact.
Every key a script creates gets its TTL in the same script.
"""

from __future__ import annotations

__all__ = ["FAILED", "PROBE", "RELEASE", "RESERVE", "SECRET"]

#: The start of the scripts that need the time: ``now``, the server's
#: clock in milliseconds.
NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: S-1201: check and count one reservation. KEYS[1] the user's window of
#: one kind; ARGV limit, period (ms), step (ms). The step's start, or -1
#: when the limit is reached.
RESERVE = NOW + """
local key = KEYS[1]
local limit, period, step = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local since = now - period
local kept = redis.call('HMGET', key, 'total', 'first')
local total, first = tonumber(kept[1]) or 0, tonumber(kept[2])
if first and first <= since then
  -- the oldest step left the window: drop every step that did, once
  total, first = 0, nil
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    local at = tonumber(all[i])
    if at then
      if at <= since then
        redis.call('HDEL', key, all[i])
      else
        total = total + tonumber(all[i + 1])
        if not first or at < first then first = at end
      end
    end
  end
  redis.call('HSET', key, 'total', total)
  if first then redis.call('HSET', key, 'first', string.format('%d', first)) else redis.call('HDEL', key, 'first') end
end
if total >= limit then return -1 end
local at = now - now % step
redis.call('HINCRBY', key, 'total', 1)
if redis.call('HINCRBY', key, string.format('%d', at), 1) == 1 then
  -- a new step: the key lives until it leaves the window (a step already
  -- counted in set a TTL that covers it)
  if not first or at < first then redis.call('HSET', key, 'first', string.format('%d', at)) end
  redis.call('PEXPIRE', key, period + step)
end
return at
"""

#: S-1201: give reservations back. KEYS the windows; ARGV per key: the
#: step's start, how many. A step already gone (pruned, expired) is left.
RELEASE = """
for i = 1, #KEYS do
  local key, at, n = KEYS[i], ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local have = tonumber(redis.call('HGET', key, at))
  if have and have > 0 then
    local back = math.min(have, n)
    redis.call('HINCRBY', key, at, -back)
    local total = tonumber(redis.call('HGET', key, 'total')) or 0
    redis.call('HSET', key, 'total', math.max(total - back, 0))
  end
end
return 1
"""

#: S-511: one failed login. KEYS[1] the address's failures; ARGV the
#: name's hash, the bucket of folded names, THROTTLE_MAX_NAMES,
#: THROTTLE_MAX_COUNTED_FAILURES, the forgetting time (ms). The name's
#: failures now.
FAILED = NOW + """
local key, name, other = KEYS[1], ARGV[1], ARGV[2]
local max_names, cap, forget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local function count(v)
  if not v then return 0, 0 end
  local c, at = string.match(v, '^(%d+):(%d+)$')
  return tonumber(c) or 0, tonumber(at) or 0
end
local mine = redis.call('HGET', key, name)
if not mine and redis.call('HLEN', key) >= max_names then
  -- many names from one address: the oldest one's count moves to the
  -- bucket no success clears
  local all = redis.call('HGETALL', key)
  local oldest, oldest_at, oldest_count
  for i = 1, #all, 2 do
    if all[i] ~= other then
      local c, at = count(all[i + 1])
      if not oldest or at < oldest_at then oldest, oldest_at, oldest_count = all[i], at, c end
    end
  end
  if oldest then
    local folded = count(redis.call('HGET', key, other))
    redis.call('HSET', key, other, string.format('%d:%d', math.min(folded + oldest_count, cap), now))
    redis.call('HDEL', key, oldest)
  end
end
local c = count(mine)
redis.call('HSET', key, name, string.format('%d:%d', math.min(c + 1, cap), now))
redis.call('PEXPIRE', key, forget)
return c + 1
"""

#: S-514: the shared secret, set once (SET NX); a value that is not a
#: secret of msa's is replaced. KEYS[1]; ARGV a candidate, the TTL (ms),
#: the secret's length. The secret.
SECRET = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local v = redis.call('GET', KEYS[1])
if string.len(v) ~= tonumber(ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v
"""

#: `check` and serve's start: the server runs scripts and has a clock.
PROBE = "return redis.call('TIME')[1]"
