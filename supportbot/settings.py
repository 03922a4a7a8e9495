"""Settings read from the environment, one typed class per service.

Every service shares `CommonSettings`; each adds its own fields. Nothing is read at import time:
call `GatewaySettings()` (etc.) where the app is built.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_PORTS = {"gateway": 8000, "nlp": 8001, "dialogue": 8002, "llm": 8003}
# Words of the values that example files and templates put where a secret belongs (compared lower-case,
# letters and digits only: "CHANGE-ME-generate-..." holds "changeme").
_PLACEHOLDER_WORDS = ("changeme", "placeholder", "replaceme", "example", "yoursecret", "yourkey", "secrethere",
                      "generatewith", "generateone", "xxxxxxxx", "dummy", "insertkey", "putkeyhere")
SERVICE_TOKEN_MIN_CHARS = 24
GENERATE_SERVICE_TOKEN = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def is_placeholder(secret: str) -> bool:
    """Whether `secret` is what a template puts where a secret belongs (`_PLACEHOLDER_WORDS`), or `sk-...`."""
    squashed = re.sub(r"[^a-z0-9]", "", secret.lower())
    return any(word in squashed for word in _PLACEHOLDER_WORDS) or squashed in {"sk", ""}


class CommonSettings(BaseSettings):
    """Settings every service reads."""

    # hide_input_in_errors: a refused value may be a secret (a placeholder key, a URL with a password).
    model_config = SettingsConfigDict(env_file=None, extra="ignore", populate_by_name=True, env_ignore_empty=True,
                                      hide_input_in_errors=True)

    data_dir: Path = Field(default=Path(".supportbot"), validation_alias="SUPPORTBOT_DATA_DIR")
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")
    # Every Redis key a service writes starts with this, so several systems (or test runs) can share a database.
    redis_key_prefix: str = Field(default="supportbot:", validation_alias="REDIS_KEY_PREFIX")
    log_level: str = Field(default="INFO", validation_alias="LOG_LEVEL")
    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    downstream_connect_timeout_s: float = Field(default=2.0, validation_alias="DOWNSTREAM_CONNECT_TIMEOUT_S")
    downstream_read_timeout_s: float = Field(default=30.0, validation_alias="DOWNSTREAM_READ_TIMEOUT_S")
    # The shared secret of the internal services (supportbot/service_auth.py): nlp, dialogue and llm refuse a
    # request without it and refuse to start without it; the gateway and dialogue send it.
    service_token: SecretStr | None = Field(default=None, validation_alias="SERVICE_TOKEN")

    @field_validator("service_token")
    @classmethod
    def _real_service_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        secret = value.get_secret_value()
        if (len(secret) < SERVICE_TOKEN_MIN_CHARS or is_placeholder(secret) or not secret.isprintable()
                or any(c.isspace() for c in secret)):
            raise ValueError(f"SERVICE_TOKEN must be a real secret of at least {SERVICE_TOKEN_MIN_CHARS} "
                             f"characters without spaces, not a placeholder: generate one with "
                             f"`{GENERATE_SERVICE_TOKEN}` and give every service the same")
        return value

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
    # The admin routes read usage and erase a conversation's cached replies there.
    llm_url: str = Field(default="http://127.0.0.1:8003", validation_alias="LLM_URL")
    bootstrap_api_key: SecretStr | None = Field(default=None, validation_alias="SUPPORTBOT_BOOTSTRAP_API_KEY")
    # A turn is answered within this from its arrival (supportbot/deadline.py): every hop behind the gateway
    # spends only what is left, and llm fails over to the next provider or the offline answer in time.
    turn_deadline_s: float = Field(default=20.0, gt=0, le=300, validation_alias="TURN_DEADLINE_S")
    # Requests and LLM tokens per API key and per tenant, failed authentications per client address, in the
    # `limits` package's notation ("600/minute"; several: "10/second;600/minute"); "off" disables one.
    rate_limit_per_key: str = Field(default="600/minute", validation_alias="RATE_LIMIT_PER_KEY")
    rate_limit_per_tenant: str = Field(default="3000/minute", validation_alias="RATE_LIMIT_PER_TENANT")
    token_limit_per_key: str = Field(default="200000/minute", validation_alias="TOKEN_LIMIT_PER_KEY")
    token_limit_per_tenant: str = Field(default="1000000/minute", validation_alias="TOKEN_LIMIT_PER_TENANT")
    auth_failure_limit: str = Field(default="20/minute", validation_alias="AUTH_FAILURE_LIMIT")
    # Larger bodies get 413; more headers, or a larger header section, get 431 (gateway/request_limits.py).
    max_request_bytes: int = Field(default=64 * 1024, ge=1, validation_alias="MAX_REQUEST_BYTES")
    max_headers: int = Field(default=100, ge=1, validation_alias="MAX_HEADERS")
    max_header_bytes: int = Field(default=16 * 1024, ge=1, validation_alias="MAX_HEADER_BYTES")
    # API keys are checked against the database again after `fresh` seconds (so a revoked key stops working
    # within them on every replica, for one indexed query per key and second); while the database is down a key
    # it accepted in the last `stale` seconds still works.
    auth_cache_fresh_s: float = Field(default=1.0, ge=0, validation_alias="AUTH_CACHE_FRESH_S")
    auth_cache_stale_s: float = Field(default=900.0, ge=0, validation_alias="AUTH_CACHE_MAX_STALE_S")

    @field_validator("rate_limit_per_key", "rate_limit_per_tenant", "token_limit_per_key", "token_limit_per_tenant",
                     "auth_failure_limit")
    @classmethod
    def _rate_limit(cls, value: str, info: ValidationInfo) -> str:
        from limits import parse_many

        name = cls.model_fields[str(info.field_name)].validation_alias
        if value.strip().lower() == "off":
            return "off"
        try:
            items = parse_many(value)
        except ValueError:
            items = []
        if not items or any(item.amount < 1 for item in items):
            raise ValueError(f"{name}={value!r} is not a rate limit: write it like '600/minute' (several: "
                             "'10/second;600/minute'), or 'off' to disable it")
        return value

    @field_validator("bootstrap_api_key")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        """The demo tenant's admin key: refused when it is a placeholder (such as k8s/secret.example.yaml's) or
        too short to be secret."""
        if value is None:
            return None
        secret = value.get_secret_value()
        squashed = re.sub(r"[^a-z0-9]", "", secret.lower())
        if len(secret) < 20 or any(word in squashed for word in _PLACEHOLDER_WORDS) or not secret.isprintable() \
                or any(c.isspace() for c in secret):
            raise ValueError("SUPPORTBOT_BOOTSTRAP_API_KEY must be a real secret of at least 20 characters, not a "
                             "placeholder: generate one with `openssl rand -hex 32` (or leave it unset and "
                             "`supportbot up` makes one and prints it once)")
        return value


class NlpSettings(CommonSettings):
    """The nlp service."""

    model_dir: Path | None = Field(default=None, validation_alias="NLP_MODEL_DIR")
    # What `supportbot prepare` writes (the sentence encoder, the default intent model); images bake it in a
    # read-only place. Tenants' own models stay under <data_dir>/models/tenants.
    models_dir: Path | None = Field(default=None, validation_alias="SUPPORTBOT_MODELS_DIR")
    # The exported sentence encoder (about 24 MB); default: <models dir>/encoders/minilm-l6-int8.
    encoder_dir: Path | None = Field(default=None, validation_alias="NLP_ENCODER_DIR")
    # auto: on a CPU too slow for the latency targets, intent models answer from words alone when those settle
    # it and cut long encoder input (services.nlp.latency); off: always the full model.
    latency_plan: Literal["auto", "off"] = Field(default="auto", validation_alias="NLP_LATENCY_PLAN")

    @property
    def prepared_models_dir(self) -> Path:
        """`SUPPORTBOT_MODELS_DIR`, else `<data_dir>/models`."""
        return self.models_dir or self.data_dir / "models"


class DialogueSettings(CommonSettings):
    """The dialogue service."""

    nlp_url: str = Field(default="http://127.0.0.1:8001", validation_alias="NLP_URL")
    # An analysis takes milliseconds; past this the turn is answered without it (degraded) rather than late.
    nlp_timeout_s: float = Field(default=3.0, gt=0, validation_alias="NLP_TIMEOUT_S")
    # Below the gateway's wait for dialogue (DOWNSTREAM_READ_TIMEOUT_S, 30 s), so a hanging llm service ends in
    # the offline answer, not in the gateway's 504.
    llm_timeout_s: float = Field(default=25.0, gt=0, validation_alias="LLM_TIMEOUT_S")
    llm_url: str = Field(default="http://127.0.0.1:8003", validation_alias="LLM_URL")
    # Within a turn's deadline, kept back from the llm call for the offline answer and storing the turn (raise it
    # where the database is slow when a burst of turns stores at once).
    llm_reserve_s: float = Field(default=1.5, ge=0, validation_alias="DIALOGUE_LLM_RESERVE_S")
    knowledge_dir: Path | None = Field(default=None, validation_alias="KNOWLEDGE_DIR")
    history_turns: int = Field(default=10, validation_alias="DIALOGUE_HISTORY_TURNS")
    small_talk_min_confidence: float = Field(default=0.6, validation_alias="SMALL_TALK_MIN_CONFIDENCE")
    handoff_min_confidence: float = Field(default=0.5, validation_alias="HANDOFF_MIN_CONFIDENCE")
    state_ttl_s: int = Field(default=7 * 24 * 3600, validation_alias="DIALOGUE_STATE_TTL_S")
    company_name: str = Field(default="Example Store", validation_alias="COMPANY_NAME")
    # Fernet keys, comma-separated, for the encrypted originals of tenants that keep them (supportbot/crypto.py):
    # the first encrypts, all decrypt. Unset: no originals are kept, whatever a tenant chose.
    transcript_keys: SecretStr | None = Field(default=None, validation_alias="TRANSCRIPT_KEYS")

    @field_validator("transcript_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        from supportbot.crypto import parse_keys

        if value is not None:
            parse_keys(value.get_secret_value())
        return value


class LlmSettings(CommonSettings):
    """The llm service: providers, retries, circuit breakers, response cache, accounting and budgets."""

    openai_api_key: SecretStr | None = Field(default=None, validation_alias="OPENAI_API_KEY")
    openai_base_url: str | None = Field(default=None, validation_alias="OPENAI_BASE_URL")
    openai_model: str = Field(default="gpt-4o-mini", validation_alias="OPENAI_MODEL")
    openai_connect_timeout_s: float = Field(default=3.0, validation_alias="OPENAI_CONNECT_TIMEOUT_S")
    openai_timeout_s: float = Field(default=30.0, validation_alias="OPENAI_TIMEOUT_S",
                                    description="read timeout: the longest wait for the next bytes")
    openai_max_retries: int = Field(default=2, ge=0, validation_alias="OPENAI_MAX_RETRIES")

    local_llm_base_url: str | None = Field(default=None, validation_alias="LOCAL_LLM_BASE_URL")
    local_llm_model: str | None = Field(default=None, validation_alias="LOCAL_LLM_MODEL")
    local_llm_api_key: SecretStr = Field(default=SecretStr("none"), validation_alias="LOCAL_LLM_API_KEY")
    local_llm_connect_timeout_s: float = Field(default=2.0, validation_alias="LOCAL_LLM_CONNECT_TIMEOUT_S")
    local_llm_timeout_s: float = Field(default=60.0, validation_alias="LOCAL_LLM_TIMEOUT_S")
    local_llm_max_retries: int = Field(default=1, ge=0, validation_alias="LOCAL_LLM_MAX_RETRIES")
    local_llm_model_path: Path | None = Field(default=None, validation_alias="LOCAL_LLM_MODEL_PATH",
                                              description="a transformers model directory, run in-process")
    local_llm_device: str | None = Field(default=None, validation_alias="LOCAL_LLM_DEVICE",
                                         description="cuda, cuda:1, cpu; default: cuda when present")
    local_llm_max_batch_size: int = Field(default=32, ge=1, validation_alias="LOCAL_LLM_MAX_BATCH_SIZE")
    local_llm_max_wait_ms: float = Field(default=5.0, ge=0, validation_alias="LOCAL_LLM_MAX_WAIT_MS",
                                         description="how long a request waits for others to batch with")

    retry_base_s: float = Field(default=0.5, validation_alias="LLM_RETRY_BASE_S",
                                description="first backoff; doubles per attempt, full jitter")
    retry_max_wait_s: float = Field(default=8.0, validation_alias="LLM_RETRY_MAX_WAIT_S",
                                    description="longest wait before a retry; a longer Retry-After fails over")
    min_attempt_s: float = Field(default=1.0, gt=0, validation_alias="LLM_MIN_ATTEMPT_S",
                                 description="within a deadline: the shortest attempt worth starting on a "
                                             "provider, and what the providers before it leave for it")
    breaker_failures: int = Field(default=5, ge=1, validation_alias="LLM_BREAKER_FAILURES")
    breaker_window_s: float = Field(default=30.0, validation_alias="LLM_BREAKER_WINDOW_S")
    breaker_open_s: float = Field(default=20.0, validation_alias="LLM_BREAKER_OPEN_S",
                                  description="how long an open breaker waits before one half-open probe")

    cache_ttl_s: int = Field(default=3600, validation_alias="LLM_CACHE_TTL_S")
    cache_nondeterministic_tenants: Annotated[frozenset[str], NoDecode] = Field(
        default=frozenset(), validation_alias="LLM_CACHE_NONDETERMINISTIC_TENANTS",
        description="comma-separated tenants whose temperature > 0 answers are cached too")
    cache_lock_ttl_s: float = Field(default=60.0, validation_alias="LLM_CACHE_LOCK_TTL_S",
                                    description="single flight: how long identical misses wait for the leader")
    default_max_tokens: int = Field(default=512, validation_alias="LLM_DEFAULT_MAX_TOKENS")
    prices_per_million: dict[str, tuple[float, float]] = Field(
        default={"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00), "gpt-4.1-mini": (0.40, 1.60),
                 "gpt-4.1": (2.00, 8.00)},
        validation_alias="LLM_PRICES_PER_MILLION",
        description="USD per million (prompt, completion) tokens by model, as JSON",
    )

    usage_batch_size: int = Field(default=200, ge=1, validation_alias="LLM_USAGE_BATCH_SIZE")
    usage_flush_interval_s: float = Field(default=0.5, validation_alias="LLM_USAGE_FLUSH_INTERVAL_S")
    usage_spool_retry_s: float = Field(default=5.0, validation_alias="LLM_USAGE_SPOOL_RETRY_S",
                                       description="how often spooled usage events are retried")
    budget_refresh_s: float = Field(default=10.0, validation_alias="LLM_BUDGET_REFRESH_S",
                                    description="how long a tenant's budget row is cached")

    @field_validator("openai_api_key")
    @classmethod
    def _real_openai_key(cls, value: SecretStr | None) -> SecretStr | None:
        """A template's placeholder (k8s/secret.example.yaml's `sk-...`, `changeme`) is refused, not sent."""
        if value is not None and is_placeholder(value.get_secret_value()):
            raise ValueError("OPENAI_API_KEY is a placeholder: set your key from "
                             "https://platform.openai.com/api-keys, or leave it unset for the offline responder")
        return value

    @field_validator("cache_nondeterministic_tenants", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def spool_dir(self) -> Path:
        """Where usage events wait while the database is down."""
        return self.data_dir / "spool"
