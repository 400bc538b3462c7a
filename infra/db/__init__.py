"""PostgreSQL plumbing: the per-process pool manager, migrations and the list query builder.

Imports nothing else from ``infra`` but ``observability`` (its pools report to the pool gauges); every other
subpackage may import it.
"""
