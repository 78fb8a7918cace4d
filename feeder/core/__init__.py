"""The feeder's sans-I/O cores: they decide, the shells in :mod:`feeder` move bytes.

Each module here takes plain values (frames as bytes, monotonic ``now``, rows) and
returns plain values (outcomes, batches, verdicts, delays); none reads a clock, opens a
socket or imports asyncio, asyncpg, aiohttp or websockets, directly or through what it
imports (``tests/test_core_boundary.py`` imports each one in a fresh interpreter to
check). So every decision is unit-tested without an event loop, as websockets keeps
its ``protocol.py`` apart from its ``asyncio/`` package.
"""
