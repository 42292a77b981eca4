"""A user's events: every change of their tasks, numbered as sync numbers it.

The rows are written by trigger in the statement that makes the change (see the migration
`a7b8c9d0e1f2`), so an event exists exactly when its change committed, and its number is
the change's place in the owner's commit order (`store/changes.py` says why). The server
purges them after SYNC_RETENTION_DAYS, as it purges tombstones.
"""

from datetime import datetime

from sqlalchemy import DateTime, Table, bindparam, delete

from backend.models import metadata
from backend.store.database import Database, Query

EVENTS: Table = metadata.tables["events"]

_PURGE = Query(
    delete(EVENTS).where(EVENTS.c.occurred_at < bindparam("before", type_=DateTime(timezone=True)))
)


async def purge_events(db: Database, before: datetime) -> int:
    """Delete for good the events that occurred before `before`; how many."""
    return await db.execute(_PURGE, before=before)
