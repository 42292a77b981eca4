"""The OpenAPI document is complete enough to generate a client from."""

from collections.abc import Iterator
from typing import Any

import pytest
from httpx import AsyncClient

pytestmark = pytest.mark.anyio

OPERATIONS = {
    ("get", "/api/{user_id}/tasks"): "listTasks",
    ("post", "/api/{user_id}/tasks"): "createTask",
    ("get", "/api/{user_id}/tasks/{task_id}"): "getTask",
    ("put", "/api/{user_id}/tasks/{task_id}"): "replaceTask",
    ("patch", "/api/{user_id}/tasks/{task_id}"): "updateTask",
    ("delete", "/api/{user_id}/tasks/{task_id}"): "deleteTask",
    ("patch", "/api/{user_id}/tasks/{task_id}/complete"): "setTaskCompletion",
    ("delete", "/api/{user_id}/tasks"): "deleteCompletedTasks",
    ("get", "/api/{user_id}/tasks/stats"): "getTaskStats",
    ("get", "/api/{user_id}/tasks/changes"): "getTaskChanges",
    ("get", "/api/{user_id}/events"): "streamEvents",
    ("get", "/api/{user_id}/tags"): "listTags",
    ("patch", "/api/{user_id}/tags/{tag_id}"): "renameTag",
    ("delete", "/api/{user_id}/tags/{tag_id}"): "deleteTag",
    ("get", "/api/{user_id}/lists"): "listLists",
    ("post", "/api/{user_id}/lists"): "createList",
    ("get", "/api/{user_id}/lists/{list_id}"): "getList",
    ("patch", "/api/{user_id}/lists/{list_id}"): "updateList",
    ("delete", "/api/{user_id}/lists/{list_id}"): "deleteList",
    ("post", "/api/{user_id}/lists/{list_id}/move"): "moveList",
    ("post", "/api/{user_id}/tasks/{task_id}/move"): "moveTask",
    ("post", "/api/{user_id}/chat"): "sendChatMessage",
    ("get", "/api/{user_id}/conversations"): "listConversations",
    ("get", "/api/{user_id}/conversations/{conversation_id}"): "getConversation",
    ("delete", "/api/{user_id}/conversations/{conversation_id}"): "deleteConversation",
}


