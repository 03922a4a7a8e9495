from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from supportbot.settings import GatewaySettings, LlmSettings


def test_sqlite_file_under_data_dir_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("SUPPORTBOT_DATA_DIR", str(tmp_path))
    assert GatewaySettings().resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'supportbot.db'}"


def test_plain_postgres_url_gets_the_psycopg_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db:5432/app")
    assert GatewaySettings().resolved_database_url == "postgresql+psycopg://u:p@db:5432/app"


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # docker-compose passes `${OPENAI_API_KEY:-}` as an empty string when the host has none.
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("SUPPORTBOT_BOOTSTRAP_API_KEY", "")
    assert LlmSettings().openai_api_key is None
    assert GatewaySettings().bootstrap_api_key is None


def test_placeholder_bootstrap_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_BOOTSTRAP_API_KEY", "changeme")
    with pytest.raises(ValidationError, match="placeholder"):
        GatewaySettings()


def test_secrets_do_not_show_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-supersecret-value")
    assert "sk-supersecret-value" not in repr(LlmSettings())
