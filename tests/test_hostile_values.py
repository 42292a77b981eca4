"""Values a client can send that were each a 500, now each a 4xx naming what was wrong (both
databases, both doors): time zones that are not canonical names, instants UTC cannot hold,
ids that are not plain decimal bigints, entity tags that are not ASCII versions, tokens with
numbers out of range, NUL through MCP."""

import base64
import json
import time
from typing import Any

import pytest

from tests.conftest import Caller, assert_problem

pytestmark = pytest.mark.anyio

NOT_ZONES = [
    "Europe",
    "America",
    "posix/Europe/Berlin",
    "right/UTC",
    "localtime",
    "Europe/",
    "../UTC",
    "UTC\x00",
]


@pytest.mark.parametrize("zone", NOT_ZONES)
async def test_a_time_zone_is_a_canonical_iana_name_wherever_one_is_taken(
    alice: Caller, alice_task: dict[str, Any], zone: str
) -> None:
    problem = assert_problem(await alice.request("GET", "/stats", params={"tz": zone}), 422)
    assert problem["errors"][0]["loc"] == ["query", "tz"]
    problem = assert_problem(await alice.request("POST", json={"title": "t", "time_zone": zone}), 422)
    assert problem["errors"][0]["loc"] == ["body", "time_zone"]
    problem = assert_problem(
        await alice.request("PATCH", f"/{alice_task['id']}", json={"time_zone": zone}), 422
    )
    assert problem["errors"][0]["loc"] == ["body", "time_zone"]
    for tool, arguments in [
        ("get_stats", {"tz": zone}),
        ("add_task", {"title": "t", "time_zone": zone}),
        ("update_task", {"task_id": alice_task["id"], "time_zone": zone}),
    ]:
        assert "IANA time zone" in (await alice.tool(tool, arguments)).refused, tool
    assert (
        await alice.request("GET", "/stats", params={"tz": "America/Argentina/Buenos_Aires"})
    ).status_code == 200


@pytest.mark.parametrize("moment", ["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00"])
async def test_an_instant_utc_cannot_hold_is_422_in_bodies_and_filters(alice: Caller, moment: str) -> None:
    for field in ("due_at", "remind_at"):
        problem = assert_problem(await alice.request("POST", json={"title": "t", field: moment}), 422)
        assert problem["errors"][0]["loc"] == ["body", field]
        assert "range" in problem["errors"][0]["msg"]
    for name in ("due_before", "due_after", "remind_before"):
        problem = assert_problem(await alice.request("GET", params={name: moment}), 422)
        assert problem["errors"][0]["loc"] == ["query", name]
        assert name in (await alice.tool("list_tasks", {name: moment})).refused
    assert (await alice.request("GET")).json() == []


async def test_the_ends_of_the_range_in_utc_are_stored(alice: Caller) -> None:
    late = await alice.create(title="late", due_at="9999-12-31T23:59:59Z")
    early = await alice.create(title="early", due_at="0001-01-01T00:00:01Z")
    assert (late["due_at"], early["due_at"]) == ("9999-12-31T23:59:59Z", "0001-01-01T00:00:01Z")
    # The very first and last instants are PostgreSQL's -infinity and infinity to asyncpg.
    for moment in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"):
        assert_problem(await alice.request("POST", json={"title": "t", "due_at": moment}), 422)
    listed = await alice.request("GET", params={"sort": "due", "due_before": "9999-12-31T23:59:59Z"})
    assert [task["title"] for task in listed.json()] == ["early", "late"]


async def test_a_recurring_task_at_the_end_of_time_can_always_be_completed(alice: Caller) -> None:
    task = await alice.create(
        title="eve", due_at="9999-12-30T12:00:00Z", remind_at="9999-12-30T11:00:00Z", recurrence="FREQ=DAILY"
    )
    first = await alice.request("PATCH", f"/{task['id']}/complete")
    assert first.status_code == 200, first.text
    last = (await alice.request("GET", f"/{first.json()['next_occurrence_id']}")).json()
    assert last["due_at"] == "9999-12-31T12:00:00Z"
    done = await alice.request("PATCH", f"/{last['id']}/complete")
    assert done.status_code == 200, done.text
    assert done.json()["next_occurrence_id"] is None  # nothing comes after the end of time
    # The same at the start of time, in a zone west of UTC (whose wall clock is year 0).
    start = await alice.create(
        title="dawn", due_at="0001-01-01T01:00:00Z", recurrence="FREQ=YEARLY", time_zone="America/New_York"
    )
    assert (await alice.request("PATCH", f"/{start['id']}/complete")).status_code == 200


@pytest.mark.parametrize(
    "task_id", ["+5", "05", "5.0", "5_0", " 5", "\u0665", "0", "-1", "9223372036854775808", "1e3"]
)
async def test_a_path_id_is_a_plain_decimal_bigint(alice: Caller, task_id: str) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        body = {"title": "x"} if method == "PATCH" else None
        problem = assert_problem(await alice.request(method, f"/{task_id}", json=body), 422)
        assert problem["errors"][0]["loc"] == ["path", "task_id"]
    problem = assert_problem(
        await alice.client.patch(f"/api/me/tags/{task_id}", json={"name": "x"}, headers=alice.headers), 422
    )
    assert problem["errors"][0]["loc"] == ["path", "tag_id"]


