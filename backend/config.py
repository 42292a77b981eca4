"""Settings: read once from the environment and `.env`, validated at start."""

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

MIN_SECRET_LENGTH = 32

# Every spelling a user may paste maps to the async driver we ship.
_ASYNC_DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    "postgresql+asyncpg": "postgresql+psycopg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}


def async_database_url(raw: str) -> URL:
    """Normalise a pasted DATABASE_URL (Neon, Heroku, plain SQLite) to its async driver.

    The query string is kept as-is: psycopg hands `sslmode` and `channel_binding`
    straight to libpq, which is what Neon's URLs need.
    """
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError("is not a database URL (expected postgresql://… or sqlite:///…)") from None
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"scheme {url.drivername!r} is not supported; use postgresql:// or sqlite:///")
    return url.set(drivername=driver)


class DatabaseSettings(BaseSettings):
    """What the migrations need: only the database."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = "sqlite:///./todo.db"

    @field_validator("database_url")
    @classmethod
    def _database_url_is_supported(cls, value: str) -> str:
        async_database_url(value)
        return value

    @property
    def async_database_url(self) -> URL:
        return async_database_url(self.database_url)


class Settings(DatabaseSettings):
    """Everything the API needs to start."""

    better_auth_secret: SecretStr
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=600)
    cors_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000"]
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("better_auth_secret")
    @classmethod
    def _secret_is_long_enough(cls, value: SecretStr) -> SecretStr:
        # The message must not echo the value: it is printed at start-up.
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("jwt_issuer", "jwt_audience", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lowercase_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def describe_validation_error(error: ValidationError) -> str:
    """One line per bad setting, naming the variable and never its value."""
    lines = []
    for item in error.errors(include_input=False, include_url=False):
        variable = "_".join(str(part) for part in item["loc"]).upper() or "settings"
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "missing":
            message = "is required but not set"
        lines.append(f"configuration error: {variable} {message}")
    return "\n".join(lines)


@lru_cache
def get_settings() -> Settings:
    return Settings()
