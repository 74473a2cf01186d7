"""The conformance suite: one set of API tests run against every backend."""