async def test_an_id_beyond_a_bigint_is_refused_by_every_tool(alice: Caller) -> None:
    for tool in ("get_task", "update_task", "complete_task", "delete_task"):
        arguments: dict[str, Any] = {"task_id": 2**63}
        if tool == "update_task":
            arguments["title"] = "x"
        assert (await alice.tool(tool, arguments)).refused.startswith("invalid arguments: task_id"), tool


@pytest.mark.parametrize(
    "tag", ['"²"', '"\u0661"', '"01"', '"+1"', '"99999999999"', '"9223372036854775808"', '"1 "']
)
async def test_an_entity_tag_that_is_not_this_apis_version_matches_nothing(
    alice: Caller, alice_task: dict[str, Any], tag: str
) -> None:
    task = f"/{alice_task['id']}"
    assert alice_task["version"] == 1
    header = [*alice.headers.items(), ("If-Match", tag.encode())]  # UTF-8, read as Latin-1
    for method, path, body in [
        ("PATCH", task, {"title": "x"}),
        ("PATCH", f"{task}/complete", None),
        ("DELETE", task, None),
    ]:
        response = await alice.client.request(method, alice.url(path), json=body, headers=header)
        # 412 (no version matches), or 400 for a tag the grammar refuses (a space); never 500.
        assert_problem(response, 400 if " " in tag else 412)
    read = await alice.client.get(
        alice.url(task), headers=[*alice.headers.items(), ("If-None-Match", tag.encode())]
    )
    assert read.status_code == (400 if " " in tag else 200)  # not 304: `"01"` is not `"1"`
    assert (await alice.request("GET", task)).json()["version"] == 1


async def test_a_latin1_digit_in_an_entity_tag_is_no_version(
    alice: Caller, alice_task: dict[str, Any]
) -> None:
    # "²" as the single byte a Latin-1 header carries, which was read as a digit.
    response = await alice.client.patch(
        alice.url(f"/{alice_task['id']}/complete"), headers=[*alice.headers.items(), ("If-Match", b'"\xb2"')]
    )
    assert_problem(response, 412)


def token(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("sort", "cursor"),
    [
        ("created", {"s": "created", "o": "desc", "v": "2026-01-01T00:00:00Z", "i": 2**63}),
        ("created", {"s": "created", "o": "desc", "v": "2026-01-01T00:00:00Z", "i": 0}),
        ("created", {"s": "created", "o": "desc", "v": "2026-01-01T00:00:00Z", "i": -1}),
        ("created", {"s": "created", "o": "desc", "v": "9999-12-31T23:59:59-05:00", "i": 1}),
        ("created", {"s": "created", "o": "desc", "v": "2026-01-01T00:00:00Z", "i": True}),
        ("priority", {"s": "priority", "o": "desc", "v": 2**70, "i": 1}),
    ],
)
async def test_a_cursor_with_numbers_out_of_range_is_422(
    alice: Caller, sort: str, cursor: dict[str, Any]
) -> None:
    problem = assert_problem(await alice.request("GET", params={"sort": sort, "cursor": token(cursor)}), 422)
    assert problem["errors"][0]["loc"] == ["query", "cursor"]


@pytest.mark.parametrize(
    "position",
    [
        {"n": 2**63, "t": 1_700_000_000},
        {"n": -1, "t": 1_700_000_000},
        {"n": 0, "t": 10**20},
        {"n": 0, "t": -1},
        {"n": 0, "t": 4_000_000_000},  # the year 2096: a position from the future
        {"n": 0, "t": 1.5},
        {"n": True, "t": 1_700_000_000},
        {"n": 1_000_000, "t": 1_900_000_000},  # ahead of the user's changes
    ],
)
async def test_a_sync_position_the_server_never_issued_is_422(
    alice: Caller, position: dict[str, Any]
) -> None:
    await alice.create(title="one change")
    if position["t"] == 1_900_000_000:
        position["t"] = int(time.time())
    problem = assert_problem(await alice.request("GET", "/changes", params={"since": token(position)}), 422)
    assert problem["errors"][0]["loc"] == ["query", "since"]


@pytest.mark.parametrize(
    ("tool", "arguments", "named"),
    [
        ("add_task", {"title": "a\x00b"}, "title"),
        ("add_task", {"title": "t", "description": "\x00"}, "description"),
        ("add_task", {"title": "t", "tags": ["a\x00"]}, "tags"),
        ("list_tasks", {"q": "\x00"}, "q"),
        ("list_tasks", {"tag": ["\x00"]}, "tag"),
        ("get_stats", {"tz": "\x00"}, "tz"),
        ("add_task", {"title": "t", "recurrence": "FREQ=DAILY\x00"}, "recurrence"),
    ],
)
async def test_nul_through_mcp_is_refused_naming_the_argument(
    alice: Caller, tool: str, arguments: dict[str, Any], named: str
) -> None:
    refusal = (await alice.tool(tool, arguments)).refused
    assert named in refusal
    assert refusal != "an unexpected error occurred"
    assert (await alice.request("GET")).json() == []
