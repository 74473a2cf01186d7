"""The Lua scripts of cross-slot all-or-nothing batches (txn.py runs them; the
protocol and why each step is safe: docs/redis-cluster.md, section 6).

Each runs atomically on the node that owns its slot, and every decision about a batch
— commit, or abort once its time is up — is taken by one script on the batch's
primary slot, where its txn record lives, by that node's clock. Locks and txn records
are layout.py's; the helpers (`settle`, `lock_fields`, `bin`, ...) lua.py's.

Answers: a table whose first element is a code — 1 done, -1 too many new keys
(max_keys), -2 a key is locked by another batch (with that lock's txn key and id),
-3 keys missing, -4 the batch is no longer pending (aborted, or its record gone).
"""

from __future__ import annotations

from typing import Final

from kvcluster.rediscluster.lua import Script

__all__ = ["ABORT", "COMMIT", "DONE", "EXISTS", "FULL", "MISSING", "PREPARE", "ROLLBACK", "ROLLFORWARD", "TXN_SCRIPTS"]

DONE: Final = 1
FULL: Final = -1
MISSING: Final = -3
EXISTS: Final = -4  # PREPARE: the txn record exists already; COMMIT: the batch is not pending

# Lock one slot's keys of a batch. KEYS: [the txn record,] the group's value keys.
# ARGV[1]: txn id, ARGV[2]: txn record key, ARGV[3]: kind ('set', 'delete', 'consume'),
# ARGV[4]: how many keys it may create (-1: any), ARGV[5]: the TTL in µs for the
# primary group (KEYS[1] is then the txn record, which it creates), '0' for a
# secondary group; ARGV[6]: n, ARGV[7 .. 6 + n]: the secondary value keys (primary
# group only); ARGV[7 + n ..]: the new tail of each value key ('set' only).
# Every key is checked before anything is written: a lock of another batch -> {-2, i,
# txn key, txn id, every locked i}; a missing key of 'delete'/'consume' -> {-3, missing};
# too many new keys -> {-1, absent}. Else each key becomes a lock and the answer is
# {1, newest old timestamp, absent[, old records ('consume')]}.
PREPARE: Final = Script(
    "txn_prepare",
    """
local id, txn, kind = ARGV[1], ARGV[2], ARGV[3]
local max_new, ttl, listed = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local first = 1
if ttl > 0 then
  first = 2
  if redis.call('EXISTS', KEYS[1]) == 1 then return {-4} end
end
local olds, absent, held, newest, blocker = {}, {}, {}, 0, false
for i = first, #KEYS do
  local j = i - first + 1
  local old = redis.call('GET', KEYS[i])
  olds[j] = old
  if old then
    local ts = stamp(old, KEYS[i])
    if is_lock(old) then
      held[#held + 1] = j
      blocker = blocker or old
    elseif ts > newest then
      newest = ts
    end
  else
    absent[#absent + 1] = j
  end
end
if blocker then
  local answer = locked(held[1], blocker)
  answer[5] = held
  return answer
end
if kind ~= 'set' and #absent > 0 then return {-3, absent} end
if max_new >= 0 and #absent > max_new then return {-1, absent} end
local tail = bin(id) .. bin(txn)
for i = first, #KEYS do
  local j = i - first + 1
  local old = olds[j]
  local new = false
  if kind == 'set' then new = ARGV[6 + listed + j] end
  local was = 0
  if old then was = stamp(old, KEYS[i]) end
  redis.call('SET', KEYS[i], struct.pack('>I8', was) .. '\\255\\148' .. bin(old) .. bin(new) .. tail)
end
if first == 2 then
  local keys, primary = {}, {}
  for s = 1, listed do keys[s] = ARGV[6 + s] end
  for i = 2, #KEYS do primary[i - 1] = KEYS[i] end
  local record = {state = 'pending', expires = clock() + ttl, ts = 0, keys = keys, primary = primary}
  redis.call('SET', KEYS[1], cmsgpack.pack(record))
end
if kind == 'consume' then return {1, newest, absent, olds} end
return {1, newest, absent}
""",
)

# Decide: commit. KEYS: the txn record, then the primary group's value keys.
# ARGV[1]: txn id, ARGV[2]: the newest old timestamp of every group, ARGV[3]: ms an
# aborted record is kept. If the batch is pending and its time is not up (this node's
# clock), it commits at ts = max(now, newest + 1): the primary group gets its new
# records, the txn record says committed at ts -> {ts}. Else it is aborted (the
# primary group gets its old records back) -> {-4, state}.
COMMIT: Final = Script(
    "txn_commit",
    """
local raw = redis.call('GET', KEYS[1])
if not raw then return {-4, 'missing'} end
local record = cmsgpack.unpack(raw)
if record.state == 'committed' then return {record.ts} end
if record.state == 'pending' then
  local now = clock()
  if now < record.expires then
    local ts = after(tonumber(ARGV[2]))
    settle(2, ARGV[1], ts)
    record.state, record.ts = 'committed', ts
    redis.call('SET', KEYS[1], cmsgpack.pack(record))
    return {ts}
  end
  settle(2, ARGV[1], false)
  record.state = 'aborted'
  redis.call('SET', KEYS[1], cmsgpack.pack(record), 'PX', ARGV[3])
end
return {-4, record.state}
""",
)

# Decide: abort, unless already decided. KEYS as COMMIT; ARGV[1]: txn id, ARGV[2]: '1'
# to abort a pending batch at once (its own client giving up), '0' only once its time
# is up (anyone else: this node's clock decides), ARGV[3]: ms an aborted record is kept.
# -> the txn record as it is afterwards, or nil when there is none.
ABORT: Final = Script(
    "txn_abort",
    """
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local record = cmsgpack.unpack(raw)
if record.state == 'pending' and (ARGV[2] == '1' or clock() >= record.expires) then
  settle(2, ARGV[1], false)
  record.state = 'aborted'
  raw = cmsgpack.pack(record)
  redis.call('SET', KEYS[1], raw, 'PX', ARGV[3])
end
return raw
""",
)

# KEYS: value keys of one slot; ARGV[1]: txn id. Those still locked by that batch get
# their old record back (or are deleted). -> how many.
ROLLBACK: Final = Script("txn_rollback", "return settle(1, ARGV[1], false)")

# KEYS: value keys of one slot; ARGV[1]: txn id, ARGV[2]: its commit timestamp. Those
# still locked by that batch get their new record at that timestamp (or are deleted).
# -> how many.
ROLLFORWARD: Final = Script("txn_rollforward", "return settle(1, ARGV[1], tonumber(ARGV[2]))")

TXN_SCRIPTS: Final = (PREPARE, COMMIT, ABORT, ROLLBACK, ROLLFORWARD)
