"""Conditional requests and request keys, as pure functions: entity tags (RFC 9110 §8.8.3,
§13.1.1, §13.1.2) and the Idempotency-Key header (IETF httpapi draft). No I/O.

A task's entity tag is its version, strong and quoted: `"7"`.
"""

import re
from dataclasses import dataclass

# An entity-tag: optionally weak (W/), then a quoted opaque string (RFC 9110 §8.8.3).
_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*')
MAX_TAGS = 20
# Printable ASCII, as the draft's sf-string allows, 1 to 255 characters.
_KEY = re.compile(r"[\x20-\x7e]{1,255}")
# A version as its entity tag spells it: ASCII digits, no leading zero. `"01"` is not `"1"`
# (a strong comparison compares the tags' characters), and `"²"` is no digit at all.
_VERSION = re.compile(r"[1-9][0-9]{0,9}")
# Versions are PostgreSQL integers: a larger number names no version there can be.
MAX_VERSION = 2**31 - 1


class InvalidHeaderError(ValueError):
    """A header that cannot be read; the message names it and says why."""


def entity_tag(version: int) -> str:
    return f'"{version}"'


@dataclass(frozen=True, slots=True)
class EntityTags:
    """A parsed If-Match or If-None-Match: `*`, or the listed tags (weak ones flagged)."""

    any: bool
    strong: frozenset[str]
    weak: frozenset[str]

    def versions(self) -> frozenset[int]:
        """The listed strong tags that can be versions (a strong comparison: W/ never matches,
        and only a tag spelt exactly as this API spells a version does)."""
        return frozenset(
            int(tag) for tag in self.strong if _VERSION.fullmatch(tag) and int(tag) <= MAX_VERSION
        )

    def matches_weakly(self, version: int) -> bool:
        """If-None-Match's comparison: weak, so `W/"7"` and `"7"` both match version 7."""
        return self.any or str(version) in self.strong or str(version) in self.weak


def parse_entity_tags(header: str, name: str) -> EntityTags:
    """`*`, or a comma-separated list of entity-tags; anything else is an error naming `name`."""
    if header.strip() == "*":
        return EntityTags(any=True, strong=frozenset(), weak=frozenset())
    strong: set[str] = set()
    weak: set[str] = set()
    for part in header.split(","):
        if not part.strip():
            continue
        found = _ENTITY_TAG.fullmatch(part)
        if found is None:
            raise InvalidHeaderError(f'{name} must be * or a list of entity tags such as "7"')
        (weak if found.group(1) else strong).add(found.group(2))
    if not strong and not weak:
        raise InvalidHeaderError(f"{name} is empty")
    if len(strong) + len(weak) > MAX_TAGS:
        raise InvalidHeaderError(f"{name} lists more than {MAX_TAGS} entity tags")
    return EntityTags(any=False, strong=frozenset(strong), weak=frozenset(weak))


def parse_idempotency_key(header: str) -> str:
    """The key: 1 to 255 printable ASCII characters, bare or in the draft's quoted form."""
    key = header
    if len(key) >= 2 and key.startswith('"') and key.endswith('"'):
        key = key[1:-1]
        if '"' in key or "\\" in key:
            raise InvalidHeaderError("Idempotency-Key in quotes may not contain quotes or backslashes")
    if not _KEY.fullmatch(key):
        raise InvalidHeaderError("Idempotency-Key must be 1 to 255 printable ASCII characters")
    return key
