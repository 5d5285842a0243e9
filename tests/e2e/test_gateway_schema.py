"""Schemathesis against the running gateway: every operation of its OpenAPI, with the admin token.

Real gateway and sequential processes on a private copy of the demo data: the generated calls create
experiments and move aliases, which must not leak into the other e2e modules.

Schemathesis's own pytest integration (``schemathesis.pytest.from_fixture(...).parametrize()``) is
the natural fit for a schema served by a fixture, but 4.32.5 reads ``Node._nodeid``, which pytest 9.2
removed (AttributeError before any request). So the test drives Schemathesis's Python API directly:
each operation's Hypothesis strategy (``APIOperation.as_strategy``), valid and invalid inputs, one
subtest per operation and mode, each case sent and checked with ``Case.call_and_validate``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from tests.conftest import free_port
from tests.e2e.helpers import AUTH, TOKEN, copy_demo_data, start_service, stop_service

EXAMPLES_PER_OPERATION = 25  # per generation mode; ~2 x 25 x 15 requests in all, under 2 minutes here
# No 5xx, every status is one the OpenAPI documents, and every answer matches its documented schema.
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
GATEWAY_OPERATIONS = {
    ("POST", "/v1/recommendations"),
    ("POST", "/v1/assignments"),
    ("GET", "/v1/experiments"),
    ("POST", "/v1/experiments"),
    ("GET", "/v1/experiments/{key}"),
    ("PATCH", "/v1/experiments/{key}"),
    ("POST", "/v1/experiments/{key}/pause"),
    ("POST", "/v1/experiments/{key}/resume"),
    ("POST", "/v1/experiments/{key}/stop"),
    ("GET", "/v1/experiments/{key}/history"),
    ("GET", "/v1/models/{name}"),
    ("POST", "/v1/models/{name}/deploy"),
    ("POST", "/v1/models/{name}/rollback"),
}


@pytest.fixture(scope="module")
def gateway_url(demo_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = copy_demo_data(demo_env, tmp_path_factory.mktemp("schema") / "data")
    seq_port, gw_port = free_port(), free_port()
    env = {
        **demo_env,
        "RECSYS_DATA_DIR": str(data_dir),
        "RECSYS_ADMIN_TOKEN": TOKEN,
        "RECSYS_SERVICES": json.dumps({"sequential": f"http://127.0.0.1:{seq_port}"}),
    }
    seq = start_service("sequential", seq_port, env)
    try:
        gw = start_service("gateway", gw_port, env)
        try:
            yield f"http://127.0.0.1:{gw_port}"
        finally:
            stop_service(gw)
    finally:
        stop_service(seq)


@pytest.mark.slow
def test_gateway_openapi_fuzzing_finds_no_server_error(gateway_url: str, subtests: pytest.Subtests) -> None:
    """Every operation, valid and invalid inputs (with the admin token, so admin routes run their
    handlers instead of stopping at 401): no answer is a 5xx."""
    schema = schemathesis.openapi.from_url(f"{gateway_url}/openapi.json")
    operations = []
    for result in schema.get_all_operations():
        operations.append(result.ok())  # an operation Schemathesis cannot read is itself a failure
    assert {(op.method.upper(), op.path) for op in operations} >= GATEWAY_OPERATIONS

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=gateway_url, headers=AUTH, checks=CHECKS, timeout=60)

            with subtests.test(msg=f"{operation.label} ({mode.value})"):
                try:
                    run()
                except Unsatisfiable:
                    if mode is GenerationMode.POSITIVE:
                        raise
                    # Nothing in the operation can be made invalid (no parameters, or only free-form strings).
                    pytest.skip(f"{operation.label}: no invalid input to generate")


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("deploy", {"version": 2**63}),  # found by the run above: a 500 from the registry's INTEGER column
        ("rollback", {"to_version": 2**63}),
        ("deploy", {"version": 1, "alias": "latest"}),  # valid for the old pattern, refused by the registry: 500
        ("deploy", {"version": 1, "alias": "v2"}),
        ("rollback", {"to_version": 1, "alias": "a" * 65}),
    ],
    ids=["deploy-huge-version", "rollback-huge-version", "alias-latest", "alias-version-like", "alias-too-long"],
)
def test_inputs_that_used_to_answer_500_are_422(gateway_url: str, route: str, body: dict) -> None:
    r = httpx.post(f"{gateway_url}/v1/models/seq-lte/{route}", json=body, headers=AUTH, timeout=60)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"]


def test_experiment_target_with_an_out_of_range_version_is_refused(gateway_url: str) -> None:
    target = {"service": "sequential", "model": "seq-lte", "ref": "champion"}
    exp = {
        "key": "huge-ref",
        "surface": "home",
        "variants": [
            {"key": "control", "weight": 0.5, "target": target},
            {"key": "treatment", "weight": 0.5, "target": {**target, "ref": "99999999999999999999"}},
        ],
    }
    r = httpx.post(f"{gateway_url}/v1/experiments", json=exp, headers=AUTH)
    assert r.status_code == 422, r.text
