"""`api.fastapi_hot_path`: FastAPI's per-request question about a parameter's annotation,
answered once per annotation, with exactly FastAPI's answers."""

from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Query
from fastapi._compat.shared import field_annotation_is_sequence as fastapis_own
from fastapi.dependencies import utils
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from backend.api.fastapi_hot_path import SEAM, field_annotation_is_sequence
from backend.app import create_app
from tests.conftest import make_settings


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    """An app made, never started."""
    return create_app(make_settings(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"))


def parameter_annotations(dependant: Dependant) -> list[Any]:
    """Every query, header, path and cookie parameter's annotation, the dependencies' too, and
    the fields of a parameter model (the task list's query)."""
    found = []
    for field in [
        *dependant.path_params,
        *dependant.query_params,
        *dependant.header_params,
        *dependant.cookie_params,
    ]:
        found.append(field.field_info.annotation)
        model = utils._get_param_model(field)
        if model is not None:
            found += [model_field.annotation for model_field in model.model_fields.values()]
    for sub in dependant.dependencies:
        found += parameter_annotations(sub)
    return found


def test_the_seam_is_ours_once_an_app_is_made(app: FastAPI) -> None:
    # A FastAPI release that renames or moves it fails here, not silently.
    assert vars(utils)[SEAM] is field_annotation_is_sequence
    # And FastAPI still asks it by that name while reading a request's parameters.
    assert SEAM in utils._get_multidict_value.__code__.co_names


def test_every_route_parameter_gets_fastapis_own_answer(app: FastAPI) -> None:
    annotations = [
        annotation
        for route in app.router.routes
        if isinstance(route, APIRoute)
        for annotation in parameter_annotations(route.dependant)
    ]
    assert len(annotations) > 50
    sequences = 0
    for annotation in annotations:
        expected = fastapis_own(annotation)
        assert field_annotation_is_sequence(annotation) is expected, annotation
        assert field_annotation_is_sequence(annotation) is expected, annotation  # and when remembered
        sequences += expected
    assert sequences > 0  # `priority` and `tag` repeat: lists among them


def test_an_annotation_that_cannot_be_a_key_is_still_answered() -> None:
    unhashable = Annotated[list[str], Query(), ["a list in the metadata"]]
    assert field_annotation_is_sequence(unhashable) is True
    assert field_annotation_is_sequence(Annotated[int, ["x"]]) is False
