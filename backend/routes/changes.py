"""Incremental sync: what changed in the user's tasks since a position (store/changes.py)."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from backend.cursors import InvalidTokenError, SyncPosition
from backend.dependencies import OwnedChangesDep
from backend.errors import Gone, Unprocessable, problem_responses
from backend.models import TaskChanges, utc_now

MAX_CHANGES = 500

router = APIRouter(
    prefix="/api/{user_id}/tasks",
    tags=["sync"],
    responses=problem_responses(401, 403, 422, 429, 500, 503),
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
    """Every task created or changed since `since`, as it is now, and every task deleted since;
    page with `next_since` while `has_more`."""
    position = None
    if since is not None:
        try:
            position = SyncPosition.decode(since)
        except InvalidTokenError as error:
            raise Unprocessable.at(("query", "since"), str(error)) from None
        retention = timedelta(days=request.app.state.sync_retention_days)
        if utc_now() - position.at > retention:
            raise Gone(
                f"since is older than SYNC_RETENTION_DAYS ({request.app.state.sync_retention_days:g}): "
                "deletions from before it may be forgotten; start over with a full sync (no since)"
            )
    read_at = utc_now()
    found = await changes.after(None if position is None else position.seq, limit)
    return TaskChanges.model_validate(
        {
            "tasks": found.tasks,
            "deleted": found.deleted,
            "next_since": SyncPosition(seq=found.last_seq, at=read_at).encode(),
            "has_more": found.has_more,
        }
    )
