"""The gap handler's sans-I/O cores: they decide, the shells in :mod:`gap_handler` move bytes.

Minute-range maths (``intervals``), what one unit's REST pages prove (``planner``), the
request-weight budget (``rate``), a requested range's progress (``tracker``), the
exchange's clock (``exchange_clock``), when the daily jobs run (``schedule``), API and CLI
input checks (``validation``) and the ``/health`` body (``health``). Each takes plain
values (the time it means, ranges, rows) and returns plain values; none reads a clock,
opens a socket or imports asyncio, asyncpg, aiohttp or websockets, directly or through
what it imports (``tests/test_core_boundary.py`` imports each one in a fresh interpreter
to check), exactly like :mod:`feeder.core`.
"""
