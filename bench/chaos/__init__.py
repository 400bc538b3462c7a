"""Chaos suite: real faults under load, verified from PostgreSQL and Redis (``make chaos``).

``python -m bench.chaos`` starts PostgreSQL, Redis and the Temporal dev server as separate processes
it can stop and restart (same data folder, same ports), runs the API, both workers and the relay as
separate ``gradeflow`` processes, puts submissions on them through the HTTP API and injects one fault
per scenario. See bench/README.md ("Chaos suite") for the scenarios, the checks and the figures.

Modules: ``services`` (stop/restart the stack and the platform processes by PID), ``load`` (HTTP load,
the prober counting 5xx, duplicate-key storms), ``snapshots`` (state at each fault instant, read from
PostgreSQL and the checkpointer), ``fault`` (options, and what a fault function works with),
``scenarios`` (one function per fault), ``runner`` (one scenario end to end), ``verify`` (the checks),
``report`` (table and JSON), ``__main__`` (command line).
"""
