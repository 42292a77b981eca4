"""Listing: every filter by sort by order, paged, against a model of the expected order."""

import itertools
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import Caller, assert_problem

pytestmark = pytest.mark.anyio

STATUSES = ["all", "pending", "completed"]
SORTS = ["created", "updated", "title"]
ORDERS = [None, "asc", "desc"]
SORT_FIELD = {"created": "created_at", "updated": "updated_at", "title": "title"}


def expected_order(tasks: list[dict[str, Any]], status: str, sort: str, order: str | None) -> list[int]:
    """What the API promises: filtered, sorted by the key, ties broken by id in the same direction."""
    kept = [t for t in tasks if status == "all" or t["completed"] == (status == "completed")]
    descending = (order or ("asc" if sort == "title" else "desc")) == "desc"
    kept.sort(key=lambda t: (t[SORT_FIELD[sort]], t["id"]), reverse=descending)
    return [t["id"] for t in kept]


def parse_links(header: str | None) -> dict[str, dict[str, str]]:
    links = {}
    for target, rel in re.findall(r'<([^>]+)>;\s*rel="(\w+)"', header or ""):
        links[rel] = {key: values[0] for key, values in parse_qs(urlsplit(target).query).items()}
    return links


@pytest.fixture
async def alice_tasks(alice: Caller) -> list[dict[str, Any]]:
    """Eleven tasks with duplicate titles (to exercise the id tie-break), some completed, some updated."""
    titles = [
        "delta",
        "alpha",
        "charlie",
        "alpha",
        "bravo",
        "echo",
        "bravo",
        "alpha",
        "foxtrot",
        "golf",
        "charlie",
    ]
    created = [await alice.create(title=title, completed=i % 3 == 0) for i, title in enumerate(titles)]
    # Touch some, so the updated order differs from the created order.
    for task in (created[2], created[7], created[0]):
        response = await alice.request("PATCH", f"/{task['id']}", json={"description": "touched"})
        created[created.index(task)] = response.json()
    return created


async def test_every_filter_sort_order_and_page_matches_the_model(
    alice: Caller, alice_tasks: list[dict[str, Any]]
) -> None:
    for status, sort, order in itertools.product(STATUSES, SORTS, ORDERS):
        want = expected_order(alice_tasks, status, sort, order)
        params: dict[str, Any] = {"status": status, "sort": sort, "limit": 4}
        if order:
            params["order"] = order
        seen: list[int] = []
        for offset in range(0, len(want) + 4, 4):
            response = await alice.request("GET", params={**params, "offset": offset})
            assert response.status_code == 200
            assert response.headers["x-total-count"] == str(len(want)), params
            seen += [task["id"] for task in response.json()]
        assert seen == want, (status, sort, order)


async def test_link_header_points_to_next_and_previous_pages(
    alice: Caller, alice_tasks: list[dict[str, Any]]
) -> None:
    first = await alice.request("GET", params={"limit": 5, "status": "all"})
    links = parse_links(first.headers.get("link"))
    assert set(links) == {"next"}
    assert links["next"] == {"limit": "5", "offset": "5", "status": "all"}

    middle = await alice.request("GET", params={"limit": 5, "offset": 5})
    links = parse_links(middle.headers.get("link"))
    assert links["next"]["offset"] == "10"
    assert links["prev"]["offset"] == "0"

    last = await alice.request("GET", params={"limit": 5, "offset": 10})
    assert set(parse_links(last.headers.get("link"))) == {"prev"}
    assert len(last.json()) == 1


async def test_following_next_links_walks_every_task_once(
    alice: Caller, alice_tasks: list[dict[str, Any]]
) -> None:
    url: str | None = alice.url() + "?limit=3&sort=title"
    seen: list[int] = []
    while url:
        response = await alice.client.get(url, headers=alice.headers)
        seen += [task["id"] for task in response.json()]
        next_link = re.search(r'<([^>]+)>;\s*rel="next"', response.headers.get("link", ""))
        url = next_link.group(1) if next_link else None
    assert seen == expected_order(alice_tasks, "all", "title", None)


async def test_an_offset_past_the_end_is_an_empty_page_with_the_total(
    alice: Caller, alice_tasks: list[dict[str, Any]]
) -> None:
    response = await alice.request("GET", params={"offset": 1_000_000_000, "limit": 5})
    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["x-total-count"] == str(len(alice_tasks))
    assert parse_links(response.headers.get("link"))["prev"]["offset"] == str(len(alice_tasks) - 5)


async def test_an_empty_list_has_total_zero_and_no_links(alice: Caller) -> None:
    response = await alice.request("GET")
    assert response.json() == []
    assert response.headers["x-total-count"] == "0"
    assert "link" not in response.headers


async def test_default_page_size_is_100_and_500_is_the_maximum(alice: Caller) -> None:
    for _ in range(3):
        await alice.create()
    assert len((await alice.request("GET", params={"limit": 500})).json()) == 3
    assert_problem(await alice.request("GET", params={"limit": 501}), 422)
    assert_problem(await alice.request("GET", params={"limit": 0}), 422)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("status", "done"),
        ("sort", "urgency"),  # (priority became a sort key)
        ("order", "up"),
        ("limit", "ten"),
        ("offset", "-1"),
        ("offset", "1000000000000000000000"),
    ],
)
async def test_unknown_query_values_are_422_naming_the_parameter(
    alice: Caller, name: str, value: str
) -> None:
    body = assert_problem(await alice.request("GET", params={name: value}), 422)
    assert body["errors"][0]["loc"] == ["query", name]
    assert name in body["detail"]


async def test_sorting_by_title_ignores_case(alice: Caller) -> None:
    for title in ("banana", "Apple", "cherry", "apricot", "Banana split"):
        await alice.create(title=title)
    ascending = [task["title"] for task in (await alice.request("GET", params={"sort": "title"})).json()]
    assert ascending == ["Apple", "apricot", "banana", "Banana split", "cherry"]
    descending = await alice.request("GET", params={"sort": "title", "order": "desc"})
    assert [task["title"] for task in descending.json()] == ascending[::-1]
    # Paged by cursor too, one at a time.
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"sort": "title", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = await alice.request("GET", params=params)
        seen += [task["title"] for task in page.json()]
        cursor = page.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert seen == ascending
