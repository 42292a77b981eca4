"""A hostile-value battery: hypothesis sends values a client controls (dates at the ends of
the range, with offsets; names that are not canonical time zones; integers beyond 64 bits;
digits that are not ASCII; NUL and control characters; over-long lists; wrong types) to every
parameter of every REST route and every argument of every MCP tool, on both databases.
Whatever it sends, the answer is never a 5xx: a 4xx problem naming what was wrong, or a
success. (tests/test_hostile_values.py pins the findings; this looks for the next ones.)
"""

import json
import string
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backend.api.mcp.tools import TOOLS
from backend.domain.recurrence import time_zone_names
from tests.conftest import Caller, hypothesis_battery

pytestmark = pytest.mark.anyio

BATTERY = hypothesis_battery(80)

EDGE_DATES = [
    "9999-12-31T23:59:59-05:00",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00+05:00",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00-14:00",
    "2026-02-30T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-01-01T24:00:00Z",
    "+10000-01-01T00:00:00Z",
    "2026-01-01T00:00:00+24:00",
    "2026-01-01T00:00:00",
    "2026-01-01",
    "1e400",
]
ODD_ZONES = [
    "Europe",
    "posix/Europe/Berlin",
    "right/UTC",
    "localtime",
    "Factory",
    "UTC\x00",
    "../../etc/passwd",
    "",
]
ODD_NUMBERS = [
    "+5",
    "05",
    "5.0",
    "5_0",
    " 5",
    "\u0665",
    "\u00b2",
    "\uff15",
    "0x10",
    "NaN",
    "-0",
    "1e3",
    "9" * 40,
]
ODD_TEXT = [
    "\x00",
    "a\x00b",
    "\x1f",
    "\x7f",
    "\u200b",
    "\ud800",
    "\ufeff",
    "\u202e",
    "\U0001d518",  # a Fraktur capital U
    "\u0000" * 3,
    "ﷺ" * 200,
]

integers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]),
)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(ODD_TEXT + ODD_NUMBERS + ODD_ZONES + EDGE_DATES),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=190, max_size=300),
)
dates = st.one_of(
    st.sampled_from(EDGE_DATES),
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.tuples(st.datetimes(), st.integers(-23, 23)).map(
        lambda pair: f"{pair[0].isoformat()}{pair[1]:+03d}:00"
    ),
)
zones = st.one_of(
    st.sampled_from(ODD_ZONES), st.sampled_from(sorted(time_zone_names())), st.text(max_size=70)
)
rules = st.one_of(
    st.from_regex(
        r"(RRULE:)?FREQ=(DAILY|WEEKLY|MONTHLY|YEARLY)(;[A-Z]{2,10}=[-+,0-9A-Z\u00b2\u0665]{1,12}){0,4}",
        fullmatch=True,
    ),
    texts,
)
scalars = st.one_of(texts, integers, dates, zones, st.booleans(), st.none(), st.floats())
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=8),
    st.lists(texts, min_size=150, max_size=260),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
# For each field or argument name, what is likely to hurt it, and anything at all.
by_name: dict[str, st.SearchStrategy[Any]] = {
    "due_at": dates,
    "remind_at": dates,
    "due_before": dates,
    "due_after": dates,
    "remind_before": dates,
    "time_zone": zones,
    "tz": zones,
    "recurrence": rules,
    "task_id": st.one_of(integers, st.sampled_from(ODD_NUMBERS)),
    "limit": st.one_of(integers, st.sampled_from(ODD_NUMBERS)),
    "offset": st.one_of(integers, st.sampled_from(ODD_NUMBERS)),
    "expected_version": integers,
    "list_id": st.one_of(integers, st.sampled_from(ODD_NUMBERS)),
    "move_tasks_to": st.one_of(integers, st.sampled_from(ODD_NUMBERS)),
    # A task's place: ids near the ones the battery makes (so real parents and siblings come
    # up), anything else, and the filter's word.
    "parent_id": st.one_of(st.integers(1, 60), integers, st.sampled_from([*ODD_NUMBERS, "none", "NONE"])),
    "after_id": st.one_of(st.integers(1, 60), integers, st.sampled_from(ODD_NUMBERS)),
    "tags": st.one_of(
        st.lists(texts, max_size=30), st.lists(st.sampled_from(["a", "A", " a", "a "]), max_size=300)
    ),
    "tag": st.one_of(st.lists(texts, max_size=30), st.lists(st.text(max_size=4), min_size=20, max_size=260)),
}
# A query string holds what a URL can (httpx refuses one over 64 KiB; the server, a head over
# MAX_HEADER_BYTES): long lists, of short values.
query_values = st.one_of(scalars, st.lists(scalars, max_size=8), st.lists(st.text(max_size=4), max_size=260))


