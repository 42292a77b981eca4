"""The routes an orchestrator calls: liveness (`/health`) and readiness (`/ready`)."""

from fastapi import APIRouter, Request
from sqlalchemy import literal, select

from backend.app_state import state_of
from backend.errors import problem_responses
from backend.store.database import Query

READY = Query(select(literal(1)))

router = APIRouter(tags=["operations"])


@router.get("/health", operation_id="health")
async def health() -> dict[str, str]:
    """Liveness: the process answers. Touches no database."""
    return {"status": "ok"}


@router.get("/ready", operation_id="ready", responses=problem_responses(503))
async def ready(request: Request) -> dict[str, str]:
    """Readiness: the database answers a query."""
    await state_of(request).database.fetch_one(READY)
    return {"status": "ok"}
