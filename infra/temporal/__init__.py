"""Client-side Temporal helpers: starting grading workflows exactly once, the platform's Schedules.

May import ``observability`` and ``constants``; never workflow or activity modules at import time.
"""
