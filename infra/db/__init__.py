"""PostgreSQL plumbing: the per-process pool manager, migrations, the list query builder, backups and restores.

Imports nothing else from ``infra`` but ``observability`` (its pools report to the pool gauges) and
``text`` (storable-text types for cursors); every other subpackage may import it.
"""
