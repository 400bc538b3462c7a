"""PostgreSQL plumbing: the per-process pool manager, migrations and the list query builder.

Imports nothing else from ``infra``; every other subpackage may import it.
"""
