"""The coordinator's side of an online resize (grow only): N shards become M > N.

One ordered procedure, in phases, each with a named failpoint:

1. **record** — DATA/coordinator/resize.json `{from, to, epoch}` is written
   atomically first (`coordinator.resize_recorded`), then the new shards start on
   empty directories. They serve nobody yet: the published map still has N shards.
2. **copy** — once every new shard answers, each old shard gets MOVE_START and
   copies the keys whose bucket changes to their new shard while it keeps serving
   them, then freezes those keys and answers "ready" (actors/shard_moves.py).
3. **switch**, the commit point — `coordinator.resize_switch` before, then
   DATA/cluster.json is rewritten with M shards and epoch + 1, then
   `coordinator.resize_switched`, and every old shard gets MOVE_SWITCH (takes the
   epoch, drops the keys it gave away, answers what it held: "stale epoch" for the
   old map). The quotas of every limited namespace are rebuilt for M shards
   (QuotaBroker.reset), resize.json is removed, and the caller gets a summary.

Any failure before the switch — a participant dies, a step misses its deadline —
rolls back: MOVE_ABORT to the old shards (they serve the moving keys as before),
the new shards are killed and their directories removed, and the caller gets
ClusterUnavailable ("rolled back … retry"). A coordinator that starts and finds
resize.json finishes the work: forward (MOVE_SWITCH again) if the manifest already
has M shards, else back. A shard that starts with a manifest of more shards than it
held drops the keys it no longer owns (ShardProcess at start).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

import zmq

from kvcluster.actors.supervision import ActorSlot
from kvcluster.codec import Op, Reply, encode_error, encode_reply
from kvcluster.datadir import write_json_atomically
from kvcluster.errors import ClusterUnavailable, InvalidRequest, KVError
from kvcluster.failpoints import failpoint
from kvcluster.router.clustermap import ClusterMap

if TYPE_CHECKING:
    from kvcluster.actors.coordinator import Coordinator, Envelope
    from kvcluster.actors.shard import ShardConfig

__all__ = ["MAX_SHARDS", "Resizer"]

log = logging.getLogger("kvcluster.coordinator")

MAX_SHARDS: Final = 1024
START_TIMEOUT: Final = 60.0  # seconds for the new shards to serve
COPY_TIMEOUT: Final = 600.0  # seconds for the old shards to copy and freeze
SWITCH_TIMEOUT: Final = 5.0  # seconds for a shard to confirm the switch (one that died drops the keys at start)
RETRY_INTERVAL: Final = 1.0  # seconds between attempts to finish a resize found at start


@dataclasses.dataclass
class _Job:
    source: int  # N
    target: int  # M
    epoch: int  # the epoch before; the switch brings epoch + 1
    asker: tuple[Envelope, int] | None  # who asked (None: finishing one found at start)
    started: float = dataclasses.field(default_factory=time.monotonic)
    phase: str = "starting"  # starting, copying, switching, finishing (forward), undoing (back)
    deadline: float = 0.0
    restarts: dict[int, int] = dataclasses.field(default_factory=dict)  # participant -> restarts seen
    moved: int = 0
    next_try: float = 0.0


class Resizer:
    """Grows a running cluster; owned by the coordinator, driven by its loop (`tick`)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coord = coordinator
        self.path = os.path.join(coordinator.data.coordinator_dir, "resize.json")
        self.job: _Job | None = None
        self._recover()

    # -- state --------------------------------------------------------------------------

    def describe(self) -> dict[str, Any] | None:
        """The resize under way, for `status --json` (None when there is none)."""
        job = self.job
        if job is None:
            return None
        return {"from": job.source, "to": job.target, "phase": job.phase, "seconds": time.monotonic() - job.started}

    def check_idle(self, what: str) -> None:
        if self.job is not None:
            raise ClusterUnavailable(
                f"cannot {what} while the cluster grows from {self.job.source} to {self.job.target} shards; retry"
            )

    def _record(self, job: _Job) -> None:
        write_json_atomically(self.path, {"from": job.source, "to": job.target, "epoch": job.epoch})

    def _forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self.job = None

    def _recover(self) -> None:
        """A resize.json left by a coordinator that died: finish it (forward or back)."""
        try:
            import json

            with open(self.path, encoding="utf-8") as f:
                found = json.load(f)
            source, target, epoch = int(found["from"]), int(found["to"]), int(found["epoch"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring an unreadable %s: %s", self.path, exc)
            self._forget()
            return
        shards = self.coord.manifest["shards"]
        forward = shards == target and self.coord.manifest["epoch"] == epoch + 1
        self.job = _Job(source, target, epoch, None, phase="finishing" if forward else "undoing")
        log.warning(
            "a resize from %d to %d shards was interrupted; %s it",
            source,
            target,
            "finishing" if forward else "rolling back",
        )
        if not forward:
            self._remove_new_shards(source, target, adopted=True)

    # -- the request --------------------------------------------------------------------

    def start(self, envelope: Envelope, seq: int, args: list[Any]) -> None:
        """RESIZE [shards]: answered when the resize is done (or rolled back)."""
        if len(args) != 1 or type(args[0]) is not int:
            raise InvalidRequest("RESIZE takes [shards]")
        target, source = args[0], self.coord.map.shards
        if self.job is not None:
            raise ClusterUnavailable(
                f"a resize from {self.job.source} to {self.job.target} shards is already running; wait for it"
            )
        if target <= source:
            raise InvalidRequest(f"resize grows the cluster only: it has {source} shards; ask for more than that")
        if target > MAX_SHARDS:
            raise InvalidRequest(f"at most {MAX_SHARDS} shards")
        if not self.coord.ready:
            raise ClusterUnavailable("not every shard serves yet; retry the resize")
        job = _Job(source, target, self.coord.map.epoch, (envelope, seq))
        self._record(job)
        failpoint("coordinator.resize_recorded")
        self.job = job
        log.info("resizing from %d to %d shards", source, target)
        for shard in range(source, target):
            shutil.rmtree(self.coord.data.shard_dir(shard), ignore_errors=True)  # left by an older attempt
            slot = self._new_slot(shard, job.epoch + 1)
            self.coord.slots.append(slot)
            self.coord.poller.register(self.coord.links.add(slot.config.endpoint), zmq.POLLIN)
            slot.start()
        job.restarts = {shard: self.coord.slots[shard].restarts for shard in range(target)}
        job.deadline = time.monotonic() + START_TIMEOUT

    def _new_slot(self, shard: int, epoch: int) -> ActorSlot[ShardConfig]:
        template = self.coord.slots[0]
        name = self.coord.data.shard_name(shard)
        config = dataclasses.replace(
            template.config,
            shard=shard,
            epoch=epoch,
            endpoint=self.coord.data.endpoint(name),
            stream=self.coord.data.stream(name),
        )
        return ActorSlot(name, template.entry, config, template.run_dir, max_restart_delay=template.max_restart_delay)

    # -- the loop -----------------------------------------------------------------------

    def tick(self) -> None:
        """Called on every turn of the coordinator's loop."""
        job = self.job
        if job is None:
            return
        now = time.monotonic()
        if job.phase in ("finishing", "undoing"):
            if now >= job.next_try:
                job.next_try = now + SWITCH_TIMEOUT + RETRY_INTERVAL
                self._finish_found(job)
            return
        if job.phase in ("starting", "copying"):
            failed = self._failed_participant(job)
            if failed is not None:
                self._roll_back(job, failed)
            elif now > job.deadline:
                self._roll_back(job, f"the {job.phase} phase took longer than allowed")
            elif job.phase == "starting" and all(self.coord.slots[s].ready for s in range(job.source, job.target)):
                self._copy(job)

    def _failed_participant(self, job: _Job) -> str | None:
        for shard, restarts in job.restarts.items():
            slot = self.coord.slots[shard]
            if slot.pid is None or slot.restarts != restarts:
                return f"{slot.name} died"
        return None

    def _copy(self, job: _Job) -> None:
        job.phase = "copying"
        job.deadline = time.monotonic() + COPY_TIMEOUT
        endpoints = {str(s): self.coord.slots[s].config.endpoint for s in range(job.source, job.target)}

        def ready(answers: dict[int, Reply | None]) -> None:
            if self.job is not job or job.phase != "copying":
                return
            refused = [s for s, reply in answers.items() if reply is None or reply.status != 0]
            if refused:
                self._roll_back(job, f"shard {refused[0]} did not hand its keys over")
                return
            job.moved = sum(int(reply.result.get("moved", 0)) for reply in answers.values() if reply is not None)
            self._switch(job)

        self.coord.links.fan_out(
            range(job.source), Op.MOVE_START, [job.target, job.epoch + 1, endpoints], ready, COPY_TIMEOUT
        )

    def _switch(self, job: _Job) -> None:
        """The commit point: the manifest names M shards at epoch + 1."""
        failpoint("coordinator.resize_switch")
        coord = self.coord
        names = [coord.data.shard_name(s) for s in range(job.target)]
        coord.manifest.update(
            shards=job.target,
            epoch=job.epoch + 1,
            endpoints=[coord.data.endpoint(name) for name in names],
            streams=[coord.data.stream(name) for name in names],
        )
        coord.data.write_manifest(coord.manifest)
        failpoint("coordinator.resize_switched")
        job.phase = "switching"
        self._adopt_new_map(job)
        self._send_switch(job, lambda: self._done(job))

    def _adopt_new_map(self, job: _Job) -> None:
        """The coordinator's own view follows the manifest: map, slots, quotas, router."""
        coord = self.coord
        coord.map = ClusterMap(
            coord.manifest["epoch"],
            tuple(coord.manifest["endpoints"]),
            coord.map.coordinator,
            tuple(coord.manifest["streams"]),
        )
        for slot in coord.slots:
            slot.config = dataclasses.replace(slot.config, epoch=coord.map.epoch)
        coord.registry.shards = job.target
        coord.quota.shards = job.target
        router = coord.router
        if router is not None:  # (it also reloads the manifest on a shard number it does not know)
            router.config = dataclasses.replace(router.config, endpoints=coord.map.endpoints)

    def _send_switch(self, job: _Job, then: Callable[[], None]) -> None:
        def switched(answers: dict[int, Reply | None]) -> None:
            missing = [s for s, reply in answers.items() if reply is None or reply.status != 0]
            if missing:  # (a shard that was down drops the keys itself when it starts)
                log.warning("shards %s did not confirm the switch", missing)
            self._reset_quotas(then)

        self.coord.links.fan_out(
            range(job.source), Op.MOVE_SWITCH, [job.epoch + 1, job.target], switched, SWITCH_TIMEOUT
        )

    def _reset_quotas(self, then: Callable[[], None]) -> None:
        """Every shard gives back its spare quota (the old shards hold fewer keys now), so
        max_keys stays exact over M shards."""
        limited = [name for name, (max_keys, _v) in self.coord.registry.active().items() if max_keys > 0]

        def next_one() -> None:
            if limited:
                self.coord.broker.reset(limited.pop(), next_one)
            else:
                then()

        next_one()

    def _done(self, job: _Job) -> None:
        seconds = time.monotonic() - job.started
        log.info("resized from %d to %d shards in %.2f s (%d keys moved)", job.source, job.target, seconds, job.moved)
        self._forget()
        if job.asker is not None:
            summary = {"from": job.source, "to": job.target, "moved": job.moved, "seconds": seconds}
            self.coord._send(job.asker[0], encode_reply(job.asker[1], summary))

    # -- rolling back -------------------------------------------------------------------

    def _roll_back(self, job: _Job, reason: str) -> None:
        log.error("resize from %d to %d shards rolled back: %s", job.source, job.target, reason)
        self.coord.links.fan_out(range(job.source), Op.MOVE_ABORT, [], lambda answers: None, SWITCH_TIMEOUT)
        self._remove_new_shards(job.source, job.target, adopted=False)
        self._forget()
        if job.asker is not None:
            error: KVError = ClusterUnavailable(
                f"the resize from {job.source} to {job.target} shards was rolled back ({reason}); "
                "the cluster serves its old map: retry"
            )
            self.coord._send(job.asker[0], encode_error(job.asker[1], error))

    def _remove_new_shards(self, source: int, target: int, adopted: bool) -> None:
        """Stop the new shards (their copies are not needed) and remove their directories."""
        coord = self.coord
        for slot in coord.slots[source:]:
            slot.restart_at = None
            slot.kill()
            slot.wait(5.0)
        del coord.slots[source:]
        for socket in coord.links.truncate(source):
            with contextlib.suppress(KeyError):
                coord.poller.unregister(socket)
        for shard in range(source, target):
            name = coord.data.shard_name(shard)
            if adopted:  # a coordinator that died may have left them running
                pid = ActorSlot(name, lambda config: None, None, coord.data.run).recorded_pid()
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    _wait_gone(pid)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(coord.data.run, f"{name}.pid"))
            shutil.rmtree(coord.data.shard_dir(shard), ignore_errors=True)

    def _finish_found(self, job: _Job) -> None:
        """Finish a resize found at start: MOVE_SWITCH (forward) or MOVE_ABORT (back) to
        every old shard, until all of them confirm."""
        forward = job.phase == "finishing"

        def answered(answers: dict[int, Reply | None]) -> None:
            if self.job is not job:
                return
            if any(reply is None or reply.status != 0 for reply in answers.values()):
                job.next_try = time.monotonic() + RETRY_INTERVAL  # a shard still starting: again
                return
            if forward:
                self._reset_quotas(lambda: self._done(job))
            else:
                self._forget()
                log.info("the interrupted resize from %d to %d shards is rolled back", job.source, job.target)

        op, args = (Op.MOVE_SWITCH, [job.epoch + 1, job.target]) if forward else (Op.MOVE_ABORT, [])
        self.coord.links.fan_out(range(job.source), op, args, answered, SWITCH_TIMEOUT)


def _wait_gone(pid: int, timeout: float = 5.0) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        import select

        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.poll(int(timeout * 1000))
    finally:
        os.close(pidfd)
