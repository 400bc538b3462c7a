"""The embedded dev stack (PostgreSQL, Redis, Temporal), the ``gradeflow dev`` supervisor, preflight checks.

May import ``settings`` and ``db``; used only by the CLI and the tests.
"""
