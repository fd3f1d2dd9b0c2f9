"""Property-based fuzz of the whole API: no input may produce a 5xx.

Two fuzzers, both bounded and derandomized, generation capped at one or two tokens: schemathesis from
the API's own OpenAPI (a fixed number of cases per operation and generation mode), and targeted
hypothesis strategies (`api_fuzz.py`) at the fields requests can abuse, which also check that every
accepted write reads back identically. Every refusal must be the one JSON error envelope.
`bench/fuzz.py` runs the targeted fuzz at full size.
"""

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from ragtune.serving.app import create_app

TARGETED_CASES = 600  # about 10-20 s here; bench/fuzz.py runs several thousand

CASES = 12  # per operation and mode: about 15 operations x 2 modes x 12 = a few hundred cases


def fuzz(app, mode: GenerationMode, cases: int = CASES) -> tuple[Counter[int], list[str]]:
    """Run `cases` generated requests per operation; return (status counts, problems found)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=cases, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case) -> None:
            response = case.call()
            statuses[response.status_code] += 1
            where = f"{case.method} {case.formatted_path} {str(case.body)[:200]}"
            if response.status_code >= 500:
                problems.append(f"{response.status_code} on {where}: {response.text[:300]}")
            elif response.status_code >= 400:
                error = response.json().get("error", {})
                if not (error.get("code") and error.get("message")):
                    problems.append(f"{response.status_code} without the error envelope on {where}")

        try:
            run()
        except Unsatisfiable:  # nothing invalid to send (e.g. a route without parameters or body)
            continue
    return statuses, problems


@pytest.fixture(scope="module")
def app(serving_pipeline):
    return create_app(serving_pipeline({"max_new_tokens_cap": 2, "default_mode": "base"}, own_index=True))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_request_gets_a_server_error(app, mode):
    statuses, problems = fuzz(app, mode)
    assert not problems, "\n".join(problems[:10])
    assert (
        statuses.total() >= 100 and sum(n for s, n in statuses.items() if s < 300) >= 10
    )  # answers, not only refusals


@pytest.mark.slow
def test_targeted_fuzz_no_5xx_and_every_write_reads_back(serving_pipeline):
    from api_fuzz import fuzz as targeted
    from fastapi.testclient import TestClient

    pipeline = serving_pipeline(
        {"max_new_tokens_cap": 1, "default_mode": "base", "max_document_chars": 5000}, own_index=True
    )
    tally, _ = targeted(TestClient(create_app(pipeline)), str(pipeline.config.workspace), TARGETED_CASES)
    assert not tally.problems, "\n".join(tally.problems[:10])
    assert tally.cases == TARGETED_CASES and tally.server_errors == 0 and tally.unreadable_writes == 0
    # the fuzz must also reach the paths that succeed (the mix varies a little from run to run)
    assert tally.writes >= 8 and sum(n for s, n in tally.statuses.items() if s < 300) >= 40, tally.kinds
