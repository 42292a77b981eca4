"""What FastAPI works out again on every request, worked out once.

To read a query, header or path parameter, FastAPI asks whether the parameter's
annotation is a sequence (`field_annotation_is_sequence`), twice per parameter per
request, by taking the annotation apart with `typing.get_origin`/`get_args`. The
answer depends on the annotation alone, which is fixed when the route is declared;
asking it again was 6% of a task read's CPU (three parameters; cProfile, issue 25),
more for the task list's query model. Upstream measured the same (15-20% of a one-parameter route, fastapi
PR #13824, closed unmerged). Here the answer is kept per annotation, in a bounded
cache; an annotation that cannot be a cache key is asked about as before.

A private seam of FastAPI's (`fastapi.dependencies.utils`): `tests/test_fastapi_hot_path.py`
fails if a release renames it, and checks that the cached answers are FastAPI's own
for every parameter of every route.
"""

import functools

from fastapi._compat.shared import field_annotation_is_sequence as _original
from fastapi.dependencies import utils

# Where FastAPI's request handling looks it up on every request.
SEAM = "field_annotation_is_sequence"


@functools.lru_cache(maxsize=4096)
def _cached(annotation: object) -> bool:
    return _original(annotation)


def field_annotation_is_sequence(annotation: object) -> bool:
    """FastAPI's answer, remembered per annotation."""
    try:
        return _cached(annotation)
    except TypeError:  # unhashable: no cache key
        return _original(annotation)


def remember_parameter_shapes() -> None:
    """Put the remembering version in FastAPI's place (once; idempotent)."""
    vars(utils)[SEAM] = field_annotation_is_sequence
