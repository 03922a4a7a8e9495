"""Fixtures: real databases (SQLite and PostgreSQL), real Redis, and in-process service stacks.

Tests share nothing by accident: they use only the PostgreSQL database that `TEST_POSTGRES_URL` names (each
test in a schema of its own, dropped afterwards) and the Redis database that `TEST_REDIS_URL` names (each
test under a key prefix of its own, whose keys are deleted afterwards). Nothing is flushed or dropped whole.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from tests.helpers import SERVICE_TOKEN

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Only keys under a test's own prefix are written or deleted there, so any database will do.
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = bool(os.environ.get("CI"))
# Intent models take the full path whatever the CPU, so that a test's predictions do not depend on which host
# runs it; the latency plan has tests of its own (tests/nlp/test_latency.py, test_fast_path.py), which set it.
os.environ.setdefault("NLP_LATENCY_PLAN", "off")
# Every service a test builds or starts shares this credential (nlp, dialogue and llm refuse calls without it),
# whatever the shell that runs the tests has set.
os.environ["SERVICE_TOKEN"] = SERVICE_TOKEN


def _postgres_available() -> bool:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> str:
    if not _postgres_available():
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and does not answer at {POSTGRES_ADMIN_URL}")
        pytest.skip("PostgreSQL not reachable")
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty schema for one test in the `TEST_POSTGRES_URL` database, dropped afterwards.

    The URL sets the connections' `search_path` to it (and their application_name, so that connections a test
    leaves open can be closed before the drop)."""
    schema = f"sb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(postgres_server).set(drivername="postgresql+psycopg").update_query_dict(
        {"options": f"-csearch_path={schema}", "application_name": schema})
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE application_name = %s AND pid <> pg_backend_pid()", (schema,))
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'supportbot.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that uses it runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'supportbot.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def redis_prefix(monkeypatch: pytest.MonkeyPatch) -> str:
    """This test's own Redis key prefix. It is also REDIS_KEY_PREFIX for the test's duration, so that every
    service the test builds or spawns writes under it even where a test does not pass it on."""
    prefix = f"sbtest:{uuid.uuid4().hex[:12]}:"
    monkeypatch.setenv("REDIS_KEY_PREFIX", prefix)
    return prefix


def delete_keys(url: str, prefix: str) -> int:
    """Delete every key under `prefix` at `url` (and nothing else); how many there were."""
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


@pytest.fixture
def redis_url(redis_prefix: str) -> Iterator[str]:
    """Real Redis at `TEST_REDIS_URL`; the test writes only keys under `redis_prefix`, deleted afterwards."""
    if not _redis_available():
        if IN_CI:
            pytest.fail(f"Redis is required in CI and does not answer at {REDIS_URL}")
        pytest.skip("Redis not reachable")
    yield REDIS_URL
    delete_keys(REDIS_URL, redis_prefix)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def fake_openai() -> Iterator["FakeOpenAI"]:
    from tests.fake_openai import FakeOpenAI, ServerThread

    fake = FakeOpenAI()
    with ServerThread(fake.app()) as server:
        fake.port = server.port
        yield fake


@pytest.fixture(scope="session", autouse=True)
def shared_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One sentence-encoder export per test session (about 10 s), shared by every test and every service
    process the tests start: they inherit NLP_ENCODER_DIR from os.environ."""
    previous = os.environ.get("NLP_ENCODER_DIR")
    path = Path(previous) if previous else tmp_path_factory.mktemp("encoder") / "minilm-l6-int8"
    os.environ["NLP_ENCODER_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("NLP_ENCODER_DIR", None)


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by every test, so the default intent model is trained once per session (or, with
    `TEST_MODEL_CACHE_DIR` set, once for as long as that directory is kept)."""
    kept = os.environ.get("TEST_MODEL_CACHE_DIR")
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        return Path(kept)
    return tmp_path_factory.mktemp("models")
