"""Opaque tokens, as pure functions: a list's keyset cursor and a sync position. No I/O.

Both are base64url JSON. They are not secret and need not be signed: each only
says where a user's own reading stopped, and every query stays scoped to the
owner whatever a token says. A token that does not parse is an error naming
its parameter.
"""

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from backend.models import MAX_ID, POSITION_MAX_LENGTH, SortOrder, TaskSort

_DATES = ("created", "updated", "due")
# How far ahead of this server's clock a sync position's time may be (another server's
# clock may run a little ahead): beyond it, the position was never issued.
CLOCK_SKEW_SECONDS = 60


class InvalidCursorError(ValueError):
    """A cursor or sync token that cannot be read; the message is safe to show."""


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _decode(token: str, name: str) -> dict[str, Any]:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise InvalidCursorError(f"{name} is not a token this API issued") from None
    if not isinstance(data, dict):
        raise InvalidCursorError(f"{name} is not a token this API issued")
    return data


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the last task's sort value and id, for the sort and order it
    was read in. The next page starts strictly after it, so tasks created or deleted
    between pages neither shift nor repeat what is left."""

    sort: TaskSort
    order: SortOrder
    value: datetime | str | int | None
    task_id: int

    def encode(self) -> str:
        value = self.value.isoformat() if isinstance(self.value, datetime) else self.value
        return _encode({"s": self.sort, "o": self.order, "v": value, "i": self.task_id})

    @classmethod
    def decode(cls, token: str, sort: TaskSort, order: SortOrder) -> "Cursor":
        data = _decode(token, "cursor")
        if data.get("s") != sort or data.get("o") != order:
            raise InvalidCursorError("cursor was issued for another sort or order; keep them while paging")
        task_id, value = data.get("i"), data.get("v")
        if not _is_id(task_id):
            raise InvalidCursorError("cursor is not a token this API issued")
        if sort in _DATES and value is not None:
            try:
                value = datetime.fromisoformat(str(value)).astimezone(UTC)
            except (ValueError, OverflowError):
                raise InvalidCursorError("cursor is not a token this API issued") from None
        elif not _fits(sort, value):
            raise InvalidCursorError("cursor is not a token this API issued")
        if value is None and sort != "due":
            raise InvalidCursorError("cursor is not a token this API issued")
        assert isinstance(task_id, int)
        return cls(sort=sort, order=order, value=value, task_id=task_id)


def _is_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def _fits(sort: TaskSort, value: object) -> bool:
    if sort == "priority":
        return isinstance(value, int) and 0 <= value <= 3
    if sort == "title":
        return isinstance(value, str)
    if sort == "position":
        return isinstance(value, str) and len(value) <= POSITION_MAX_LENGTH
    return True


@dataclass(frozen=True, slots=True)
class SyncPosition:
    """How far a client's sync has read: the owner's change number, and a time at or before
    which none of the changes after that number happened. Retention is measured from that
    time: a position whose changes may include purged tombstones is refused (410)."""

    seq: int
    at: datetime

    def encode(self) -> str:
        # Whole seconds, rounded down: a position only ever looks older than it is.
        return _encode({"n": self.seq, "t": int(self.at.timestamp())})

    @classmethod
    def decode(cls, token: str, now: datetime) -> "SyncPosition":
        """The position; an error for one this API never issued (out-of-range numbers, a time
        ahead of the clock)."""
        data = _decode(token, "since")
        seq, at = data.get("n"), data.get("t")
        if (
            not isinstance(seq, int)
            or isinstance(seq, bool)
            or not 0 <= seq <= MAX_ID
            or not isinstance(at, int)
            or isinstance(at, bool)
            or not 0 <= at <= now.timestamp() + CLOCK_SKEW_SECONDS
        ):
            raise InvalidCursorError("since is not a token this API issued")
        return cls(seq=seq, at=datetime.fromtimestamp(at, UTC))
