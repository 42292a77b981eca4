"""Fixtures: a migrated database per backend, the app on it, and signed-in users.

Every API test runs twice, on SQLite and on PostgreSQL. PostgreSQL comes from
TEST_DATABASE_URL; the run creates its own databases there and drops them after.
Without PostgreSQL those cases skip, saying why; with CI=true they fail.
"""

import asyncio
import gc
import inspect
import logging
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import anyio
import hypothesis
import orjson
import psycopg
import pytest
from alembic import command
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.fastmcp.exceptions import ToolError
from psycopg import sql
from sqlalchemy import Row, create_engine, text
from sqlalchemy.engine import Engine, make_url

from backend.api.mcp.server import create_mcp
from backend.app import create_app
from backend.auth.tokens import issue_token
from backend.cli import main
from backend.config import Settings, get_settings
from backend.store.schema import alembic_config

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BACKENDS = ["sqlite", "postgresql"]


def hypothesis_battery(examples: int) -> hypothesis.settings:
    """Settings for a hypothesis battery through the app: in CI the same examples every run
    (a red run can be reproduced); locally new ones each time, and as many as FUZZ_EXAMPLES
    asks for (a longer hunt: FUZZ_EXAMPLES=2000). No deadline: a request's time is not the
    property tested, and the app fixtures are function-scoped on purpose."""
    # `hypothesis.settings`: this module's `settings` is the app's fixture.
    return hypothesis.settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", str(examples))),
        deadline=None,
        derandomize=IN_CI,
        suppress_health_check=[
            hypothesis.HealthCheck.function_scoped_fixture,
            hypothesis.HealthCheck.too_slow,
        ],
    )


class WatchedLoop(asyncio.SelectorEventLoop):
    """asyncio's event loop with the one part of its debug mode the tests need: every callback
    timed, and one that holds the loop logged (`no_slow_callbacks`).

    Debug mode proper also records a traceback at every handle, future and task it creates,
    and the origin of every coroutine: that tripled the time of an in-process request (13 ms
    on PostgreSQL against 3.5 ms, 21 ms on SQLite against 8) and so of the suite, and made
    tests that count on a request's speed (the rate limit's refill) fail on a busy machine.
    Here `_debug`, which `_run_once` reads to time callbacks, is on, while `get_debug()`,
    which decides the tracebacks, says no.
    """

    def __init__(self) -> None:
        super().__init__()
        self._debug = True

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        return None

    def _set_coroutine_origin_tracking(self, enabled: bool) -> None:
        return None


@pytest.fixture(scope="session")
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "asyncio", {"loop_factory": WatchedLoop}


# --- nothing holds the event loop -------------------------------------------------------------

# A callback holding the loop longer than this fails the test: every other request of the
# worker would wait that long (an RRULE walking to the year 9999 held it for 6 s).
SLOW_CALLBACK_SECONDS = 0.5
_TOOK = re.compile(r" took (\d+(?:\.\d+)?) seconds")


def slow_callbacks(messages: list[str]) -> list[str]:
    """asyncio's debug-mode warnings (`Executing <callback> took 0.612 seconds`) over the bound."""
    return [
        message
        for message in messages
        if (took := _TOOK.search(message)) is not None and float(took.group(1)) > SLOW_CALLBACK_SECONDS
    ]


class _AsyncioWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


_asyncio_warnings = _AsyncioWarnings()
logging.getLogger("asyncio").addHandler(_asyncio_warnings)


