"""Latency under load: the closed loop against fake servers of known capacity, the SSE parsing of both
APIs, the report section and plot; one model-backed run through a live server end to end.

No assert depends on how fast this machine is: fake service times are long next to scheduling noise and
the bounds are ratios with wide margins.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import jsonschema
import pytest

from ragtune.core.errors import ConfigError, RagtuneError
from ragtune.eval.harness.arms import ArmSpec
from ragtune.eval.harness.load import (
    HttpLoadTarget,
    LoadLevel,
    Shot,
    closed_loop,
    load_doc,
    load_markdown,
    loadable,
    openai_model,
    parse_levels,
    requests_for,
    run_load,
)
from ragtune.eval.harness.manifest import manifest
from ragtune.eval.harness.report import LOAD_PLOT, ReportExtras, write_report
from ragtune.eval.harness.schema import REPORT_SCHEMA

SERVICE_S = 0.05


class FakeServer:
    """A server with `capacity` slots, each request holding one for SERVICE_S; counts the most in flight."""

    def __init__(self, capacity: int, tokens: int = 5, fail_every: int = 0) -> None:
        self.capacity, self.tokens, self.fail_every = capacity, tokens, fail_every
        self.slots: asyncio.Semaphore | None = None
        self.in_flight = self.peak = self.calls = 0
        self.closed = False

    async def send(self, question: str, arm: ArmSpec, snapshot: str | None) -> Shot:
        self.slots = self.slots or asyncio.Semaphore(self.capacity)
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RagtuneError("503 busy")
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        t0 = asyncio.get_running_loop().time()
        async with self.slots:
            await asyncio.sleep(SERVICE_S)
        self.in_flight -= 1
        e2e = (asyncio.get_running_loop().time() - t0) * 1000
        return Shot(ttft_ms=e2e / 2, e2e_ms=e2e, output_tokens=self.tokens)

    async def aclose(self) -> None:
        self.closed = True


ARMS = [ArmSpec(name="rag", mode="rag"), ArmSpec(name="ft", mode="ft", adapter="tiny")]


def by(table: list[LoadLevel], arm: str) -> dict[int, LoadLevel]:
    return {row.level: row for row in table if row.arm == arm}


def test_closed_loop_keeps_exactly_level_requests_in_flight() -> None:
    server = FakeServer(capacity=100)
    samples, seconds = asyncio.run(closed_loop(server, ["q1", "q2"], ARMS[0], level=3, requests=12))
    assert len(samples) == 12 and server.calls == 12
    assert server.peak == 3  # never more than the level, and the level is reached
    assert seconds >= 4 * SERVICE_S * 0.9  # 12 requests, 3 at a time: four rounds back to back


def test_throughput_grows_to_capacity_then_flattens_while_latency_grows() -> None:
    server = FakeServer(capacity=2)
    table, samples = run_load(server, ["a", "b", "c"], ARMS[:1], [1, 2, 4, 8], requests=8)
    rows = by(table, "rag")
    assert server.closed
    assert [r.level for r in table] == [1, 2, 4, 8]
    assert all(r.n == requests_for(r.level, 8) and r.errors == 0 for r in table)
    assert len(samples) == sum(r.n for r in table)
    ceiling = 2 / SERVICE_S
    assert rows[2].requests_per_s > 1.6 * rows[1].requests_per_s  # below capacity: concurrency pays
    assert rows[8].requests_per_s < 1.3 * rows[2].requests_per_s  # beyond it: flat ...
    assert rows[8].requests_per_s <= ceiling * 1.05
    assert rows[8].e2e_p50_ms is not None and rows[2].e2e_p50_ms is not None
    assert rows[8].e2e_p50_ms > 2.5 * rows[2].e2e_p50_ms  # ... and the queue shows as latency
    assert rows[1].tokens_per_s == pytest.approx(5 * rows[1].requests_per_s)


def test_percentiles_only_with_enough_samples() -> None:
    table, _ = run_load(FakeServer(capacity=8), ["q"], ARMS[:1], [1, 4], requests=20)
    small, large = by(table, "rag")[1], by(table, "rag")[4]
    assert small.n == 20 and small.e2e_p95_ms is not None and small.e2e_p99_ms is None
    table, _ = run_load(FakeServer(capacity=8), ["q"], ARMS[:1], [2], requests=6)
    row = table[0]
    assert row.n == 8 and row.ttft_p50_ms is not None and row.ttft_p95_ms is None and row.tpot_p95_ms is None
    md = load_markdown(load_doc(table, 6, "fake"))
    assert "n/a (n=8)" in md and large.e2e_p50_ms is not None


def test_failed_requests_are_counted_not_timed() -> None:
    table, samples = run_load(FakeServer(capacity=4, fail_every=4), ["q"], ARMS[:1], [2], requests=8)
    row = table[0]
    assert row.n + row.errors == 8 and row.errors >= 1
    assert sum(s.error is not None for s in samples) == row.errors


def test_every_arm_every_level_with_a_warm_up() -> None:
    server = FakeServer(capacity=4)
    baseline = ArmSpec(name="constant", mode="base", baseline="constant")
    few_shot = ArmSpec(name="few-shot", mode="base", system_prompt="Examples: ...")
    table, _ = run_load(server, ["q"], [*ARMS, baseline, few_shot], [1, 2])
    assert [(r.arm, r.level) for r in table] == [("rag", 1), ("rag", 2), ("ft", 1), ("ft", 2)]
    assert server.calls == sum(r.n for r in table) + 2  # one uncounted warm-up per arm
    assert loadable([*ARMS, baseline, few_shot])[1] == ["few-shot"]  # the baseline is not timed at all
    assert "Not run under load (server-side settings no request can carry): few-shot" in load_markdown(
        load_doc(table, 20, "fake", ["few-shot"])
    )


def test_requests_per_level_and_level_parsing() -> None:
    assert requests_for(1, 20) == 20 and requests_for(8, 20) == 32 and requests_for(3, 20) == 21
    assert parse_levels("8, 1,4,4") == [1, 4, 8]
    for bad in ("", "0,2", "a,b"):
        with pytest.raises(ConfigError):
            parse_levels(bad)


def sse(*events: tuple[str | None, str]) -> bytes:
    return "".join((f"event: {e}\r\n" if e else "") + f"data: {d}\r\n\r\n" for e, d in events).encode()


def mock_target(api: str, body: bytes, seen: list[dict]) -> HttpLoadTarget:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append({"path": request.url.path, **json.loads(request.content)})
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    target = HttpLoadTarget("http://server", api=api)  # type: ignore[arg-type]
    target._client = httpx.AsyncClient(base_url=target.url, transport=httpx.MockTransport(handler))
    return target


def test_ragtune_stream_gives_tokens_from_the_done_event() -> None:
    done = json.dumps({"usage": {"prompt_tokens": 10, "completion_tokens": 7}})
    body = sse(("token", json.dumps({"text": ""})), ("token", json.dumps({"text": "Hi"})), ("done", done))
    seen: list[dict] = []
    target = mock_target("ragtune", body, seen)
    shot = asyncio.run(target.send("q?", ARMS[1], "snap-1"))
    assert shot.output_tokens == 7 and 0 <= shot.ttft_ms <= shot.e2e_ms
    assert seen[0]["path"] == "/v1/answer" and seen[0]["stream"] is True and seen[0]["adapter"] == "tiny"
    assert "snapshot" not in seen[0]  # ft does not retrieve: no pin sent


def test_openai_stream_counts_pieces_without_usage_and_reports_errors() -> None:
    chunk = json.dumps({"choices": [{"delta": {"content": "x"}}]})
    seen: list[dict] = []
    shot = asyncio.run(
        mock_target("openai", sse((None, chunk), (None, chunk), (None, "[DONE]")), seen).send("q", ARMS[1], None)
    )
    assert shot.output_tokens == 2
    assert seen[0]["path"] == "/v1/chat/completions" and seen[0]["model"] == openai_model(ARMS[1]) == "ragtune-ft:tiny"
    usage = json.dumps({"choices": [{"delta": {}}], "usage": {"completion_tokens": 9}})
    assert (
        asyncio.run(mock_target("openai", sse((None, chunk), (None, usage)), []).send("q", ARMS[0], None)).output_tokens
        == 9
    )
    with pytest.raises(RagtuneError, match="mid-stream"):
        asyncio.run(mock_target("ragtune", sse(("error", '{"error": {}}')), []).send("q", ARMS[0], None))


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the accuracy plots of a report without records
def test_report_has_the_load_section_and_plot(tmp_path: Path, config) -> None:
    table, _ = run_load(FakeServer(capacity=2), ["q"], ARMS, [1, 2], requests=4)
    summary = {a.name: {"n": 0, "metrics": {}, "p50_ms": None, "p95_ms": None, "p99_ms": None} for a in ARMS}
    meta = manifest(config, {"seed": 0})
    extras = ReportExtras(load=load_doc(table, 4, "fake"))
    json_path, md_path = write_report(tmp_path, summary, [], meta, extras=extras)
    doc = json.loads(json_path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    assert [(r["arm"], r["level"]) for r in doc["load"]["levels"]] == [("rag", 1), ("rag", 2), ("ft", 1), ("ft", 2)]
    md = md_path.read_text()
    assert "## Under load" in md and md.count("| rag |") >= 2 and LOAD_PLOT in md
    assert (tmp_path / LOAD_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_load_is_off_by_default_and_levels_are_checked(config) -> None:
    from pydantic import ValidationError

    from ragtune.core.config import load_config
    from ragtune.eval.harness.arms import EvalSuite, arm

    assert config.verdict.load_levels is None and config.eval.load_requests == 20
    assert EvalSuite(arms=[arm("rag")]).load is None
    assert load_config(environ={}, overrides={"verdict": {"load_levels": [1, 2]}}).verdict.load_levels == [1, 2]
    with pytest.raises(ValidationError):
        EvalSuite(arms=[arm("rag")], load=[0])


# --- model-backed: the real serving path --------------------------------------------------------

QUESTIONS = ["What does the Zorblat Basic plan cost?", "On which day does Zorblat support answer?"]


@pytest.mark.slow  # a whole eval with a load pass: about a minute
def test_eval_load_in_process_goes_through_the_served_pipeline(serving_pipeline, tmp_path: Path) -> None:
    """`ragtune eval --load 1,2` in-process: the pipeline served on loopback, both arms at both levels,
    the counts adding up in report.json, report.md and load.png."""
    from ragtune.eval.harness.arms import EvalSuite
    from ragtune.eval.harness.backends import InProcessBackend
    from ragtune.eval.harness.data import EvalItem
    from ragtune.eval.harness.runner import RunSettings
    from ragtune.eval.harness.session import evaluate

    pipeline = serving_pipeline()
    cfg = pipeline.config.model_copy(
        update={"eval": pipeline.config.eval.model_copy(update={"latency_samples": 1, "load_requests": 2})}
    )
    arms = {"rag": {"top_k": 1, "max_new_tokens": 4}, "ft": {"adapter": "tiny", "max_new_tokens": 4}}
    suite = EvalSuite.model_validate({"arms": arms, "load": [2, 1]})
    items = [EvalItem(id=str(i), question=q, answers=["x"]) for i, q in enumerate(QUESTIONS)]
    run = evaluate(cfg, suite, InProcessBackend(pipeline), tmp_path, items=items, settings=RunSettings(progress=False))
    doc = json.loads(run.json_path.read_text())
    jsonschema.validate(doc, REPORT_SCHEMA)
    rows = doc["load"]["levels"]
    assert [(r["arm"], r["level"]) for r in rows] == [("rag", 1), ("rag", 2), ("ft", 1), ("ft", 2)]
    for r in rows:
        assert r["n"] + r["errors"] == requests_for(r["level"], 2) and r["errors"] == 0
        assert r["requests_per_s"] > 0 and r["tokens_per_s"] > 0
        assert 0 < r["ttft_p50_ms"] <= r["e2e_p50_ms"] and r["e2e_p95_ms"] is None  # n < 20: no p95
    assert "served locally" in doc["load"]["target"]
    md = run.md_path.read_text()
    assert "## Under load" in md and md.count("| ft | ") >= 2 and "n/a (n=" in md
    assert (tmp_path / LOAD_PLOT).read_bytes()[:4] == b"\x89PNG"


def test_openai_streaming_load_against_a_live_server(serving_pipeline, live_server) -> None:
    """`--endpoint URL --load-api openai`: concurrent streamed chat completions to a real server."""
    from ragtune.serving.app import create_app

    app = create_app(serving_pipeline())
    arm = ArmSpec(name="ft", mode="ft", adapter="tiny", max_new_tokens=4)
    with live_server(app) as url:
        table, samples = run_load(HttpLoadTarget(url, api="openai"), QUESTIONS, [arm], [2], requests=4)
    sent = requests_for(2, 4)  # four rounds of two: 8
    assert len(table) == 1 and table[0].n == sent and table[0].errors == 0
    assert all(s.output_tokens >= 1 and 0 < (s.ttft_ms or 0) <= (s.e2e_ms or 0) for s in samples)
    assert app.state.scheduler.stats.rows == 1 + sent  # the warm-up and the level, all through the scheduler


def test_cli_checks_load_levels_before_any_model_loads(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"id": "1", "question": "Q?", "answers": ["a"]}) + "\n")
    argv = ["eval", "--data", str(data), "--load", "0,2", "--workspace", str(tmp_path / "ws")]
    code = "from ragtune.cli import main; main()"
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--load levels must be positive integers" in r.stderr and "Traceback" not in r.stderr
