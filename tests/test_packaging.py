"""What a deployment relies on: the wheel carries its migrations, and `todo-api serve` refuses
a database whose schema is behind it (in one line naming the fix) but starts when the
database does not answer yet."""

import asyncio
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from backend.store.schema import MIGRATIONS, check_schema, compare
from tests.conftest import BACKENDS, SECRET, fresh_database, migrate, postgres_admin_url, run_sql
from tests.faults import fault_proxy
from tests.processes import TODO_API, free_port, server_env, wait_until_answering

ROOT = Path(__file__).resolve().parent.parent
# The first and the latest revision of the project's own history.
FIRST = "9a25722cd9f9"


def serve(cli: Any, database_url: str) -> tuple[int, str]:
    """`todo-api serve` in-process against `database_url`: its status and what it printed."""
    code, _, stderr = cli(
        "serve", "--port", str(free_port()), env={"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET}
    )
    return code, stderr


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


def test_serve_refuses_a_database_without_a_schema(cli: Any, empty_database: str) -> None:
    code, stderr = serve(cli, empty_database)
    assert code == 1
    assert stderr.strip().splitlines() == [
        "error: the database has no schema yet; run `todo-api migrate` first"
    ]


def test_serve_refuses_a_schema_behind_it_naming_both_revisions(cli: Any, empty_database: str) -> None:
    migrate(empty_database, FIRST)
    code, stderr = serve(cli, empty_database)
    assert code == 1
    [line] = stderr.strip().splitlines()
    head = next(iter(compare(frozenset()).expected))
    assert line == (
        f"error: the database schema is behind this version (at {FIRST}, needs {head}); "
        "run `todo-api migrate` first"
    )


def test_a_migrated_database_is_current_and_one_a_newer_release_migrated_is_not_behind(
    empty_database: str,
) -> None:
    migrate(empty_database)
    [current] = (row[0] for row in run_sql(empty_database, "SELECT version_num FROM alembic_version"))
    assert compare(frozenset({current})).problem() is None
    # A release after this one migrated the database: the release before must keep
    # starting during a rolling deploy (its migrations only add).
    newer = compare(frozenset({"ffffffffffff"}))
    assert newer.problem() is None
    assert newer.unknown == {"ffffffffffff"}
    assert compare(frozenset({FIRST})).behind


def test_serve_starts_when_the_database_does_not_answer_and_ready_says_so(tmp_path: Path) -> None:
    """An orchestrator starts the API beside its database: refusing to start would race
    them. The server starts, /health answers, /ready is 503 until the database answers."""
    env = server_env(f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere", DATABASE_TIMEOUT_SECONDS="1")
    port = free_port()
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [TODO_API, "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        wait_until_answering(process, f"http://127.0.0.1:{port}/health", log_path)
        assert httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 503
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "warning: could not check the database schema" in log_path.read_text()


def test_the_wheel_carries_the_migrations_and_migrates_outside_a_checkout(tmp_path: Path) -> None:
    """`todo-api migrate` from an installed package (an image, a `pip install`): the
    migrations ship inside `backend/`, not beside it."""
    subprocess.run(
        [_uv(), "build", "--wheel", "--out-dir", str(tmp_path / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = (tmp_path / "dist").glob("todo_api-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = {name for name in names if name.startswith("backend/migrations/")}
        archive.extractall(tmp_path / "site")
    expected = {
        f"backend/migrations/{path.relative_to(MIGRATIONS).as_posix()}"
        for path in MIGRATIONS.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert expected <= shipped, expected - shipped
    assert not any(name.startswith(("tests/", "bench/", "web/")) or name.endswith(".env") for name in names)
    # The unpacked wheel first on the path, run from a directory with no checkout in it.
    database = tmp_path / "outside.db"
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import backend, sys; from backend.cli import main; "
            "print(backend.__file__, file=sys.stderr); sys.exit(main())",
            "migrate",
        ],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site"), "DATABASE_URL": f"sqlite:///{database}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert str(tmp_path / "site" / "backend") in result.stderr
    assert "database is at the latest schema" in result.stderr
    tables = {row[0] for row in run_sql(f"sqlite:///{database}", "SELECT name FROM sqlite_master")}
    assert {"tasks", "users", "alembic_version"} <= tables


def _uv() -> str:
    """uv as the Makefile finds it: on PATH, else its private copy in .tools/."""
    return shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")


def test_migrations_started_at_once_take_turns(tmp_path: Path) -> None:
    """A Job retried beside its first attempt, or an init container in every replica: on
    PostgreSQL each `todo-api migrate` waits for the one before and finds nothing to do."""
    with fresh_database("postgresql", tmp_path) as url:
        env = {**os.environ, "DATABASE_URL": url}
        migrations = [
            subprocess.Popen(
                [TODO_API, "migrate"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outcomes = [
            (process.wait(timeout=120), process.stderr.read() if process.stderr else "")
            for process in migrations
        ]
        assert [code for code, _ in outcomes] == [0, 0, 0, 0], outcomes
        [(revision,)] = run_sql(url, "SELECT version_num FROM alembic_version")
        assert compare(frozenset({revision})).problem() is None


def test_the_schema_check_is_bounded_when_the_database_stalls_or_never_says_goodbye() -> None:
    """The check runs before the server starts: a database that hangs must not hold it."""
    admin = make_url(postgres_admin_url())
    with fault_proxy(admin.host or "127.0.0.1", admin.port or 5432) as proxy:
        url = admin.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        started = time.monotonic()
        assert asyncio.run(check_schema(url, timeout_seconds=1)).current == frozenset()
        proxy.stall()
        with pytest.raises(TimeoutError):
            asyncio.run(check_schema(url, timeout_seconds=1))
        assert time.monotonic() - started < 5
