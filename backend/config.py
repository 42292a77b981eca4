"""Settings: read once from the environment and `.env`, validated at start."""

from functools import lru_cache
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from backend.auth.tokens import HS256, KEY_TYPE_FOR_ALGORITHM
from backend.store.database import database_url

MIN_SECRET_LENGTH = 32
MIN_WEBHOOK_KEY_BYTES = 24  # Standard Webhooks' own secrets are 24 to 64 bytes
# The most CHAT_MESSAGE_MAX_LENGTH may be, as the OpenAPI document states it.
CHAT_MESSAGE_HARD_LIMIT = 32_000


class DatabaseSettings(BaseSettings):
    """What the migrations need: only the database."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite:///./todo.db"

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str) -> str:
        database_url(value)
        return value

    @property
    def url(self) -> URL:
        """DATABASE_URL, normalised for the driver we ship."""
        return database_url(self.database_url)


ASYMMETRIC_ALGORITHMS = tuple(KEY_TYPE_FOR_ALGORITHM)
SUPPORTED_ALGORITHMS = frozenset({HS256, *ASYMMETRIC_ALGORITHMS})


class Settings(DatabaseSettings):
    """Everything the API needs to start."""

    better_auth_secret: SecretStr | None = None
    better_auth_url: str | None = None
    better_auth_jwks_url: str | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = []
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600)
    jwks_cache_seconds: float = Field(default=300, gt=0)
    jwks_min_refresh_seconds: float = Field(default=30, ge=0)
    jwks_timeout_seconds: float = Field(default=3, gt=0, le=30)
    cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000"]
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    docs_enabled: bool = True
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    database_timeout_seconds: float = Field(default=5, gt=0, le=60)
    database_pool_size: int = Field(default=15, ge=1, le=1000)
    request_timeout_seconds: float = Field(default=15, gt=0, le=300)
    # Generous enough that no person notices (a burst of 60, then 20 a second), tight
    # enough that one user cannot starve the others; 0 turns it off.
    rate_limit_per_second: float = Field(default=20, ge=0)
    rate_limit_burst: int | None = Field(default=None, ge=1)
    # Google Tasks' figure; 0 turns the cap off.
    max_tasks_per_user: int = Field(default=100_000, ge=0)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    header_timeout_seconds: float = Field(default=10, gt=0, le=300)
    max_connections: int = Field(default=1000, ge=1, le=1_000_000)
    allowed_hosts: Annotated[list[str], NoDecode] = []
    # Writes without If-Match are 428 (for deployments that want no blind overwrites).
    require_if_match: bool = False
    idempotency_key_hours: float = Field(default=24, gt=0, le=24 * 365)
    sync_retention_days: float = Field(default=30, gt=0, le=3650)
    # A reminder missed by more than this (the service was down) is skipped, not fired late.
    reminder_max_lateness_minutes: float = Field(default=60, ge=0, le=7 * 24 * 60)
    # A direct (not pooled) PostgreSQL URL for the event stream's LISTEN, which a
    # transaction-mode pooler (Neon's -pooler host) cannot serve; DATABASE_URL if unset.
    database_direct_url: str | None = None
    # What an event's CloudEvents `type` starts with: `todo.task.created`.
    event_type_prefix: str = Field(default="todo.", max_length=100, pattern=r"^[A-Za-z0-9._-]*$")
    # Open event streams per user and worker (a tab or device each); one more is a 429.
    streams_per_user: int = Field(default=10, ge=1, le=100_000)
    # A comment line on every open stream this often: below a proxy's idle timeout.
    stream_heartbeat_seconds: float = Field(default=15, ge=1, le=300)
    # Where every event is POSTed (comma-separated URLs), signed with WEBHOOK_SECRET
    # (Standard Webhooks' whsec_ form); retried with exponential backoff from
    # WEBHOOK_RETRY_BASE_SECONDS (x4 each time, at most 10 h apart) for WEBHOOK_MAX_ATTEMPTS
    # tries (10: about 27 hours), then given up.
    webhook_url: Annotated[list[str], NoDecode] = []
    webhook_secret: SecretStr | None = None
    webhook_timeout_seconds: float = Field(default=5, gt=0, le=60)
    webhook_retry_base_seconds: float = Field(default=5, gt=0, le=3600)
    webhook_max_attempts: int = Field(default=10, ge=1, le=50)
    # The MCP server at /mcp, for AI agents.
    mcp_enabled: bool = True
    # Host headers /mcp answers (DNS-rebinding protection); `host:*` allows any port.
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = ["127.0.0.1:*", "localhost:*", "[::1]:*"]
    # Where clients reach this API: the MCP resource's identifier and its metadata's URLs.
    public_url: str = "http://localhost:8000"
    redis_url: str | None = None
    # The chat agent (POST /api/{user_id}/chat): any OpenAI-compatible model. Without
    # CHAT_MODEL the chat route answers 503; OPENAI_BASE_URL unset is OpenAI itself.
    chat_model: str | None = Field(default=None, max_length=200)
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    # A whole turn (every model call and tool call of one message); past it, a 504.
    chat_timeout_seconds: float = Field(default=60, gt=0, le=600)
    chat_message_max_length: int = Field(default=4000, ge=1, le=CHAT_MESSAGE_HARD_LIMIT)
    # What of a conversation the model is sent: its newest messages, at most this many...
    chat_history_messages: int = Field(default=40, ge=0, le=1000)
    # ...and within this many tokens (estimated at four characters a token).
    chat_history_tokens: int = Field(default=8000, ge=0, le=1_000_000)
    # Model calls per message (each answer to a round of tool calls is one more).
    chat_max_turns: int = Field(default=10, ge=1, le=100)
    # Messages per person per minute, on top of RATE_LIMIT_PER_SECOND (a model call costs
    # money); in Redis with REDIS_URL. 0 turns it off.
    chat_requests_per_minute: float = Field(default=10, ge=0)
    # The Agents SDK sends traces to OpenAI unless told not to: only if this is on.
    chat_tracing: bool = False
    metrics_enabled: bool = False
    metrics_token: SecretStr | None = None

    @field_validator("better_auth_secret")
    @classmethod
    def _secret_is_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        # The message must not echo the value: it is printed at start-up.
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("better_auth_url", "better_auth_jwks_url", "public_url", "openai_base_url")
    @classmethod
    def _is_http_url(cls, value: str | None) -> str | None:
        if value is not None and (
            urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).netloc
        ):
            raise ValueError("must be an http:// or https:// URL")
        return value.rstrip("/") if value else None

    @field_validator("database_direct_url")
    @classmethod
    def _direct_url_is_postgresql(cls, value: str | None) -> str | None:
        if value is not None and database_url(value).get_backend_name() != "postgresql":
            raise ValueError("must be a postgresql:// URL (the event stream's LISTEN connection)")
        return value

    @property
    def listen_url(self) -> URL:
        """Where the event stream LISTENs: DATABASE_DIRECT_URL, or DATABASE_URL."""
        return database_url(self.database_direct_url or self.database_url)

    @field_validator("webhook_url")
    @classmethod
    def _webhook_urls_are_http(cls, value: list[str]) -> list[str]:
        for url in value:
            if urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).netloc:
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_is_standard(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            # The message must not echo the value: it is printed at start-up.
            try:
                key = Webhook(value.get_secret_value())._whsecret
            except (ValueError, EmptyWebhookSecretError):
                raise ValueError("must be a Standard Webhooks secret: whsec_ and base64") from None
            if len(key) < MIN_WEBHOOK_KEY_BYTES:
                raise ValueError(f"must hold at least {MIN_WEBHOOK_KEY_BYTES} bytes (base64 after whsec_)")
        return value

    @field_validator(
        "cors_origins",
        "jwt_algorithms",
        "allowed_hosts",
        "mcp_allowed_hosts",
        "webhook_url",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator(
        "better_auth_secret",
        "better_auth_url",
        "better_auth_jwks_url",
        "jwt_issuer",
        "jwt_audience",
        "database_direct_url",
        "webhook_secret",
        "chat_model",
        "openai_api_key",
        "openai_base_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_are_names(cls, value: list[str]) -> list[str]:
        for host in value:
            name = host.removeprefix("*.")
            if not name or any(character in name for character in "/:@ *"):
                raise ValueError(
                    f"{host!r} is not a host name (example.com, or *.example.com for its subdomains)"
                )
        return [host.lower() for host in value]

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _webhooks_are_signed(self) -> Self:
        if self.webhook_url and self.webhook_secret is None:
            raise ValueError(
                "WEBHOOK_URL is set but WEBHOOK_SECRET is not: webhooks are always signed "
                '(make one with: python -c "import base64,os; '
                "print('whsec_' + base64.b64encode(os.urandom(32)).decode())\")"
            )
        return self

    @model_validator(mode="after")
    def _chat_model_can_be_reached(self) -> Self:
        if self.chat_model and self.openai_base_url is None and self.openai_api_key is None:
            raise ValueError(
                "CHAT_MODEL is set for OpenAI (OPENAI_BASE_URL is not set) but OPENAI_API_KEY is not: "
                "set the key, or OPENAI_BASE_URL to a local OpenAI-compatible server (Ollama, vLLM)"
            )
        return self

    @model_validator(mode="after")
    def _derive_token_settings(self) -> Self:
        if self.better_auth_jwks_url is None and self.better_auth_url is not None:
            self.better_auth_jwks_url = f"{self.better_auth_url}/api/auth/jwks"
        if self.better_auth_secret is None and self.better_auth_jwks_url is None:
            raise ValueError(
                "BETTER_AUTH_URL (or BETTER_AUTH_JWKS_URL) for Better Auth's jwt plugin, "
                "or BETTER_AUTH_SECRET for HS256 tokens, must be set"
            )
        if self.better_auth_url is not None:
            # Better Auth puts the origin of its baseURL in both `iss` and `aud`.
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.better_auth_url))
            self.jwt_issuer = self.jwt_issuer or origin
            self.jwt_audience = self.jwt_audience or origin
        if not self.jwt_algorithms:
            self.jwt_algorithms = [
                *(ASYMMETRIC_ALGORITHMS if self.better_auth_jwks_url else ()),
                *((HS256,) if self.better_auth_secret else ()),
            ]
        unknown = set(self.jwt_algorithms) - SUPPORTED_ALGORITHMS
        if unknown:
            raise ValueError(
                f"JWT_ALGORITHMS has unsupported {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(sorted(SUPPORTED_ALGORITHMS))}"
            )
        if HS256 in self.jwt_algorithms and self.better_auth_secret is None:
            raise ValueError("JWT_ALGORITHMS includes HS256, which needs BETTER_AUTH_SECRET")
        if set(self.jwt_algorithms) - {HS256} and self.better_auth_jwks_url is None:
            raise ValueError("JWT_ALGORITHMS includes asymmetric algorithms, which need BETTER_AUTH_URL")
        return self


def describe_validation_error(error: ValidationError) -> str:
    """One line per bad setting, naming the variable and never its value."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        variable = "_".join(str(part) for part in item["loc"]).upper()
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required but not set"
        # Errors spanning several settings name them in the message itself.
        lines.append(
            f"configuration error: {variable} {message}" if variable else f"configuration error: {message}"
        )
    return "\n".join(lines)


@lru_cache
def get_settings() -> Settings:
    return Settings()
