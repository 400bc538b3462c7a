"""Client-side Temporal helpers: starting grading workflows exactly once, operators' retries, Schedules.

May import ``stores``, ``events``, ``db``, ``observability`` and ``constants`` (and the workflows'
input types).
"""
