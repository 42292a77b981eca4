"""The webhook queue: endpoints, and the deliveries the events trigger queues for them.

Each delivery is claimed by one process with a lease (`leased_until`), not a lock held across
the HTTP call, which would keep a pooled connection for up to WEBHOOK_TIMEOUT_SECONDS: the
claim is one statement that picks rows with SKIP LOCKED and leases them. A process that dies
mid-delivery leaves a lease that runs out, and the delivery is tried again (at least once).

Only the head of each user's queue is claimed (no earlier delivery of that user to that
endpoint waits), so one user's events reach an endpoint in number order; a failing head
holds back that user's later events until it succeeds or is given up, and nobody else's.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    Table,
    and_,
    bindparam,
    delete,
    exists,
    false,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import insert

from backend.models import metadata, utc_now
from backend.store.database import Connection, Database, Query

ENDPOINTS: Table = metadata.tables["webhook_endpoints"]
DELIVERIES: Table = metadata.tables["webhook_deliveries"]

# An endpoint no server has named for this long is no longer anyone's: its queue is dropped.
FORGOTTEN_AFTER = timedelta(hours=1)

_NOW = bindparam("now", type_=DateTime(timezone=True))
_ENDPOINT = bindparam("endpoint", type_=Integer)
_KEY = and_(
    DELIVERIES.c.endpoint_id == _ENDPOINT,
    DELIVERIES.c.user_id == bindparam("owner_id", type_=String),
    DELIVERIES.c.sequence == bindparam("seq", type_=BigInteger),
)

# postgresql.insert compiles for SQLite too: both speak ON CONFLICT.
_REGISTER = Query(
    insert(ENDPOINTS)
    .values(url=bindparam("endpoint_url", type_=String), active=true(), seen_at=_NOW)
    .on_conflict_do_update(index_elements=["url"], set_={"active": true(), "seen_at": _NOW})
    .returning(ENDPOINTS.c.id)
)
_FORGET = Query(
    update(ENDPOINTS)
    .where(ENDPOINTS.c.active, ENDPOINTS.c.seen_at < bindparam("before", type_=DateTime(timezone=True)))
    .values(active=false())
)
_DROP_FORGOTTEN = Query(
    delete(DELIVERIES).where(
        DELIVERIES.c.endpoint_id.in_(select(ENDPOINTS.c.id).where(ENDPOINTS.c.active == false()))
    )
)

_earlier = DELIVERIES.alias("earlier")
_due = (
    select(DELIVERIES.c.endpoint_id, DELIVERIES.c.user_id, DELIVERIES.c.sequence)
    .where(
        DELIVERIES.c.endpoint_id == _ENDPOINT,
        DELIVERIES.c.next_attempt_at <= _NOW,
        or_(DELIVERIES.c.leased_until.is_(None), DELIVERIES.c.leased_until < _NOW),
        ~exists().where(
            _earlier.c.endpoint_id == DELIVERIES.c.endpoint_id,
            _earlier.c.user_id == DELIVERIES.c.user_id,
            _earlier.c.sequence < DELIVERIES.c.sequence,
        ),
    )
    .order_by(DELIVERIES.c.next_attempt_at)
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True)
    .cte("due")
)
_CLAIM = Query(
    update(DELIVERIES)
    .where(
        DELIVERIES.c.endpoint_id == _due.c.endpoint_id,
        DELIVERIES.c.user_id == _due.c.user_id,
        DELIVERIES.c.sequence == _due.c.sequence,
    )
    .values(
        leased_until=bindparam("lease_until", type_=DateTime(timezone=True)),
        attempts=DELIVERIES.c.attempts + 1,
    )
    .returning(DELIVERIES.c.user_id, DELIVERIES.c.sequence, DELIVERIES.c.attempts)
)
_DELIVERED = Query(delete(DELIVERIES).where(_KEY))
_RETRY = Query(
    update(DELIVERIES)
    .where(_KEY)
    .values(next_attempt_at=bindparam("retry_at", type_=DateTime(timezone=True)), leased_until=None)
)


@dataclass(frozen=True, slots=True)
class Claimed:
    user_id: str
    sequence: int
    attempts: int  # including this one


async def register_endpoints(db: Database, urls: list[str]) -> dict[str, int]:
    """Each URL as an active endpoint, seen now; their ids."""
    ids = {}
    for url in urls:
        row = await db.fetch_one(_REGISTER, endpoint_url=url, now=utc_now())
        assert row is not None  # RETURNING, inserted or updated
        ids[url] = int(row["id"])
    return ids


async def forget_endpoints(db: Database, now: datetime) -> int:
    """Endpoints no server has named for FORGOTTEN_AFTER made inactive (no more deliveries
    queued for them), and what was queued for inactive ones dropped; how many dropped."""
    await db.execute(_FORGET, before=now - FORGOTTEN_AFTER)
    return await db.execute(_DROP_FORGOTTEN)


async def claim(db: Database, endpoint_id: int, limit: int, lease: timedelta) -> list[Claimed]:
    """Up to `limit` due deliveries to the endpoint, each the head of its user's queue,
    leased to this process for `lease`."""
    now = utc_now()

    async def claiming(connection: Connection) -> list[Claimed]:
        rows = await connection.fetch_all(
            _CLAIM, endpoint=endpoint_id, now=now, limit=limit, lease_until=now + lease
        )
        return [Claimed(row["user_id"], int(row["sequence"]), int(row["attempts"])) for row in rows]

    return await db.atomic(claiming)


async def delivered(db: Database, endpoint_id: int, delivery: Claimed) -> None:
    """Off the queue: delivered, given up, or its event purged."""
    key = {"endpoint": endpoint_id, "owner_id": delivery.user_id, "seq": delivery.sequence}
    await db.execute(_DELIVERED, **key)


async def retry_at(db: Database, endpoint_id: int, delivery: Claimed, when: datetime) -> None:
    key = {"endpoint": endpoint_id, "owner_id": delivery.user_id, "seq": delivery.sequence}
    await db.execute(_RETRY, retry_at=when, **key)
