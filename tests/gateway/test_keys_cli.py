"""`supportbot tenants` and `supportbot keys`: keys printed once on the last line, listed without the keys,
revoked and rotated; unknown tenants and keys, and origins that are not sites, are errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.access import Role
from gateway.tenants import Authenticator
from supportbot.cli import main as cli
from supportbot.db import make_async_engine, session_factory
from supportbot.errors import Unauthorized
from tests.helpers import REPO


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The system's database as DATABASE_URL, migrated and empty."""
    url = f"sqlite:///{tmp_path / 'supportbot.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.chdir(tmp_path)
    assert cli(["migrate"]) == 0
    return url


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check(url: str, key: str) -> Any:
    """The principal a gateway makes of `key` now (or the Unauthorized it raises)."""

    async def authenticate() -> Any:
        engine = make_async_engine(url)
        auth = Authenticator(session_factory(engine), fresh_s=0, max_stale_s=0)
        try:
            return await auth.principal_for(key)
        except Unauthorized as exc:
            return exc
        finally:
            await auth.aclose()
            await engine.dispose()

    return asyncio.run(authenticate())


def keys_json(capsys: pytest.CaptureFixture[str], tenant: str) -> list[dict[str, Any]]:
    code, out, _ = run(capsys, "keys", "list", "--tenant", tenant, "--json")
    assert code == 0
    return list(json.loads(out))


