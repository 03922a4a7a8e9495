"""Settings read from the environment, one typed class per service.

Every service shares `CommonSettings`; each adds its own fields. Nothing is read at import time:
call `GatewaySettings()` (etc.) where the app is built.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORTS = {"gateway": 8000, "nlp": 8001, "dialogue": 8002, "llm": 8003}


class CommonSettings(BaseSettings):
    """Settings every service reads."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True, env_ignore_empty=True)

    data_dir: Path = Field(default=Path(".supportbot"), validation_alias="SUPPORTBOT_DATA_DIR")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    downstream_connect_timeout_s: float = Field(default=2.0, validation_alias="DOWNSTREAM_CONNECT_TIMEOUT_S")
    downstream_read_timeout_s: float = Field(default=30.0, validation_alias="DOWNSTREAM_READ_TIMEOUT_S")

    @property
    def resolved_database_url(self) -> str:
        """`DATABASE_URL`, or a SQLite file under the data directory."""
        if self.database_url:
            url = self.database_url
            # Accept the plain `postgresql://` form that most tools print; we ship psycopg 3.
            if url.startswith("postgresql://") or url.startswith("postgres://"):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            return url
        return f"sqlite:///{(self.data_dir / 'supportbot.db').resolve()}"


class GatewaySettings(CommonSettings):
    """The public gateway."""

    dialogue_url: str = Field(default="http://127.0.0.1:8002", validation_alias="DIALOGUE_URL")
    bootstrap_api_key: SecretStr | None = Field(default=None, validation_alias="SUPPORTBOT_BOOTSTRAP_API_KEY")
    max_message_chars: int = Field(default=4000, validation_alias="MAX_MESSAGE_CHARS")

    @field_validator("bootstrap_api_key")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value() in {"", "changeme", "change-me"}:
            raise ValueError("SUPPORTBOT_BOOTSTRAP_API_KEY must be a real secret, not a placeholder")
        return value


class NlpSettings(CommonSettings):
    """The nlp service."""

    model_dir: Path | None = Field(default=None, validation_alias="NLP_MODEL_DIR")
    max_text_chars: int = Field(default=4000, validation_alias="MAX_MESSAGE_CHARS")


class DialogueSettings(CommonSettings):
    """The dialogue service."""

    nlp_url: str = Field(default="http://127.0.0.1:8001", validation_alias="NLP_URL")
    llm_url: str = Field(default="http://127.0.0.1:8003", validation_alias="LLM_URL")
    knowledge_dir: Path | None = Field(default=None, validation_alias="KNOWLEDGE_DIR")
    history_turns: int = Field(default=10, validation_alias="DIALOGUE_HISTORY_TURNS")
    small_talk_min_confidence: float = Field(default=0.6, validation_alias="SMALL_TALK_MIN_CONFIDENCE")
    handoff_min_confidence: float = Field(default=0.5, validation_alias="HANDOFF_MIN_CONFIDENCE")
    state_ttl_s: int = Field(default=7 * 24 * 3600, validation_alias="DIALOGUE_STATE_TTL_S")
    company_name: str = Field(default="Example Store", validation_alias="COMPANY_NAME")


class LlmSettings(CommonSettings):
    """The llm service."""

    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    openai_model: str = Field(default="gpt-4o-mini", validation_alias="OPENAI_MODEL")
    openai_timeout_s: float = Field(default=30.0, validation_alias="OPENAI_TIMEOUT_S")
    openai_max_retries: int = Field(default=2, validation_alias="OPENAI_MAX_RETRIES")
    cache_ttl_s: int = Field(default=3600, validation_alias="LLM_CACHE_TTL_S")
    default_max_tokens: int = Field(default=512, validation_alias="LLM_DEFAULT_MAX_TOKENS")
    prices_per_million: dict[str, tuple[float, float]] = Field(
        default={"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00), "gpt-4.1-mini": (0.40, 1.60),
                 "gpt-4.1": (2.00, 8.00)},
        validation_alias="LLM_PRICES_PER_MILLION",
        description="USD per million (prompt, completion) tokens by model, as JSON",
    )
