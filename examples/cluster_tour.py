"""A tour of a kvcluster cluster: start one, use it from this process and from a pool of
workers, read it back, and stop it.

    python examples/cluster_tour.py
"""

from __future__ import annotations

import multiprocess

import kvcluster
from kvcluster import BatchFailed, BatchMode, Namespace, NamespaceFull, Scope


def count_words(args: tuple[Namespace, str, str]) -> int:
    """Runs in a worker process: the proxy arrived pickled and connects by itself."""
    counts, name, text = args
    counts.set(name, len(text.split()))
    return len(text.split())


def main() -> None:
    with kvcluster.start(shards=2) as cluster:  # a temporary data directory, removed on stop
        client = cluster.connect()
        users = client.create_namespace("users", max_keys=3)
        ts = users.set("u:1", {"name": "Alice"})
        users["u:2"] = {"name": "Bob"}
        users.set("session:1", b"token", scope=Scope.EPHEMERAL)  # memory only
        print("u:1 =", users.get_versioned("u:1"), "written at", ts)
        try:
            users.set("u:3", {"name": "Carol"})
        except NamespaceFull as exc:
            print("refused:", exc)

        stock = client.create_namespace("stock")
        stock.set_many({"apples": 3, "pears": 5, "plums": 0})  # atomic across shards, one timestamp
        taken = stock.consume_many(["apples", "pears"])  # all of them or none
        print("taken:", taken.data)
        try:
            stock.delete_many(["plums", "cherries"])  # cherries are missing: nothing is deleted
        except BatchFailed as exc:
            print("refused:", list(exc.errors), "- plums kept:", stock.exists("plums"))
        best = stock.get_many(["plums", "cherries"], BatchMode.BEST_EFFORT)
        print("best effort:", best.data, "missing:", list(best.errors or {}))

        counts = client.create_namespace("counts")
        texts = {"a": "the quick brown fox", "b": "the lazy dog", "c": "the end"}
        with multiprocess.get_context("spawn").Pool(2) as pool:
            total = sum(pool.map(count_words, [(counts, name, text) for name, text in texts.items()]))
        print(f"{total} words counted by 2 worker processes:", dict(sorted(counts.items())))
        print("status:", {k: client.stats()[k] for k in ("data_dir", "epoch", "durability", "namespaces")})


if __name__ == "__main__":
    main()
