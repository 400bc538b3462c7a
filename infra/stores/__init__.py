"""The SQL of each domain (submissions, exams, grading, review, idempotency) and its read models.

May import ``db``, ``cache``, ``events``, ``observability`` and ``constants``. Holds the workers' rubric
cache (a read model of the grading SQL) and the Redis lock that will fence grade writers.
"""
