"""The live event stream: `GET /api/{user_id}/events`, server-sent events (api/event_stream.py)."""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sse_starlette import EventSourceResponse

from backend.api.event_stream import stream_events
from backend.api.rest.dependencies import UserIdPath
from backend.app_state import state_of
from backend.auth.caller import authorised_owner
from backend.edge.middleware import lift_deadline
from backend.errors import BadRequest, TooManyStreams, problem_responses

MAX_EVENT_ID_DIGITS = 19  # a bigint

router = APIRouter(
    prefix="/api/{user_id}",
    tags=["events"],
    responses=problem_responses(400, 401, 403, 422, 429, 431, 500, 503),
)

_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: one per change of the user's tasks (`id:` its number, "
        "`event:` its type, `data:` the CloudEvent), a comment line every STREAM_HEARTBEAT_SECONDS "
        "(15), and `reset` when "
        "the position sent is no longer reachable.",
        "content": {
            "text/event-stream": {
                "schema": {"type": "string"},
                "example": 'id: 42\nevent: task.completed\ndata: {"specversion": "1.0", "id": "u1-42"}\n\n',
            }
        },
    }
}


@router.get(
    "/events",
    operation_id="streamEvents",
    response_class=EventSourceResponse,
    responses=_STREAM,
)
async def stream(
    request: Request,
    user_id: UserIdPath,
    last_event_id: Annotated[
        str | None,
        Header(
            description="The `id` of the last event received: the stream resumes after it. "
            "Without it (or empty), the stream starts with the next change.",
            # Documented, and checked below with a 400 naming the header (as If-Match is).
            json_schema_extra={"pattern": f"^[0-9]{{0,{MAX_EVENT_ID_DIGITS}}}$"},
        ),
    ] = None,
) -> EventSourceResponse:
    """Each change of the user's tasks as it commits, and each reminder as it fires, until
    the token expires (reconnect with a fresh one and `Last-Event-ID`)."""
    owner = await authorised_owner(request, user_id)
    after = None
    text = (last_event_id or "").strip()
    if text:
        if not text.isascii() or not text.isdigit() or len(text) > MAX_EVENT_ID_DIGITS:
            raise BadRequest("Last-Event-ID must be the id of an event of this stream (a whole number)")
        after = int(text)
    state = state_of(request)
    hub = state.event_hub
    cap = state.settings.streams_per_user
    if hub.count(owner.subject) >= cap:
        raise TooManyStreams(cap)
    lift_deadline(request.scope)
    return EventSourceResponse(
        stream_events(hub, owner.subject, after, owner.expires_at),
        ping=hub.heartbeat_seconds,
        # Not cached, not buffered by a proxy (sse-starlette adds X-Accel-Buffering: no).
        headers={"Cache-Control": "no-store"},
    )
