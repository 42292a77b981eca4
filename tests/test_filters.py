"""Every list filter, alone and with every other, and every sort, against a model computed
in Python from the same tasks."""

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.conftest import Caller, assert_problem

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC).replace(microsecond=0)
PAST, SOON, LATER = NOW - timedelta(days=2), NOW + timedelta(days=2), NOW + timedelta(days=9)

# title, description, priority, tags, due_at, remind_at, completed
TASKS: list[tuple[str, str | None, str, list[str], datetime | None, datetime | None, bool]] = [
    ("Buy oat milk", "2 litres", "high", ["errands", "Home"], PAST, PAST - timedelta(hours=1), False),
    (
        "Ärger mit dem Vermieter",
        "Brief schreiben",
        "medium",
        ["home"],
        SOON,
        SOON - timedelta(hours=1),
        False,
    ),
    ("Quarterly report", "draft the ÄRGER section", "high", ["work"], LATER, None, False),
    ("Call the bank", None, "low", ["errands"], None, NOW + timedelta(hours=3), False),
    ("Review pull request", "milk it for feedback", "none", ["work", "urgent"], PAST, None, True),
    ("Water the plants", "oat and milk are not plant food", "none", [], SOON, None, True),
    ("Plan the trip", "50% done_so_far", "medium", ["Home", "work"], None, None, False),
    ("Renew passport", "", "low", ["urgent"], PAST, PAST, False),
    ("Straße fegen", "STRASSE", "none", ["home"], LATER, LATER, False),
    ("Pay rent", "monthly", "high", ["home", "errands", "urgent"], SOON, None, True),
]


def iso(moment: datetime) -> str:
    return moment.isoformat()


@pytest.fixture
async def seeded(alice: Caller) -> dict[str, dict[str, Any]]:
    """The tasks above, created for alice (completed ones ticked off); by title."""
    created = {}
    for title, description, priority, tags, due_at, remind_at, completed in TASKS:
        body: dict[str, Any] = {
            "title": title,
            "description": description,
            "priority": priority,
            "tags": tags,
        }
        if due_at is not None:
            body["due_at"] = iso(due_at)
        if remind_at is not None:
            body["remind_at"] = iso(remind_at)
        body["completed"] = completed
        created[title] = await alice.create(**body)
    return created


def has_words(*words: str) -> Callable[[dict[str, Any]], bool]:
    def matches(task: dict[str, Any]) -> bool:
        text = (task["title"], task["description"] or "")
        return all(any(word.casefold() in part.casefold() for part in text) for word in words)

    return matches


def due(task: dict[str, Any]) -> datetime | None:
    return None if task["due_at"] is None else datetime.fromisoformat(task["due_at"])


def remind(task: dict[str, Any]) -> datetime | None:
    return None if task["remind_at"] is None else datetime.fromisoformat(task["remind_at"])


def tagged(*names: str) -> Callable[[dict[str, Any]], bool]:
    return lambda task: all(name.casefold() in {tag.casefold() for tag in task["tags"]} for name in names)


# Each filter: the query parameters, and what the model says matches.
FILTERS: dict[str, tuple[list[tuple[str, str]], Callable[[dict[str, Any]], bool]]] = {
    "pending": ([("status", "pending")], lambda t: not t["completed"]),
    "completed": ([("status", "completed")], lambda t: t["completed"]),
    "high": ([("priority", "high")], lambda t: t["priority"] == "high"),
    "low or medium": (
        [("priority", "low"), ("priority", "medium")],
        lambda t: t["priority"] in ("low", "medium"),
    ),
    "tag work": ([("tag", "work")], tagged("work")),
    "tags HOME and errands": ([("tag", "HOME"), ("tag", "errands")], tagged("home", "errands")),
    "due before soon": (
        [("due_before", iso(SOON))],
        lambda t: due(t) is not None and due(t) <= SOON,  # type: ignore[operator]
    ),
    "due after now": (
        [("due_after", iso(NOW))],
        lambda t: due(t) is not None and due(t) >= NOW,  # type: ignore[operator]
    ),
    "overdue": (
        [("overdue", "true")],
        lambda t: due(t) is not None and due(t) < NOW and not t["completed"],  # type: ignore[operator]
    ),
    "not overdue": (
        [("overdue", "false")],
        lambda t: not (due(t) is not None and due(t) < NOW and not t["completed"]),  # type: ignore[operator]
    ),
    "remind before tomorrow": (
        [("remind_before", iso(NOW + timedelta(days=1)))],
        lambda t: remind(t) is not None and remind(t) <= NOW + timedelta(days=1),  # type: ignore[operator]
    ),
    "search ärger": ([("q", "ÄRGER")], has_words("ärger")),
    "search milk oat": ([("q", "milk  OAT")], has_words("milk", "oat")),
    "search strasse": ([("q", "strasse")], has_words("strasse")),  # ß folds to ss
    "search a literal %_": ([("q", "50% done_so")], has_words("50%", "done_so")),
}


async def listed(caller: Caller, params: list[tuple[str, str]]) -> tuple[list[int], int]:
    response = await caller.request("GET", params=[*params, ("limit", "500")])
    assert response.status_code == 200, response.text
    return [task["id"] for task in response.json()], int(response.headers["x-total-count"])


def expected(seeded: dict[str, dict[str, Any]], *predicates: Callable[[dict[str, Any]], bool]) -> list[int]:
    """Matching ids in the default order: newest first (ids grow with creation here)."""
    return sorted((t["id"] for t in seeded.values() if all(p(t) for p in predicates)), reverse=True)


