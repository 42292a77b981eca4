"""Order keys that moves never renumber: fractional indexing (base 62 strings, compared
bytewise), from the `fractional-indexing` package."""

from fractional_indexing import (  # type: ignore[import-untyped]  # no types shipped
    generate_key_between,
    generate_n_keys_between,
)

from backend.models import POSITION_MAX_LENGTH

# A new task's key: `r` and its change number in 18 decimal digits, a valid key (the head `r`
# says 18 digits follow) greater than any key its owner's tasks had before it. Every key is at
# most the key of the owner's latest change number: a new task's is its own; a move to the end
# takes the key of the change the move is about to be (`TASK_END`); a move elsewhere, a key
# between two existing ones; a rebalance, keys from `spread`, which begin with `a`. So a new
# task goes last, and keys come without reading the siblings: one statement for a create.
NUMBERED_HEAD = "r"
NUMBERED_DIGITS = 18


def numbered(change: int) -> str:
    """The key of the owner's change number `change` (see above)."""
    return f"{NUMBERED_HEAD}{change:0{NUMBERED_DIGITS}d}"


# The first key of an empty sequence (the Inbox's place).
FIRST_POSITION: str = generate_key_between(None, None)


def after(last: str | None) -> str:
    """A key after `last` (the first key when there is none)."""
    key: str = generate_key_between(last, None)
    return key


def between(lower: str | None, upper: str | None) -> str:
    """A key between two neighbours (None: the start, or the end)."""
    key: str = generate_key_between(lower, upper)
    return key


# A key this long means many moves between the same two neighbours: the sequence is given
# fresh, evenly spread keys (bounded: one person's lists, or one list's siblings) long before
# a key could outgrow its column.
REBALANCE_AT = POSITION_MAX_LENGTH - 16


def spread(count: int) -> list[str]:
    """`count` fresh keys in order, as short as they come."""
    keys: list[str] = generate_n_keys_between(None, None, count)
    return keys
