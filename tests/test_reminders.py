"""Reminders fire: a pending task's `remind_at` arriving is one `reminder.due` event and its
`reminded_at`, once per task and `remind_at` value, however many scans or processes meet
it; completing or deleting disarms, moving it re-arms; after downtime a reminder missed by
less than REMINDER_MAX_LATENESS_MINUTES fires late, an older one is skipped and counted."""

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backend.auth.tokens import issue_token
from backend.store import reminders as reminders_module
from backend.store.reminders import Reminders, fire_reminders
from tests.conftest import SECRET, Caller, fresh_postgres_database, migrate, run_sql
from tests.processes import blocking, server_env, serving
from tests.test_events import events

pytestmark = pytest.mark.anyio

HOUR = timedelta(hours=1)
FIRED = "SELECT task_id, count(*) FROM events WHERE type = 'reminder.due' GROUP BY task_id"


def at(offset: timedelta) -> str:
    return (datetime.now(UTC) + offset).isoformat()


def reminders_of(app: FastAPI, user_id: str) -> list[int]:
    """The task ids of the user's `reminder.due` events, in order."""
    return [task_id for _, kind, task_id in events(app, user_id) if kind == "reminder.due"]


def reminded_at(app: FastAPI, task_id: int) -> Any:
    [(value,)] = run_sql(
        app.state.settings.database_url, f"SELECT reminded_at FROM tasks WHERE id = {task_id}"
    )
    return value


async def scan(app: FastAPI, reminders: Reminders | None = None) -> Reminders:
    reminders = reminders or Reminders()
    await fire_reminders(app.state.database, reminders, HOUR)
    return reminders


async def test_a_due_reminder_fires_once_however_many_scans_meet_it(app: FastAPI, alice: Caller) -> None:
    due = await alice.create(title="call the plumber", remind_at=at(-timedelta(seconds=5)))
    later = await alice.create(title="later", remind_at=at(HOUR))
    await asyncio.gather(*(scan(app) for _ in range(5)))
    await scan(app)
    assert reminders_of(app, alice.user_id) == [due["id"]]
    assert reminded_at(app, due["id"]) is not None
    assert reminded_at(app, later["id"]) is None
    # The task's JSON says when; a client cannot say it.
    shown = (await alice.request("GET", f"/{due['id']}")).json()
    assert shown["reminded_at"] is not None
    assert datetime.fromisoformat(shown["reminded_at"]) >= datetime.fromisoformat(shown["remind_at"])
    assert due["reminded_at"] is None
    refused = await alice.request("PATCH", f"/{later['id']}", json={"reminded_at": at(HOUR)})
    assert refused.status_code == 422


async def test_completed_deleted_and_reminderless_tasks_do_not_remind(app: FastAPI, alice: Caller) -> None:
    done = await alice.create(title="done", remind_at=at(-timedelta(seconds=5)), completed=True)
    gone = await alice.create(title="gone", remind_at=at(-timedelta(seconds=5)))
    assert (await alice.request("DELETE", f"/{gone['id']}")).status_code == 204
    await alice.create(title="no reminder")
    completed_later = await alice.create(
        title="completed before its time", remind_at=at(timedelta(seconds=1))
    )
    response = await alice.request("PATCH", f"/{completed_later['id']}/complete", json={"completed": True})
    assert response.status_code == 200
    await asyncio.sleep(1.2)
    await scan(app)
    assert reminders_of(app, alice.user_id) == []
    assert done["completed"] is True


async def test_moving_remind_at_rearms_the_reminder_once_per_value(app: FastAPI, alice: Caller) -> None:
    task = await alice.create(title="stand-up", remind_at=at(-timedelta(seconds=2)))
    await scan(app)
    assert reminders_of(app, alice.user_id) == [task["id"]]
    # Moved to a new time: armed again, and fires when that time comes.
    moved = await alice.request("PATCH", f"/{task['id']}", json={"remind_at": at(timedelta(seconds=1))})
    assert moved.status_code == 200, moved.text
    await scan(app)
    assert reminders_of(app, alice.user_id) == [task["id"]]  # not yet
    await asyncio.sleep(1.2)
    await scan(app)
    await scan(app)
    assert reminders_of(app, alice.user_id) == [task["id"], task["id"]]
    # Cleared: nothing more.
    cleared = await alice.request("PATCH", f"/{task['id']}", json={"remind_at": None})
    assert cleared.status_code == 200, cleared.text
    await scan(app)
    assert reminders_of(app, alice.user_id) == [task["id"], task["id"]]


