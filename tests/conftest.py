"""Fixtures: real databases (SQLite and PostgreSQL), real Redis, and in-process service stacks."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = bool(os.environ.get("CI"))
# Intent models take the full path whatever the CPU, so that a test's predictions do not depend on which host
# runs it; the latency plan has tests of its own (tests/nlp/test_latency.py, test_fast_path.py), which set it.
os.environ.setdefault("NLP_LATENCY_PLAN", "off")


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
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"sb_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = postgres_server.rsplit("/", 1)[0]
    yield f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
def redis_url() -> Iterator[str]:
    """Real Redis; the keys a test writes are under its own prefix and removed afterwards."""
    if not _redis_available():
        if IN_CI:
            pytest.fail(f"Redis is required in CI and does not answer at {REDIS_URL}")
        pytest.skip("Redis not reachable")
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


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
