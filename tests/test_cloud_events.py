"""Events as CloudEvents: the attributes the README documents, for any user id and number
(hypothesis), read back by the `cloudevents` package's own reader; a late reminder says so."""

from datetime import UTC, datetime, timedelta

import pytest
from cloudevents.core.formats.json import JSONFormat
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from backend.api.event_stream import render
from backend.domain.cloud_events import cloud_event
from backend.store.events import OwnedEvents
from tests.conftest import Caller
from tests.test_reminders import at, scan

USER_IDS = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=255
)


@given(user_id=USER_IDS, sequence=st.integers(min_value=1, max_value=2**63 - 1), late=st.booleans())
def test_any_event_reads_back_as_the_cloud_event_it_was(user_id: str, sequence: int, late: bool) -> None:
    time = datetime(2026, 12, 2, 19, 0, 0, 123000, tzinfo=UTC)
    body = cloud_event(
        source="https://api.example.com",
        type_prefix="todo.",
        user_id=user_id,
        sequence=sequence,
        event_type="reminder.due",
        subject_id=17,
        time=time,
        data={"id": 17, "title": "x"},
        late=late,
    )
    event = JSONFormat().read(None, body)
    attributes = event.get_attributes()
    assert attributes["id"] == f"{user_id}-{sequence}"
    assert attributes["specversion"] == "1.0"
    assert attributes["type"] == "todo.reminder.due"
    assert attributes["subject"] == "17"
    assert attributes["userid"] == user_id
    # Ordered as strings as the numbers are ordered (the sequence extension's rule).
    assert attributes["sequence"] == f"{sequence:020d}"
    assert int(attributes["sequence"]) == sequence
    assert event.get_time() == time
    assert event.get_data() == {"id": 17, "title": "x"}
    assert ("late" in attributes) == late


@given(first=st.integers(1, 2**63 - 1), second=st.integers(1, 2**63 - 1))
def test_sequences_order_as_strings_as_they_do_as_numbers(first: int, second: int) -> None:
    def sequence(number: int) -> str:
        body = cloud_event(
            source="http://x",
            type_prefix="",
            user_id="u",
            sequence=number,
            event_type="task.created",
            subject_id=1,
            time=datetime.now(UTC),
            data={},
        )
        text: str = JSONFormat().read(None, body).get_attributes()["sequence"]
        return text

    assert (sequence(first) < sequence(second)) == (first < second)


@pytest.mark.anyio
async def test_a_reminder_fired_late_is_marked_late(app: FastAPI, alice: Caller) -> None:
    on_time = await alice.create(title="now", remind_at=at(-timedelta(seconds=5)))
    late = await alice.create(title="missed while down", remind_at=at(-timedelta(minutes=30)))
    await scan(app)
    rows = await OwnedEvents(app.state.database, alice.user_id).after(2, 10)
    rendered = {row["task_id"]: render(row, alice.user_id, app.state.event_hub.rendering) for row in rows}
    marks = {
        task_id: JSONFormat().read(None, event.body).get_attributes().get("late")
        for task_id, event in rendered.items()
    }
    assert marks == {on_time["id"]: None, late["id"]: True}
    assert {event.type for event in rendered.values()} == {"reminder.due"}