async def test_a_reminder_missed_during_downtime_fires_late_and_an_older_one_is_skipped(
    app: FastAPI, alice: Caller
) -> None:
    late = await alice.create(title="missed by half an hour", remind_at=at(-timedelta(minutes=30)))
    stale = await alice.create(title="missed by two hours", remind_at=at(-2 * HOUR))
    reminders = await scan(app)
    assert reminders_of(app, alice.user_id) == [late["id"]]
    assert reminded_at(app, stale["id"]) is None
    assert (reminders.fired, reminders.late, reminders.skipped) == (1, 1, 1)
    await scan(app, reminders)
    assert reminders.skipped == 1  # counted once by this process


async def test_a_recurring_successor_reminds_in_its_turn(app: FastAPI, alice: Caller) -> None:
    first_due = datetime.now(UTC) - timedelta(days=1) + timedelta(seconds=3)
    series = await alice.create(
        title="daily pills",
        due_at=first_due.isoformat(),
        remind_at=(first_due - timedelta(seconds=10)).isoformat(),
        recurrence="FREQ=DAILY",
    )
    await scan(app)  # yesterday's occurrence: missed by a day, skipped
    response = await alice.request("PATCH", f"/{series['id']}/complete", json={"completed": True})
    successor = response.json()["next_occurrence_id"]
    # Today's occurrence reminds 10 s before its due time, 7 s ago.
    await scan(app)
    assert reminders_of(app, alice.user_id) == [successor]


async def test_another_users_reminders_are_theirs(app: FastAPI, alice: Caller, bob: Caller) -> None:
    mine = await alice.create(title="mine", remind_at=at(-timedelta(seconds=1)))
    theirs = await bob.create(title="theirs", remind_at=at(-timedelta(seconds=1)))
    await scan(app)
    assert reminders_of(app, alice.user_id) == [mine["id"]]
    assert reminders_of(app, bob.user_id) == [theirs["id"]]


async def test_three_servers_fire_every_reminder_exactly_once_even_when_one_is_killed(tmp_path: Path) -> None:
    """Three `todo-api serve` on one PostgreSQL database, each running the scheduler: 120
    reminders of 40 people come due within two seconds; one server is killed mid-way."""
    with fresh_postgres_database() as url:
        await blocking(migrate, url)
        users = [f"person{i}" for i in range(40)]
        async with (
            serving(server_env(url), tmp_path / "a.log") as first,
            serving(server_env(url), tmp_path / "b.log") as second,
            serving(server_env(url), tmp_path / "c.log") as third,
        ):
            created: dict[int, datetime] = {}
            async with httpx.AsyncClient(base_url=first.base_url, timeout=30) as http:
                start = datetime.now(UTC) + timedelta(seconds=2)
                for index in range(120):
                    user = users[index % len(users)]
                    remind_at = start + timedelta(milliseconds=16 * index)
                    response = await http.post(
                        f"/api/{user}/tasks",
                        json={"title": f"reminder {index}", "remind_at": remind_at.isoformat()},
                        headers={"Authorization": f"Bearer {issue_token(SECRET, user)}"},
                    )
                    assert response.status_code == 201, response.text
                    created[response.json()["id"]] = remind_at
            await asyncio.sleep(2.5)
            second.process.send_signal(signal.SIGKILL)  # mid-way through the two seconds
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if len(await blocking(run_sql, url, FIRED)) == len(created):
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)  # a duplicate would have had time to appear
            fired = await blocking(run_sql, url, FIRED)
            assert {int(task_id): int(count) for task_id, count in fired} == dict.fromkeys(created, 1)
            rows = await blocking(run_sql, url, "SELECT id, remind_at, reminded_at FROM tasks")
            lateness = sorted((reminded - remind).total_seconds() for _, remind, reminded in rows)
            # Every reminder fired after its time, and within the scan period and a scan's
            # work of it (the killed server's owners included).
            assert lateness[0] >= 0
            assert lateness[-1] < 3, lateness[-5:]
            assert third.process.poll() is None


async def test_the_scheduler_outlives_a_failed_scan(
    app: FastAPI, alice: Caller, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A scan that fails for any reason is logged, and the next one runs: a background task
    that died would stop every reminder of the process, silently."""
    due = await alice.create(title="after a failure", remind_at=at(-timedelta(seconds=1)))
    real = reminders_module.fire_reminders
    calls = 0

    async def failing_once(*args: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a scan that failed")
        return await real(*args)

    monkeypatch.setattr(reminders_module, "fire_reminders", failing_once)
    monkeypatch.setattr(reminders_module, "EVERY_SECONDS", 0.05)
    loop = asyncio.create_task(reminders_module.keep_reminding(app.state.database, Reminders(), HOUR))
    try:
        for _ in range(100):
            if reminders_of(app, alice.user_id):
                break
            await asyncio.sleep(0.05)
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
    assert reminders_of(app, alice.user_id) == [due["id"]]
    assert "a reminder scan failed" in caplog.text
