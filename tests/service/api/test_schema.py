"""Fuzz every operation of the OpenAPI schema: no input may produce a server error.

Hypothesis drives schemathesis' strategies directly (its pytest plugin does not support this
pytest yet), against a real `python -m service` process.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from tests.service.live_server import running_service

EXAMPLES_PER_OPERATION = 30  # per operation and mode (valid, then invalid input)


@pytest.fixture(scope="module")
def live_url(bundle_dir: Path) -> Iterator[str]:
    with running_service({"DUET_BUNDLE": str(bundle_dir)}) as url:
        yield url


def test_no_input_is_a_server_error(live_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/recommend",
        "/v1/recommend/batch",
        "/v1/retrieve",
        "/v1/items/{item_id}/similar",
        "/v1/events",
        "/readyz",
    }
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_server_error(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=live_url, checks=[not_a_server_error], timeout=5)

        if mode is GenerationMode.NEGATIVE:
            # a free-form path parameter has no invalid value: nothing to generate
            with contextlib.suppress(Unsatisfiable):
                no_server_error()
        else:
            no_server_error()
