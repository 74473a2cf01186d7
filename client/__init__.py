"""Clients: `Client`, `AsyncClient` and `Namespace` proxies over a socket-free core.

Arrives with the cluster (issue 3); see DESIGN.md for its place in the layout.
"""
