"""Fixtures: a migrated database per backend, the app on it, and signed-in users.

Every API test runs twice, on SQLite and on PostgreSQL. PostgreSQL comes from
TEST_DATABASE_URL; the run creates its own databases there and drops them after.
Without PostgreSQL those cases skip, saying why; with CI=true they fail.
"""

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from psycopg import sql
from sqlalchemy import Row, create_engine, text
from sqlalchemy.engine import make_url

from backend.cli import alembic_config
from backend.config import Settings
from backend.main import create_app
from backend.security import issue_token

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# --- databases --------------------------------------------------------------------------


def postgres_admin_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


def require_postgres() -> None:
    """Skip (or, in CI, fail) the current test when PostgreSQL is not there."""
    try:
        with psycopg.connect(libpq_url(postgres_admin_url()), connect_timeout=3):
            pass
    except psycopg.OperationalError as error:
        message = f"PostgreSQL is not reachable at TEST_DATABASE_URL: {str(error).strip()}"
        if IN_CI:
            pytest.fail(f"{message} (CI=true requires it)", pytrace=False)
        pytest.skip(message)


def libpq_url(url: str) -> str:
    """A SQLAlchemy-style URL as libpq understands it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for this run, dropped afterwards."""
    require_postgres()
    admin = libpq_url(postgres_admin_url())
    name = f"todo_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def fresh_database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "postgresql":
        with fresh_postgres_database() as url:
            yield url
    else:
        yield f"sqlite:///{directory / f'todo-{uuid.uuid4().hex[:8]}.db'}"


def sync_url(url: str) -> str:
    """The database URL for a synchronous SQLAlchemy engine (psycopg, sqlite3): the tests'
    own way in, apart from the app's pool."""
    driver = "postgresql+psycopg" if url.startswith("postgres") else "sqlite"
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


def run_sql(url: str, statement: str) -> list[Row[Any]]:
    """Run one SQL statement on the database at `url`, committed, and return its rows."""
    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def migrate(url: str, revision: str = "head") -> None:
    # In a thread of its own: Alembic's env.py runs its own event loop, and
    # anyio may already be running one in this thread.
    with ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(command.upgrade, alembic_config(url), revision).result()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test's own, migrated; for tests about PostgreSQL itself."""
    with fresh_postgres_database() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database migrated to head, shared by the tests of one backend."""
    with fresh_database(request.param, tmp_path_factory.mktemp("sqlite")) as url:
        migrate(url)
        yield url


# --- the app ----------------------------------------------------------------------------


def make_settings(database_url: str, **overrides: Any) -> Settings:
    """Settings for a test app. The per-user rate limit (on by default) is off unless a
    test asks for it: many tests send a user's hundred requests at once on purpose."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "better_auth_secret": SECRET,
        "rate_limit_per_second": 0,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[FastAPI]:
    """The app on `settings`; afterwards its tables are emptied and its connections closed."""
    application = create_app(settings)
    try:
        yield application
    finally:
        await application.state.database.close()
        # Each test starts from empty tables (one by one: the tests' own SQLite
        # connections do not enforce foreign keys, so nothing cascades).
        for table in ("task_tags", "tags", "tasks", "idempotency_keys", "change_counters", "users"):
            run_sql(settings.database_url, f"DELETE FROM {table}")
        if application.state.token_verifier.jwks is not None:
            await application.state.token_verifier.jwks.aclose()


def http_client(app: FastAPI) -> AsyncClient:
    return AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver")


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running_app(settings) as application:
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with http_client(app) as http:
        yield http


# --- users ------------------------------------------------------------------------------


@dataclass
class Caller:
    """A signed-in user talking to the API through `client`."""

    client: AsyncClient
    user_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def url(self, suffix: str = "", *, user_id: str | None = None) -> str:
        return f"/api/{user_id or self.user_id}/tasks{suffix}"

    async def request(self, method: str, suffix: str = "", **kwargs: Any) -> Response:
        user_id = kwargs.pop("user_id", None)
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.client.request(method, self.url(suffix, user_id=user_id), headers=headers, **kwargs)

    async def create(self, **body: Any) -> dict[str, Any]:
        response = await self.request("POST", json={"title": "a task", **body})
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


def sign_in(client: AsyncClient, user_id: str, **claims: Any) -> Caller:
    return Caller(client, user_id, issue_token(SECRET, user_id, **claims))


@pytest.fixture
def alice(client: AsyncClient) -> Caller:
    return sign_in(client, "alice-8KJx2mQ", email="alice@example.com", name="Alice")


@pytest.fixture
def bob(client: AsyncClient) -> Caller:
    return sign_in(client, "bob-3Lp0qZ")


@pytest.fixture
async def alice_task(alice: Caller) -> dict[str, Any]:
    return await alice.create(title="Buy milk", description="2 litres, oat")


def assert_problem(response: Response, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status, and a detail that says something."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body
