"""Actors: the shard process, the coordinator process, supervision and two-phase commit.

Arrives with the cluster (issue 3); see DESIGN.md for its place in the layout.
"""