@st.composite
def arguments(draw: st.DrawFn, names: list[str], anything: st.SearchStrategy[Any] = values) -> dict[str, Any]:
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=len(names)))
    found = {name: draw(st.one_of(by_name.get(name, anything), anything)) for name in chosen}
    if draw(st.integers(0, 9)) == 0:
        found[draw(st.text(string.ascii_letters, min_size=1, max_size=8))] = draw(anything)
    return found


def as_query(found: dict[str, Any]) -> str:
    """Values as a query string carries them: lists repeated, everything text, any character
    percent-encoded as UTF-8 (a lone surrogate too, as a client could send it)."""
    pairs = []
    for name, value in found.items():
        for item in value if isinstance(value, list) else [value]:
            text = "" if item is None else str(item)
            pairs.append(f"{encoded(name)}={encoded(text)}")
    return "?" + "&".join(pairs)


def encoded(text: str) -> str:
    return quote(text.encode("utf-8", "surrogatepass"), safe="")


def raw_headers(caller: Caller) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode()) for name, value in caller.headers.items()]


def as_header(value: Any) -> bytes:
    return str(value).encode("utf-8", "surrogatepass").replace(b"\r", b"").replace(b"\n", b"")


def conditional_headers(caller: Caller, method: str, if_match: Any, key: Any) -> list[tuple[bytes, bytes]]:
    """The caller's headers with a (fuzzed) entity tag, If-None-Match on a read, and request key."""
    headers = raw_headers(caller)
    if if_match is not None:
        headers.append((b"if-match" if method != "GET" else b"if-none-match", as_header(if_match)))
    if key is not None:
        headers.append((b"idempotency-key", as_header(key)))
    return headers


def as_json(body: Any) -> bytes:
    """JSON as a client may write it: any text escaped, a lone surrogate too (`\\ud800`)."""
    return json.dumps(body).encode()


async def send(caller: Caller, method: str, path: str, body: Any, headers: list[tuple[bytes, bytes]]) -> Any:
    if body is not None:
        headers = [*headers, (b"content-type", b"application/json")]
    return await caller.client.request(
        method, path, content=None if body is None else as_json(body), headers=headers
    )


def assert_no_5xx(response: Any) -> None:
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"] == "application/problem+json", response.text


BODY_FIELDS = [
    "list_id",
    "parent_id",
    "title",
    "description",
    "completed",
    "priority",
    "due_at",
    "remind_at",
    "tags",
    "recurrence",
    "time_zone",
]
LIST_PARAMETERS = [
    "status",
    "priority",
    "tag",
    "due_before",
    "due_after",
    "overdue",
    "remind_before",
    "q",
    "sort",
    "order",
    "limit",
    "offset",
    "cursor",
    "list_id",
    "parent_id",
]


@BATTERY
@given(query=arguments(LIST_PARAMETERS, query_values))
async def test_the_list_never_answers_5xx(alice: Caller, query: dict[str, Any]) -> None:
    assert_no_5xx(await alice.request("GET", as_query(query)))


@BATTERY
@given(query=arguments(["tz", "since", "limit"], query_values), path=st.sampled_from(["/stats", "/changes"]))
async def test_stats_and_sync_never_answer_5xx(alice: Caller, query: dict[str, Any], path: str) -> None:
    assert_no_5xx(await alice.request("GET", path + as_query(query)))


@BATTERY
@given(body=arguments(BODY_FIELDS), key=st.one_of(st.none(), texts))
async def test_creating_never_answers_5xx(alice: Caller, body: dict[str, Any], key: Any) -> None:
    headers = raw_headers(alice)
    if key is not None:
        headers.append((b"idempotency-key", as_header(key)))
    response = await send(alice, "POST", alice.url(), body, headers)
    assert_no_5xx(response)


@BATTERY
@given(
    route=st.sampled_from([("PUT", ""), ("PATCH", ""), ("PATCH", "/complete"), ("DELETE", ""), ("GET", "")]),
    body=st.one_of(st.none(), arguments([*BODY_FIELDS, "completed"])),
    if_match=st.one_of(st.none(), texts, integers.map(lambda n: f'"{n}"')),
    key=st.one_of(st.none(), texts),
)
async def test_writing_to_a_task_never_answers_5xx(
    alice: Caller, route: tuple[str, str], body: Any, if_match: Any, key: Any
) -> None:
    task = await alice.create(title="target", due_at="2090-01-01T00:00:00Z", recurrence="FREQ=DAILY")
    method, suffix = route
    headers = conditional_headers(alice, method, if_match, key)
    response = await send(alice, method, alice.url(f"/{task['id']}{suffix}"), body, headers)
    assert_no_5xx(response)


