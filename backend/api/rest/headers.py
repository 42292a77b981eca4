"""The conditional and request-key headers of the REST routes, as the OpenAPI document
shows them (If-Match, If-None-Match, Idempotency-Key), and the If-None-Match check of a
read. The grammar is `domain.header_grammar`'s; If-Match's conditions, `api.shared`'s.
"""

from typing import Annotated

from fastapi import Header
from pydantic.json_schema import SkipJsonSchema

from backend.domain.header_grammar import InvalidHeaderError, parse_entity_tags
from backend.errors import BadRequest

# Documented, not enforced by FastAPI: a header that does not parse is our 400, naming it.
ENTITY_TAGS_PATTERN = r'^\s*(\*|(W/)?"[\x21\x23-\x7e]*"(\s*,\s*(W/)?"[\x21\x23-\x7e]*")*)\s*$'
KEY_PATTERN = r"^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$"

IfMatch = Annotated[
    str | SkipJsonSchema[None],
    Header(
        alias="If-Match",
        json_schema_extra={"pattern": ENTITY_TAGS_PATTERN},
        description='Write only if the task is still at this version: its ETag (`"7"`), a list of them, '
        "or `*`. Otherwise 412, and nothing changes.",
        examples=['"7"'],
    ),
]
IfNoneMatch = Annotated[
    str | SkipJsonSchema[None],
    Header(
        alias="If-None-Match",
        json_schema_extra={"pattern": ENTITY_TAGS_PATTERN},
        description="The ETag you hold: 304, without a body, while the task is still at that version.",
        examples=['"7"'],
    ),
]
IdempotencyKey = Annotated[
    str | SkipJsonSchema[None],
    Header(
        alias="Idempotency-Key",
        json_schema_extra={"pattern": KEY_PATTERN},
        description="A key of your own (1 to 255 printable ASCII characters, or that in quotes) making the "
        "write safe to retry: a repeat with the same key, method, path and body gets the first answer again "
        "(`Idempotent-Replayed: true`) and changes nothing. Kept for IDEMPOTENCY_KEY_HOURS.",
        examples=["3f1e7c2a-create-buy-milk"],
    ),
]


def still_current(if_none_match: str | None, version: int) -> bool:
    """If-None-Match names the version the client holds (weak comparison, RFC 9110 §13.1.2)."""
    if if_none_match is None:
        return False
    try:
        return parse_entity_tags(if_none_match, "If-None-Match").matches_weakly(version)
    except InvalidHeaderError as error:
        raise BadRequest(str(error)) from None
