"""What the server purges by itself, so that no cron job needs setting up: request keys
older than IDEMPOTENCY_KEY_HOURS, and tombstones older than SYNC_RETENTION_DAYS.

Every worker runs it: the purges are idempotent DELETEs by age, each an index range.
"""

import asyncio
import logging
from datetime import timedelta

from backend.config import Settings
from backend.models import utc_now
from backend.store import changes, idempotency
from backend.store.database import Database, DatabaseUnavailableError

logger = logging.getLogger("backend.housekeeping")

# Often enough that nothing outlives its time by much; rarely enough to cost nothing.
EVERY_SECONDS = 600


async def purge(database: Database, settings: Settings) -> tuple[int, int]:
    """One round: (request keys, tombstones) deleted."""
    now = utc_now()
    keys = await idempotency.purge(database, now - timedelta(hours=settings.idempotency_key_hours))
    tombstones = await changes.purge_tombstones(database, now - timedelta(days=settings.sync_retention_days))
    return keys, tombstones


async def keep_house(database: Database, settings: Settings) -> None:
    """Purge now and every EVERY_SECONDS, until cancelled; a database away is a warning, not a crash."""
    while True:
        try:
            keys, tombstones = await purge(database, settings)
            if keys or tombstones:
                logger.info("purged", extra={"idempotency_keys": keys, "tombstones": tombstones})
        except DatabaseUnavailableError as error:
            logger.warning("purge skipped: the database is unreachable (%s)", error)
        await asyncio.sleep(EVERY_SECONDS)
