"""Optimistic concurrency: every task has a version and an ETag; writes honour If-Match
(412, nothing changed), reads honour If-None-Match (304), and REQUIRE_IF_MATCH makes
a write without one a 428."""

import asyncio
from typing import Any

import pytest

from tests.conftest import Caller, assert_problem, http_client, make_settings, running_app, sign_in

pytestmark = pytest.mark.anyio


def etag(response: Any) -> str:
    tag: str = response.headers["etag"]
    return tag


async def test_a_task_starts_at_version_1_and_every_change_adds_one(alice: Caller) -> None:
    created = await alice.request("POST", json={"title": "t"})
    task = created.json()
    assert task["version"] == 1
    assert etag(created) == '"1"'
    url = f"/{task['id']}"
    steps = [
        ("PATCH", url, {"title": "u"}),
        ("PUT", url, {"title": "v"}),
        ("PATCH", f"{url}/complete", None),
        ("PATCH", f"{url}/complete", {"completed": False}),
        ("PATCH", url, {"tags": ["x"]}),
    ]
    for version, (method, path, body) in enumerate(steps, start=2):
        response = await alice.request(method, path, json=body)
        assert response.json()["version"] == version, (method, path)
        assert etag(response) == f'"{version}"'
    got = await alice.request("GET", url)
    assert (got.json()["version"], etag(got)) == (6, '"6"')


async def test_a_matching_if_match_writes_and_a_stale_one_is_412_changing_nothing(alice: Caller) -> None:
    task = await alice.create(title="t")
    url = f"/{task['id']}"
    edited = await alice.request("PATCH", url, json={"title": "mine"}, headers={"If-Match": '"1"'})
    assert edited.status_code == 200
    for method, path, body in [
        ("PATCH", url, {"title": "stale"}),
        ("PUT", url, {"title": "stale"}),
        ("PATCH", f"{url}/complete", None),
        ("DELETE", url, None),
    ]:
        refused = await alice.request(method, path, json=body, headers={"If-Match": '"1"'})
        problem = assert_problem(refused, 412)
        assert "If-Match" in problem["detail"]
    now = (await alice.request("GET", url)).json()
    assert (now["title"], now["version"], now["completed"]) == ("mine", 2, False)


@pytest.mark.parametrize(
    ("header", "writes"),
    [
        ('"2"', True),
        ('"1", "2"', True),
        ("*", True),
        ('W/"2"', False),  # a weak tag never matches (strong comparison)
        ('"1", W/"2"', False),
        ('"9"', False),
    ],
)
async def test_if_match_lists_and_star_compare_strongly(alice: Caller, header: str, writes: bool) -> None:
    task = await alice.create(title="t")
    await alice.request("PATCH", f"/{task['id']}", json={"title": "v2"})
    response = await alice.request(
        "PATCH", f"/{task['id']}", json={"title": "v3"}, headers={"If-Match": header}
    )
    assert response.status_code == (200 if writes else 412), response.text


async def test_if_match_on_a_task_that_is_not_yours_is_still_404(alice: Caller, bob: Caller) -> None:
    task = await alice.create(title="t")
    for header in ('"1"', "*"):
        assert_problem(
            await bob.request("PATCH", f"/{task['id']}", json={"title": "x"}, headers={"If-Match": header}),
            404,
        )
    assert_problem(await alice.request("DELETE", "/999999", headers={"If-Match": '"1"'}), 404)


@pytest.mark.parametrize("header", ["1", '"1', "W/1", '"a"b"', ""])
async def test_a_malformed_if_match_is_400(alice: Caller, header: str) -> None:
    task = await alice.create(title="t")
    problem = assert_problem(
        await alice.request("PATCH", f"/{task['id']}", json={"title": "x"}, headers={"If-Match": header}), 400
    )
    assert "If-Match" in problem["detail"]
    assert (await alice.request("GET", f"/{task['id']}")).json()["title"] == "t"


async def test_if_none_match_answers_304_while_the_version_holds(alice: Caller) -> None:
    task = await alice.create(title="t")
    url = f"/{task['id']}"
    for header in ('"1"', 'W/"1"', '"5", "1"', "*"):
        cached = await alice.request("GET", url, headers={"If-None-Match": header})
        assert cached.status_code == 304, header
        assert cached.content == b""
        assert etag(cached) == '"1"'
    await alice.request("PATCH", url, json={"title": "changed"})
    fresh = await alice.request("GET", url, headers={"If-None-Match": '"1"'})
    assert fresh.status_code == 200
    assert fresh.json()["title"] == "changed"
    assert etag(fresh) == '"2"'


async def test_a_deleted_task_is_gone_from_every_route(alice: Caller) -> None:
    task = await alice.create(title="t", tags=["gone"])
    url = f"/{task['id']}"
    assert (await alice.request("DELETE", url)).status_code == 204
    for method, path, body in [
        ("GET", url, None),
        ("PATCH", url, {"title": "x"}),
        ("PUT", url, {"title": "x"}),
        ("PATCH", f"{url}/complete", None),
        ("DELETE", url, None),
    ]:
        assert_problem(await alice.request(method, path, json=body), 404)
    listing = await alice.request("GET")
    assert listing.json() == []
    assert listing.headers["x-total-count"] == "0"
    stats = (await alice.client.get(f"/api/{alice.user_id}/tasks/stats", headers=alice.headers)).json()
    assert stats["total"] == 0
    assert (await alice.client.get(f"/api/{alice.user_id}/tags", headers=alice.headers)).json() == []


async def test_require_if_match_makes_blind_writes_428(database_url: str) -> None:
    settings = make_settings(database_url, require_if_match=True)
    async with running_app(settings) as app, http_client(app) as client:
        alice = sign_in(client, "alice")
        task = await alice.create(title="t")  # creating needs no If-Match: there is nothing to overwrite
        url = f"/{task['id']}"
        for method, path, body in [
            ("PATCH", url, {"title": "x"}),
            ("PUT", url, {"title": "x"}),
            ("PATCH", f"{url}/complete", None),
            ("DELETE", url, None),
        ]:
            problem = assert_problem(await alice.request(method, path, json=body), 428)
            assert "If-Match" in problem["detail"]
        assert (
            await alice.request("PATCH", url, json={"title": "x"}, headers={"If-Match": '"1"'})
        ).status_code == 200
        assert (
            await alice.request("PATCH", url, json={"title": "y"}, headers={"If-Match": "*"})
        ).status_code == 200


async def test_twenty_concurrent_writes_with_one_tag_give_one_success(postgres_url: str) -> None:
    async with running_app(make_settings(postgres_url)) as app, http_client(app) as client:
        alice = sign_in(client, "alice")
        task = await alice.create(title="t")
        responses = await asyncio.gather(
            *(
                alice.request(
                    "PATCH", f"/{task['id']}", json={"title": f"writer {i}"}, headers={"If-Match": '"1"'}
                )
                for i in range(20)
            )
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [200] + [412] * 19
        winner = next(response.json() for response in responses if response.status_code == 200)
        assert (await alice.request("GET", f"/{task['id']}")).json() == winner
        assert winner["version"] == 2
