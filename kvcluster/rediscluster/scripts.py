"""The Lua scripts every write runs inside Redis, atomic per call.

Each takes the time from `redis.call('TIME')` on the node that owns its keys and
gives the write the timestamp max(now, newest stored timestamp of its keys + 1), so
a key's timestamps only grow, even when that node's clock steps back. Scripts run by
EVALSHA; a node that does not know one (restarted, failed over) answers NOSCRIPT and
the client loads them all and sends the command again (nothing ran).

Records are `layout.py`'s: 8-byte big-endian timestamp, scope byte, msgpack value.
A key that does not hold one fails the script with a `KVCLUSTER` error, which the
client reports as StorageError. A key that holds a lock (a cross-slot batch between
its prepare and its roll forward) is never overwritten: the script writes nothing and
answers {-2, i, txn key, txn id} for the first such KEYS[i] (lua.py `locked`); the
client resolves the lock (locks.py) and sends the script again. The shared Lua
helpers are lua.py's; the scripts of cross-slot batches are txn_scripts.py's.
"""

from __future__ import annotations

from typing import Final

from kvcluster.rediscluster.lua import Script
from kvcluster.rediscluster.txn_scripts import TXN_SCRIPTS

__all__ = ["IMPORT", "NS_CREATE", "NS_DELETE", "NS_UPDATE", "REMOVE", "SCRIPTS", "UPDATE", "WRITE", "Script"]


# KEYS: value keys (one slot). ARGV[1]: how many of them may be created (-1: any number);
# ARGV[i + 1]: the scope byte and msgpack value for KEYS[i]. All or none are written,
# at one timestamp. -> {ts, absent} (the 1-based indices of the keys it created), or
# {-1, absent} and nothing written when more than ARGV[1] keys would be created.
WRITE: Final = Script(
    "write",
    """
local max_new = tonumber(ARGV[1])
local newest, absent = 0, {}
for i = 1, #KEYS do
  local old = redis.call('GET', KEYS[i])
  if old then
    local ts = stamp(old, KEYS[i])
    if is_lock(old) then return locked(i, old) end
    if ts > newest then newest = ts end
  else
    absent[#absent + 1] = i
  end
end
if max_new >= 0 and #absent > max_new then return {-1, absent} end
local ts = after(newest)
local head = struct.pack('>I8', ts)
for i = 1, #KEYS do redis.call('SET', KEYS[i], head .. ARGV[i + 1]) end
return {ts, absent}
""",
)

# KEYS[1]: a value key; ARGV[1]: its new msgpack value (its scope stays).
# -> {ts, old record}, or nil when the key does not exist (nothing written).
UPDATE: Final = Script(
    "update",
    """
local old = redis.call('GET', KEYS[1])
if not old then return false end
local newest = stamp(old, KEYS[1])
if is_lock(old) then return locked(1, old) end
local ts = after(newest)
redis.call('SET', KEYS[1], struct.pack('>I8', ts) .. string.sub(old, 9, 9) .. ARGV[1])
return {ts, old}
""",
)

# KEYS: value keys (one slot). ARGV[1]: '1' for all or nothing (a missing key removes
# none); ARGV[2]: '1' to return the removed records (consume).
# -> {ts, missing} or {ts, missing, records (nil where missing)}; {-1, missing} when
# all or nothing found a key missing.
REMOVE: Final = Script(
    "remove",
    """
local olds, missing, newest = {}, {}, 0
for i = 1, #KEYS do
  local old = redis.call('GET', KEYS[i])
  if old then
    local ts = stamp(old, KEYS[i])
    if is_lock(old) then return locked(i, old) end
    if ts > newest then newest = ts end
    olds[i] = old
  else
    olds[i] = false
    missing[#missing + 1] = i
  end
end
if ARGV[1] == '1' and #missing > 0 then return {-1, missing} end
local ts = after(newest)
for i = 1, #KEYS do
  if olds[i] then redis.call('UNLINK', KEYS[i]) end
end
if ARGV[2] == '1' then return {ts, missing, olds} end
return {ts, missing}
""",
)

# KEYS[1]: the registry, KEYS[2]: the namespace's key counter; ARGV[1]: name, ARGV[2]:
# its entry. -> 1 created (any old counter dropped), 0 it exists.
NS_CREATE: Final = Script(
    "ns_create",
    """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
""",
)

# KEYS as NS_CREATE; ARGV[1]: name, ARGV[2]: the entry the client read ('' for none),
# ARGV[3]: the new entry, ARGV[4]: the counter: 'keep', 'reset' (to 0) or 'drop'.
# -> 1 changed, 0 the entry is no longer what the client read, -1 no such namespace.
NS_UPDATE: Final = Script(
    "ns_update",
    """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then
  if ARGV[2] ~= '' then return -1 end
elseif current ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == 'reset' then
  redis.call('SET', KEYS[2], 0)
elseif ARGV[4] == 'drop' then
  redis.call('DEL', KEYS[2])
end
return 1
""",
)

# KEYS as NS_CREATE; ARGV[1]: name. -> 1 removed (with its counter), 0 no such namespace.
NS_DELETE: Final = Script(
    "ns_delete",
    """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
return 1
""",
)

# KEYS[1]: a value key; ARGV[1]: a whole record (timestamp, scope, value) copied from
# elsewhere (`kvcluster export`, migrate.py), its timestamp kept. The newer record wins:
# it is written where the key is absent or holds an older timestamp, and a record as
# new or newer is left alone (so exporting again changes nothing and never moves a key
# back in time). -> 1 created, 2 replaced an older record, 0 kept the stored one;
# {-2, 1, txn key, txn id} for a locked key.
IMPORT: Final = Script(
    "import",
    """
local old = redis.call('GET', KEYS[1])
if old then
  local ts = stamp(old, KEYS[1])
  if is_lock(old) then return locked(1, old) end
  if ts >= stamp(ARGV[1], 'of the imported record') then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1])
if old then return 2 end
return 1
""",
)

SCRIPTS: Final = (WRITE, UPDATE, REMOVE, NS_CREATE, NS_UPDATE, NS_DELETE, IMPORT, *TXN_SCRIPTS)