@pytest.fixture
async def spec(client: AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_title_description_and_version(spec: dict[str, Any]) -> None:
    assert spec["info"]["title"] == "Todo API"
    assert "Better Auth" in spec["info"]["description"]
    assert spec["info"]["version"]


async def test_operation_ids_are_readable(spec: dict[str, Any]) -> None:
    found = {
        (method, path): operation["operationId"]
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
        if path.startswith("/api/")
    }
    assert found == OPERATIONS


async def test_task_routes_require_the_bearer_scheme(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["HTTPBearer"]["description"],
    }
    for (method, path), _ in OPERATIONS.items():
        assert spec["paths"][path][method]["security"] == [{"HTTPBearer": []}]
    assert "security" not in spec["paths"]["/health"]["get"]


async def test_every_error_response_is_a_documented_problem(spec: dict[str, Any]) -> None:
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for (method, path), _ in OPERATIONS.items():
        responses = spec["paths"][path][method]["responses"]
        expected = {"401", "403", "422", "500", "503"} | (
            {"404"} if "{task_id}" in path or "{tag_id}" in path else set()
        )
        assert expected <= set(responses), (method, path)
        for status in expected:
            content = responses[status]["content"]
            assert list(content) == ["application/problem+json"]
            assert content["application/problem+json"]["schema"] == problem_ref
            # A real example of its own, not the schema's placeholder.
            example = content["application/problem+json"]["example"]
            assert example["status"] == int(status)
            assert example["detail"]
    assert set(spec["components"]["schemas"]["Problem"]["required"]) == {"title", "status", "detail"}


async def test_each_error_has_an_example_of_its_own(spec: dict[str, Any]) -> None:
    responses = spec["paths"]["/api/{user_id}/tasks/{task_id}"]["put"]["responses"]
    examples = {
        status: responses[status]["content"]["application/problem+json"]["example"]
        for status in responses
        if int(status) >= 400
    }
    assert examples["404"]["detail"] == "no task with this id belongs to this user"
    assert examples["422"]["errors"][0]["loc"] == ["body", "title"]
    assert len({example["detail"] for example in examples.values()}) == len(examples)


async def test_413_only_where_a_body_is_taken(spec: dict[str, Any]) -> None:
    for (method, path), _ in OPERATIONS.items():
        operation = spec["paths"][path][method]
        responses = set(operation["responses"])
        assert ("413" in responses) == ("requestBody" in operation), (method, path)
        # 400: a body that is not UTF-8, or a header that cannot be read (If-Match, Idempotency-Key).
        headers = {p["name"] for p in operation.get("parameters", []) if p["in"] == "header"}
        assert ("400" in responses) == ("requestBody" in operation or bool(headers)), (method, path)


async def test_order_is_a_plain_enum_and_me_is_the_example(spec: dict[str, Any]) -> None:
    parameters = {p["name"]: p for p in spec["paths"]["/api/{user_id}/tasks"]["get"]["parameters"]}
    order = parameters["order"]["schema"]
    assert (order["type"], order["enum"]) == ("string", ["asc", "desc"])
    assert "anyOf" not in order
    # Swagger UI's "Try it out" fills in the example, which must work for anyone.
    assert parameters["user_id"]["examples"]["me"]["value"] == "me"


async def test_head_is_not_documented_twice(spec: dict[str, Any]) -> None:
    assert not [path for path, methods in spec["paths"].items() if "head" in methods]


async def test_request_and_response_bodies_have_examples(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for name in ("TaskCreate", "TaskReplace", "TaskUpdate", "TaskCompletion", "TaskPublic"):
        assert schemas[name].get("examples"), name
    assert schemas["TaskCreate"]["additionalProperties"] is False


async def test_list_documents_its_headers_and_parameters(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/api/{user_id}/tasks"]["get"]
    assert set(operation["responses"]["200"]["headers"]) == {"X-Total-Count", "Link"}
    parameters = {parameter["name"]: parameter for parameter in operation["parameters"]}
    assert set(parameters) == {
        "user_id",
        "status",
        "sort",
        "order",
        "limit",
        "offset",
        # The organising filters.
        "priority",
        "tag",
        "due_before",
        "due_after",
        "overdue",
        "remind_before",
        "q",
        "cursor",
        "list_id",
        "parent_id",
    }
    assert parameters["status"]["schema"]["enum"] == ["all", "pending", "completed"]
    assert parameters["limit"]["schema"]["maximum"] == 500


async def test_create_documents_its_location_header(spec: dict[str, Any]) -> None:
    created = spec["paths"]["/api/{user_id}/tasks"]["post"]["responses"]["201"]
    assert "Location" in created["headers"]


def keywords(node: Any) -> Iterator[str]:
    """Every key of every schema object in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keywords(value)
    elif isinstance(node, list):
        for item in node:
            yield from keywords(item)


async def test_the_schema_says_what_the_api_accepts(spec: dict[str, Any]) -> None:
    """Bounds in JSON Schema's own words (a raw `ge` bounds nothing), the accepted time zones as
    an enum, the RRULE subset as a pattern, and a recurring task's due date as required."""
    assert not {"ge", "le", "gt", "lt"} & set(keywords(spec))
    task_id = next(
        parameter
        for parameter in spec["paths"]["/api/{user_id}/tasks/{task_id}"]["get"]["parameters"]
        if parameter["name"] == "task_id"
    )
    assert (task_id["schema"]["minimum"], task_id["schema"]["maximum"]) == (1, 2**63 - 1)
    schemas = spec["components"]["schemas"]
    zones = schemas["TaskCreate"]["properties"]["time_zone"]["enum"]
    assert "Europe/Berlin" in zones
    assert not {"localtime", "Europe", "posix/Europe/Berlin"} & set(zones)
    assert "pattern" in str(schemas["TaskCreate"]["properties"]["recurrence"])
    assert schemas["TaskCreate"]["then"]["required"] == ["due_at"]
