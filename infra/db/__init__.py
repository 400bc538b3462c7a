"""PostgreSQL plumbing: pools, migrations, the list query builder, backups, and the values PostgreSQL stores.

``values`` holds the edge types (storable text, finite numbers, canonical UUIDs) the API, the agents'
rubric models and the cursors use. Imports nothing else from ``infra`` but ``observability`` (pool gauges);
every other subpackage may import it.
"""
