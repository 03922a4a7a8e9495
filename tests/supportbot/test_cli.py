"""The operator's commands: they find the system's database or refuse, and reject what cannot be meant."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from supportbot.cli import main as cli
from supportbot.db import make_async_engine, session_factory
from tests.helpers import create_tenants


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is not the one the system was started in, with nothing configured."""
    for name in ("SUPPORTBOT_DATA_DIR", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "somewhere-else"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


@pytest.fixture
def system_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The database of a running system, with tenant `demo`, as DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'system' / 'supportbot.db'}"
    asyncio.run(create_tenants(url, "demo"))
    monkeypatch.setenv("DATABASE_URL", url)
    return url


@pytest.mark.parametrize("command", [
    ["tenants", "create", "acme"],
    ["kb", "ingest", "--tenant", "demo", "."],
    ["budget", "set", "--tenant", "demo", "--monthly-tokens", "1000"],
    ["budget", "show", "--tenant", "demo"],
    ["usage", "--tenant", "demo"],
])
def test_outside_the_systems_directory_the_cli_refuses_instead_of_starting_a_new_database(
        elsewhere: Path, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(command) == 2
    error = capsys.readouterr().err
    assert "no supportbot database at" in error and str(elsewhere / ".supportbot") in error
    assert "SUPPORTBOT_DATA_DIR" in error
    assert not (elsewhere / ".supportbot").exists()


def test_pointed_at_the_systems_data_directory_the_cli_works_from_anywhere(
        elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "system-data"
    asyncio.run(create_tenants(f"sqlite:///{data / 'supportbot.db'}", "demo"))
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(data))
    assert cli(["tenants", "create", "acme"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("sb_")  # the key, alone on the last line
    assert cli(["budget", "show", "--tenant", "acme"]) == 0
    assert not (elsewhere / ".supportbot").exists()


@pytest.mark.parametrize("command", [
    ["budget", "set", "--tenant", "nope", "--monthly-tokens", "1000"],
    ["budget", "show", "--tenant", "nope"],
    ["usage", "--tenant", "nope"],
    ["kb", "ingest", "--tenant", "nope", "DOCS"],
])
def test_an_unknown_tenant_is_an_error(system_db: str, tmp_path: Path, command: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hours.md").write_text("# Hours\n\nWe open at nine.\n")
    assert cli([str(docs) if part == "DOCS" else part for part in command]) == 2
    captured = capsys.readouterr()
    assert "unknown tenant 'nope'" in captured.err and "tenants create nope" in captured.err
    assert "ingested" not in captured.out and "budget of tenant" not in captured.out
    assert asyncio.run(_count(system_db, "kb_documents")) == 0
    assert asyncio.run(_count(system_db, "tenant_budgets")) == 0


@pytest.mark.parametrize(("flag", "value", "why"), [
    ("--monthly-tokens", "-5", "at least 1"), ("--monthly-tokens", "0", "at least 1"),
    ("--monthly-usd", "0", "more than 0"), ("--monthly-usd", "-2.5", "more than 0"),
    ("--monthly-usd", "lots", "must be a number"), ("--monthly-usd", "nan", "more than 0"),
])
def test_budget_limits_must_be_positive(system_db: str, flag: str, value: str, why: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli(["budget", "set", "--tenant", "demo", flag, value])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert flag in error and why in error
    assert asyncio.run(_count(system_db, "tenant_budgets")) == 0


def test_a_folder_ingest_reports_each_bad_file_and_ingests_the_rest(system_db: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    docs = tmp_path / "help-center"
    (docs / "faq").mkdir(parents=True)
    (docs / "opening-hours.md").write_text("# Opening hours\n\n## Weekdays\n\nThe shop opens at nine.\n")
    (docs / "faq" / "gift-wrap.csv").write_text("question,answer\nCan you wrap a present?,Yes, for 2 EUR.\n")
    (docs / "faq" / "exported-wrong.csv").write_text("title;body\nfoo;bar\n")  # no question/answer columns
    (docs / "faq" / "huge-field.csv").write_text("question,answer\n\"" + "x" * 200_000 + "\",y\n")
    (docs / "empty.txt").write_text("   \n")
    (docs / "photo.png").write_bytes(b"\x89PNG")  # not a document kind: not picked from a folder
    assert cli(["kb", "ingest", "--tenant", "demo", str(docs)]) == 1
    captured = capsys.readouterr()
    assert "2 documents ingested" in captured.out and "3 failed" in captured.out
    for bad in ("faq/exported-wrong.csv", "faq/huge-field.csv", "empty.txt"):
        assert f"{bad}: not ingested" in captured.err
    assert "'question' and 'answer'" in captured.err
    assert "photo.png" not in captured.err + captured.out
    assert asyncio.run(_count(system_db, "kb_documents")) == 2

    # Only bad files: nothing to ingest is an error of its own.
    assert cli(["kb", "ingest", "--tenant", "demo", str(docs / "empty.txt")]) == 2


async def _count(url: str, table: str) -> int:
    from sqlalchemy import text

    engine = make_async_engine(url)
    try:
        async with session_factory(engine)() as session:
            return int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)
    finally:
        await engine.dispose()
