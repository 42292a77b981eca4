"""The answers written straight from rows (`api.task_json`) are the ones the OpenAPI document
promises: for any stored task, exactly the bytes `TaskPublic` dumps; and every answer of a
generated sample of requests, on both databases, valid against its operation's response
schema in the served document (formats checked, date-times included)."""

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from starlette.routing import Match, Route

from backend.api.task_json import task_json, tasks_json
from backend.app import create_app
from backend.models import MAX_ID, PRIORITIES, TAG_SEPARATOR, TITLE_MAX_LENGTH, USER_ID_MAX_LENGTH, TaskPublic
from tests.conftest import Caller, hypothesis_battery, make_settings

pytestmark = pytest.mark.anyio

SAMPLE = hypothesis_battery(300)

# Text as a database gives it back: any code point but a lone surrogate (neither database
# stores one; the API refuses a body holding one).
texts = st.text(st.characters(exclude_categories=["Cs"]))
ids = st.integers(1, MAX_ID)
moments = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.datetimes(
    timezones=st.sampled_from([timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))])
)
maybe_moments = st.none() | moments
tag_names = st.text(st.characters(exclude_categories=["Cs"], exclude_characters=TAG_SEPARATOR), min_size=1)


@st.composite
def stored_tasks(draw: st.DrawFn) -> dict[str, Any]:
    """A row as the store returns one (`store.tables.TaskRow`)."""
    tags = draw(st.lists(tag_names, max_size=5))
    return {
        "id": draw(ids),
        "user_id": draw(texts.filter(bool).map(lambda text: text[:USER_ID_MAX_LENGTH])),
        "title": draw(texts.filter(bool).map(lambda text: text[:TITLE_MAX_LENGTH])),
        "description": draw(st.none() | texts),
        "completed": draw(st.booleans()),
        "created_at": draw(moments),
        "updated_at": draw(moments),
        "priority": draw(st.integers(0, len(PRIORITIES) - 1)),
        "due_at": draw(maybe_moments),
        "remind_at": draw(maybe_moments),
        "reminded_at": draw(maybe_moments),
        "recurrence": draw(st.none() | texts),
        "time_zone": draw(st.sampled_from(["UTC", "Europe/Berlin", "America/St_Johns"])),
        "completed_at": draw(maybe_moments),
        "next_occurrence_id": draw(st.none() | ids),
        "version": draw(st.integers(1, 2**31 - 1)),
        "list_id": draw(ids),
        "parent_id": draw(st.none() | ids),
        "position": draw(
            st.text("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1)
        ),
        "subtask_count": draw(st.integers(0, 10_000)),
        "open_subtask_count": draw(st.integers(0, 10_000)),
        "tags": TAG_SEPARATOR.join(tags) if tags else None,
    }


def response_validator(openapi: dict[str, Any], path: str, method: str, status: int) -> Draft202012Validator:
    """A validator for the documented body of `status` from `method path` (the document's own
    path template), with the document's components for its references."""
    documented = openapi["paths"][path][method.lower()]["responses"][str(status)]
    (schema,) = (content["schema"] for content in documented["content"].values())
    return Draft202012Validator(
        {**schema, "components": openapi["components"]}, format_checker=FormatChecker()
    )


@pytest.fixture(scope="module")
def task_schema(tmp_path_factory: pytest.TempPathFactory) -> Draft202012Validator:
    """getTask's 200, from the document of an app that is made but never started."""
    database = tmp_path_factory.mktemp("schema") / "unused.db"
    openapi = create_app(make_settings(f"sqlite+aiosqlite:///{database}")).openapi()
    return response_validator(openapi, "/api/{user_id}/tasks/{task_id}", "GET", 200)


@SAMPLE
@given(row=stored_tasks())
def test_a_task_is_written_exactly_as_its_model_dumps_it(row: dict[str, Any], task_schema: Any) -> None:
    written = task_json(row)
    assert written == TaskPublic.model_validate(row).model_dump_json().encode()
    task_schema.validate(json.loads(written))


@SAMPLE
@given(rows=st.lists(stored_tasks(), max_size=4))
def test_a_page_is_written_exactly_as_its_models_dump_it(rows: list[dict[str, Any]]) -> None:
    models = ",".join(TaskPublic.model_validate(row).model_dump_json() for row in rows)
    assert tasks_json(rows) == f"[{models}]".encode()


def documented_path(app: FastAPI, method: str, url_path: str) -> str:
    """The route template a request was served by, as the OpenAPI document names it."""
    scope = {"type": "http", "method": method, "path": url_path}
    for route in app.router.routes:
        if isinstance(route, Route) and route.matches(scope)[0] == Match.FULL:
            return route.path_format
    raise AssertionError(f"no route for {method} {url_path}")


# Valid bodies mostly, so that most answers are successes; the rest are refusals (422s),
# whose problem documents are checked as well.
titles = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=TITLE_MAX_LENGTH)
dates = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.isoformat().replace("+00:00", "Z"))
creates = st.fixed_dictionaries(
    {"title": titles},
    optional={
        "description": st.none() | st.text(st.characters(exclude_categories=["Cs"]), max_size=50),
        "priority": st.sampled_from(PRIORITIES),
        "due_at": st.none() | dates,
        "remind_at": st.none() | dates,
        "completed": st.booleans(),
        "tags": st.lists(st.text("abcdefghij-", min_size=1, max_size=8), max_size=3),
        "recurrence": st.sampled_from(["FREQ=DAILY", "FREQ=WEEKLY;BYDAY=MO"]),
    },
)


# Nine requests an example, on each database.
REQUESTS_SAMPLE = hypothesis_battery(100)


@REQUESTS_SAMPLE
@given(body=creates, change=creates)
async def test_every_answer_matches_its_documented_schema(
    app: FastAPI, alice: Caller, body: dict[str, Any], change: dict[str, Any]
) -> None:
    openapi = app.openapi()
    created = await alice.request("POST", json=body)
    answers = [("POST", created)]
    if created.status_code == 201:
        task_id = created.json()["id"]
        answers += [
            ("GET", await alice.request("GET", f"/{task_id}")),
            ("PATCH", await alice.request("PATCH", f"/{task_id}", json=change)),
            ("PATCH", await alice.request("PATCH", f"/{task_id}/complete")),
            ("POST", await alice.request("POST", f"/{task_id}/move", json={"after_id": None})),
            ("PUT", await alice.request("PUT", f"/{task_id}", json={"title": change["title"]})),
        ]
    answers += [
        ("GET", await alice.request("GET", "?limit=5")),
        ("GET", await alice.request("GET", "?sort=position&parent_id=none&limit=5")),
        ("GET", await alice.request("GET", "/changes?limit=5")),
    ]
    for method, answer in answers:
        path = documented_path(app, method, answer.request.url.path)
        validator = response_validator(openapi, path, method, answer.status_code)
        validator.validate(answer.json())
