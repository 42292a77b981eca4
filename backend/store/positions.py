"""Order keys that moves never renumber: fractional indexing (base 62 strings, compared
bytewise), from the `fractional-indexing` package."""

from fractional_indexing import generate_key_between  # type: ignore[import-untyped]  # no types shipped

# The first key of an empty sequence (the Inbox's place).
FIRST_POSITION: str = generate_key_between(None, None)


def after(last: str | None) -> str:
    """A key after `last` (the first key when there is none)."""
    key: str = generate_key_between(last, None)
    return key
