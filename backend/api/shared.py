"""What every door calls: the REST routes, the MCP tools, and any door to come.

Admission (the token, the rate limit, the key server's 503), the owner's stores, the
list and the stats, and the conditions a write carries: each rule is written once, here
or in the layers below (the request models, the store), and a door only translates its
own way of asking. Three fixes in one round were the same drift (a date filter, the
list's limits, the 429's wording, each right in one door only); `tests/test_doors.py`
sends the same inputs through both doors and expects the same answers.
"""

from dataclasses import dataclass

from backend.auth.rate_limit import RateLimiter
from backend.auth.tokens import InvalidTokenError, KeySetUnavailableError, TokenClaims, TokenVerifier
from backend.config import Settings
from backend.domain.cursors import Cursor, InvalidCursorError
from backend.domain.header_grammar import InvalidHeaderError, parse_entity_tags
from backend.errors import (
    BadRequest,
    Forbidden,
    NotAuthenticated,
    PreconditionRequired,
    ServiceUnavailable,
    TooManyRequests,
    Unprocessable,
)
from backend.models import PRIORITIES, ListQuery, PriorityCounts, TaskStats
from backend.store.changes import OwnedChanges
from backend.store.database import Database
from backend.store.lists import OwnedLists
from backend.store.tags import OwnedTags
from backend.store.task_filters import TaskFilters, sort_value
from backend.store.tasks import OwnedTasks, TaskPage, Versions

# In a path (or an MCP tool's `user_id`), the signed-in user, whatever their id.
ME = "me"


@dataclass(frozen=True, slots=True)
class Services:
    """What the doors share, built once per app (`app.create_app`)."""

    settings: Settings
    database: Database
    verifier: TokenVerifier
    limiter: RateLimiter | None

    async def admit(self, token: str | None) -> TokenClaims:
        """The verified caller, within their rate limit: the one admission of every door."""
        if token is None:
            raise NotAuthenticated("a Bearer token is required", token_sent=False)
        try:
            claims = await self.verifier.verify(token)
        except InvalidTokenError as error:
            raise NotAuthenticated(str(error), token_sent=True) from None
        except KeySetUnavailableError:
            # Not the client's fault, and not a verdict on the token: retry later.
            raise ServiceUnavailable(
                "Better Auth's key server (JWKS) is unreachable; retry shortly"
            ) from None
        if self.limiter is not None and (wait := await self.limiter.wait_seconds(claims.subject)) > 0:
            raise TooManyRequests(wait)
        return claims

    def tasks(self, owner: TokenClaims) -> OwnedTasks:
        """The owner's tasks, on the owner's share of the pool."""
        return OwnedTasks(
            self.database.for_user(owner.subject), owner, max_tasks=self.settings.max_tasks_per_user
        )

    def tags(self, owner: TokenClaims) -> OwnedTags:
        return OwnedTags(self.database.for_user(owner.subject), owner)

    def changes(self, owner: TokenClaims) -> OwnedChanges:
        return OwnedChanges(self.database.for_user(owner.subject), owner)

    def lists(self, owner: TokenClaims) -> OwnedLists:
        return OwnedLists(self.database.for_user(owner.subject), owner)


def check_owner(user_id: str, owner: TokenClaims, name: str = "the path's user id") -> None:
    """The user a request names is the signed-in one (or `me`). A 403, not a 404: the caller
    is known and the user plainly not theirs, so saying so leaks nothing."""
    if user_id != owner.subject and user_id != ME:
        raise Forbidden(f"{name} is not the signed-in user")


# --- writes -------------------------------------------------------------------------------


def if_match_versions(if_match: str | None, *, required: bool) -> Versions:
    """The versions an If-Match header lets a write overwrite: None for no condition (no
    header, or `*`); 428 without one when REQUIRE_IF_MATCH is on."""
    if if_match is None:
        if required:
            raise PreconditionRequired(
                "this server requires If-Match on writes (REQUIRE_IF_MATCH): send the task's ETag, "
                'or * to write whatever its version ("If-Match: *")'
            )
        return None
    try:
        tags = parse_entity_tags(if_match, "If-Match")
    except InvalidHeaderError as error:
        raise BadRequest(str(error)) from None
    # Strong comparison: a weak tag never matches, and an empty set matches nothing.
    return None if tags.any else tags.versions()


def expected_version(version: int | None, *, required: bool) -> Versions:
    """The version an agent's `expected_version` lets a write overwrite, as If-Match would."""
    if version is None:
        if required:
            raise PreconditionRequired(
                "this server requires expected_version on writes (REQUIRE_IF_MATCH): give the task's "
                "version, as get_task or list_tasks shows it"
            )
        return None
    return frozenset({version})


# --- reads --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    """A page of the list, with what a door needs to say about it."""

    page: TaskPage
    next_cursor: str | None  # where the next page starts, if tasks follow
    more: bool


async def list_tasks(tasks: OwnedTasks, query: ListQuery) -> Listing:
    """The page the query asks for (by offset, or after a cursor)."""
    order = query.sort_order
    after = None
    if query.cursor is not None:
        try:
            after = Cursor.decode(query.cursor, query.sort, order)
        except InvalidCursorError as error:
            raise Unprocessable.at(("query", "cursor"), str(error)) from None
    filters = TaskFilters(
        status=query.status,
        priorities=frozenset(query.priority),
        tags=tuple(query.tag),
        due_before=query.due_before,
        due_after=query.due_after,
        overdue=query.overdue,
        remind_before=query.remind_before,
        words=query.words,
        list_id=query.list_id,
        parent=query.parent_id,
    )
    page = await tasks.page(
        filters=filters, sort=query.sort, order=order, limit=query.limit, offset=query.offset, cursor=after
    )
    more = page.more if after is not None else query.offset + len(page.tasks) < page.total
    following = None
    if more and page.tasks:
        last = page.tasks[-1]
        following = Cursor(query.sort, order, sort_value(query.sort, last), last["id"]).encode()
    return Listing(page=page, next_cursor=following, more=more)


async def task_stats(tasks: OwnedTasks, time_zone: str, list_id: int | None = None) -> TaskStats:
    """Counts of the owner's tasks (of one list of theirs, if given), as every door shows them."""
    row = await tasks.stats(time_zone, list_id)
    return TaskStats(
        total=row["total"],
        completed=row["completed"],
        pending=row["total"] - row["completed"],
        overdue=row["overdue"],
        due_today=row["due_today"],
        by_priority=PriorityCounts(**{name: row[name] for name in PRIORITIES}),
    )
