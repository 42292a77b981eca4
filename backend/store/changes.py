"""Incremental sync: what changed in a user's tasks after a position, in commit order.

Every write to a task takes the next number of its owner's change counter
(`change_counters.seq`), by trigger, inside the writing transaction; the counter's
row stays locked until that transaction ends, so the owner's next write waits for
it and gets a larger number only after it has committed. Numbers are therefore
assigned in commit order, per user: a reader that sees the change numbered n has
already been able to see every change numbered below n. Reading "after n" in
number order thus never skips a write that commits late, nor one with the same
timestamp as another; a timestamp taken before commit could do both.
(PostgreSQL's `pg_current_xact_id()` watermarks would also work, but need the
snapshot's xmin carried in the token and are PostgreSQL-only; the counter works the
same on SQLite, where writes take turns anyway.)

The page and the counter are read by one statement, so from one snapshot: a page that
ends the changes is followed by the counter's value itself (every change up to it has
been read), so asking again at once returns nothing, even after tasks that were created
and deleted before a full sync.

Lists are numbered by the same counter (migration a3b4c5d6e7f8): the lists changed in the range
the task page covers (at most MAX_LISTS a person) come with it, read by a second statement
bounded above by where the page ends. Numbers are given in commit order, so every list change
numbered up to that bound had committed when the first statement read: the second reads
exactly those, however much commits between the two.

A deleted task is a tombstone, returned as `{"id", "deleted_at"}`, until it is
purged `SYNC_RETENTION_DAYS` after its deletion; a position older than that may have
missed purged tombstones, and is refused (410) so that the client starts over.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String, bindparam, delete, select, true

from backend.auth.tokens import TokenClaims
from backend.store.database import Database, Query, Row
from backend.store.lists import LIST_COLUMNS
from backend.store.tables import CHANGE_COUNTERS, TASK_COLUMNS, TASK_LISTS, TASKS


def _sync_query(from_scratch: bool) -> Query:
    """The page after a position, tombstones included (or, from scratch, the live tasks
    only: a client starting over has nothing to delete), in the order the changes
    committed, each row with the owner's counter; one row with the counter alone when the
    page is empty."""
    page = (
        select(*TASK_COLUMNS, TASKS.c.change_seq, TASKS.c.deleted_at)
        .where(TASKS.c.user_id == bindparam("owner_id"))
        .where(TASKS.c.change_seq > bindparam("since"))
        .order_by(TASKS.c.change_seq)
        .limit(bindparam("limit"))
    )
    if from_scratch:
        page = page.where(TASKS.c.deleted_at.is_(None))
    chosen = page.subquery("page")
    owner = select(bindparam("owner_id", type_=String).label("user_id")).subquery("owner")
    return Query(
        select(CHANGE_COUNTERS.c.seq.label("counter_seq"), *chosen.c)
        .select_from(
            owner.outerjoin(CHANGE_COUNTERS, CHANGE_COUNTERS.c.user_id == owner.c.user_id).outerjoin(
                chosen, true()
            )
        )
        .order_by(chosen.c.change_seq)
    )


def _lists_query(from_scratch: bool) -> Query:
    """The person's lists changed in (`since`, `upto`], tombstones included unless from scratch."""
    changed = (
        select(*LIST_COLUMNS, TASK_LISTS.c.deleted_at)
        .where(TASK_LISTS.c.user_id == bindparam("owner_id", type_=String))
        .where(TASK_LISTS.c.change_seq > bindparam("since", type_=BigInteger))
        .where(TASK_LISTS.c.change_seq <= bindparam("upto", type_=BigInteger))
        .order_by(TASK_LISTS.c.change_seq)
    )
    return Query(changed.where(TASK_LISTS.c.deleted_at.is_(None)) if from_scratch else changed)


LIST_QUERIES = {False: _lists_query(False), True: _lists_query(True)}
# By whether the sync starts from scratch.
SYNC_QUERIES = {False: _sync_query(False), True: _sync_query(True)}
_PURGE = Query(delete(TASKS).where(TASKS.c.deleted_at < bindparam("before", type_=DateTime(timezone=True))))


@dataclass(frozen=True, slots=True)
class Changes:
    tasks: Sequence[Row]
    deleted: Sequence[Row]
    last_seq: int  # the last change read, or the position asked from
    has_more: bool
    counter: int  # the owner's change counter, as of the same read
    lists: Sequence[Row] = ()
    deleted_lists: Sequence[Row] = ()


class OwnedChanges:
    """One user's changes, scoped to `owner`."""

    __slots__ = ("db", "owner")

    def __init__(self, db: Database, owner: TokenClaims) -> None:
        self.db = db
        self.owner = owner

    async def after(self, since: int | None, limit: int) -> Changes:
        """Up to `limit` changes after change number `since` (None: every live task)."""
        query = SYNC_QUERIES[since is None]
        rows = await self.db.fetch_all(query, owner_id=self.owner.subject, since=since or 0, limit=limit + 1)
        counter = (rows[0]["counter_seq"] if rows else None) or 0
        rows = [row for row in rows if row["id"] is not None]
        has_more = len(rows) > limit
        rows = rows[:limit]
        last_seq = rows[-1]["change_seq"] if rows else since or 0
        tasks, deleted = _split(rows)
        # Up to where this page ends: the counter itself once every change is read.
        upto = last_seq if has_more else max(counter, last_seq)
        changed_lists = await self.db.fetch_all(
            LIST_QUERIES[since is None],
            owner_id=self.owner.subject,
            since=-1 if since is None else since,  # from scratch: lists never changed since the migration too
            upto=upto,
        )
        lists, deleted_lists = _split(changed_lists)
        return Changes(
            tasks=tasks,
            deleted=deleted,
            last_seq=last_seq,
            has_more=has_more,
            counter=counter,
            lists=lists,
            deleted_lists=deleted_lists,
        )


def _split(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """Rows as they are, and tombstones as `{"id", "deleted_at"}`."""
    alive, deleted = [], []
    for row in rows:
        if row["deleted_at"] is None:
            alive.append(row)
        else:
            deleted.append({"id": row["id"], "deleted_at": row["deleted_at"]})
    return alive, deleted


async def purge_tombstones(db: Database, before: datetime) -> int:
    """Delete for good the tasks deleted before `before`; how many."""
    return await db.execute(_PURGE, before=before)
