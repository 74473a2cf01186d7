"""The RESP gateway: redis-py, redis-cli and redis-benchmark against a real cluster (kvcluster.resp)."""
