"""What the server purges by itself, so that no cron job needs setting up: request keys
older than IDEMPOTENCY_KEY_HOURS, and tombstones and events older than SYNC_RETENTION_DAYS.

Every worker runs it: the purges are idempotent DELETEs by age, each an index range.
"""

import asyncio
import logging
from datetime import timedelta
from typing import NamedTuple

from backend.config import Settings
from backend.models import utc_now
from backend.store import changes, events, idempotency
from backend.store.database import Database, DatabaseUnavailableError

logger = logging.getLogger("backend.housekeeping")

# Often enough that nothing outlives its time by much; rarely enough to cost nothing.
EVERY_SECONDS = 600


class Purged(NamedTuple):
    idempotency_keys: int
    tombstones: int
    events: int


async def purge(database: Database, settings: Settings) -> Purged:
    """One round: what was deleted."""
    now = utc_now()
    retention = now - timedelta(days=settings.sync_retention_days)
    return Purged(
        idempotency_keys=await idempotency.purge(
            database, now - timedelta(hours=settings.idempotency_key_hours)
        ),
        tombstones=await changes.purge_tombstones(database, retention),
        events=await events.purge_events(database, retention),
    )


async def keep_house(database: Database, settings: Settings) -> None:
    """Purge now and every EVERY_SECONDS, until cancelled. Nothing stops it but cancellation:
    a database away is a warning, anything else is logged with its traceback, and the next
    round comes as planned."""
    while True:
        try:
            purged = await purge(database, settings)
            if any(purged):
                logger.info("purged", extra=purged._asdict())
        except DatabaseUnavailableError as error:
            logger.warning("purge skipped: the database is unreachable (%s)", error)
        except Exception:
            logger.exception("a purge failed; the next runs in %s s", EVERY_SECONDS)
        await asyncio.sleep(EVERY_SECONDS)
