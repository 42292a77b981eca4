"""Bad input: a 422 problem that names what was wrong, and nothing stored."""

from typing import Any

import pytest

from tests.conftest import Caller, assert_problem

pytestmark = pytest.mark.anyio


async def stored_tasks(caller: Caller) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = (await caller.request("GET")).json()
    return tasks


@pytest.mark.parametrize(("length", "accepted"), [(0, False), (1, True), (200, True), (201, False)])
async def test_title_length_limits(alice: Caller, length: int, accepted: bool) -> None:
    response = await alice.request("POST", json={"title": "t" * length})
    if accepted:
        assert response.status_code == 201
        assert response.json()["title"] == "t" * length
    else:
        body = assert_problem(response, 422)
        assert body["errors"][0]["loc"] == ["body", "title"]
        assert await stored_tasks(alice) == []


async def test_title_length_counts_after_trimming(alice: Caller) -> None:
    response = await alice.request("POST", json={"title": "  " + "t" * 200 + "  "})
    assert response.status_code == 201


@pytest.mark.parametrize("title", [" ", "\t\n", "   \r\n  "])
async def test_whitespace_only_title_is_rejected(alice: Caller, title: str) -> None:
    body = assert_problem(await alice.request("POST", json={"title": title}), 422)
    assert body["errors"][0]["loc"] == ["body", "title"]


async def test_description_limit_is_1000_characters(alice: Caller) -> None:
    assert (await alice.request("POST", json={"title": "x", "description": "d" * 1000})).status_code == 201
    body = assert_problem(await alice.request("POST", json={"title": "x", "description": "d" * 1001}), 422)
    assert body["errors"][0]["loc"] == ["body", "description"]


async def test_non_ascii_text_round_trips(alice: Caller) -> None:
    task = await alice.create(title="Café ☕ 日本語 🚀", description="Ünïcödé\u200b")
    assert task["title"] == "Café ☕ 日本語 🚀"
    assert (await alice.request("GET", f"/{task['id']}")).json()["description"] == "Ünïcödé\u200b"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": 123}, "title"),
        ({"title": ["a"]}, "title"),
        ({"title": None}, "title"),
        ({"title": "x", "description": 5}, "description"),
        ({"title": "x", "completed": "yes"}, "completed"),
        ({"title": "x", "completed": 1}, "completed"),
        ({"title": "x", "completed": None}, "completed"),
    ],
)
async def test_wrong_types_are_rejected(alice: Caller, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(await alice.request("POST", json=body), 422)
    assert ["body", field] in [error["loc"] for error in problem["errors"]]
    assert await stored_tasks(alice) == []


@pytest.mark.parametrize("field", ["id", "user_id", "created_at", "updated_at", "completed_at"])
async def test_unknown_fields_are_rejected_by_name(alice: Caller, field: str) -> None:
    problem = assert_problem(await alice.request("POST", json={"title": "x", field: "1"}), 422)
    assert problem["errors"][0]["loc"] == ["body", field]
    assert problem["errors"][0]["type"] == "extra_forbidden"
    assert field in problem["detail"]
    assert await stored_tasks(alice) == []


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_updates_reject_unknown_fields_and_change_nothing(
    alice: Caller, alice_task: dict[str, Any], method: str
) -> None:
    problem = assert_problem(
        await alice.request(method, f"/{alice_task['id']}", json={"title": "x", "user_id": "mallory"}), 422
    )
    assert problem["errors"][0]["loc"] == ["body", "user_id"]
    assert (await alice.request("GET", f"/{alice_task['id']}")).json() == alice_task


@pytest.mark.parametrize(
    "content", [b"{", b'{"title": "x",}', b"not json", b"", b'"just a string"', b"[]", b"null"]
)
async def test_malformed_or_non_object_json_is_422(alice: Caller, content: bytes) -> None:
    response = await alice.request("POST", content=content, headers={"Content-Type": "application/json"})
    assert_problem(response, 422)
    assert await stored_tasks(alice) == []


async def test_malformed_json_says_so(alice: Caller) -> None:
    response = await alice.request(
        "POST", content=b'{"title": ', headers={"Content-Type": "application/json"}
    )
    problem = assert_problem(response, 422)
    assert problem["errors"][0]["type"] == "json_invalid"
    assert "JSON" in problem["detail"]


async def test_patch_with_empty_body_is_422(alice: Caller, alice_task: dict[str, Any]) -> None:
    problem = assert_problem(await alice.request("PATCH", f"/{alice_task['id']}", json={}), 422)
    assert "at least one" in problem["errors"][0]["msg"]


async def test_patch_with_null_title_is_422(alice: Caller, alice_task: dict[str, Any]) -> None:
    problem = assert_problem(await alice.request("PATCH", f"/{alice_task['id']}", json={"title": None}), 422)
    assert problem["errors"][0]["loc"] == ["body", "title"]
    assert (await alice.request("GET", f"/{alice_task['id']}")).json() == alice_task


async def test_put_requires_a_title(alice: Caller, alice_task: dict[str, Any]) -> None:
    problem = assert_problem(
        await alice.request("PUT", f"/{alice_task['id']}", json={"description": "x"}), 422
    )
    assert problem["errors"][0]["loc"] == ["body", "title"]
    assert problem["errors"][0]["type"] == "missing"


@pytest.mark.parametrize("body", [{"completed": "true"}, {"completed": None}, {"done": True}, {}])
async def test_complete_rejects_bad_bodies(
    alice: Caller, alice_task: dict[str, Any], body: dict[str, Any]
) -> None:
    assert_problem(await alice.request("PATCH", f"/{alice_task['id']}/complete", json=body), 422)
    assert (await alice.request("GET", f"/{alice_task['id']}")).json()["completed"] is False


@pytest.mark.parametrize("task_id", ["abc", "1.5", "0", "-3", "99999999999999999999999"])
async def test_task_id_must_be_a_positive_integer(alice: Caller, task_id: str) -> None:
    problem = assert_problem(await alice.request("GET", f"/{task_id}"), 422)
    assert problem["errors"][0]["loc"] == ["path", "task_id"]


async def test_largest_task_id_is_a_clean_404(alice: Caller) -> None:
    assert_problem(await alice.request("GET", f"/{2**63 - 1}"), 404)


@pytest.mark.parametrize("body", [{"title": "a\x00b"}, {"title": "ok", "description": "nul \x00 here"}])
async def test_nul_characters_are_rejected(alice: Caller, body: dict[str, Any]) -> None:
    assert_problem(await alice.request("POST", json=body), 422)
    assert await stored_tasks(alice) == []
