"""A user's tags: listed with their counts, renamed (merging on a clash), deleted.

Tags are created and linked by setting a task's tags (`store.tasks`, through the
`task_tag_sets` trigger). A tag on no task is not listed; it keeps its row, and
its spelling, for when it is used again.

Every tag write takes the owner's change counter first, as every task write does
(`tables.COUNTER_LOCKED`), so a user's writes to tags and tasks run one at a time and in one
lock order: two renames onto one name merge rather than clash (a unique violation, a
500, and tasks left without the tag), and a rename racing tagged creates cannot deadlock.
"""

from typing import Any

from sqlalchemy import String, bindparam, delete, exists, false, func, literal_column, select, update
from sqlalchemy.orm import aliased

from backend.auth.tokens import TokenClaims
from backend.errors import NotFound
from backend.models import fold
from backend.store.database import Connection, Database, Query, Row
from backend.store.tables import CHANGE_COUNTERS, COUNTER_LOCKED, TAGS, TASK_TAGS, TASKS

OWNED_TAG = (TAGS.c.id == bindparam("tag_id")) & (TAGS.c.user_id == bindparam("owner_id"))


class TagNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("no tag with this id belongs to this user")


_LIST = Query(
    select(
        TAGS.c.id,
        TAGS.c.name,
        func.count().label("task_count"),
        func.count().filter(TASKS.c.completed == false()).label("pending_count"),
    )
    .select_from(
        TAGS.join(TASK_TAGS, TASK_TAGS.c.tag_id == TAGS.c.id).join(TASKS, TASKS.c.id == TASK_TAGS.c.task_id)
    )
    .where(TAGS.c.user_id == bindparam("owner_id"))
    .group_by(TAGS.c.id, TAGS.c.name, TAGS.c.name_folded)
    .order_by(TAGS.c.name_folded, TAGS.c.id)
)

# Renaming onto another of the owner's tags (case-insensitively) merges into that one.
_OTHER = aliased(TAGS, name="other")
_CLASHING = (
    select(_OTHER.c.id)
    .where(_OTHER.c.user_id == bindparam("owner_id"))
    .where(_OTHER.c.name_folded == bindparam("new_folded", type_=String))
    .where(_OTHER.c.id != bindparam("tag_id"))
    .scalar_subquery()
)
_MINE = exists().where(OWNED_TAG)
_LINKED = aliased(TASK_TAGS, name="linked")
# 1. The renamed tag's tasks that lack the other tag get it instead (each keeps it once).
_MOVE_LINKS = Query(
    update(TASK_TAGS)
    .where(TASK_TAGS.c.tag_id == bindparam("tag_id"))
    .where(_MINE)
    .where(_CLASHING.is_not(None))
    .where(TASK_TAGS.c.task_id.not_in(select(_LINKED.c.task_id).where(_LINKED.c.tag_id == _CLASHING)))
    .values(tag_id=_CLASHING)
)
# 2. Then the renamed tag goes (with the links left, duplicates of the other's), naming the survivor.
_DROP_MERGED = Query(
    delete(TAGS).where(OWNED_TAG).where(_CLASHING.is_not(None)).returning(_CLASHING.label("survivor"))
)


# Written out with every column qualified: see `sql._TaskTagNames`.
_COUNTS: list[Any] = [
    literal_column(
        "(SELECT count(*) FROM task_tags JOIN tasks ON tasks.id = task_tags.task_id "
        "WHERE task_tags.tag_id = tags.id)"
    ).label("task_count"),
    literal_column(
        "(SELECT count(*) FROM task_tags JOIN tasks ON tasks.id = task_tags.task_id "
        "WHERE task_tags.tag_id = tags.id AND NOT tasks.completed)"
    ).label("pending_count"),
]


# 3. The surviving tag takes the new name, and answers with its counts.
_RENAME = Query(
    update(TAGS)
    .where(OWNED_TAG)
    .values(name=bindparam("new_name"), name_folded=bindparam("new_folded"))
    .returning(TAGS.c.id, TAGS.c.name, *_COUNTS)
)
_DELETE = Query(delete(TAGS).where(OWNED_TAG, COUNTER_LOCKED).returning(TAGS.c.id))
# A statement of its own, before the rename's: under READ COMMITTED each later statement then
# sees what a rename that held the lock before it committed (a statement that waited for
# the lock inside itself would still read with the snapshot it started with).
_LOCK_COUNTER = Query(
    select(CHANGE_COUNTERS.c.seq).where(CHANGE_COUNTERS.c.user_id == bindparam("owner_id")).with_for_update()
)


class OwnedTags:
    """One user's tags, every method scoped to `owner`."""

    __slots__ = ("db", "owner")

    def __init__(self, db: Database, owner: TokenClaims) -> None:
        self.db = db
        self.owner = owner

    def within(self, db: Database) -> "OwnedTags":
        return OwnedTags(db, self.owner)

    async def list(self) -> list[Row]:
        """The tags on at least one task, by name case-insensitively."""
        return await self.db.fetch_all(_LIST, owner_id=self.owner.subject)

    async def rename(self, tag_id: int, name: str) -> Row:
        """Rename the tag; onto another tag's name (case-insensitively), merge into that one,
        each task keeping it once. At most three statements in one transaction (four on
        PostgreSQL, which locks the owner's counter first)."""
        parameters = {
            "owner_id": self.owner.subject,
            "tag_id": tag_id,
            "new_name": name,
            "new_folded": fold(name),
        }

        async def rename(connection: Connection) -> Row | None:
            if self.db.dialect == "postgresql":
                await connection.fetch_one(_LOCK_COUNTER, **parameters)
            await connection.execute(_MOVE_LINKS, **parameters)
            merged = await connection.fetch_one(_DROP_MERGED, **parameters)
            survivor = parameters if merged is None else {**parameters, "tag_id": merged["survivor"]}
            return await connection.fetch_one(_RENAME, **survivor)

        tag = await self.db.atomic(rename)
        if tag is None:
            raise TagNotFound()
        return tag

    async def delete(self, tag_id: int) -> None:
        """Delete the tag; its tasks stay, without it."""
        if await self.db.fetch_one(_DELETE, owner_id=self.owner.subject, tag_id=tag_id) is None:
            raise TagNotFound()
