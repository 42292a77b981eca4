"""Request keys: the answer to a keyed write, stored in the same transaction as its effect,
and read back for a repeat. (The HTTP side, fingerprints and replays, is in `api.rest.idempotency`.)"""

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, bindparam, delete, func, select, true
from sqlalchemy.dialects import postgresql

from backend.models import metadata, utc_now
from backend.store.database import Connection, Database, Query, Row

KEYS = metadata.tables["idempotency_keys"]
_NEW_KEY = {
    "user_id": bindparam("owner_id"),
    "key": bindparam("idempotency_key"),
    "fingerprint": bindparam("fingerprint"),
    "status": bindparam("status"),
    "location": bindparam("location"),
    "etag": bindparam("etag"),
    "body": bindparam("body"),
    "created_at": bindparam("now", type_=DateTime(timezone=True)),
}


def _keep(guard: Any) -> Query:
    statement = select(*_NEW_KEY.values()).where(guard)
    return Query(
        postgresql.insert(KEYS)
        .from_select(list(_NEW_KEY), statement)
        .on_conflict_do_nothing(index_elements=["user_id", "key"])
        .returning(KEYS.c.key)
    )


# On PostgreSQL the key is also held by an advisory lock until the transaction ends:
# a repeat that arrives while the first still runs finds the lock taken (409) rather
# than waiting on the key's row. SQLite runs one write at a time: no lock to take.
_KEEP_LOCKED = _keep(func.pg_try_advisory_xact_lock(func.hashtextextended(bindparam("lock_name"), 0)))
_KEEP = _keep(true())
_READ = Query(
    select(KEYS.c.fingerprint, KEYS.c.status, KEYS.c.location, KEYS.c.etag, KEYS.c.body)
    .where(KEYS.c.user_id == bindparam("owner_id"))
    .where(KEYS.c.key == bindparam("idempotency_key"))
)
_PURGE = Query(delete(KEYS).where(KEYS.c.created_at < bindparam("before", type_=DateTime(timezone=True))))


async def keep(
    db: Database,
    connection: Connection,
    *,
    owner_id: str,
    key: str,
    fingerprint: str,
    status: int,
    location: str | None,
    etag: str | None,
    body: str | None,
) -> bool:
    """Store the answer, in the write's transaction; False if the key is taken (by an
    earlier request, or one still running): the caller rolls back and reads it."""
    kept = await connection.fetch_one(
        _KEEP_LOCKED if db.dialect == "postgresql" else _KEEP,  # an advisory lock: PostgreSQL only
        owner_id=owner_id,
        idempotency_key=key,
        lock_name=f"{owner_id}\x1f{key}",
        fingerprint=fingerprint,
        status=status,
        location=location,
        etag=etag,
        body=body,
        now=utc_now(),
    )
    return kept is not None


async def read(db: Database, *, owner_id: str, key: str) -> Row | None:
    return await db.fetch_one(_READ, owner_id=owner_id, idempotency_key=key)


async def purge(db: Database, before: datetime) -> int:
    """Forget the keys stored before `before`; how many."""
    return await db.execute(_PURGE, before=before)
