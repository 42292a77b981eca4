"""Settings: URLs as users paste them, and start-up errors that name the variable in one line."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from backend.config import Settings, async_database_url, describe_validation_error

SECRET = "s" * 40


@pytest.mark.parametrize(
    ("pasted", "normalised"),
    [
        (
            "postgresql://alex:AbC123@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require&channel_binding=require",
            "postgresql+psycopg://alex:AbC123@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?channel_binding=require&sslmode=require",
        ),
        ("postgres://u:p@db.example:5433/app", "postgresql+psycopg://u:p@db.example:5433/app"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///./todo.db", "sqlite+aiosqlite:///./todo.db"),
        ("sqlite:////var/lib/todo.db", "sqlite+aiosqlite:////var/lib/todo.db"),
    ],
)
def test_database_urls_are_normalised_to_the_async_driver(pasted: str, normalised: str) -> None:
    assert async_database_url(pasted).render_as_string(hide_password=False) == normalised


@pytest.mark.parametrize("url", ["mysql://u@h/db", "not a url", "redis://localhost"])
def test_unsupported_database_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, database_url=url, better_auth_secret=SECRET)  # type: ignore[call-arg]
    assert "DATABASE_URL" in describe_validation_error(raised.value)


def test_defaults() -> None:
    settings = Settings(_env_file=None, better_auth_secret=SECRET)  # type: ignore[call-arg]
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


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {
        key: value for key, value in os.environ.items() if key not in {"BETTER_AUTH_SECRET", "DATABASE_URL"}
    }
    return subprocess.run(
        [sys.executable, "-m", "backend.cli", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({}, "BETTER_AUTH_SECRET", "is required but not set"),
        ({"BETTER_AUTH_SECRET": "short-and-secret"}, "BETTER_AUTH_SECRET", "at least 32 characters"),
        ({"BETTER_AUTH_SECRET": SECRET, "JWT_LEEWAY_SECONDS": "soon"}, "JWT_LEEWAY_SECONDS", "integer"),
        ({"BETTER_AUTH_SECRET": SECRET, "LOG_LEVEL": "loud"}, "LOG_LEVEL", "'info'"),
        ({"BETTER_AUTH_SECRET": SECRET, "DATABASE_URL": "mysql://x/y"}, "DATABASE_URL", "not supported"),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(
    tmp_path: Path, env: dict[str, str], variable: str, message: str
) -> None:
    result = run_cli("serve", "--port", "0", env=env, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable} ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert "short-and-secret" not in result.stderr


def test_settings_are_read_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"BETTER_AUTH_SECRET={SECRET}\n")
    result = run_cli("token", "--user-id", "alice", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2
