"""Every route of the API, walked with hostile values of every field type (generated from the
OpenAPI document by schemathesis, valid and invalid alike), signed in as an administrator:
no answer is a 5xx, and every error is a problem document with a message.

The workers are stopped, so what the requests create stays in the store (nothing is built in
the local cloud from generated input); ``exec`` is left out for the same reason (it has its
own hostile-input tests).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from ecliptic.api.app import create_app
from ecliptic.config import load_settings
from ecliptic.runtime import Runtime
from tests.api.conftest import SMALL_INVENTORY, login
from tests.conftest import migrated_sqlite

EXAMPLES = int(os.environ.get("ECLIPTIC_FUZZ_EXAMPLES", "25"))
"""Generated requests per operation and mode (``make test`` runs the default)."""


@pytest.fixture(scope="module")
def fuzz_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    tmp = tmp_path_factory.mktemp("fuzz")
    inv = tmp / "inventory.yaml"
    inv.write_text(SMALL_INVENTORY)
    s = load_settings(data_dir=tmp / "data", inventory_path=inv)
    s = type(s)(**{**s.__dict__, "database_url": migrated_sqlite(tmp / "ecl.db")})
    rt = Runtime(s)
    rt.start()
    rt.workers.stop()
    try:
        yield rt
    finally:
        rt.backend.collect_garbage(set(), set())
        rt.stop()


@pytest.fixture(scope="module")
def token(fuzz_runtime: Runtime) -> str:
    with TestClient(create_app(fuzz_runtime)) as c:
        return login(c, "admin", "test-admin-password")


@pytest.fixture(scope="module")
def api_schema(fuzz_runtime: Runtime) -> Any:
    app = create_app(fuzz_runtime)
    config = SchemathesisConfig()
    config.projects.default.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    return schema.exclude(path_regex=r"/exec$")


def _check(case: Any, token: str, answered: set[str]) -> None:
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    if response.status_code < 300:
        answered.add(f"{case.method} {case.path}")
    where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    assert response.status_code < 500, where
    if response.status_code >= 400 and case.path.startswith("/api/v1/blazar/"):
        # Blazar's ExternalServiceFilter contract: a JSON object with a "message".
        body = response.json()
        assert body.get("message") or body.get("detail"), where
    elif response.status_code >= 400 and case.path.startswith("/api/"):
        ctype = response.headers.get("content-type", [""])
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        assert ctype.startswith("application/problem+json"), where
        body = response.json()
        assert isinstance(body.get("detail"), str) and body["detail"], where


def test_no_route_answers_5xx_or_an_error_without_a_problem_document(
    api_schema: Any, token: str
) -> None:
    walked = 0
    answered: set[str] = set()
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                phases=[Phase.explicit, Phase.generate],
            )
            def walk(case: Any) -> None:
                _check(case, token, answered)

            try:
                walk()
            except Unsatisfiable:
                # Nothing to make invalid (no parameters, no body): the positive walk covers it.
                assert mode == GenerationMode.NEGATIVE, operation.label
                continue
            walked += 1
    assert walked > 60
    # Signed in for real: most operations were answered with success at least once.
    assert len(answered) > 20, sorted(answered)
    core = {"GET /api/v1/servers", "GET /api/v1/leases", "GET /api/v1/credits"}
    assert core <= answered, answered


def test_the_fuzzed_document_covers_the_api(api_schema: Any) -> None:
    """The walk above reaches the routes that matter (the schema is not empty or cut)."""
    paths = {op.ok().path for op in api_schema.get_all_operations()}
    for needed in ("/api/v1/servers", "/api/v1/leases", "/api/v1/availability/earliest"):
        assert needed in paths, sorted(paths)
    assert len(paths) > 30
