"""Property-based fuzzing of the OpenAPI schema (schemathesis): no request makes the server fail
with a 5xx. Runs against an app whose worker is not started, so submitted jobs stay queued."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from genaccel.api import Backend, create_app
from genaccel.settings import Settings
from pipelines.engine import LocalEngine
from pipelines.registry import ModelRegistry


def build_app(home: Path):  # type: ignore[no-untyped-def]
    s = Settings(home=home, default_model="tiny-sd", rate_limit_per_min=0, max_queued_per_key=10_000)
    engine = LocalEngine(s, scoped=False)  # dispatcher never started
    return create_app(Backend(s, engine.store, engine.dispatcher, ModelRegistry(s, allow_paths=False)))


HOME = Path(tempfile.mkdtemp(prefix="genaccel-fuzz-"))
atexit.register(shutil.rmtree, HOME, ignore_errors=True)
schema = schemathesis.openapi.from_asgi("/openapi.json", build_app(HOME))


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case) -> None:
    if case.path.endswith("/events"):
        case.headers = {**(case.headers or {}), "Last-Event-ID": "999999999999999"}
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])
