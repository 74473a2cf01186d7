"""The linearizability checker's own tests: hand-made histories it must accept, and
stale reads, lost writes and invented values it must catch."""

from __future__ import annotations

import random

from kvtest.linearizability import NEVER, Operation, check, check_key


def op(
    kind: str, called: float, returned: float, value: object = None, output: object = None, client: int = 0
) -> Operation:
    return Operation(client, kind, "k", value, output, called, returned)


def test_an_empty_history_and_a_sequential_one_are_linearizable() -> None:
    assert check_key("k", [])
    history = [
        op("set", 0, 1, value="a"),
        op("get", 2, 3, output="a"),
        op("delete", 4, 5, output=True),
        op("get", 6, 7, output=None),
        op("delete", 8, 9, output=False),
    ]
    assert check_key("k", history)


def test_a_read_concurrent_with_a_write_may_see_either_value() -> None:
    for seen in ("a", "b"):
        history = [
            op("set", 0, 1, value="a"),
            op("set", 2, 10, value="b", client=1),
            op("get", 3, 4, output=seen, client=2),
        ]
        assert check_key("k", history), seen


def test_a_stale_read_is_caught() -> None:
    history = [
        op("set", 0, 1, value="a"),
        op("set", 2, 3, value="b"),
        op("get", 4, 5, output="a", client=1),  # b was acknowledged before this read began
    ]
    assert not check_key("k", history)


def test_a_lost_write_is_caught() -> None:
    history = [
        op("set", 0, 1, value="a"),
        op("get", 2, 3, output=None, client=1),  # the acknowledged write vanished
    ]
    assert not check_key("k", history)


def test_a_value_never_written_is_caught() -> None:
    assert not check_key("k", [op("set", 0, 1, value="a"), op("get", 2, 3, output="z")])


def test_reads_that_go_back_in_time_are_caught() -> None:
    # Both writes overlap both reads, but once a reader saw b, a later read cannot see a.
    history = [
        op("set", 0, 10, value="a"),
        op("set", 0, 10, value="b", client=1),
        op("get", 1, 2, output="b", client=2),
        op("get", 3, 4, output="a", client=2),
        op("get", 5, 6, output="b", client=2),
    ]
    assert not check_key("k", history)


def test_a_write_of_unknown_outcome_may_or_may_not_have_happened() -> None:
    unknown = op("set", 0, NEVER, value="x", client=1)
    assert check_key("k", [unknown, op("get", 5, 6, output="x")])  # it happened
    assert check_key("k", [unknown, op("get", 5, 6, output=None)])  # or not (yet)
    # It may even take effect long after its caller gave up, between two reads.
    assert check_key("k", [unknown, op("get", 5, 6, output=None), op("get", 7, 8, output="x")])
    # But once it is seen, it cannot be unseen without another write.
    assert not check_key("k", [unknown, op("get", 5, 6, output="x"), op("get", 7, 8, output=None)])


def test_a_delete_of_unknown_outcome() -> None:
    history = [
        op("set", 0, 1, value="a"),
        op("delete", 2, NEVER, client=1),
        op("get", 3, 4, output="a"),
        op("get", 5, 6, output=None),
    ]
    assert check_key("k", history)


def test_a_delete_that_reports_a_key_it_could_not_have_seen_is_caught() -> None:
    assert not check_key("k", [op("delete", 0, 1, output=True)])  # nothing was ever written


def test_check_splits_by_key_and_names_the_bad_one() -> None:
    good = Operation(0, "set", "good", "a", None, 0, 1)
    bad = [Operation(0, "set", "bad", "a", None, 0, 1), Operation(1, "get", "bad", None, None, 2, 3)]
    violations = check([good, *bad])
    assert [v.key for v in violations] == ["bad"]
    assert "not linearizable" in str(violations[0])


def test_a_long_random_history_from_a_real_register_passes_and_a_corrupted_one_fails() -> None:
    """Simulate 4 clients on a true register (each operation takes effect at a random
    moment inside its interval): always linearizable. Then change one read's output
    to a value that was never current in its interval: caught."""
    rng = random.Random(7)
    events: list[tuple[float, float, float, int, str]] = []  # (effect, called, returned, client, kind)
    clock = [0.0] * 4
    for _ in range(400):
        client = rng.randrange(4)
        called = clock[client] + rng.random()
        returned = called + rng.random() * 3
        clock[client] = returned
        effect = rng.uniform(called, returned)
        events.append((effect, called, returned, client, rng.choice(["get", "set", "set", "delete"])))
    state: object = None
    history = []
    for i, (_effect, called, returned, client, kind) in enumerate(sorted(events)):
        if kind == "set":
            state = f"v{i}"
            history.append(op("set", called, returned, value=state, client=client))
        elif kind == "get":
            history.append(op("get", called, returned, output=state, client=client))
        else:
            history.append(op("delete", called, returned, output=state is not None, client=client))
            state = None
    assert check_key("k", history)
    reads = [i for i, o in enumerate(history) if o.kind == "get" and o.output is not None]
    target = history[reads[len(reads) // 2]]
    history[reads[len(reads) // 2]] = op(
        "get", target.called, target.returned, output="never-written", client=target.client
    )
    assert not check_key("k", history)
