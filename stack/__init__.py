"""The local stack runner behind `make run`, `make bench` and the end-to-end tests.

Every part runs for real (Tansu, redis-server, chDB via the loader, the provider sandbox,
the Bytewax flows) on free loopback ports, and is torn down by whoever started it.
"""
