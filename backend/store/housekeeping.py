"""What the server purges by itself, so that no cron job needs setting up: request keys
older than IDEMPOTENCY_KEY_HOURS, tombstones (of tasks, then of lists) and events older than
SYNC_RETENTION_DAYS, and the
webhook deliveries queued for an endpoint no server names any more (`store/webhooks.py`), and
the event-stream registrations of processes gone without a word (`store/notifications.py`).

Every worker runs it: the purges are idempotent DELETEs by age, each an index range.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import NamedTuple

from backend.config import Settings
from backend.models import utc_now
from backend.store import changes, events, idempotency, lists, notifications, webhooks
from backend.store.database import Database, DatabaseUnavailableError

logger = logging.getLogger("backend.housekeeping")

# Often enough that nothing outlives its time by much; rarely enough to cost nothing.
EVERY_SECONDS = 600


class Purged(NamedTuple):
    idempotency_keys: int
    tombstones: int
    events: int
    webhook_deliveries: int = 0
    event_listeners: int = 0
    lists: int = 0


async def purge(database: Database, settings: Settings) -> Purged:
    """One round: what was deleted."""
    now = utc_now()
    retention = now - timedelta(days=settings.sync_retention_days)
    return Purged(
        idempotency_keys=await idempotency.purge(
            database, now - timedelta(hours=settings.idempotency_key_hours)
        ),
        tombstones=await changes.purge_tombstones(database, retention),
        # After the tasks' tombstones: a deleted list goes once the tasks deleted with it have.
        lists=await lists.purge(database, retention),
        events=await events.purge_events(database, retention),
        webhook_deliveries=await webhooks.forget_endpoints(database, now),
        event_listeners=(
            await notifications.forget_gone_listeners(database, now)
            if database.dialect == "postgresql"
            else 0
        ),
    )


async def keep_house(database: Database, settings: Settings) -> None:
    """Purge now and every EVERY_SECONDS, until cancelled."""

    async def round_() -> None:
        purged = await purge(database, settings)
        if any(purged):
            logger.info("purged", extra=purged._asdict())

    await repeat(round_, EVERY_SECONDS, "a purge", logger)


async def repeat(
    work: Callable[[], Awaitable[bool | None]], every_seconds: float, what: str, log: logging.Logger
) -> None:
    """The server's own rounds (the purge, the reminder scan): `work` now and every
    `every_seconds`, at once again when it returns True, until cancelled. Nothing else stops
    it: a database away is a warning, anything else is logged with its traceback, and the
    next round comes as planned (a background task that died would stop its work silently)."""
    while True:
        try:
            if await work():
                continue
        except DatabaseUnavailableError as error:
            log.warning("%s was skipped: the database is unreachable (%s)", what, error)
        except Exception:
            log.exception("%s failed; the next runs in %s s", what, every_seconds)
        await asyncio.sleep(every_seconds)
