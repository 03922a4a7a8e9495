"""`supportbot tenants set T --keep-originals on|off`: the tenant's opt-in to encrypted originals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supportbot.cli import main as cli


def kept(capsys: pytest.CaptureFixture[str]) -> dict[str, bool]:
    capsys.readouterr()
    assert cli(["tenants", "list", "--json"]) == 0
    return {row["id"]: row["keep_originals"] for row in json.loads(capsys.readouterr().out)}


def test_a_tenant_opts_in_and_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'supportbot.db'}")
    monkeypatch.chdir(tmp_path)
    assert cli(["migrate"]) == 0
    assert cli(["tenants", "create", "acme"]) == 0 and cli(["tenants", "create", "bolt"]) == 0
    assert kept(capsys) == {"acme": False, "bolt": False}
    assert cli(["tenants", "set", "acme", "--keep-originals", "on"]) == 0
    assert "TRANSCRIPT_KEYS" in capsys.readouterr().out
    assert kept(capsys) == {"acme": True, "bolt": False}
    assert cli(["tenants", "set", "acme", "--keep-originals", "off"]) == 0
    assert kept(capsys) == {"acme": False, "bolt": False}
    assert cli(["tenants", "set", "nobody", "--keep-originals", "on"]) == 2
    assert "unknown tenant 'nobody'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["tenants", "set", "acme", "--keep-originals", "yes"])
