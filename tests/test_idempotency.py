"""Idempotency-Key: a repeat of a keyed write gets the first answer and changes nothing;
the same key for another request is 422; failures store nothing; keys are per user,
kept IDEMPOTENCY_KEY_HOURS, and survive a restart."""

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.auth.tokens import issue_token
from backend.store.housekeeping import purge
from tests.conftest import (
    SECRET,
    Caller,
    assert_problem,
    fresh_postgres_database,
    http_client,
    make_settings,
    migrate,
    run_sql,
    running_app,
    sign_in,
)
from tests.processes import running_server, server_env

pytestmark = pytest.mark.anyio


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def titles(caller: Caller) -> list[str]:
    return [task["title"] for task in (await caller.request("GET")).json()]


async def test_a_repeated_create_is_replayed_and_creates_nothing(alice: Caller) -> None:
    first = await alice.request("POST", json={"title": "once"}, headers=keyed("create-1"))
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    again = await alice.request("POST", json={"title": "once"}, headers=keyed("create-1"))
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["etag"] == first.headers["etag"]
    assert await titles(alice) == ["once"]


async def test_a_repeated_toggle_does_not_flip_back(alice: Caller) -> None:
    task = await alice.create(title="t")
    first = await alice.request("PATCH", f"/{task['id']}/complete", headers=keyed("toggle-1"))
    again = await alice.request("PATCH", f"/{task['id']}/complete", headers=keyed("toggle-1"))
    assert first.json()["completed"] is True
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert (await alice.request("GET", f"/{task['id']}")).json()["completed"] is True


async def test_every_write_route_takes_a_key(alice: Caller) -> None:
    task = await alice.create(title="t", tags=["a"], completed=True)
    other = await alice.create(title="u", tags=["b"])
    tags = (await alice.client.get(f"/api/{alice.user_id}/tags", headers=alice.headers)).json()
    calls: list[tuple[str, str, Any]] = [
        ("PUT", f"/tasks/{other['id']}", {"title": "put"}),
        ("PATCH", f"/tasks/{other['id']}", {"description": "patched"}),
        ("PATCH", f"/tags/{tags[0]['id']}", {"name": "renamed"}),
        ("DELETE", f"/tags/{tags[1]['id']}", None),
        ("DELETE", "/tasks?status=completed", None),
        ("DELETE", f"/tasks/{other['id']}", None),
    ]
    for index, (method, path, body) in enumerate(calls):
        headers = {**alice.headers, **keyed(f"route-{index}")}
        url = f"/api/{alice.user_id}{path}"
        first = await alice.client.request(method, url, json=body, headers=headers)
        again = await alice.client.request(method, url, json=body, headers=headers)
        assert first.status_code < 300, (method, path, first.text)
        assert (again.status_code, again.content) == (first.status_code, first.content), (method, path)
        assert again.headers["idempotent-replayed"] == "true", (method, path)
    assert task["completed"] is True


async def test_a_keyed_write_by_someone_with_no_tasks_yet_is_kept(alice: Caller) -> None:
    # Found by schemathesis: the key was stored against a user record that only a
    # first task creates, and the write failed (500) for someone who had none.
    first = await alice.request("DELETE", "?status=completed", headers=keyed("clear-first"))
    assert (first.status_code, first.json()) == (200, {"deleted": 0})
    again = await alice.request("DELETE", "?status=completed", headers=keyed("clear-first"))
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == {"deleted": 0}


async def test_the_same_key_for_another_request_is_422(alice: Caller) -> None:
    await alice.request("POST", json={"title": "first"}, headers=keyed("reused"))
    for method, path, body in [
        ("POST", "", {"title": "another body"}),
        ("POST", "?x=1", {"title": "first"}),
    ]:
        problem = assert_problem(await alice.request(method, path, json=body, headers=keyed("reused")), 422)
        assert "Idempotency-Key" in problem["detail"]
    assert await titles(alice) == ["first"]


@pytest.mark.parametrize(
    ("header", "valid"),
    [
        ('"quoted-key"', True),
        ("plain key 42", True),
        ("", False),
        ("k" * 256, False),
        ("é", False),
        ('"a"b"', False),
    ],
)
async def test_keys_are_printable_ascii_bare_or_quoted(alice: Caller, header: str, valid: bool) -> None:
    raw = [
        (b"authorization", f"Bearer {alice.token}".encode()),
        (b"idempotency-key", header.encode("latin-1")),
    ]
    response = await alice.client.post(alice.url(), json={"title": "k"}, headers=raw)
    if valid:
        assert response.status_code == 201
    else:
        problem = assert_problem(response, 400)
        assert "Idempotency-Key" in problem["detail"]
        assert await titles(alice) == []


async def test_quoted_and_bare_forms_are_the_same_key(alice: Caller) -> None:
    first = await alice.request("POST", json={"title": "q"}, headers=keyed('"same"'))
    again = await alice.request("POST", json={"title": "q"}, headers=keyed("same"))
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_failures_store_nothing_so_a_retry_runs_afresh(alice: Caller) -> None:
    invalid = await alice.request("POST", json={"title": ""}, headers=keyed("retry-me"))
    assert_problem(invalid, 422)
    missing = await alice.request("PATCH", "/999999", json={"title": "x"}, headers=keyed("retry-404"))
    assert_problem(missing, 404)
    fixed = await alice.request("POST", json={"title": "now valid"}, headers=keyed("retry-me"))
    assert fixed.status_code == 201
    assert "idempotent-replayed" not in fixed.headers
    task = await alice.create(title="exists later")
    later = await alice.request("PATCH", f"/{task['id']}", json={"title": "x"}, headers=keyed("retry-404"))
    assert later.status_code == 200  # a different path, but the key stored nothing the first time


