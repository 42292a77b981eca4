"""The live event stream: each of a user's events as it commits, to every stream they hold.

One `Feed` per user with streams in this process reads the user's new events once per
wake-up, renders each once, and hands it to every one of those streams; a thousand streams
of one person cost one query per change, not a thousand. Wake-ups come from
`store/notifications.py` (PostgreSQL's NOTIFY, or SQLite in-process), and every
heartbeat (STREAM_HEARTBEAT_SECONDS) regardless, so a lost notification delays an event,
never loses it.

Each stream reads for itself only to catch up: from its `Last-Event-ID` when it opens
(registered with the feed first, so nothing committed meanwhile slips between the two),
and whenever it finds a gap in the numbers (numbers have no gaps, so a gap is something
missed) or falls QUEUE_SIZE events behind. Every event goes out in number order, once.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sse_starlette import ServerSentEvent

from backend.domain.cloud_events import cloud_event
from backend.models import DeletedList, DeletedTask, ListPublic, TaskPublic
from backend.store.database import Database, DatabaseUnavailableError, Row
from backend.store.events import OwnedEvents
from backend.store.notifications import ListenerRegistry
from backend.store.reminders import LATE_AFTER

logger = logging.getLogger("backend.events")

PAGE = 100  # events read at once
QUEUE_SIZE = 1000  # events a stream may fall behind before it reads for itself


@dataclass(frozen=True, slots=True)
class Rendering:
    """Where events say they come from (`cloud_events`)."""

    source: str  # PUBLIC_URL
    type_prefix: str  # EVENT_TYPE_PREFIX


@dataclass(frozen=True, slots=True)
class StreamEvent:
    sequence: int
    type: str
    body: str  # the CloudEvent's JSON


def render(row: Row, user_id: str, rendering: Rendering) -> StreamEvent:
    """An event read by `OwnedEvents.after`, as the stream and webhooks send it."""
    data: dict[str, Any]
    late = False
    if row["event_type"].startswith("list."):
        data = _list_data(row)
    elif row["id"] is None or row["deleted_at"] is not None:
        deleted_at = row["deleted_at"] or row["occurred_at"]  # a purged tombstone: its event's time
        data = DeletedTask(id=row["task_id"], deleted_at=deleted_at).model_dump(mode="json")
    else:
        data = TaskPublic.model_validate(row).model_dump(mode="json", by_alias=True)
        if row["event_type"] == "reminder.due" and row["remind_at"] and row["reminded_at"]:
            late = row["reminded_at"] - row["remind_at"] > LATE_AFTER
    body = cloud_event(
        source=rendering.source,
        type_prefix=rendering.type_prefix,
        user_id=user_id,
        sequence=row["sequence"],
        event_type=row["event_type"],
        subject_id=row["task_id"],
        time=row["occurred_at"],
        data=data,
        late=late,
    )
    return StreamEvent(sequence=row["sequence"], type=row["event_type"], body=body.decode())


def _list_data(row: Row) -> dict[str, Any]:
    """A list's event's data: the list as the REST API returns it now, or `{"id", "deleted_at"}`."""
    if row["the_list_id"] is None or row["the_list_deleted_at"] is not None:
        deleted_at = row["the_list_deleted_at"] or row["occurred_at"]
        return DeletedList(id=row["task_id"], deleted_at=deleted_at).model_dump(mode="json")
    fields = {name: row[f"the_list_{name}"] for name in ListPublic.model_fields}
    return ListPublic.model_validate(fields).model_dump(mode="json")


# What a stream's queue holds: an event, or None for "read for yourself" (it fell behind).
Queued = StreamEvent | None


@dataclass(eq=False)
class Subscriber:
    queue: "asyncio.Queue[Queued]" = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE + 1))

    def offer(self, event: Queued) -> None:
        if event is not None and self.queue.qsize() < QUEUE_SIZE:
            self.queue.put_nowait(event)
            return
        # Behind by a whole queue (or told to): drop what waits, and read from the database.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Feed:
    """One user's new events in this process, read once for all of their streams."""

    def __init__(self, hub: "EventHub", user_id: str) -> None:
        self.hub = hub
        self.user_id = user_id
        self.subscribers: set[Subscriber] = set()
        # Read up to here; None until the first stream has caught up and says where it is.
        self.last: int | None = None
        self._pulling: asyncio.Task[None] | None = None
        self._again = False

    def wake(self) -> None:
        if self.last is None:
            return  # the first stream is still catching up, and wakes the feed when done
        if self._pulling is not None:
            self._again = True
            return
        self._pulling = asyncio.create_task(self._pull())

    def caught_up(self, position: int) -> None:
        if self.last is None:
            self.last = position
            self.wake()  # whatever committed since that stream's last read

    async def _pull(self) -> None:
        # On the shared pool, not the person's share: a feed reads for all of the person's
        # streams, none of their requests. Each read is one short, index-backed statement.
        events = OwnedEvents(self.hub.database, self.user_id)
        try:
            while True:
                self._again = False
                assert self.last is not None
                rows = await events.after(self.last, PAGE)
                for row in rows:
                    event = render(row, self.user_id, self.hub.rendering)
                    for subscriber in self.subscribers:
                        subscriber.offer(event)
                    self.last = event.sequence
                if len(rows) < PAGE and not self._again:
                    return
        except DatabaseUnavailableError as error:
            # The next wake-up (at the latest the heartbeat's) tries again.
            logger.warning("cannot read events for a stream", extra={"error": str(error)})
        except Exception:
            logger.exception("reading events for a stream failed")
        finally:
            self._pulling = None