# What a test needs beyond this process, for `-m` (`make test-fast` leaves these out): it
# starts server or tool processes (by a fixture, or in its body), needs Node (the real
# Better Auth, the TypeScript compiler), or a browser.
_STARTS_PROCESSES = re.compile(r"running_server\(|serving\(|subprocess\.|Popen\(|\bcli\(env")
_PROCESS_FIXTURES = {"server", "setup", "auth_server", "browsers"}
_NODE_FIXTURES = {"auth_server", "browsers"}
_NODE_MODULES = {"test_typescript_client"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        fixtures = set(item.fixturenames)
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        node = bool(fixtures & _NODE_FIXTURES) or module in _NODE_MODULES
        if node or fixtures & _PROCESS_FIXTURES or _STARTS_PROCESSES.search(inspect.getsource(item.function)):
            item.add_marker(pytest.mark.processes)
        if node:
            item.add_marker(pytest.mark.node)
        if "browsers" in fixtures:
            item.add_marker(pytest.mark.browser)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Everything imported so far lives as long as the run: freeze it out of the garbage
    collector's sight, as the server does at start. Otherwise each full collection walks it
    all (0.25 s and growing, measured), a pause that the slow-callback check would blame on
    whatever the test was doing."""
    gc.collect()
    gc.freeze()


# The garbage collector of this process, as the server's (which freezes its start-up heap):
# what is alive after a test is frozen out of the collector's sight, so that a collection
# during a later test walks only that test's objects. Without it, the full collections that
# came ever later in the run walked the heap of every test before (300 ms at 200,000 objects
# in a run of two files; 0.6 and 0.8 s late in CI), inside some test's callback, and the guard
# blamed the test. Every FULL_COLLECTION_EVERY tests, between tests, all is collected once
# (what was frozen with garbage in it included) and frozen again.
FULL_COLLECTION_EVERY = 100
_tests_run = 0


@pytest.fixture(autouse=True)
def no_slow_callbacks() -> Iterator[None]:
    """Every in-process test times its loop's callbacks (`WatchedLoop`), and fails on a slow one."""
    global _tests_run
    _asyncio_warnings.messages.clear()
    yield
    slow = slow_callbacks(_asyncio_warnings.messages)
    _tests_run += 1
    if _tests_run % FULL_COLLECTION_EVERY == 0:
        gc.unfreeze()
        gc.collect()
    gc.freeze()
    assert not slow, f"a callback held the event loop longer than {SLOW_CALLBACK_SECONDS} s: {slow}"


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
    url = make_url(postgres_admin_url()).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        test_engine(url).dispose()
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


@cache
def test_engine(url: str) -> Engine:
    """One engine per test database, for the tests' own statements (the app keeps its pool)."""
    return create_engine(sync_url(url))


def run_sql(url: str, statement: str) -> list[Row[Any]]:
    """Run one SQL statement on the database at `url`, committed, and return its rows."""
    with test_engine(url).begin() as connection:
        result = connection.execute(text(statement))
        return list(result) if result.returns_rows else []


# Emptied one by one: the tests' own SQLite connections do not enforce foreign keys, so
# nothing cascades.
TABLES = (
    "messages",
    "conversations",
    "task_tags",
    "tags",
    "tasks",
    "task_lists",
    "events",
    "webhook_deliveries",
    "webhook_endpoints",
    "event_listeners",
    "event_listener_processes",
    "idempotency_keys",
    "change_counters",
    "users",
)


def empty_tables(url: str) -> None:
    """Every table of the database at `url` emptied, in one transaction."""
    with test_engine(url).begin() as connection:
        for table in TABLES:
            connection.execute(text(f"DELETE FROM {table}"))


def migrate(url: str, revision: str = "head") -> None:
    # In a thread of its own: Alembic's env.py runs its own event loop, and
    # anyio may already be running one in this thread.
    with ThreadPoolExecutor(max_workers=1) as thread:
        thread.submit(command.upgrade, alembic_config(url), revision).result()


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """Runs `todo-api` in-process, in an empty directory, with only the given settings."""

    def run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
        for variable in list(os.environ):
            if variable.startswith(("BETTER_AUTH_", "JWT_", "JWKS_", "DATABASE_", "LOG_", "CORS_")):
                monkeypatch.delenv(variable)
        for variable, value in env.items():
            monkeypatch.setenv(variable, value)
        monkeypatch.chdir(tmp_path)
        get_settings.cache_clear()
        try:
            code = main(list(args))
        finally:
            get_settings.cache_clear()
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


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
    test asks for it: many tests send a user's hundred requests at once on purpose. So is
    the MCP server, which in-process tests reach through `Caller.tool` alone (it is made
    then): building it tripled the cost of an app, about 5 ms of each test's set-up."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "better_auth_secret": SECRET,
        "rate_limit_per_second": 0,
        "chat_requests_per_minute": 0,
        "mcp_enabled": False,
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
        # What the lifespan would stop: chat turns, event streams' heartbeat, registrations
        # and listener.
        if application.state.chat is not None:
            await application.state.chat.aclose()
        await application.state.event_hub.aclose()
        if application.state.listener is not None:
            await application.state.listener.aclose()
        await application.state.database.close()
        # Each test starts from empty tables; in a thread, since the test's loop is watched
        # for callbacks that hold it.
        await anyio.to_thread.run_sync(empty_tables, settings.database_url)
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

    async def tool(self, name: str, arguments: dict[str, Any]) -> "ToolAnswer":
        """An MCP tool called in-process, exactly as the server calls it once the SDK has
        checked the token (its auth context set)."""
        transport = self.client._transport
        assert isinstance(transport, ASGITransport)
        state = transport.app.state  # type: ignore[attr-defined]
        if state.mcp is None:  # made on first use (see make_settings)
            state.mcp = create_mcp(state.services)
        mcp = state.mcp
        access = AccessToken(token=self.token, client_id=self.user_id, scopes=[])
        context = auth_context_var.set(AuthenticatedUser(access))
        try:
            result = await mcp.call_tool(name, arguments)
        except ToolError as error:
            return ToolAnswer(error=str(error))
        finally:
            auth_context_var.reset(context)
        assert isinstance(result, dict)
        return ToolAnswer(result=result)


@dataclass
class ToolAnswer:
    """A tool call's structured result, or its error's text (what an MCP client shows)."""

    result: dict[str, Any] | None = None
    error: str | None = None

    @property
    def refused(self) -> str:
        """The error's text; fails if the call succeeded."""
        assert self.error is not None, f"the call succeeded: {self.result}"
        return self.error


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


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """A server-sent event stream's (event, JSON data) pairs, in order (comments left out)."""
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields["event"], orjson.loads(fields["data"])))
    return found


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
