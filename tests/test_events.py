"""Events: every change of a person's tasks (and lists) is an event, written in the statement that makes
the change, numbered as sync numbers it, typed by what it did; a failed write leaves none;
old events are purged with the tombstones."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI

from backend.store import housekeeping
from backend.store.housekeeping import purge
from tests.conftest import Caller, run_sql

pytestmark = pytest.mark.anyio


def events(app: FastAPI, user_id: str) -> list[tuple[int, str, int]]:
    """(sequence, type, task id) of the user's events, in order."""
    rows = run_sql(
        app.state.settings.database_url,
        f"SELECT sequence, type, task_id FROM events WHERE user_id = '{user_id}' ORDER BY sequence",
    )
    return [(int(row[0]), str(row[1]), int(row[2])) for row in rows]


def types(app: FastAPI, user_id: str, since: int = 0) -> list[str]:
    return [kind for sequence, kind, _ in events(app, user_id) if sequence > since]


def last_sequence(app: FastAPI, user_id: str) -> int:
    return max((sequence for sequence, _, _ in events(app, user_id)), default=0)


async def patch(caller: Caller, task: dict[str, Any], **body: Any) -> dict[str, Any]:
    response = await caller.request("PATCH", f"/{task['id']}", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_each_change_is_one_event_typed_by_what_it_did(
    app: FastAPI, alice: Caller, bob: Caller
) -> None:
    task = await alice.create(title="one")
    await patch(alice, task, title="one, renamed")
    assert (
        await alice.request("PATCH", f"/{task['id']}/complete", json={"completed": True})
    ).status_code == 200
    assert (
        await alice.request("PATCH", f"/{task['id']}/complete", json={"completed": False})
    ).status_code == 200
    replaced = await alice.request("PUT", f"/{task['id']}", json={"title": "replaced"})
    assert replaced.status_code == 200, replaced.text
    assert (await alice.request("DELETE", f"/{task['id']}")).status_code == 204
    await bob.create(title="bob's")

    # A person's first write makes their Inbox: its creation is their first event (the list's
    # id in `task_id`, the type saying which).
    assert events(app, alice.user_id) == [
        (1, "list.created", task["list_id"]),
        (2, "task.created", task["id"]),
        (3, "task.updated", task["id"]),
        (4, "task.completed", task["id"]),
        (5, "task.reopened", task["id"]),
        (6, "task.updated", task["id"]),
        (7, "task.deleted", task["id"]),
    ]
    assert types(app, bob.user_id) == ["list.created", "task.created"]


async def test_the_event_number_is_the_number_sync_gives_the_change(app: FastAPI, alice: Caller) -> None:
    first = await alice.create(title="one")
    second = await alice.create(title="two")
    await patch(alice, first, title="one again")
    stored = run_sql(
        app.state.settings.database_url,
        f"SELECT id, change_seq FROM tasks WHERE user_id = '{alice.user_id}' ORDER BY id",
    )
    latest = {int(row[0]): int(row[1]) for row in stored}
    assert latest == {first["id"]: 4, second["id"]: 3}  # 1: the Inbox's creation
    assert [(sequence, task_id) for sequence, _, task_id in events(app, alice.user_id)] == [
        (1, first["list_id"]),
        (2, first["id"]),
        (3, second["id"]),
        (4, first["id"]),
    ]


async def test_completing_an_occurrence_of_a_series_is_three_events(app: FastAPI, alice: Caller) -> None:
    series = await alice.create(title="daily", due_at="2026-12-03T09:00:00Z", recurrence="FREQ=DAILY")
    response = await alice.request("PATCH", f"/{series['id']}/complete", json={"completed": True})
    assert response.status_code == 200, response.text
    successor = response.json()["next_occurrence_id"]
    assert events(app, alice.user_id) == [
        (1, "list.created", series["list_id"]),
        (2, "task.created", series["id"]),
        (3, "task.completed", series["id"]),
        (4, "task.created", successor),
        # The occurrence now points at its successor (`next_occurrence_id` in its JSON).
        (5, "task.updated", series["id"]),
    ]


async def test_a_task_created_completed_is_one_created_event(app: FastAPI, alice: Caller) -> None:
    task = await alice.create(title="done already", completed=True)
    assert events(app, alice.user_id) == [
        (1, "list.created", task["list_id"]),
        (2, "task.created", task["id"]),
    ]


async def test_renaming_or_deleting_a_tag_is_an_update_of_each_task_carrying_it(
    app: FastAPI, alice: Caller
) -> None:
    tagged = [await alice.create(title=f"t{i}", tags=["work"]) for i in range(3)]
    await alice.create(title="untagged")
    [tag] = (await alice.client.get(f"/api/{alice.user_id}/tags", headers=alice.headers)).json()
    before = last_sequence(app, alice.user_id)
    renamed = await alice.client.patch(
        f"/api/{alice.user_id}/tags/{tag['id']}", headers=alice.headers, json={"name": "office"}
    )
    assert renamed.status_code == 200, renamed.text
    after = [(kind, task_id) for sequence, kind, task_id in events(app, alice.user_id) if sequence > before]
    assert sorted(after) == sorted(("task.updated", task["id"]) for task in tagged)

    before = last_sequence(app, alice.user_id)
    deleted = await alice.client.delete(f"/api/{alice.user_id}/tags/{tag['id']}", headers=alice.headers)
    assert deleted.status_code == 204, deleted.text
    assert sorted(types(app, alice.user_id, since=before)) == ["task.updated"] * 3


async def test_clearing_completed_tasks_is_a_deletion_of_each(app: FastAPI, alice: Caller) -> None:
    done = [await alice.create(title=f"done {i}", completed=True) for i in range(2)]
    await alice.create(title="open")
    before = last_sequence(app, alice.user_id)
    cleared = await alice.request("DELETE", params={"status": "completed"})
    assert cleared.json() == {"deleted": 2}
    after = [(kind, task_id) for sequence, kind, task_id in events(app, alice.user_id) if sequence > before]
    assert sorted(after) == sorted(("task.deleted", task["id"]) for task in done)


async def test_a_failed_write_leaves_no_event(app: FastAPI, alice: Caller) -> None:
    task = await alice.create(title="one")
    before = events(app, alice.user_id)
    stale = await alice.request("PATCH", f"/{task['id']}", json={"title": "x"}, headers={"If-Match": '"99"'})
    assert stale.status_code == 412
    invalid = await alice.request("PATCH", f"/{task['id']}", json={"title": ""})
    assert invalid.status_code == 422
    missing = await alice.request("DELETE", "/999999")
    assert missing.status_code == 404
    assert events(app, alice.user_id) == before


async def test_a_fired_reminder_is_its_own_event(app: FastAPI, alice: Caller) -> None:
    task = await alice.create(title="call", remind_at="2026-12-03T09:00:00Z")
    url = app.state.settings.database_url
    now = "now()" if url.startswith("postgres") else "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
    run_sql(url, f"UPDATE tasks SET reminded_at = {now} WHERE id = {task['id']}")
    assert types(app, alice.user_id) == ["list.created", "task.created", "reminder.due"]


async def test_events_older_than_the_retention_are_purged(app: FastAPI, alice: Caller) -> None:
    await alice.create(title="old")
    await alice.create(title="recent")
    url = app.state.settings.database_url
    older = (
        "occurred_at - interval '31 days'"
        if url.startswith("postgres")
        else "strftime('%Y-%m-%d %H:%M:%f000', occurred_at, '-31 days')"
    )
    run_sql(
        url, f"UPDATE events SET occurred_at = {older} WHERE sequence <= 2"
    )  # the Inbox's, the first task's
    assert (await purge(app.state.database, app.state.settings)).events == 2
    assert [sequence for sequence, _, _ in events(app, alice.user_id)] == [3]


async def test_the_purge_outlives_a_failed_round(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A round that fails for any reason is logged and the next one runs: a background task
    that died would keep every old key, tombstone and event for good, silently."""
    rounds = 0
    real = housekeeping.purge

    async def failing_once(*args: Any) -> housekeeping.Purged:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("a purge that failed")
        return await real(*args)

    monkeypatch.setattr(housekeeping, "purge", failing_once)
    monkeypatch.setattr(housekeeping, "EVERY_SECONDS", 0.05)
    loop = asyncio.create_task(housekeeping.keep_house(app.state.database, app.state.settings))
    try:
        for _ in range(100):
            if rounds >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
    assert rounds >= 2
    assert "a purge failed" in caplog.text