def test_tenants_create_prints_its_admin_key_last_and_list_shows_them(
        system: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tenants", "create", "acme", "--name", "Acme Inc")
    assert code == 0
    key = out.splitlines()[-1]
    assert key.startswith("sb_") and " " not in key
    assert check(system, key).role is Role.ADMIN
    assert run(capsys, "tenants", "create", "globex", "--keep-originals")[0] == 0

    code, out, err = run(capsys, "tenants", "create", "acme")
    assert code == 2 and "tenant 'acme' already exists" in err and "sb_" not in out
    code, _, err = run(capsys, "tenants", "create", "Not A Slug")
    assert code == 2 and "lowercase slug" in err

    code, out, _ = run(capsys, "tenants", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["TENANT", "NAME"]
    acme = next(line for line in lines if line.startswith("acme "))
    assert "Acme Inc" in acme and "not kept" in acme
    assert "kept, encrypted" in next(line for line in lines if line.startswith("globex "))
    code, out, _ = run(capsys, "tenants", "list", "--json")
    listed = {t["id"]: t for t in json.loads(out)}
    assert listed["acme"]["active_keys"] == 1 and listed["globex"]["keep_originals"] is True
    assert listed["acme"]["keep_originals"] is False


def test_keys_create_list_revoke_and_rotate(system: str, capsys: pytest.CaptureFixture[str]) -> None:
    admin_key = run(capsys, "tenants", "create", "acme")[1].splitlines()[-1]
    code, out, _ = run(capsys, "keys", "create", "--tenant", "acme", "--role", "widget",
                       "--origin", "https://Shop.example.com:443/", "--origin", "http://localhost:5173")
    assert code == 0
    widget_key = out.splitlines()[-1]
    widget = check(system, widget_key)
    assert widget.role is Role.WIDGET and widget.origins == ("https://shop.example.com", "http://localhost:5173")
    code, out, _ = run(capsys, "keys", "create", "--tenant", "acme", "--role", "agent")
    agent_key = out.splitlines()[-1]
    assert code == 0 and check(system, agent_key).role is Role.AGENT

    code, out, _ = run(capsys, "keys", "list", "--tenant", "acme")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["KEY", "ID", "PREFIX", "ROLE", "CREATED", "LAST", "USED", "REVOKED", "ORIGINS"]
    assert len(rows) == 3
    for row, key, role in zip(rows, (admin_key, widget_key, agent_key), ("admin", "widget", "agent"), strict=True):
        fields = row.split()
        assert fields[0].startswith("key_") and fields[1] == key[:10] and fields[2] == role
        assert key not in out, "keys are never shown again"
    assert rows[0].split()[5] == "never", "the admin key was not used yet"
    assert rows[1].split()[5] == rows[1].split()[3], "used (by `check`) the day it was made"
    assert rows[1].endswith("https://shop.example.com http://localhost:5173")

    listed = keys_json(capsys, "acme")
    assert [k["role"] for k in listed] == ["admin", "widget", "agent"]
    assert listed[1]["origins"] == ["https://shop.example.com", "http://localhost:5173"]
    assert all(k["active"] and k["revoked_at"] is None for k in listed)
    assert listed[0]["last_used_at"] is None and listed[1]["last_used_at"] and listed[2]["last_used_at"]
    widget_id, agent_id = listed[1]["key_id"], listed[2]["key_id"]

    code, out, _ = run(capsys, "keys", "revoke", agent_id)
    assert code == 0 and f"revoked key {agent_id}" in out and "within 1 s" in out
    assert isinstance(check(system, agent_key), Unauthorized)
    assert run(capsys, "keys", "revoke", agent_id)[1].strip() == f"key {agent_id} was revoked already"
    revoked = keys_json(capsys, "acme")[2]
    assert revoked["revoked_at"] and not revoked["active"]

    code, out, _ = run(capsys, "keys", "rotate", widget_id)
    assert code == 0
    rotated_key = out.splitlines()[-1]
    assert rotated_key.startswith("sb_") and rotated_key != widget_key
    assert isinstance(check(system, widget_key), Unauthorized), "rotated without a grace: the old key ends now"
    rotated = check(system, rotated_key)
    assert (rotated.role, rotated.origins, rotated.tenant_id) == (widget.role, widget.origins, "acme")
    listed = keys_json(capsys, "acme")
    assert listed[-1]["key_id"] == rotated.key_id and listed[-1]["origins"] == listed[1]["origins"]
    assert not listed[1]["active"]

    code, out, _ = run(capsys, "keys", "rotate", rotated.key_id, "--grace", "300")
    assert code == 0 and "keeps working for 300 s more" in out
    assert check(system, rotated_key).key_id == rotated.key_id, "in its grace"
    graced = next(row for row in run(capsys, "keys", "list", "--tenant", "acme")[1].splitlines()
                  if row.startswith(rotated.key_id))
    assert "(grace)" in graced
    code, _, err = run(capsys, "keys", "rotate", agent_id)
    assert code == 2 and "revoked already" in err


@pytest.mark.parametrize(("args", "message"), [
    (["keys", "create", "--tenant", "nope", "--role", "api"], "unknown tenant 'nope'"),
    (["keys", "list", "--tenant", "nope"], "unknown tenant 'nope'"),
    (["keys", "revoke", "key_0123456789abcdef"], "unknown key 'key_0123456789abcdef'"),
    (["keys", "rotate", "key_0123456789abcdef"], "unknown key 'key_0123456789abcdef'"),
    (["keys", "create", "--tenant", "acme", "--role", "widget"], "needs at least one --origin"),
    (["keys", "create", "--tenant", "acme", "--role", "widget", "--origin", "https://shop.example.com/chat"],
     "no path"),
    (["keys", "create", "--tenant", "acme", "--role", "widget", "--origin", "http://shop.example.com"],
     "over https"),
    (["keys", "create", "--tenant", "acme", "--role", "widget", "--origin", "*"], "must start with https://"),
    (["keys", "create", "--tenant", "acme", "--role", "api", "--origin", "https://shop.example.com"],
     "only widget keys have origins"),
])
def test_what_cannot_be_meant_is_an_error(system: str, capsys: pytest.CaptureFixture[str], args: list[str],
                                          message: str) -> None:
    assert run(capsys, "tenants", "create", "acme")[0] == 0
    before = keys_json(capsys, "acme")
    code, out, err = run(capsys, *args)
    assert code == 2 and message in err, err
    assert "sb_" not in out
    assert keys_json(capsys, "acme") == before, "nothing was made or changed"


def test_a_script_takes_the_key_from_the_last_line(system: str, tmp_path: Path) -> None:
    """Through a real process, as `KEY=$(supportbot keys create ... | tail -n1)` would."""
    env = {**os.environ, "DATABASE_URL": system}

    def supportbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "supportbot.cli", *args], env=env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    assert supportbot("tenants", "create", "acme").returncode == 0
    made = supportbot("keys", "create", "--tenant", "acme", "--role", "api")
    assert made.returncode == 0, made.stderr
    assert check(system, made.stdout.splitlines()[-1]).role is Role.API
    refused = supportbot("keys", "revoke", "key_0123456789abcdef")
    assert refused.returncode == 2 and refused.stderr.startswith("supportbot: unknown key"), refused.stderr
    assert "Traceback" not in refused.stderr
