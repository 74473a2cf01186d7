"""Routing: jump consistent hash over xxhash64, the cluster map, the optional router process.

Arrives with the cluster (issue 3); see DESIGN.md for its place in the layout.
"""