@BATTERY
@given(
    body=st.one_of(st.none(), values, arguments(["list_id", "parent_id", "after_id"])),
    if_match=st.one_of(st.none(), texts, integers.map(lambda n: f'"{n}"')),
    key=st.one_of(st.none(), texts),
)
async def test_moving_a_task_never_answers_5xx(alice: Caller, body: Any, if_match: Any, key: Any) -> None:
    parent = await alice.create(title="parent")
    child = await alice.create(title="child", parent_id=parent["id"])
    await alice.create(title="grandchild", parent_id=child["id"])
    headers = conditional_headers(alice, "POST", if_match, key)
    response = await send(alice, "POST", alice.url(f"/{child['id']}/move"), body, headers)
    assert_no_5xx(response)


@BATTERY
@given(
    segment=st.one_of(texts, integers.map(str), st.sampled_from(ODD_NUMBERS)).filter(
        lambda text: text not in ("", ".", "..")
    ),
    method=st.sampled_from(["GET", "PATCH", "DELETE"]),
    kind=st.sampled_from(["tasks", "tags", "lists"]),
)
async def test_any_id_in_a_path_never_answers_5xx(
    alice: Caller, segment: str, method: str, kind: str
) -> None:
    body = ({"title": "x"} if kind == "tasks" else {"name": "x"}) if method == "PATCH" else None
    response = await send(alice, method, f"/api/me/{kind}/{encoded(segment)}", body, raw_headers(alice))
    assert_no_5xx(response)


@BATTERY
@given(body=arguments(["name"]), method=st.sampled_from(["PATCH", "DELETE"]))
async def test_tag_writes_never_answer_5xx(alice: Caller, body: dict[str, Any], method: str) -> None:
    await alice.create(title="tagged", tags=["target"])
    tags = (await alice.client.get("/api/me/tags", headers=alice.headers)).json()
    response = await send(
        alice,
        method,
        f"/api/me/tags/{tags[0]['id']}",
        body if method == "PATCH" else None,
        raw_headers(alice),
    )
    assert_no_5xx(response)


@BATTERY
@given(
    route=st.sampled_from([("POST", ""), ("PATCH", "/target"), ("DELETE", "/target"), ("GET", "/target")]),
    body=st.one_of(st.none(), arguments(["name"])),
    query=arguments(["move_tasks_to"], query_values),
    if_match=st.one_of(st.none(), texts, integers.map(lambda n: f'"{n}"')),
    key=st.one_of(st.none(), texts),
)
async def test_list_writes_never_answer_5xx(
    alice: Caller, route: tuple[str, str], body: Any, query: dict[str, Any], if_match: Any, key: Any
) -> None:
    made = await alice.client.post("/api/me/lists", json={"name": "target"}, headers=alice.headers)
    target = (
        made.json()["id"]
        if made.status_code == 201
        else (await alice.client.get("/api/me/lists", headers=alice.headers)).json()[-1]["id"]
    )
    method, suffix = route
    headers = conditional_headers(alice, method, if_match, key)
    path = f"/api/me/lists{suffix.replace('/target', f'/{target}')}{as_query(query)}"
    assert_no_5xx(await send(alice, method, path, body, headers))


TOOL_ARGUMENTS = {name: [*spec.arguments.model_fields] for name, spec in TOOLS.items()}
# An error of the server's, not of the arguments: what a 5xx would be.
SERVER_FAULTS = ("an unexpected error occurred", "the database is unreachable")


@BATTERY
@given(
    call=st.sampled_from(sorted(TOOL_ARGUMENTS)).flatmap(
        lambda tool: st.tuples(st.just(tool), arguments(TOOL_ARGUMENTS[tool]))
    )
)
async def test_no_tool_answers_a_server_fault(alice: Caller, call: tuple[str, dict[str, Any]]) -> None:
    tool, given_arguments = call
    if "task_id" in TOOL_ARGUMENTS[tool] and "task_id" not in given_arguments:
        given_arguments["task_id"] = (await alice.create(title="target"))["id"]
    answer = await alice.tool(tool, given_arguments)
    assert answer.error is None or not answer.error.startswith(SERVER_FAULTS), (tool, given_arguments, answer)