class EventHub:
    """The feeds of this process, by user, and what wakes them."""

    def __init__(self, database: Database, rendering: Rendering, heartbeat_seconds: float = 15) -> None:
        self.database = database
        self.rendering = rendering
        self.heartbeat_seconds = heartbeat_seconds  # a comment on each stream, a read for each feed
        self.feeds: dict[str, Feed] = {}
        self.on_first_stream: Callable[[], None] | None = None  # starts the listener
        # PostgreSQL's: who this process holds streams of, so that only their changes NOTIFY.
        self.registry: ListenerRegistry | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._registering: set[asyncio.Task[None]] = set()

    @property
    def streams(self) -> int:
        return sum(len(feed.subscribers) for feed in self.feeds.values())

    def wake(self, user_id: str) -> None:
        feed = self.feeds.get(user_id)
        if feed is not None:
            feed.wake()

    def wake_all(self) -> None:
        for feed in list(self.feeds.values()):
            feed.wake()

    def subscribe(self, user_id: str) -> tuple[Feed, Subscriber]:
        if self.on_first_stream is not None:
            self.on_first_stream()
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._beat(), name="todo-api event heartbeat")
        feed = self.feeds.get(user_id)
        if feed is None:
            feed = self.feeds[user_id] = Feed(self, user_id)
            if self.registry is not None:
                self._register(self.registry.add(user_id, lambda: user_id in self.feeds))
        subscriber = Subscriber()
        feed.subscribers.add(subscriber)
        return feed, subscriber

    def unsubscribe(self, feed: Feed, subscriber: Subscriber) -> None:
        feed.subscribers.discard(subscriber)
        user_id = feed.user_id
        if not feed.subscribers and self.feeds.get(user_id) is feed:
            del self.feeds[user_id]
            if self.registry is not None:
                self._register(self.registry.remove(user_id, lambda: user_id not in self.feeds))

    def _register(self, change: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(change)
        self._registering.add(task)  # held until done: a task nobody holds may be collected
        task.add_done_callback(self._registering.discard)

    def count(self, user_id: str) -> int:
        feed = self.feeds.get(user_id)
        return 0 if feed is None else len(feed.subscribers)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            self.wake_all()
            if self.registry is not None and self.feeds:
                await self.registry.alive()

    async def aclose(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        for task in list(self._registering):
            task.cancel()
        if self.registry is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.registry.clear(), self.database.timeout_seconds)


def _sse(event: StreamEvent) -> ServerSentEvent:
    return ServerSentEvent(data=event.body, event=event.type, id=str(event.sequence))


async def stream_events(
    hub: EventHub, user_id: str, last_event_id: int | None, expires_at: float | None
) -> AsyncIterator[ServerSentEvent]:
    """The user's events after `last_event_id` (or from now), until `expires_at` (the token's
    expiry) or the client leaves. A position the events no longer reach gets one `reset`."""
    feed, subscriber = hub.subscribe(user_id)
    events = OwnedEvents(hub.database, user_id)  # the shared pool, as the feed's (`Feed._pull`)
    try:
        try:
            position = await events.position()
        except DatabaseUnavailableError:
            return  # the client retries (EventSource does so by itself)
        after = position.last if last_event_id is None else last_event_id
        if position.reset_from(after):
            yield ServerSentEvent(
                event="reset",
                id=str(position.last),
                data='{"reason": "events after the position sent are no longer kept, or were never '
                'given: sync in full (GET /tasks/changes without since), then go on from this id"}',
            )
            after = position.last
        catching_up = True
        while True:
            if catching_up:
                try:
                    rows = await events.after(after, PAGE)
                except DatabaseUnavailableError:
                    return
                for row in rows:
                    event = render(row, user_id, hub.rendering)
                    yield _sse(event)
                    after = event.sequence
                if len(rows) == PAGE:
                    continue
                catching_up = False
                feed.caught_up(after)
            remaining = None if expires_at is None else expires_at - time.time()
            if remaining is not None and remaining <= 0:
                return  # the token has expired: the client comes back with a fresh one
            try:
                queued = await asyncio.wait_for(subscriber.queue.get(), remaining)
            except TimeoutError:
                return
            if queued is None or queued.sequence > after + 1:
                catching_up = True  # behind, or a gap: read what was missed
            elif queued.sequence == after + 1:
                yield _sse(queued)
                after = queued.sequence
    finally:
        hub.unsubscribe(feed, subscriber)
