"""Where a write's Idempotency-Key is answered: the answer stored in the same transaction as
the write's effect, replayed for a repeat (`answer`); and the entity tag of the task it returns.
The header's grammar is `domain.header_grammar`'s, its declaration `headers`', the storage
`store.idempotency`'s.
"""

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response

from backend.api.rest.headers import still_current
from backend.auth.tokens import TokenClaims
from backend.domain.header_grammar import (
    InvalidHeaderError,
    entity_tag,
    parse_idempotency_key,
)
from backend.errors import BadRequest, Conflict, ProblemError, Unprocessable
from backend.store import idempotency
from backend.store.database import Connection, Database, InTransaction


class KeyInUse(Conflict):
    def __init__(self) -> None:
        super().__init__("a request with this Idempotency-Key is still running; retry shortly for its answer")


class KeyReused(Unprocessable):
    def __init__(self) -> None:
        message = "this Idempotency-Key was used for another request (method, path or body); use a new key"
        super().__init__(
            f"the request is invalid: {message}",
            errors=[{"loc": ["header", "Idempotency-Key"], "msg": message, "type": "idempotency_key_reused"}],
        )


@dataclass(frozen=True, slots=True)
class Answer:
    """What a write answers, before it is sent (or stored for replays): its body a model, or
    JSON already written (a task, by `api.task_json`)."""

    status: int
    body: BaseModel | bytes | None = None
    location: str | None = None
    version: int | None = None  # the task's, for its ETag

    def json(self) -> bytes | None:
        if isinstance(self.body, BaseModel):
            return self.body.model_dump_json().encode()
        return self.body

    def response(self) -> Response:
        return _response(
            self.status,
            self.json(),
            self.location,
            None if self.version is None else entity_tag(self.version),
        )


def request_key(header: str) -> str:
    """The Idempotency-Key a request sent, or a 400 naming the header."""
    try:
        return parse_idempotency_key(header)
    except InvalidHeaderError as error:
        raise BadRequest(str(error)) from None


def read_answer(body: BaseModel | bytes, version: int, if_none_match: str | None) -> Response:
    """A read of one versioned thing (a task, a list): 304 with its ETag while the version in
    If-None-Match is current, else the body with it."""
    if still_current(if_none_match, version):
        return Response(status_code=304, headers={"ETag": entity_tag(version)})
    return Answer(200, body, version=version).response()


def _response(status: int, body: str | bytes | None, location: str | None, etag: str | None) -> Response:
    headers = {}
    if location is not None:
        headers["Location"] = location
    if etag is not None:
        headers["ETag"] = etag
    if body is None:
        return Response(status_code=status, headers=headers)
    return Response(body, status_code=status, headers=headers, media_type="application/json")


class Owned(Protocol):
    """A store scoped to its owner (`OwnedTasks`, `OwnedTags`)."""

    db: Database
    owner: TokenClaims

    def within(self, db: Database) -> Self: ...


OwnedT = TypeVar("OwnedT", bound=Owned)


async def answer(
    request: Request, owned: OwnedT, key_header: str | None, effect: Callable[[OwnedT], Awaitable[Answer]]
) -> Response:
    """Run the write; with an Idempotency-Key, store its answer in the same transaction as
    its effect, or, if the key was used before, replay that answer and change nothing.

    Nothing is stored for a write that fails (a 4xx of its own, a 5xx): the transaction
    is rolled back, and a retry runs afresh. A repeat is recognised by the key's row: if
    it exists the effect just run is rolled back; if it does not but cannot be taken, the
    first request is still running (409).
    """
    if key_header is None:
        return (await effect(owned)).response()
    key = request_key(key_header)
    owner_id = owned.owner.subject
    body_bytes = await request.body()
    sent = fingerprints(request, owner_id, body_bytes)

    async def keyed(connection: Connection) -> tuple[Answer, str | None, str | None]:
        done = await effect(owned.within(InTransaction(owned.db, connection)))
        written = done.json()
        body = None if written is None else written.decode()
        etag = None if done.version is None else entity_tag(done.version)
        stored = await idempotency.keep(
            owned.db,
            connection,
            owner_id=owner_id,
            key=key,
            fingerprint=sent[0],
            status=done.status,
            location=done.location,
            etag=etag,
            body=body,
        )
        if not stored:
            raise _Repeat
        return done, body, etag

    try:
        done, body, etag = await owned.db.atomic(keyed)
    except _Repeat:
        return await _replay(owned.db, owner_id, key, sent, KeyInUse())
    except ProblemError as error:
        # A repeat can fail where its first succeeded (the task it deleted is gone, the
        # version it matched has moved on): what the key stored is the answer.
        return await _replay(owned.db, owner_id, key, sent, error)
    return _response(done.status, body, done.location, etag)


async def _replay(
    db: Database, owner_id: str, key: str, fingerprints: tuple[str, str], otherwise: ProblemError
) -> Response:
    """The answer stored with the key; `otherwise` when there is none."""
    kept = await idempotency.read(db, owner_id=owner_id, key=key)
    if kept is None:
        raise otherwise
    if kept["fingerprint"] not in fingerprints:
        raise KeyReused()
    replay = _response(kept["status"], kept["body"], kept["location"], kept["etag"])
    replay.headers["Idempotent-Replayed"] = "true"
    return replay


class _Repeat(Exception):
    """The key was taken: roll the write back."""


def fingerprints(request: Request, owner_id: str, body: bytes) -> tuple[str, str]:
    """The request's fingerprint, and the one stored before keys named the resource.

    The path is the resource's, whatever its spelling: `/api/me/tasks` and
    `/api/<the user's id>/tasks` are one resource, so a retry through either is a replay.
    Keys stored (for IDEMPOTENCY_KEY_HOURS) before that was so took the path as sent: a
    repeat matching that one is a replay too.
    """
    path = request.url.path
    sent_as = f"/api/{request.path_params.get('user_id', '')}/"
    before, found, after = path.partition(sent_as)  # (behind a proxy, the path has a root before it)
    resource = f"{before}/api/{owner_id}/{after}" if found else path
    query = request.url.query
    return _fingerprint(request.method, resource, query, body), _fingerprint(
        request.method, path, query, body
    )


def _fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256(f"{method}\n{path}\n{query}\n".encode())
    digest.update(body)
    return digest.hexdigest()
