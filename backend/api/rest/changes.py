"""Incremental sync: what changed in the user's tasks and lists since a position
(store/changes.py)."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from backend.api.rest.dependencies import OwnedChangesDep
from backend.app_state import state_of
from backend.domain.cursors import InvalidCursorError, SyncPosition
from backend.errors import Gone, Unprocessable, problem_responses
from backend.models import TaskChanges, utc_now

MAX_CHANGES = 500

router = APIRouter(
    prefix="/api/{user_id}/tasks",
    tags=["sync"],
    responses=problem_responses(401, 403, 422, 429, 431, 500, 503),
)


@router.get("/changes", operation_id="getTaskChanges", responses=problem_responses(410))
async def get_task_changes(
    request: Request,
    changes: OwnedChangesDep,
    since: Annotated[
        str | None,
        Query(
            max_length=200,
            description="`next_since` of the previous answer; omit it for a full sync "
            "(every task, no deletions).",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_CHANGES, description="Most changes in one answer.")] = 100,
) -> TaskChanges:
    """Every task and list created or changed since `since`, as it is now, and every task and
    list deleted since; page with `next_since` while `has_more`."""
    read_at = utc_now()
    position = None
    retention_days = state_of(request).settings.sync_retention_days
    if since is not None:
        try:
            position = SyncPosition.decode(since, read_at)
        except InvalidCursorError as error:
            raise Unprocessable.at(("query", "since"), str(error)) from None
        if read_at - position.at > timedelta(days=retention_days):
            raise Gone(
                f"since is older than SYNC_RETENTION_DAYS ({retention_days:g}): "
                "deletions from before it may be forgotten; start over with a full sync (no since)"
            )
    found = await changes.after(None if position is None else position.seq, limit)
    if position is not None and position.seq > found.counter:
        raise Unprocessable.at(
            ("query", "since"), "since is ahead of this user's changes: not a position this API issued"
        )
    if found.has_more:
        # Mid-way: the changes after this page may be as old as the position asked from, so
        # its time is kept (retention counts from it), and a pause past it is a 410.
        following = SyncPosition(seq=found.last_seq, at=read_at if position is None else position.at)
    else:
        # Every change up to the counter has been read, as of this read.
        following = SyncPosition(seq=max(found.counter, found.last_seq), at=read_at)
    return TaskChanges.model_validate(
        {
            "tasks": found.tasks,
            "deleted": found.deleted,
            "lists": found.lists,
            "deleted_lists": found.deleted_lists,
            "next_since": following.encode(),
            "has_more": found.has_more,
        }
    )
