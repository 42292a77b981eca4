"""The bench's ceilings (`bench/ceiling.py`, Starlette's and the raw ASGI one) answer every
request `make bench` sends as the API does, with the same headers: a ceiling that fails or
serves less than the API would make every ratio `make bench` reports a lie. (Its TOGGLE
once answered nothing but 500s, unseen.)"""

import gc
import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient, Response

from tests.conftest import SECRET, http_client, make_settings, running_app, sign_in

pytestmark = [pytest.mark.anyio, pytest.mark.postgresql_only]

# The filtered list of `make bench`'s LIST_FILTERED, and the other lists it sends.
LISTS = [
    "",
    "?limit=20",
    "?limit=2&offset=2",
    "?offset=2",
    "?status=pending&priority=high&priority=medium&tag=work&q=task&sort=due&limit=20",
]


@asynccontextmanager
async def ceiling_client(
    url: str, monkeypatch: pytest.MonkeyPatch, front: str = "app"
) -> AsyncIterator[AsyncClient]:
    """A ceiling app (`front`: `app` or `raw_app`) in this process, its lifespan run, on the
    database at `url`."""
    monkeypatch.setenv("BETTER_AUTH_SECRET", SECRET)
    monkeypatch.setenv("DATABASE_URL", url)
    ceiling = importlib.reload(importlib.import_module("bench.ceiling"))
    threshold = gc.get_threshold()
    try:
        async with (
            ceiling.lifespan(None),
            AsyncClient(
                transport=ASGITransport(app=getattr(ceiling, front)), base_url="http://ceiling"
            ) as client,
        ):
            yield client
    finally:  # the ceiling tunes the collector as the API's server does; not for the tests
        gc.unfreeze()
        gc.set_threshold(*threshold)


# The headers both send on every success; the ceiling's other headers are the route's own.
EDGE_HEADERS = ("x-content-type-options", "cache-control", "vary")


@pytest.mark.parametrize("front", ["app", "raw_app"])
async def test_the_ceiling_answers_every_benchmarked_request_as_the_api_does(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, front: str
) -> None:
    async with (
        running_app(make_settings(postgres_url)) as app,
        http_client(app) as client,
        ceiling_client(postgres_url, monkeypatch, front) as ceiling,
    ):
        alice = sign_in(client, "alice")
        # The same person, their requests sent to the ceiling.
        at_ceiling = sign_in(ceiling, "alice")
        for n in range(6):
            await alice.create(
                title=f"task {n}",
                description="seeded",
                priority=["high", "medium", "low"][n % 3],
                due_at=f"2026-12-0{n + 1}T09:00:00Z" if n % 2 else None,
                tags=["work"] if n % 2 else ["Home"],
            )
        await alice.request("PATCH", "/1/complete")

        async def same_as_the_api(answer: Response, status: int) -> dict[str, Any]:
            """The ceiling's answer has `status`, and is the task the API then reads, with its
            ETag and the API's other headers."""
            assert answer.status_code == status, answer.text
            task: dict[str, Any] = answer.json()
            read = await alice.request("GET", f"/{task['id']}")
            assert read.json() == task
            assert answer.headers["etag"] == read.headers["etag"]
            assert [answer.headers[name] for name in EDGE_HEADERS] == [
                read.headers[name] for name in EDGE_HEADERS
            ]
            assert len(answer.headers["x-request-id"]) == 32
            return task

        for suffix in LISTS:
            ours, theirs = await alice.request("GET", suffix), await at_ceiling.request("GET", suffix)
            assert theirs.status_code == 200, (suffix, theirs.text)
            assert (theirs.json(), theirs.headers["x-total-count"], theirs.headers.get("link")) == (
                ours.json(),
                ours.headers["x-total-count"],
                ours.headers.get("link"),
            ), suffix
        await same_as_the_api(await at_ceiling.request("GET", "/2"), 200)

        patched = await same_as_the_api(await at_ceiling.request("PATCH", "/2", json={"title": "p"}), 200)
        assert patched["title"] == "p"
        toggled = await same_as_the_api(await at_ceiling.request("PATCH", "/2/complete"), 200)
        assert toggled["completed"] is True
        assert toggled["completed_at"] is not None
        reopened = await same_as_the_api(await at_ceiling.request("PATCH", "/2/complete"), 200)
        assert (reopened["completed"], reopened["completed_at"]) == (False, None)
        matched = await at_ceiling.request("PATCH", "/3", json={"title": "m"}, headers={"If-Match": '"1"'})
        assert matched.headers["etag"] == '"2"'
        await same_as_the_api(matched, 200)

        created = await at_ceiling.request("POST", json={"title": "benchmark task"})
        await same_as_the_api(created, 201)
        assert created.headers["location"] == f"/api/alice/tasks/{created.json()['id']}"
        tagged = await same_as_the_api(
            await at_ceiling.request("POST", json={"title": "b", "tags": ["work", "errands", "Home"]}), 201
        )
        assert tagged["tags"] == ["errands", "Home", "work"]
        await same_as_the_api(
            await at_ceiling.request("POST", json={"title": "k"}, headers={"Idempotency-Key": "k-1"}), 201
        )

        ours, theirs = (
            await alice.request("GET", "/changes?limit=100"),
            await at_ceiling.request("GET", "/changes?limit=100"),
        )
        assert theirs.status_code == 200, theirs.text
        assert {**theirs.json(), "next_since": None} == {**ours.json(), "next_since": None}

        # LIST_IN_LIST: one list in the order people choose, its top level; MOVE: after a sibling.
        inbox = (await alice.request("GET", "/2")).json()["list_id"]
        in_order = f"?list_id={inbox}&parent_id=none&sort=position&limit=100"
        ours, theirs = await alice.request("GET", in_order), await at_ceiling.request("GET", in_order)
        assert theirs.status_code == 200, theirs.text
        assert (theirs.json(), theirs.headers["x-total-count"]) == (
            ours.json(),
            ours.headers["x-total-count"],
        )
        moved = await same_as_the_api(await at_ceiling.request("POST", "/2/move", json={"after_id": 5}), 200)
        after = (await alice.request("GET", "/5")).json()
        assert moved["position"] > after["position"]
        last = (await alice.request("GET", in_order)).json()[-1]
        to_the_end = await same_as_the_api(
            await at_ceiling.request("POST", "/3/move", json={"after_id": last["id"]}), 200
        )
        assert to_the_end["position"] > last["position"]

        assert (await at_ceiling.request("DELETE", "/4")).status_code == 204
        assert (await alice.request("GET", "/4")).status_code == 404
