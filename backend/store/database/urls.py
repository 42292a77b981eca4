"""DATABASE_URL as people paste it (Neon, Heroku, plain SQLite), normalised for the drivers we ship."""

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# Every spelling a user may paste, mapped to the driver we ship.
_DRIVERS = {
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
    "postgresql+psycopg": "postgresql+asyncpg",
    "postgresql+psycopg2": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
}

# libpq parameters asyncpg does not know. It would send them to the server as
# settings, which refuses them: `channel_binding` (Neon's URLs carry it; asyncpg
# authenticates with SCRAM-SHA-256 over TLS without channel binding) and
# `connect_timeout` (DATABASE_TIMEOUT_SECONDS bounds connecting instead).
_LIBPQ_ONLY = ("channel_binding", "connect_timeout")


def database_url(raw: str) -> URL:
    """Normalise a pasted DATABASE_URL (Neon, Heroku, plain SQLite) for the driver we ship."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ValueError("is not a database URL (expected postgresql://… or sqlite:///…)") from None
    driver = _DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"scheme {url.drivername!r} is not supported; use postgresql:// or sqlite:///")
    if driver.startswith("postgresql"):
        url = url.difference_update_query(_LIBPQ_ONLY)
    return url.set(drivername=driver)


def asyncpg_dsn(url: URL) -> str:
    """The URL as asyncpg reads it: a libpq URI (it understands `sslmode` and friends)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
