"""Schemathesis against the live app's own /openapi.json: every route, generated valid and invalid
inputs, a bounded budget. No answer is a 5xx, every status and body matches the schema the app
publishes, and malformed input is refused with a 4xx."""

import time

import pytest
import schemathesis  # the dev extra: a missing one fails the run, never skips it
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.specs.openapi.checks import positive_data_acceptance

pytestmark = [pytest.mark.integration, pytest.mark.mutates_catalog]  # POST /items may add items: after the parity tests
EXAMPLES = 12  # per operation and mode: about a minute for the whole schema on 2 cores
# Every check but one: "schema-valid data is accepted" cannot hold for an API whose bodies name
# catalog items. A schema-valid random item id is unknown and rightly answers 422 naming the field
# (docs/serving.md), so that rule is held by the hand-written tests of test_serving.py instead.
EXCLUDED = [positive_data_acceptance]


def test_every_route_keeps_its_published_contract(served):
    schema = schemathesis.openapi.from_url(served.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /recommend", "POST /rank", "POST /search", "POST /events", "POST /items", "GET /items/{item_id}",
        "GET /forecast/{item_id}", "GET /healthz", "GET /readyz", "POST /ads", "GET /campaigns/{campaign_id}",
        "PUT /campaigns/{campaign_id}"}
    started, calls, failures = time.perf_counter(), [], []
    for op in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            def fuzz(case):
                calls.append(case.call_and_validate(base_url=served.base, excluded_checks=EXCLUDED))

            try:
                fuzz()
            except Unsatisfiable:  # a route with no inputs (the probes) or only a free string path has no invalid input
                assert mode is schemathesis.GenerationMode.NEGATIVE, f"{op.method.upper()} {op.path}: no valid input"
            except (Exception, BaseExceptionGroup) as exc:  # every operation is fuzzed; all failures reported together
                failures.append(f"{op.method.upper()} {op.path} ({mode.value}): {exc}"[:1500])
    assert not failures, "\n\n".join(failures)
    assert len(calls) >= len(operations) * 2 and time.perf_counter() - started < 120  # the budget
