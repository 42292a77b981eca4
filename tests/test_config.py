"""Settings: URLs as users paste them, and start-up errors that name the variable in one line."""

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from backend.config import Settings, describe_validation_error
from backend.store.database import database_url
from tests.conftest import http_client, make_settings, running_app, sign_in

SECRET = "s" * 40


@pytest.mark.parametrize(
    ("pasted", "normalised"),
    [
        (
            "postgresql://alex:AbC123@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
            "postgresql+asyncpg://alex:AbC123@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require",
        ),
        ("postgres://u:p@db.example:5433/app", "postgresql+asyncpg://u:p@db.example:5433/app"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg://u@h/db"),
        (
            "postgresql+psycopg://u@h/db?connect_timeout=10&sslmode=verify-full",
            "postgresql+asyncpg://u@h/db?sslmode=verify-full",
        ),
        ("sqlite:///./todo.db", "sqlite+aiosqlite:///./todo.db"),
        ("sqlite:////var/lib/todo.db", "sqlite+aiosqlite:////var/lib/todo.db"),
    ],
)
def test_database_urls_are_normalised_for_the_driver(pasted: str, normalised: str) -> None:
    assert database_url(pasted).render_as_string(hide_password=False) == normalised


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", "redis://localhost"])
def test_unsupported_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, database_url=url, better_auth_secret=SECRET)  # type: ignore[call-arg]
    assert "DATABASE_URL" in describe_validation_error(raised.value)


def test_a_local_model_needs_no_key() -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        better_auth_secret=SECRET,
        chat_model="llama3.2",
        openai_base_url="http://127.0.0.1:11434/v1/",
    )
    assert settings.openai_base_url == "http://127.0.0.1:11434/v1"
    assert settings.openai_api_key is None


def test_defaults() -> None:
    settings = Settings(_env_file=None, better_auth_secret=SECRET)  # type: ignore[call-arg]
    assert settings.chat_model is None
    assert settings.chat_tracing is False
    assert settings.database_url == "sqlite:///./todo.db"
    assert settings.cors_origins == ["http://localhost:3000"]
    assert settings.jwt_leeway_seconds == 30
    assert settings.jwt_issuer is None
    assert settings.jwt_audience is None
    assert settings.log_level == "info"


def test_cors_origins_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example, http://localhost:3000 ,")
    settings = Settings(_env_file=None, better_auth_secret=SECRET)  # type: ignore[call-arg]
    assert settings.cors_origins == ["https://app.example", "http://localhost:3000"]


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({}, "BETTER_AUTH_URL", "or BETTER_AUTH_SECRET for HS256 tokens, must be set"),
        ({"BETTER_AUTH_SECRET": "short-and-secret"}, "BETTER_AUTH_SECRET", "at least 32 characters"),
        ({"BETTER_AUTH_SECRET": SECRET, "JWT_LEEWAY_SECONDS": "soon"}, "JWT_LEEWAY_SECONDS", "integer"),
        ({"BETTER_AUTH_SECRET": SECRET, "LOG_LEVEL": "loud"}, "LOG_LEVEL", "'info'"),
        ({"BETTER_AUTH_SECRET": SECRET, "DATABASE_URL": "mysql://x/y"}, "DATABASE_URL", "not supported"),
        ({"BETTER_AUTH_URL": "localhost:3000"}, "BETTER_AUTH_URL", "http:// or https://"),
        ({"BETTER_AUTH_SECRET": SECRET, "JWT_ALGORITHMS": "HS512"}, "JWT_ALGORITHMS", "unsupported HS512"),
        (
            {"BETTER_AUTH_URL": "http://localhost:3000", "JWT_ALGORITHMS": "HS256"},
            "JWT_ALGORITHMS",
            "needs BETTER_AUTH_SECRET",
        ),
        ({"BETTER_AUTH_SECRET": SECRET, "JWT_ALGORITHMS": "EdDSA"}, "JWT_ALGORITHMS", "need BETTER_AUTH_URL"),
        ({"BETTER_AUTH_SECRET": SECRET, "CHAT_MODEL": "gpt-4o-mini"}, "OPENAI_API_KEY", "OPENAI_BASE_URL"),
        (
            {"BETTER_AUTH_SECRET": SECRET, "CHAT_MODEL": "m", "OPENAI_BASE_URL": "localhost:11434"},
            "OPENAI_BASE_URL",
            "http:// or https://",
        ),
        (
            {"BETTER_AUTH_SECRET": SECRET, "CHAT_TIMEOUT_SECONDS": "0"},
            "CHAT_TIMEOUT_SECONDS",
            "greater than 0",
        ),
        (
            {"BETTER_AUTH_SECRET": SECRET, "CHAT_MESSAGE_MAX_LENGTH": "40000"},
            "CHAT_MESSAGE_MAX_LENGTH",
            "less than or equal to 32000",
        ),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(
    cli: Any, env: dict[str, str], variable: str, message: str
) -> None:
    code, _, stderr = cli("serve", "--port", "0", env=env)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("configuration error: ")
    assert variable in lines[0]
    assert message in lines[0]
    assert "Traceback" not in stderr
    assert "short-and-secret" not in stderr


