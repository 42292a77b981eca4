"""Migrations build the schema the models describe, on both databases, and undo it."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from backend.cli import alembic_config
from backend.models import metadata
from tests.conftest import BACKENDS, fresh_database, migrate, sync_url


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_database(request.param, tmp_path) as url:
        yield url


def tables(url: str) -> set[str]:
    engine = create_engine(sync_url(url))
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_builds_exactly_what_the_models_describe(empty_database: str) -> None:
    migrate(empty_database)
    engine = create_engine(sync_url(empty_database))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_upgrade_then_downgrade_leaves_an_empty_database(empty_database: str) -> None:
    migrate(empty_database)
    assert {"users", "tasks", "alembic_version"} <= tables(empty_database)
    command.downgrade(alembic_config(empty_database), "base")
    assert tables(empty_database) <= {"alembic_version"}
    migrate(empty_database)  # and back up again
    assert {"users", "tasks"} <= tables(empty_database)


def test_alembic_check_finds_nothing_to_generate(empty_database: str) -> None:
    migrate(empty_database)
    command.check(alembic_config(empty_database))  # raises if autogenerate would write a migration


def test_the_list_query_uses_the_owner_index_on_postgresql(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as url:
        migrate(url)
        engine = create_engine(sync_url(url))
        try:
            with engine.begin() as connection:
                connection.exec_driver_sql("INSERT INTO users (id, created_at) VALUES ('u', now())")
                connection.exec_driver_sql(
                    "INSERT INTO tasks (user_id, title, completed, created_at, updated_at) "
                    "SELECT 'u', 'task ' || i, mod(i, 2) = 0, now(), now() FROM generate_series(1, 2000) i"
                )
                connection.exec_driver_sql("ANALYZE tasks")
                connection.exec_driver_sql("SET enable_seqscan = off")
                for column in ("created_at", "updated_at", "title"):
                    plan = "\n".join(
                        row[0]
                        for row in connection.exec_driver_sql(
                            "EXPLAIN SELECT * FROM tasks WHERE user_id = 'u' "
                            f"ORDER BY {column} DESC, id DESC LIMIT 100"
                        )
                    )
                    assert f"ix_tasks_user_id_{column}_id" in plan, plan
                    assert "Sort" not in plan, plan  # rows come in index order
        finally:
            engine.dispose()
