"""Cursor paging: `cursor` instead of `offset` reads keyset pages that stay right while
tasks are created and deleted between pages, for every sort and with filters."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Caller, assert_problem

pytestmark = pytest.mark.anyio

SORTS = [
    ("created", "desc"),
    ("created", "asc"),
    ("updated", "desc"),
    ("title", "asc"),
    ("title", "desc"),
    ("due", "asc"),
    ("due", "desc"),
    ("priority", "desc"),
    ("priority", "asc"),
]


async def seed(caller: Caller, count: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    created = []
    for i in range(count):
        body: dict[str, Any] = {
            "title": f"task {i % 7}",
            "priority": ["none", "low", "medium", "high"][i % 4],
        }
        if i % 3:
            body["due_at"] = (now + timedelta(hours=i % 5)).isoformat()  # ties, and some without
        created.append(await caller.create(**body))
    return created


async def read_all(caller: Caller, params: dict[str, Any], between: Any = None) -> list[int]:
    """Every page by cursor, calling `between` after each page; the ids in the order read."""
    response = await caller.request("GET", params={**params, "limit": 4})
    ids = [task["id"] for task in response.json()]
    pages = 0
    while "x-next-cursor" in response.headers:
        if between is not None:
            await between(pages)
        cursor = response.headers["x-next-cursor"]
        response = await caller.request("GET", params={**params, "limit": 4, "cursor": cursor})
        assert response.status_code == 200, response.text
        link = response.headers.get("link")
        if "x-next-cursor" in response.headers:
            assert link is not None
            assert "cursor=" in link
            assert 'rel="next"' in link
            assert "prev" not in link
        ids += [task["id"] for task in response.json()]
        pages += 1
    return ids


@pytest.mark.parametrize(("sort", "order"), SORTS)
async def test_cursor_pages_read_every_task_once_in_order(alice: Caller, sort: str, order: str) -> None:
    await seed(alice, 17)
    everything = await alice.request("GET", params={"sort": sort, "order": order, "limit": 500})
    assert await read_all(alice, {"sort": sort, "order": order}) == [task["id"] for task in everything.json()]


@pytest.mark.parametrize(("sort", "order"), SORTS)
async def test_creates_and_deletes_between_pages_skip_and_repeat_nothing(
    alice: Caller, sort: str, order: str
) -> None:
    tasks = await seed(alice, 17)
    before = {task["id"] for task in tasks}
    deleted: set[int] = set()

    async def meddle(page: int) -> None:
        await alice.create(title=f"new {page}", priority="medium")
        victim = sorted(before - deleted)[page * 3 % len(before)]
        await alice.request("DELETE", f"/{victim}")
        deleted.add(victim)

    ids = await read_all(alice, {"sort": sort, "order": order}, meddle)
    assert len(ids) == len(set(ids)), "a task was read twice"
    # Every task there from start to end was read; none read was deleted before its page.
    assert (before - deleted) <= set(ids)


async def test_filters_combine_with_cursors(alice: Caller) -> None:
    tasks = await seed(alice, 20)
    params = {"priority": "high", "sort": "due"}
    expected = (await alice.request("GET", params={**params, "limit": 500})).json()
    assert await read_all(alice, params) == [task["id"] for task in expected]
    assert expected
    assert len(expected) < len(tasks)


async def test_offset_pages_carry_a_cursor_too_and_the_last_page_none(alice: Caller) -> None:
    await seed(alice, 5)
    first = await alice.request("GET", params={"limit": 2})
    assert "x-next-cursor" in first.headers
    assert "offset=2" in first.headers["link"]  # offset mode keeps its own links
    last = await alice.request("GET", params={"limit": 2, "offset": 4})
    assert "x-next-cursor" not in last.headers


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "garbage"},
        {"cursor": "e30"},
        {"cursor": "x", "offset": 3},
    ],
)
async def test_a_bad_cursor_is_422(alice: Caller, params: dict[str, Any]) -> None:
    problem = assert_problem(await alice.request("GET", params=params), 422)
    assert "cursor" in problem["detail"]


async def test_a_cursor_for_another_sort_is_422(alice: Caller) -> None:
    await seed(alice, 5)
    cursor = (await alice.request("GET", params={"limit": 2, "sort": "title"})).headers["x-next-cursor"]
    problem = assert_problem(await alice.request("GET", params={"cursor": cursor, "sort": "due"}), 422)
    assert problem["errors"][0]["loc"] == ["query", "cursor"]