def settings_from(**values: str) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_better_auth_url_implies_jwks_issuer_audience_and_algorithms() -> None:
    settings = settings_from(better_auth_url="https://app.example.com/")
    assert settings.better_auth_jwks_url == "https://app.example.com/api/auth/jwks"
    assert settings.jwt_issuer == settings.jwt_audience == "https://app.example.com"
    assert settings.jwt_algorithms == ["EdDSA", "ES256", "RS256", "PS256", "ES512"]


def test_issuer_is_the_origin_of_a_base_url_with_a_path() -> None:
    settings = settings_from(better_auth_url="http://localhost:3000/auth")
    assert settings.jwt_issuer == "http://localhost:3000"
    assert settings.better_auth_jwks_url == "http://localhost:3000/auth/api/auth/jwks"


def test_secret_and_url_together_accept_both_kinds() -> None:
    settings = settings_from(better_auth_url="http://localhost:3000", better_auth_secret=SECRET)
    assert settings.jwt_algorithms == ["EdDSA", "ES256", "RS256", "PS256", "ES512", "HS256"]


def test_explicit_values_win_over_derived_ones() -> None:
    settings = settings_from(
        better_auth_url="http://localhost:3000",
        better_auth_jwks_url="https://keys.example/jwks.json",
        jwt_issuer="https://issuer.example",
        jwt_audience="todo-api",
        jwt_algorithms="EdDSA",
    )
    assert settings.better_auth_jwks_url == "https://keys.example/jwks.json"
    assert (settings.jwt_issuer, settings.jwt_audience) == ("https://issuer.example", "todo-api")
    assert settings.jwt_algorithms == ["EdDSA"]


def test_a_secret_alone_accepts_only_hs256() -> None:
    settings = settings_from(better_auth_secret=SECRET)
    assert settings.jwt_algorithms == ["HS256"]
    assert settings.better_auth_jwks_url is None
    assert settings.jwt_issuer is None


def test_settings_are_read_from_a_dotenv_file(cli: Any, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"BETTER_AUTH_SECRET={SECRET}\n")
    code, stdout, stderr = cli("token", "--user-id", "alice", env={})
    assert code == 0, stderr
    assert stdout.strip().count(".") == 2


def test_token_needs_the_secret(cli: Any) -> None:
    code, _, stderr = cli("token", "--user-id", "alice", env={"BETTER_AUTH_URL": "http://localhost:3000"})
    assert code == 2
    assert "BETTER_AUTH_SECRET" in stderr


@pytest.mark.anyio
async def test_a_url_with_libpq_only_parameters_serves_requests(postgres_url: str) -> None:
    """What Neon's console gives (sslmode, channel_binding), plus connect_timeout: asyncpg
    would send the last two to the server as settings, which refuses them."""
    pasted = f"{postgres_url}?sslmode=prefer&channel_binding=prefer&connect_timeout=3"
    async with running_app(make_settings(pasted)) as app, http_client(app) as client:
        alice = sign_in(client, "alice")
        created = await alice.create(title="through a pasted URL")
        assert (await alice.request("GET", f"/{created['id']}")).json()["title"] == "through a pasted URL"
