"""Every error the API returns is RFC 9457 `application/problem+json`, rendered here."""

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from backend.app_state import state_of
from backend.store.database import DatabaseUnavailableError, UserBusyError

logger = logging.getLogger("backend.errors")

PROBLEM_JSON = "application/problem+json"
RETRY_AFTER_SECONDS = 5


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ValidationIssue] | None = None


class ProblemError(Exception):
    """Base of the API's own errors: each knows its status; `detail` is shown to the client."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    headers: Mapping[str, str] = MappingProxyType({})
    errors: list[ValidationIssue] | None = None

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if headers is not None:
            self.headers = headers


class BadRequest(ProblemError):
    status = HTTPStatus.BAD_REQUEST


class NotAuthenticated(ProblemError):
    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, detail: str, *, token_sent: bool) -> None:
        # RFC 6750 §3: name the error only when a token was sent.
        challenge = f'Bearer error="invalid_token", error_description="{detail}"' if token_sent else "Bearer"
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(ProblemError):
    status = HTTPStatus.FORBIDDEN


class NotFound(ProblemError):
    status = HTTPStatus.NOT_FOUND


class TooManyRequests(ProblemError):
    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, retry_after_seconds: float) -> None:
        seconds = max(1, math.ceil(retry_after_seconds))
        super().__init__(
            f"rate limit exceeded for this user; retry in {seconds} s", headers={"Retry-After": str(seconds)}
        )


class UserBusy(ProblemError):
    """Too many of one user's requests at the database at once, for too long (see `store.database`)."""

    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, share: int) -> None:
        super().__init__(
            f"this user already has {share} requests at the database, the most one user may have at "
            "once (half of DATABASE_POOL_SIZE), and this one waited its turn too long; retry shortly",
            headers={"Retry-After": "1"},
        )


class TooManyStreams(ProblemError):
    """One user's open event streams on this server, at STREAMS_PER_USER (`api/rest/events.py`)."""

    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, cap: int) -> None:
        super().__init__(
            f"this user already has {cap} open event streams on this server, the most allowed "
            "(STREAMS_PER_USER); close one, or retry shortly",
            headers={"Retry-After": "5"},
        )


