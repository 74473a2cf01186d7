"""The RESP gateway tests' fixtures, from kvtest.resp."""

from kvtest.resp import gateway, namespace, redis_server

__all__ = ["gateway", "namespace", "redis_server"]
