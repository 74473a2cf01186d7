"""The RESP gateway: kvcluster served over the Redis protocol, so that redis-cli,
redis-benchmark and any Redis client library can use a cluster.

`kvcluster start --resp 127.0.0.1:6380` (or `kvcluster.start(resp=...)`) runs it as a
process of the cluster; docs/resp-gateway.md lists the commands and how values, keys
and namespaces map. Modules: `protocol` (the parser and the reply encoders), `glob`
(Redis patterns), `commands` (the table and error replies), `keyspace`, `connection`
and `introspection` (the handlers), `session` (per-connection state), `server` (the
asyncio server), `gateway` (the process).
"""

from kvcluster.resp.gateway import GatewayConfig, parse_address, run_gateway

__all__ = ["GatewayConfig", "parse_address", "run_gateway"]