class ChatRateLimited(ProblemError):
    """One person's chat messages, at CHAT_REQUESTS_PER_MINUTE (`api/chat`)."""

    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, retry_after_seconds: float, per_minute: float) -> None:
        seconds = max(1, math.ceil(retry_after_seconds))
        super().__init__(
            f"this user has sent {per_minute:g} chat messages in the last minute, the most allowed "
            f"(CHAT_REQUESTS_PER_MINUTE); retry in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


class Conflict(ProblemError):
    status = HTTPStatus.CONFLICT


class Gone(ProblemError):
    status = HTTPStatus.GONE


class Unprocessable(ProblemError):
    """A 422 found after validation (against what is stored), shaped as validation's are."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY

    def __init__(self, detail: str, *, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.errors = [ValidationIssue.model_validate(error) for error in errors]

    @classmethod
    def at(cls, loc: Sequence[str], message: str, error_type: str = "value_error") -> "Unprocessable":
        """One invalid input, named as validation names it: "the request is invalid: query.q"."""
        return cls(
            f"the request is invalid: {'.'.join(loc)}",
            errors=[{"loc": list(loc), "msg": message, "type": error_type}],
        )


class PreconditionRequired(ProblemError):
    status = HTTPStatus.PRECONDITION_REQUIRED


class ServiceUnavailable(ProblemError):
    status = HTTPStatus.SERVICE_UNAVAILABLE
    headers = MappingProxyType({"Retry-After": str(RETRY_AFTER_SECONDS)})


class GatewayTimeout(ProblemError):
    status = HTTPStatus.GATEWAY_TIMEOUT


def problem_response(
    status: int,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: list[ValidationIssue] | None = None,
) -> JSONResponse:
    problem = Problem(title=HTTPStatus(status).phrase, status=status, detail=detail, errors=errors)
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_JSON,
    )


async def _problem_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.status, exc.detail, headers=exc.headers, errors=exc.errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette's own errors: unknown routes, 405s, and anything raised as HTTPException.
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    headers = dict(exc.headers or {})
    if exc.status_code == HTTPStatus.NOT_FOUND and detail == "Not Found":
        detail = "no route matches this path"
    elif exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
        detail = "this method is not allowed on this path"
        # Starlette names only the first route matching the path; several share each path here.
        headers["Allow"] = ", ".join(_allowed_methods(request))
    elif exc.status_code == HTTPStatus.BAD_REQUEST and detail == "There was an error parsing the body":
        detail = "the request body could not be read; send UTF-8 JSON"
    return problem_response(exc.status_code, detail, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    path = request.scope["path"]
    index = state_of(request).route_methods
    return sorted({method for pattern, methods in index if pattern.match(path) for method in methods})


def index_route_methods(routes: Iterable[object]) -> list[tuple[re.Pattern[str], set[str]]]:
    """Each route's path pattern with its methods, for the `Allow` header of a 405."""
    index = []
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(path, str) and methods:
            index.append((compile_path(path)[0], set(methods)))
    return index


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    issues = [_issue(error) for error in exc.errors()]
    if any(issue.type == "json_invalid" for issue in issues):
        position = issues[0].loc[-1]
        detail = f"the request body is not valid JSON (error at character {position})"
    else:
        where = ", ".join(sorted({".".join(map(str, issue.loc)) for issue in issues}))
        detail = f"the request is invalid: {where}" if where else "the request is invalid"
    return problem_response(HTTPStatus.UNPROCESSABLE_ENTITY, detail, errors=issues)


def _issue(error: Mapping[str, Any]) -> ValidationIssue:
    # Only location, message and type: pydantic's `input` and `ctx` could echo
    # back whatever the client sent, secrets included.
    loc: Sequence[str | int] = error.get("loc", ())
    return ValidationIssue(
        loc=list(loc),
        msg=str(error.get("msg", "")).removeprefix("Value error, "),
        type=str(error.get("type", "")),
    )


async def _database_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    # The cause's type (a timeout, a refused connection, ...) and never its message,
    # which may carry the database's host.
    logger.warning("database unavailable: %s", exc)
    return problem_response(
        HTTPStatus.SERVICE_UNAVAILABLE,
        "the database is unreachable; retry shortly",
        headers=ServiceUnavailable.headers,
    )


async def _user_busy(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UserBusyError)
    problem = UserBusy(exc.share)
    return problem_response(problem.status, problem.detail, headers=problem.headers)


def log_unexpected_error(error: BaseException) -> None:
    """A bug: the traceback goes to the log, never to the client (`edge.middleware.EdgeMiddleware`
    answers the 500)."""
    logger.error("unhandled error", exc_info=error)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(DatabaseUnavailableError, _database_unavailable)
    app.add_exception_handler(UserBusyError, _user_busy)


# What each documented error looks like, so a reader of the docs (or a generated
# client's author) sees a real answer rather than a schema's placeholder.
_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {"detail": "the request body could not be read; send UTF-8 JSON"},
    401: {"detail": "the token has expired"},
    403: {"detail": "the path's user id is not the signed-in user"},
    404: {"detail": "no task with this id belongs to this user"},
    409: {
        "detail": "this user already has 100000 tasks, the most one user may keep (MAX_TASKS_PER_USER); "
        "or: a request with this Idempotency-Key is still running"
    },
    410: {"detail": "since is older than SYNC_RETENTION_DAYS (30): start over with a full sync"},
    412: {
        "detail": "the task has changed since the version in If-Match; read it again (its ETag), then retry"
    },
    413: {"detail": "the request body is larger than 65536 bytes"},
    422: {
        "detail": "the request is invalid: body.title",
        "errors": [
            {
                "loc": ["body", "title"],
                "msg": "String should have at least 1 character",
                "type": "string_too_short",
            }
        ],
    },
    428: {"detail": "this server requires If-Match on writes (REQUIRE_IF_MATCH)"},
    429: {"detail": "rate limit exceeded for this user; retry in 1 s"},
    431: {"detail": "the request line and headers are larger than 16384 bytes"},
    500: {"detail": "an unexpected error occurred"},
    503: {"detail": "the database is unreachable; retry shortly"},
    504: {"detail": "the model did not finish answering within CHAT_TIMEOUT_SECONDS (60 s)"},
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error statuses, each with an example of its own; `app` files them
    under `application/problem+json`."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        phrase = HTTPStatus(status).phrase
        example = {"type": "about:blank", "title": phrase, "status": status, **_EXAMPLES[status]}
        responses[status] = {
            "model": Problem,
            "description": phrase,
            "content": {"application/json": {"example": example}},
        }
    return responses