@pytest.mark.parametrize("name", FILTERS)
async def test_each_filter_alone(alice: Caller, seeded: dict[str, dict[str, Any]], name: str) -> None:
    params, predicate = FILTERS[name]
    ids, total = await listed(alice, params)
    assert ids == expected(seeded, predicate), name
    assert total == len(ids)
    assert ids, f"the data set exercises {name} with at least one match"


async def test_every_pair_of_filters(alice: Caller, seeded: dict[str, dict[str, Any]]) -> None:
    for (first, (first_params, first_predicate)), (
        second,
        (second_params, second_predicate),
    ) in itertools.combinations(FILTERS.items(), 2):
        parameter = first_params[0][0]
        if parameter == second_params[0][0] and parameter in ("status", "overdue", "q"):
            continue  # one value per request
        ids, total = await listed(alice, [*first_params, *second_params])
        if parameter == second_params[0][0] == "priority":  # repeated: any of them
            wanted = expected(seeded, lambda t, a=first_predicate, b=second_predicate: a(t) or b(t))
        else:
            wanted = expected(seeded, first_predicate, second_predicate)
        assert ids == wanted, (first, second)
        assert total == len(ids), (first, second)


SORTS: dict[tuple[str, str], Callable[[dict[str, Any]], Any]] = {
    ("priority", "desc"): lambda t: (-["none", "low", "medium", "high"].index(t["priority"]), -t["id"]),
    ("priority", "asc"): lambda t: (["none", "low", "medium", "high"].index(t["priority"]), t["id"]),
    ("due", "asc"): lambda t: (due(t) is None, due(t) or NOW, t["id"]),
    # Without a due date last in both orders.
    ("due", "desc"): lambda t: (due(t) is None, -(due(t) or NOW).timestamp(), -t["id"]),
    ("title", "asc"): lambda t: (t["title"], t["id"]),
}


@pytest.mark.parametrize(("sort", "order"), list(SORTS))
async def test_each_sort(alice: Caller, seeded: dict[str, dict[str, Any]], sort: str, order: str) -> None:
    ids, _ = await listed(alice, [("sort", sort), ("order", order)])
    assert ids == [t["id"] for t in sorted(seeded.values(), key=SORTS[(sort, order)])]


async def test_default_orders_are_urgent_first(alice: Caller, seeded: dict[str, dict[str, Any]]) -> None:
    assert (await listed(alice, [("sort", "due")]))[0] == (
        await listed(alice, [("sort", "due"), ("order", "asc")])
    )[0]
    by_priority = (await listed(alice, [("sort", "priority")]))[0]
    assert by_priority == (await listed(alice, [("sort", "priority"), ("order", "desc")]))[0]


async def test_filters_sorts_and_paging_combine_and_links_keep_every_parameter(
    alice: Caller, seeded: dict[str, dict[str, Any]]
) -> None:
    params = [("status", "pending"), ("tag", "home"), ("sort", "due"), ("limit", "1")]
    response = await alice.request("GET", params=params)
    matching = [
        t["id"]
        for t in sorted(seeded.values(), key=SORTS[("due", "asc")])
        if not t["completed"] and tagged("home")(t)
    ]
    assert [t["id"] for t in response.json()] == matching[:1]
    assert response.headers["x-total-count"] == str(len(matching))
    link = response.headers["link"]
    assert link.startswith(f"</api/{alice.user_id}/tasks?status=pending&tag=home&sort=due&limit=1&offset=1>")
    following = await alice.client.get(link[1 : link.index(">")], headers=alice.headers)
    assert [t["id"] for t in following.json()] == matching[1:2]


async def test_other_users_tasks_and_tags_never_match(
    alice: Caller, bob: Caller, seeded: dict[str, dict[str, Any]]
) -> None:
    await bob.create(title="bob's milk", tags=["work"], priority="high")
    ids, _ = await listed(bob, [("tag", "work")])
    assert len(ids) == 1
    assert (await listed(alice, [("q", "bob's")])) == ([], 0)


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ([("priority", "urgent")], "query.priority"),
        ([("sort", "soonest")], "query.sort"),
        ([("due_before", "2026-11-23T09:00:00")], "query.due_before"),  # no offset: ambiguous
        ([("overdue", "maybe")], "query.overdue"),
        ([("q", " ".join(["word"] * 11))], "query.q"),
        ([("tag", "x" * 51)], "query.tag"),
    ],
)
async def test_unknown_values_are_422_naming_the_parameter(
    alice: Caller, params: list[tuple[str, str]], where: str
) -> None:
    problem = assert_problem(await alice.request("GET", params=params), 422)
    assert where in problem["detail"]


async def test_search_does_not_care_how_an_accent_was_typed(alice: Caller) -> None:
    composed = await alice.create(title="\u00e9clair au chocolat")  # é as one code point
    decomposed = await alice.create(title="cre\u0300me bru\u0302le\u0301e")  # accents combining
    ligature = await alice.create(title="\ufb01nance review")  # the fi ligature

    async def found(q: str) -> list[int]:
        return [task["id"] for task in (await alice.request("GET", params={"q": q})).json()]

    assert await found("e\u0301clair") == [composed["id"]]
    assert await found("\u00c9CLAIR") == [composed["id"]]
    assert await found("cr\u00e8me br\u00fbl\u00e9e") == [decomposed["id"]]
    assert await found("finance") == [ligature["id"]]
