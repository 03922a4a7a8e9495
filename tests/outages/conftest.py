"""The shared PostgreSQL behind a proxy the tests can stop and start (the server itself is never stopped)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import make_url

from tests.outages.support import PASSWORD, ThreadedProxy, through


@pytest.fixture
def proxied_postgres(postgres_url: str) -> Iterator[tuple[ThreadedProxy, str]]:
    """A proxy to this test's PostgreSQL schema, and the URL through it."""
    real = make_url(postgres_url)
    proxy = ThreadedProxy(real.host or "127.0.0.1", real.port or 5432)
    port = proxy.start()
    yield proxy, through(postgres_url, port, password=PASSWORD)
    proxy.close()
