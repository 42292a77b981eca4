"""Reminders that fire: when a pending task's `remind_at` arrives, its `reminded_at` is set,
which the events trigger records as `reminder.due`, once per task and `remind_at` value,
however many processes share the database.

A reminder is armed while its task is pending (not completed, not deleted) and has not
fired for its current time (`reminded_at` empty or before `remind_at`): moving `remind_at`
later re-arms it, completing or deleting the task disarms it, a recurring successor has
its own. Every process runs `fire_reminders` once a second. It claims an owner's due
reminders by locking the owner's change counter with SKIP LOCKED: the same row every write
of that owner locks first, so the lock order stays the one every write keeps (a claim on
the task rows themselves would lock them before the counter, the order that deadlocked
before the counter lock, see `tables.COUNTER_LOCKED`), and a process never waits for
another: an owner being served elsewhere is skipped, and its reminders are no longer armed
when the next scan comes. The update re-checks that each reminder is still armed and due,
so a reminder fires once even if two scans meet. On SQLite (one process, writes in turn)
the same statements run; FOR UPDATE is not SQLite's, and not needed there.

After downtime, a reminder missed by less than REMINDER_MAX_LATENESS_MINUTES fires at
start (late: its `reminded_at` is past its `remind_at`); an older one is skipped and
counted, never fired: a reminder of a meeting that ended hours ago is noise.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, Integer, String, and_, bindparam, false, func, or_, select, update

from backend.models import utc_now
from backend.store.database import Connection, Database, Query
from backend.store.housekeeping import repeat
from backend.store.tables import CHANGE_COUNTERS, TASKS

logger = logging.getLogger("backend.reminders")

# How often each process looks for due reminders: a reminder fires within this (and one
# scan's time) of its `remind_at`.
EVERY_SECONDS = 1.0
# Owners served per scan; a scan that finds this many runs again at once.
OWNERS_PER_SCAN = 100
# A reminder fired more than this after its time is late (the service was down).
LATE_AFTER = timedelta(minutes=1)

_NOW = bindparam("now", type_=DateTime(timezone=True))
_OLDEST = bindparam("oldest", type_=DateTime(timezone=True))

# Armed: the partial index `ix_tasks_armed_reminders` holds exactly these rows.
ARMED = and_(
    TASKS.c.remind_at.is_not(None),
    TASKS.c.completed == false(),
    TASKS.c.deleted_at.is_(None),
    or_(TASKS.c.reminded_at.is_(None), TASKS.c.reminded_at < TASKS.c.remind_at),
)
_DUE = and_(ARMED, TASKS.c.remind_at <= _NOW, TASKS.c.remind_at >= _OLDEST)

_DUE_OWNERS = Query(select(TASKS.c.user_id).where(_DUE).distinct().limit(bindparam("limit", type_=Integer)))
_CLAIM_OWNER = Query(
    select(CHANGE_COUNTERS.c.user_id)
    .where(CHANGE_COUNTERS.c.user_id == bindparam("owner_id", type_=String))
    .with_for_update(skip_locked=True)
)
_FIRE = Query(
    update(TASKS)
    .where(TASKS.c.user_id == bindparam("owner_id", type_=String), _DUE)
    .values(reminded_at=_NOW)
    .returning(TASKS.c.id, TASKS.c.remind_at)
)
_SINCE = bindparam("since", type_=DateTime(timezone=True))
_MISSED = Query(
    select(func.count().label("missed"))
    .select_from(TASKS)
    .where(ARMED, TASKS.c.remind_at < _OLDEST, TASKS.c.remind_at >= _SINCE)
)


@dataclass
class Reminders:
    """What this process's scheduler did, for the metrics."""

    fired: int = 0
    skipped: int = 0
    late: int = 0
    # Armed reminders older than this were counted as skipped by an earlier scan.
    counted_before: datetime = field(default_factory=lambda: datetime(1970, 1, 1, tzinfo=UTC))


async def fire_reminders(db: Database, reminders: Reminders, max_lateness: timedelta) -> bool:
    """One scan: fire every due reminder of up to OWNERS_PER_SCAN owners. True when another
    scan should follow at once: the scan was full and fired something (a full scan of
    owners all served elsewhere waits for the next second instead of spinning)."""
    now = utc_now()
    oldest = now - max_lateness
    missed = await db.fetch_one(_MISSED, oldest=oldest, since=reminders.counted_before)
    reminders.skipped += int(missed["missed"]) if missed else 0
    reminders.counted_before = oldest
    owners = await db.fetch_all(_DUE_OWNERS, now=now, oldest=oldest, limit=OWNERS_PER_SCAN)
    fired_any = False
    for owner in owners:

        async def fire(connection: Connection, owner_id: str = owner["user_id"]) -> list[datetime]:
            if await connection.fetch_one(_CLAIM_OWNER, owner_id=owner_id) is None:
                return []  # another process is serving this owner (or a write holds it): next scan
            rows = await connection.fetch_all(_FIRE, owner_id=owner_id, now=now, oldest=oldest)
            return [row["remind_at"] for row in rows]

        fired = await db.atomic(fire)
        if fired:
            db.user_wrote(owner["user_id"])  # the owner's streams, on SQLite (PostgreSQL NOTIFYs)
        fired_any = fired_any or bool(fired)
        reminders.fired += len(fired)
        reminders.late += sum(1 for remind_at in fired if now - remind_at > LATE_AFTER)
    return fired_any and len(owners) >= OWNERS_PER_SCAN


async def keep_reminding(db: Database, reminders: Reminders, max_lateness: timedelta) -> None:
    """Scan every EVERY_SECONDS until cancelled (at once again after a full scan)."""
    await repeat(
        lambda: fire_reminders(db, reminders, max_lateness), EVERY_SECONDS, "a reminder scan", logger
    )