async def test_keys_are_per_user(alice: Caller, bob: Caller) -> None:
    mine = await alice.request("POST", json={"title": "alice's"}, headers=keyed("shared-key"))
    theirs = await bob.request("POST", json={"title": "bob's"}, headers=keyed("shared-key"))
    assert theirs.status_code == 201
    assert "idempotent-replayed" not in theirs.headers
    assert theirs.json()["id"] != mine.json()["id"]
    assert await titles(bob) == ["bob's"]


async def test_keys_are_purged_after_idempotency_key_hours(app: FastAPI, alice: Caller) -> None:
    await alice.request("POST", json={"title": "t"}, headers=keyed("old"))
    url = app.state.settings.database_url
    older = (
        "created_at - interval '25 hours'"
        if url.startswith("postgres")
        else "datetime(created_at, '-25 hours')"
    )
    run_sql(url, f"UPDATE idempotency_keys SET created_at = {older}")
    assert (await purge(app.state.database, app.state.settings)).idempotency_keys == 1
    again = await alice.request("POST", json={"title": "t"}, headers=keyed("old"))
    assert "idempotent-replayed" not in again.headers  # forgotten: it ran again
    assert await titles(alice) == ["t", "t"]


async def test_twenty_concurrent_posts_with_one_key_create_one_task(postgres_url: str) -> None:
    async with running_app(make_settings(postgres_url)) as app, http_client(app) as client:
        alice = sign_in(client, "alice")
        responses = await asyncio.gather(
            *(alice.request("POST", json={"title": "racing"}, headers=keyed("race")) for _ in range(20))
        )
        created = [response for response in responses if response.status_code == 201]
        assert created, [response.text for response in responses]
        assert {response.status_code for response in responses} <= {201, 409}
        assert len({response.json()["id"] for response in created}) == 1
        listed = (await alice.request("GET")).json()
        assert [task["title"] for task in listed] == ["racing"]
        for response in responses:
            if response.status_code == 409:
                assert "still running" in response.json()["detail"]


def test_a_replay_survives_a_server_restart(tmp_path: Path) -> None:
    with fresh_postgres_database() as url:
        migrate(url)
        auth = {"Authorization": f"Bearer {issue_token(SECRET, 'alice')}", "Idempotency-Key": "durable"}
        with running_server(server_env(url), tmp_path / "first.log") as server:
            first = httpx.post(f"{server.base_url}/api/alice/tasks", json={"title": "kept"}, headers=auth)
        with running_server(server_env(url), tmp_path / "second.log") as server:
            again = httpx.post(f"{server.base_url}/api/alice/tasks", json={"title": "kept"}, headers=auth)
            listed = httpx.get(f"{server.base_url}/api/alice/tasks", headers=auth).json()
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert len(listed) == 1


def test_the_purge_runs_by_itself_at_start(tmp_path: Path) -> None:
    with fresh_postgres_database() as url:
        migrate(url)
        run_sql(url, "INSERT INTO users (id, created_at) VALUES ('u', now())")
        run_sql(
            url,
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, created_at) "
            "VALUES ('u', 'ancient', 'f', 201, now() - interval '2 days')",
        )
        with running_server(server_env(url), tmp_path / "server.log"):
            for _ in range(50):
                if run_sql(url, "SELECT count(*) FROM idempotency_keys") == [(0,)]:
                    break
                time.sleep(0.1)
        assert run_sql(url, "SELECT count(*) FROM idempotency_keys") == [(0,)]


async def test_a_keyed_write_refused_by_the_database_is_a_422_and_stores_nothing(alice: Caller) -> None:
    task = await alice.create(title="no date")
    refused = await alice.request(
        "PATCH", f"/{task['id']}", json={"recurrence": "FREQ=WEEKLY"}, headers=keyed("check")
    )
    problem = assert_problem(refused, 422)
    assert problem["errors"][0]["loc"] == ["body", "due_at"]
    fixed = await alice.request(
        "PATCH",
        f"/{task['id']}",
        json={"recurrence": "FREQ=WEEKLY", "due_at": "2026-12-01T10:00:00Z"},
        headers=keyed("check"),
    )
    assert fixed.status_code == 200


async def test_a_key_names_the_resource_not_the_spelling_of_its_path(alice: Caller) -> None:
    """`/api/me/tasks` and `/api/<the user's id>/tasks` are one resource: a retry through the
    other spelling is a replay, not a second task."""
    first = await alice.client.post(
        "/api/me/tasks", json={"title": "once"}, headers={**alice.headers, "Idempotency-Key": "spelt-twice"}
    )
    again = await alice.client.post(
        f"/api/{alice.user_id}/tasks",
        json={"title": "once"},
        headers={**alice.headers, "Idempotency-Key": "spelt-twice"},
    )
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert [task["title"] for task in (await alice.request("GET")).json()] == ["once"]
