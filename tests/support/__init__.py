"""Test support (never shipped: not in the wheel, not in the Docker image). Imported as ``tests.support.*``
(pytest's ``pythonpath = ["."]``); nothing outside ``tests/`` imports it.

- ``database``: real PostgreSQL + TimescaleDB servers and throwaway databases (tests/conftest.py).
- ``waiting``: waiting on a condition with a deadline (never a bare sleep).
- ``services``: a free TCP port; either service run by ``serve()`` in the test's event loop.
- ``simulator``: the simulator in the test's event loop.
- ``feeder``, ``gap_handler``: builders, settings and running services for their tests.
- ``chaos``: the chaos run's fault plan, shared clock and service processes (tests/test_chaos.py);
  ``python -m tests.support.chaos gap-handler`` is the gap handler on the simulator's clock.
"""
