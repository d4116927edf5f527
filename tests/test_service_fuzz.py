"""API fuzzing with schemathesis: no generated request may crash the service (no 5xx).

Derandomised by default so CI is reproducible; ``TANSUO_FUZZ_EXAMPLES=200`` runs that many
fresh random examples per operation (how the created_at overflow was found)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tansuo.config import Settings
from tansuo.exploration.policy import PolicyConfig
from tansuo.service.app import create_app
from tansuo.service.auth import KeyStore
from tansuo.service.engine import Engine
from test_cli import run
from test_service import _data


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    _data(tmp)
    home = tmp / "home"
    run(home, "import", "items", str(tmp / "items.csv"))
    run(home, "import", "events", str(tmp / "events.csv"))
    engine = Engine(Settings(home=home, rate_limit_per_minute=0),
                    PolicyConfig(propensity_draws=50))
    key, _ = KeyStore(home).create(["admin"])
    yield create_app(engine), key
    engine.close()


def test_no_request_crashes_the_service(fuzz_target):
    """Every operation of the OpenAPI schema, 20 generated requests each (bodies, paths and
    queries from the schema, including edge cases), with an admin key."""
    app, key = fuzz_target
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 9
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=int(os.environ.get("TANSUO_FUZZ_EXAMPLES", "20")),
                  deadline=None, database=None,
                  derandomize=not os.environ.get("TANSUO_FUZZ_EXAMPLES"),
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(headers={"Authorization": f"Bearer {key}"},
                                   checks=[not_a_server_error])

        check()
