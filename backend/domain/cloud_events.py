"""A user's event as a CloudEvents 1.0 JSON object: what the stream sends as `data:` and a
webhook as its body. No I/O: the store reads the event and its task, this shapes them.

- `id`: `<user id>-<sequence>`, unique per source and the same on every redelivery.
- `source`: PUBLIC_URL; `type`: EVENT_TYPE_PREFIX + the event's type (`todo.task.created`).
- `subject`: the task's id (a `list.*` event's: the list's); `time`: when the change was made.
- `userid` and `sequence` (extension attributes): the owner and the change's number. The
  CloudEvents sequence extension spells a sequence as a lexicographically ordered string,
  so it is zero-padded to 20 digits; `int(...)` gives the number back.
- `late` (a `reminder.due` only, when true): fired more than a minute after its time.
- `data`: the task (or list) as the REST API returns it now, or `{"id", "deleted_at"}` once
  deleted.
  An event is rendered when it is read, so an event superseded by a later change carries the
  newer state (as sync does); its `type` still says what that change did.
"""

from datetime import datetime
from typing import Any

from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

CONTENT_TYPE = JSONFormat.CONTENT_TYPE  # application/cloudevents+json
SEQUENCE_DIGITS = 20  # a bigint's 19 digits, and one to spare
_FORMAT = JSONFormat()


def event_id(user_id: str, sequence: int) -> str:
    return f"{user_id}-{sequence}"


def cloud_event(
    *,
    source: str,
    type_prefix: str,
    user_id: str,
    sequence: int,
    event_type: str,
    subject_id: int,
    time: datetime,
    data: dict[str, Any],
    late: bool = False,
) -> bytes:
    """The event as CloudEvents' JSON format, validated by the `cloudevents` package."""
    attributes: dict[str, Any] = {
        "id": event_id(user_id, sequence),
        "source": source,
        "type": type_prefix + event_type,
        "subject": str(subject_id),
        "time": time,
        "datacontenttype": "application/json",
        "userid": user_id,
        "sequence": f"{sequence:0{SEQUENCE_DIGITS}d}",
    }
    if late:
        attributes["late"] = True
    return _FORMAT.write(CloudEvent(attributes, data))
