"""The Lua every script of the Redis Cluster backend shares, and `Script`, the name
EVALSHA knows a script by. scripts.py and txn_scripts.py hold the scripts themselves.

Helpers (prepended to every script):

``stamp(record, key)``   a record's (or a lock's) timestamp; a `KVCLUSTER` error for a
                          string that is neither
``clock()``               the node's time in µs (`TIME`)
``after(newest)``         max(clock(), newest + 1): a key's timestamps only grow
``is_lock(record)``       whether a value key holds a lock (scope byte 0xFF, layout.py)
``lock_fields(record)``   a lock's old record, new tail, txn id and txn key (false for nil)
``locked(i, record)``     the answer of a script that met a lock on KEYS[i]:
                          {-2, i, txn key, txn id}; the client resolves it (locks.py) and
                          sends the script again
``bin(s)``                msgpack bin of a string (nil for false), as msgpack-python packs it
``settle(first, id, ts)`` KEYS[first..] still locked by txn `id`: their new record at
                          `ts` (or deleted) when `ts` is a number, their old record back
                          (or deleted) when it is false
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

from kvcluster.rediscluster.plans import Command

__all__ = ["HELPERS", "LOCKED_ANSWER", "Script"]

LOCKED_ANSWER: Final = -2  # the first element of a script's answer when it met a lock

HELPERS: Final = """
local function stamp(record, key)
  if #record < 10 then
    error({err = 'KVCLUSTER Redis key ' .. key .. ' does not hold a kvcluster record'})
  end
  return (struct.unpack('>I8', record))
end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function after(newest)
  local now = clock()
  if now > newest then return now end
  return newest + 1
end
local function is_lock(record)
  return string.byte(record, 9) == 255
end
local function bin(s)
  if not s then return '\\192' end
  local n = #s
  if n < 256 then return '\\196' .. string.char(n) .. s end
  if n < 65536 then return '\\197' .. struct.pack('>I2', n) .. s end
  return '\\198' .. struct.pack('>I4', n) .. s
end
local function field(s, pos)
  local t = string.byte(s, pos)
  if t == 192 then return false, pos + 1 end
  local n, start
  if t == 196 then n, start = string.byte(s, pos + 1), pos + 2
  elseif t == 197 then n, start = struct.unpack('>I2', s, pos + 1), pos + 3
  elseif t == 198 then n, start = struct.unpack('>I4', s, pos + 1), pos + 5
  else error({err = 'KVCLUSTER a lock record is damaged'}) end
  return string.sub(s, start, start + n - 1), start + n
end
local function lock_fields(record)
  if string.byte(record, 10) ~= 148 then error({err = 'KVCLUSTER a lock record is damaged'}) end
  local old, new, id, txn, pos
  old, pos = field(record, 11)
  new, pos = field(record, pos)
  id, pos = field(record, pos)
  txn = field(record, pos)
  return old, new, id, txn
end
local function locked(i, record)
  local _, _, id, txn = lock_fields(record)
  return {-2, i, txn, id}
end
local function settle(first, id, ts)
  local head = ts and struct.pack('>I8', ts)
  local done = 0
  for i = first, #KEYS do
    local record = redis.call('GET', KEYS[i])
    if record and #record >= 10 and is_lock(record) then
      local old, new, owner = lock_fields(record)
      if owner == id then
        local keep = old
        if ts then keep = new and head .. new end
        if keep then redis.call('SET', KEYS[i], keep) else redis.call('UNLINK', KEYS[i]) end
        done = done + 1
      end
    end
  end
  return done
end
"""


class Script:
    """One Lua script: its source and the SHA1 that EVALSHA names it by."""

    def __init__(self, name: str, body: str) -> None:
        self.name = name
        self.source = (HELPERS + body).encode()
        self.sha = hashlib.sha1(self.source).hexdigest()

    def call(self, keys: Sequence[bytes], args: Sequence[Any]) -> Command:
        return Command(("EVALSHA", self.sha, len(keys), *keys, *args))

    def __repr__(self) -> str:
        return f"Script({self.name!r}, {self.sha})"
