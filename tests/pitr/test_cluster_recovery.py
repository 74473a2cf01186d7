"""Point-in-time recovery of a real 2-shard cluster against a model of its acknowledged writes.

The history mixes single sets, deletes, single-key delete_many and ALL_OR_NOTHING
set_many across both shards, with journal rotations in between. Every acknowledged
write has a known timestamp, except a plain `delete` (it answers a bool): its moment is
bracketed between the last write acknowledged on its shard before it and a write on
the same shard right after it, and no recovery point is drawn inside such a bracket.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import kvcluster
from kvcluster import BatchMode, Cluster, Retention
from kvcluster.keys import encode_key, encode_namespace
from kvcluster.pitr import recover_state
from kvcluster.router.jump import shard_for

pytestmark = pytest.mark.slow

AON = BatchMode.ALL_OR_NOTHING
SHARDS = 2
NAMESPACES = ("default", "users")
KEYS = [f"k{i:02d}" for i in range(30)]
DELETED = object()
KVCLUSTER = os.path.join(os.path.dirname(sys.executable), "kvcluster")
State = dict[tuple[str, str], tuple[Any, int]]


def shard_of(ns: str, key: str) -> int:
    return shard_for(encode_namespace(ns), encode_key(key), SHARDS)


@dataclass
class Model:
    """Per key, its acknowledged changes in order: (lo, hi, value). A change is in the
    state at T when hi <= T; for a write with a known timestamp lo == hi == ts."""

    changes: dict[tuple[str, str], list[tuple[int, int, Any]]] = field(default_factory=dict)
    brackets: list[tuple[int, int]] = field(default_factory=list)  # (lo, hi): T never inside
    last: list[int] = field(default_factory=lambda: [0] * SHARDS)  # newest ack per shard
    first: int = 0

    def record(self, ns: str, key: str, ts: int, value: Any, lo: int | None = None) -> None:
        self.changes.setdefault((ns, key), []).append((ts if lo is None else lo, ts, value))
        shard = shard_of(ns, key)
        self.last[shard] = max(self.last[shard], ts)
        self.first = self.first or ts

    def live(self, ns: str) -> list[str]:
        return [key for (n, key), changes in self.changes.items() if n == ns and changes[-1][2] is not DELETED]

    def state_at(self, when: int) -> State:
        state: State = {}
        for where, changes in self.changes.items():
            applied = [(hi, value) for _lo, hi, value in changes if hi <= when]
            if applied and applied[-1][1] is not DELETED:
                state[where] = (applied[-1][1], applied[-1][0])
        return state

    def ambiguous(self, when: int) -> bool:
        return any(lo < when < hi for lo, hi in self.brackets)

    @property
    def newest(self) -> int:
        return max(self.last)


def play(client: kvcluster.Client, model: Model, rng: random.Random, steps: int) -> None:
    spaces = {name: client.namespace(name) for name in NAMESPACES}
    for step in range(steps):
        name = rng.choice(NAMESPACES)
        space = spaces[name]
        roll = rng.random()
        live = model.live(name)
        if roll < 0.5 or not live:
            key, value = rng.choice(KEYS), {"step": step, "pad": "x" * rng.randrange(20)}
            model.record(name, key, space.set(key, value), value)
        elif roll < 0.6:
            key = rng.choice(live)
            shard = shard_of(name, key)
            lo = model.last[shard]
            assert space.delete(key) is True
            probe = next(k for k in KEYS if k != key and shard_of(name, k) == shard)
            hi = space.set(probe, step)  # the next write on the delete's shard bounds it
            model.record(name, key, hi, DELETED, lo=lo)
            model.brackets.append((lo, hi))
            model.record(name, probe, hi, step)
        elif roll < 0.7:
            key = rng.choice(live)
            (ts,) = space.delete_many([key], AON).data.values()
            model.record(name, key, ts, DELETED)
        else:
            keys = rng.sample(KEYS, rng.randrange(2, 7))
            if len({shard_of(name, k) for k in keys}) < SHARDS:  # make it span both shards
                keys.append(next(k for k in KEYS if shard_of(name, k) != shard_of(name, keys[0])))
            values = {k: [step, k] for k in keys}
            result = space.set_many(values, AON)
            for key, ts in result.data.items():
                model.record(name, key, ts, values[key])
            for shard in range(SHARDS):  # a commit moves every participant's clock past it
                model.last[shard] = max(model.last[shard], *result.data.values())
        if step % 60 == 59:
            client.rotate_journals()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Model]]:
    data_dir = tmp_path_factory.mktemp("pitr") / "data"
    with kvcluster.start(data_dir, shards=SHARDS, durability="none", retention=Retention.keep_all()) as cluster:
        client = cluster.connect()
        client.create_namespace("users", max_keys=1000)
        model = Model()
        play(client, model, random.Random(20250131), 360)
        yield cluster, model


def moments(model: Model, count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    chosen: list[int] = []
    while len(chosen) < count:
        when = rng.randrange(model.first - 1000, model.newest + 1000)
        if not model.ambiguous(when):
            chosen.append(when)
    return chosen


def test_recovered_state_matches_the_model_at_100_moments(recorded: tuple[Cluster, Model]) -> None:
    cluster, model = recorded
    rotated = [len(os.listdir(Path(cluster.data_dir) / f"shard-{i:03d}")) for i in range(SHARDS)]
    assert all(files > 4 for files in rotated), rotated  # archives are part of the history read
    for when in [model.first - 1, model.first, *moments(model, 98, seed=1)]:
        assert recover_state(cluster.data_dir, when) == model.state_at(when), when


def test_a_recovered_data_dir_serves_the_state_and_takes_new_writes(
    recorded: tuple[Cluster, Model], tmp_path: Path
) -> None:
    cluster, model = recorded
    for i, when in enumerate(moments(model, 2, seed=2)):
        into = tmp_path / f"at-{i}"
        expected = model.state_at(when)
        report = kvcluster.recover(cluster.data_dir, when, into)
        assert sum(report.keys) == len(expected) and report.at == when
        with kvcluster.start(into) as restored:
            client = restored.connect()
            assert sorted(client.namespaces()) == sorted(NAMESPACES)
            assert client.namespace("users").stats()["max_keys"] == 1000
            for name in NAMESPACES:
                space = client.namespace(name)
                assert space.get_all() == {key: found for (ns, key), found in expected.items() if ns == name}
                for (ns, key), found in expected.items():
                    if ns == name:
                        assert space.get_versioned(key) == found
            newest = max((ts for _value, ts in expected.values()), default=0)
            space = client.namespace("default")
            assert space.set("fresh", 1) > max(newest, when)
            result = space.set_many(dict.fromkeys(KEYS[:8], "new"), AON)
            assert min(result.data.values()) > max(newest, when)
            assert space.get(KEYS[0]) == "new"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KVCLUSTER, *args], capture_output=True, text=True, timeout=120, check=False)


def test_the_cli_recovers_at_an_iso_8601_moment(recorded: tuple[Cluster, Model], tmp_path: Path) -> None:
    cluster, model = recorded
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    when, naive_when = moments(model, 2, seed=3)
    east = timezone(timedelta(hours=2))
    for i, (at, ts) in enumerate(
        [
            ((epoch + timedelta(microseconds=when)).astimezone(east).isoformat(), when),
            ((epoch + timedelta(microseconds=naive_when)).replace(tzinfo=None).isoformat(), naive_when),  # UTC
        ]
    ):
        into = tmp_path / f"iso-{i}"
        done = cli("recover", "--data-dir", str(cluster.data_dir), "--at", at, "--into", str(into))
        assert done.returncode == 0, done.stderr
        assert f"at {ts} µs" in done.stdout and "shard   1:" in done.stdout
        assert recover_state(into, 2**62) == model.state_at(ts)
    again = cli("recover", "--data-dir", str(cluster.data_dir), "--at", str(when), "--into", str(tmp_path / "iso-0"))
    assert again.returncode == 1 and "not empty" in again.stderr
    assert cli("recover", "--data-dir", str(cluster.data_dir), "--at", "noon", "--into", str(tmp_path / "x")).returncode
    assert not (tmp_path / "x").exists()


def test_retention_is_persisted_applied_and_limits_recovery(tmp_path: Path) -> None:
    data = tmp_path / "kept"
    started = cli(
        "start", "--data-dir", str(data), "--shards", "2", "--retention-archives", "1", "--retention-age", "none"
    )
    assert started.returncode == 0, started.stderr
    try:
        status = json.loads(cli("status", "--json", "--data-dir", str(data)).stdout)
        assert status["retention"] == {"max_archives": 1, "max_age": None, "max_bytes": Retention().max_bytes}
        client = kvcluster.connect(data)
        space = client.namespace("default")
        first = space.set("a", 0)
        for round_ in range(4):
            space.set_many(dict.fromkeys(KEYS[:6], round_), AON)
            client.rotate_journals()
        client.close()
        for shard in range(2):
            archives = [n for n in os.listdir(data / f"shard-{shard:03d}") if n.endswith(".zz")]
            assert len(archives) == 1, archives
        with pytest.raises(kvcluster.StorageError, match="retention kept history back to") as refused:
            recover_state(data, first)
        reach = refused.value.timestamp
        assert reach is not None and reach > first
        refused_cli = cli("recover", "--data-dir", str(data), "--at", str(first), "--into", str(tmp_path / "old"))
        assert refused_cli.returncode == 1 and f"back to {reach} µs" in refused_cli.stderr
        assert recover_state(data, reach)[("default", "a")] == (0, first)
    finally:
        assert cli("stop", "--data-dir", str(data)).returncode == 0
    with kvcluster.start(data) as restarted:  # no retention given: the recorded one stays
        assert restarted.connect().stats()["retention"]["max_archives"] == 1
