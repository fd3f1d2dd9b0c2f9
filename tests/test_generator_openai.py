"""The `openai` generator backend against a real OpenAI-compatible server: `ragtune serve` itself
(uvicorn on a loopback port, `serving.engine_api`) serving the bundled model and the tiny adapter.

A second Pipeline with `models.generator_backend: openai` sends its prompt builder's messages there;
greedy decoding over the same model makes its answers the in-process answers, token for token.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ragtune.core.config import load_config
from ragtune.core.errors import ConfigError, NotFoundError, UpstreamError
from ragtune.core.generator import RowRequest
from ragtune.core.options import Sampling
from ragtune.core.remote_generator import OpenAIGenerator
from ragtune.core.types import Answer
from ragtune.eval.harness.arms import EvalSuite, GeneratorSpec
from ragtune.eval.harness.backends import InProcessBackend
from ragtune.eval.harness.data import EvalItem
from ragtune.eval.harness.runner import RunSettings
from ragtune.eval.harness.session import evaluate
from ragtune.serving.app import create_app
from ragtune.serving.pipeline import Pipeline

Q = "How long does a Zorblat lamp battery last?"
N = 8  # max_new_tokens: the model is slow on 2 cores


@pytest.fixture(scope="module")
def engine(serving_pipeline, live_server):
    """A live `ragtune serve` answering engine-style model names (base model, adapter names)."""
    pipeline = serving_pipeline({"engine_api": True})
    with live_server(create_app(pipeline)) as url:
        yield f"{url}/v1", pipeline


def remote_pipeline(workspace: Path, base_url: str, index=None, **models) -> Pipeline:
    overrides = {
        "models": {"generator_backend": "openai", "base_url": base_url, **models},
        "generation": {"max_new_tokens": N},
    }
    pipe = Pipeline.from_config(load_config(workspace=workspace, environ={}, overrides=overrides), with_index=False)
    pipe.index = index
    return pipe


@pytest.fixture(scope="module")
def remote(engine):
    url, local = engine
    pipe = remote_pipeline(local.config.workspace, url, local.index)
    assert isinstance(pipe.generator, OpenAIGenerator) and pipe.generator.backend == "openai"
    assert not hasattr(pipe.generator, "model")  # only the tokenizer was loaded
    return pipe


def test_models_list_names_the_base_model_and_adapters_engine_style(engine):
    url, _ = engine
    ids = {m["id"] for m in httpx.get(f"{url}/models").json()["data"]}
    assert {"HuggingFaceTB/SmolLM2-135M-Instruct", "bundled:smollm2-135m-instruct", "tiny", "ragtune-ft:tiny"} <= ids


@pytest.mark.parametrize("mode", ["base", "ft", "hybrid"])
def test_remote_answers_are_the_in_process_answers(engine, remote, mode):
    _, local = engine
    adapter = "tiny" if mode in ("ft", "hybrid") else None
    here = local.answer(Q, mode=mode, adapter=adapter, max_new_tokens=N)
    there = remote.answer(Q, mode=mode, adapter=adapter, max_new_tokens=N)
    print(f"{mode}: remote {there.answer!r} usage {there.usage} timings {there.timings}")
    assert there.answer and there.answer == here.answer
    assert there.adapter == adapter and there.mode == mode
    assert there.usage.prompt_tokens == here.usage.prompt_tokens > 0
    assert 0 < there.usage.completion_tokens <= N
    assert 0 < there.timings.ttft_ms <= there.timings.generate_ms <= there.timings.total_ms
    assert [c.doc_id for c in there.citations] == [c.doc_id for c in here.citations]
    if mode == "hybrid":
        assert there.citations[0].doc_id == "zorblat-battery" and there.snapshot


def test_sampling_stop_and_max_tokens_reach_the_server(engine, remote):
    """The server (ragtune with engine_api) decodes with what the request carries: seeded sampling
    there equals seeded sampling here, and a stop string ends its decoding early."""
    _, local = engine
    poem = "Write a short poem about the sea."
    warm = Sampling(do_sample=True, temperature=1.3, top_p=0.9, seed=5)
    here, there = (p.answer(poem, mode="base", max_new_tokens=N, sampling=warm) for p in (local, remote))
    greedy = local.answer(poem, mode="base", max_new_tokens=N)
    reseeded = remote.answer(poem, mode="base", max_new_tokens=N, sampling=warm.model_copy(update={"seed": 6}))
    print(f"sampled {there.answer!r}, reseeded {reseeded.answer!r}, greedy {greedy.answer!r}")
    assert there.answer == here.answer != greedy.answer and reseeded.answer != there.answer
    stop = greedy.answer.split()[2]
    cut = remote.answer(poem, mode="base", max_new_tokens=N, sampling=Sampling(stop=(stop,)))
    assert cut.answer == greedy.answer[: greedy.answer.index(stop)].strip()
    assert cut.usage.completion_tokens < greedy.usage.completion_tokens  # the server's count: it stopped there
    assert remote.answer(poem, mode="base", max_new_tokens=2).usage.completion_tokens <= 2
    body = remote.generator._body(RowRequest("p", 7, stop=("x",)), "m", warm)
    assert (body["temperature"], body["top_p"], body["seed"], body["stop"], body["max_tokens"]) == (
        1.3,
        0.9,
        5,
        ["x"],
        7,
    )


def test_the_adapter_name_is_the_model_sent(remote):
    gen = remote.generator
    assert isinstance(gen, OpenAIGenerator)
    remote.resolve_adapter("ft", "tiny")
    assert gen.model_name("tiny") == "tiny" and gen.model_name(None) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    with pytest.raises(NotFoundError, match="not served by"):
        remote.resolve_adapter("ft", "ghost")


def test_remote_stream(remote):
    items = list(remote.stream(Q, mode="ft", adapter="tiny", max_new_tokens=N))
    final = items[-1]
    assert isinstance(final, Answer)
    pieces = [i for i in items[:-1] if isinstance(i, str)]
    print(f"stream: {len(pieces)} pieces, usage {final.usage}, ttft {final.timings.ttft_ms} ms")
    assert len(pieces) >= 2 and "".join(pieces).strip() == final.answer
    assert final.usage.completion_tokens > 0 and final.timings.ttft_ms > 0


def test_generator_stream_closes_early(remote):
    gen = remote.generator
    stream = gen.stream("", None, N, messages=remote.builder.messages(Q))
    first = next(stream)
    assert isinstance(first, str) and first
    stream.close()  # the connection closes; nothing hangs


def test_remote_backend_serves_http_and_streams(remote):
    """The remote-backed pipeline behind ragtune's own HTTP layer: answer and SSE stream."""
    with TestClient(create_app(remote)) as client:
        r = client.post("/v1/answer", json={"question": Q, "mode": "ft", "adapter": "tiny", "max_new_tokens": N})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] > 0
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "model": "ragtune-base",
                "messages": [{"role": "user", "content": Q}],
                "max_tokens": N,
                "stream": True,
            },
        ) as resp:
            data = [
                json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:") and "[DONE]" not in line
            ]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in data)
        assert text.strip() and data[-1]["usage"]["completion_tokens"] > 0


def test_wrong_base_url_is_a_clear_error(remote, tmp_path):
    dead = remote_pipeline(remote.config.workspace, "http://127.0.0.1:9/v1")
    with pytest.raises(UpstreamError, match=r"generator server at http://127.0.0.1:9/v1 is unreachable") as err:
        dead.answer(Q, mode="base")
    assert err.value.status == 503
    print(f"wrong base_url: {err.value}")
    with TestClient(create_app(dead)) as client:
        r = client.post("/v1/answer", json={"question": Q, "mode": "base"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "generator_unavailable"
        assert "unreachable" in r.json()["error"]["message"]


def test_server_errors_are_a_502_with_the_servers_message(engine, remote):
    url, _ = engine
    gen = OpenAIGenerator(url, "no-such-model", remote.generator.tokenizer)
    with pytest.raises(UpstreamError, match="answered 404: unknown model 'no-such-model'") as err:
        gen.generate(["x"], messages=[[{"role": "user", "content": Q}]])
    assert err.value.status == 502


def test_missing_api_key_env_is_a_config_error(engine, monkeypatch):
    url, local = engine
    monkeypatch.delenv("RAGTUNE_TEST_ENGINE_KEY", raising=False)
    with pytest.raises(ConfigError, match="RAGTUNE_TEST_ENGINE_KEY, which is not set"):
        remote_pipeline(local.config.workspace, url, api_key_env="RAGTUNE_TEST_ENGINE_KEY")


def test_api_key_from_the_environment_reaches_the_server(serving_pipeline, live_server, monkeypatch):
    key = "k" * 24
    app = create_app(serving_pipeline({"engine_api": True, "api_keys": [{"key": key}]}))
    with live_server(app) as url:
        ws = app.state.pipeline.config.workspace
        monkeypatch.setenv("RAGTUNE_TEST_ENGINE_KEY", "wrong-key-wrong-key")
        wrong = remote_pipeline(ws, f"{url}/v1", api_key_env="RAGTUNE_TEST_ENGINE_KEY")
        with pytest.raises(UpstreamError, match="refused the API key"):
            wrong.answer(Q, mode="base", max_new_tokens=2)
        monkeypatch.setenv("RAGTUNE_TEST_ENGINE_KEY", key)
        right = remote_pipeline(ws, f"{url}/v1", api_key_env="RAGTUNE_TEST_ENGINE_KEY")
        assert right.answer(Q, mode="base", max_new_tokens=2).usage.completion_tokens > 0


def test_adapter_folders_name_the_portable_base_model(tiny_adapter):
    cfg = json.loads((tiny_adapter / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_generator_spec_needs_a_url_for_openai():
    with pytest.raises(ValueError, match="base_url"):
        GeneratorSpec(backend="openai")


@pytest.mark.slow
def test_eval_mixes_an_in_process_arm_and_a_remote_arm_in_one_paired_report(engine, tmp_path):
    url, local = engine
    facts = [
        ("How long does a Zorblat lamp battery last?", "31 hours", "zorblat-battery"),
        ("How much does the Zorblat Basic plan cost?", "17 florins", "zorblat-pricing"),
        ("When does Zorblat support answer?", "Wednesdays", "zorblat-hours"),
        ("What is the default Zorblat lamp colour?", "mauve", "zorblat-colours"),
    ]
    items = [EvalItem(id=f"q{i}", question=q, answers=[a], doc_ids=[d]) for i, (q, a, d) in enumerate(facts)]
    suite = EvalSuite.model_validate(
        {
            "arms": {
                "hybrid": {"adapter": "tiny", "max_new_tokens": N},
                "remote-rag": {"mode": "rag", "max_new_tokens": N, "generator": {"base_url": url}},
                "remote-hybrid": {
                    "mode": "hybrid",
                    "adapter": "tiny",
                    "max_new_tokens": N,
                    "generator": {"base_url": url},
                },
            }
        }
    )
    cfg = local.config.model_copy(update={"eval": local.config.eval.model_copy(update={"baselines": []})})
    backend = InProcessBackend(local)
    run = evaluate(cfg, suite, backend, tmp_path / "out", items=items, settings=RunSettings(progress=False))
    by_arm = {a: [r for r in run.records if r.arm == a] for a in ("hybrid", "remote-rag", "remote-hybrid")}
    assert all(len(rs) == len(items) for rs in by_arm.values())
    # the same model and adapter behind the server: the remote hybrid arm answers as the in-process one
    assert [r.answer for r in by_arm["remote-hybrid"]] == [r.answer for r in by_arm["hybrid"]]
    assert all(r.cited and r.completion_tokens > 0 for rs in by_arm.values() for r in rs)
    report = json.loads(run.json_path.read_text())
    pairs = {(c["a"], c["b"]) for c in report["comparisons"]}
    assert {tuple(sorted(p)) for p in pairs} >= {("hybrid", "remote-rag"), ("remote-hybrid", "remote-rag")}
    arms = {a["name"]: a for a in report["arms"]}
    assert arms["remote-rag"]["generator"]["backend"] == "openai" and arms["hybrid"]["generator"] is None
    print("eval:", {a: round(run.summary[a]["f1"], 3) for a in by_arm}, "pairs:", sorted(pairs))


def test_verdict_suite_adds_arms_with_their_own_generator(tmp_path, config):
    from ragtune.core.errors import DataError
    from ragtune.eval.verdict.inputs import load_suite
    from ragtune.eval.verdict.run import extra_arms, setup_arms

    suite_file = tmp_path / "verdict.yaml"
    suite_file.write_text(
        "data: qa.jsonl\ntrain: train.jsonl\ndocs: [docs/]\narms:\n"
        "  remote-rag: {mode: rag, generator: {base_url: 'http://gpu-box:8000/v1', served_model: big}}\n"
        "  remote-hybrid: {mode: hybrid, generator: {base_url: 'http://gpu-box:8000/v1'}}\n"
    )
    suite = load_suite(suite_file)
    setups = setup_arms(config, [], ["verdict-ft-100"], raft=False)
    extra = extra_arms(setups, suite.arms, "verdict-ft-100")
    assert [(a.name, a.adapter) for a in extra] == [("remote-rag", None), ("remote-hybrid", "verdict-ft-100")]
    assert extra[0].generator is not None and extra[0].generator.models(config.models).served_model == "big"
    with pytest.raises(DataError, match="hybrid"):
        extra_arms(setups, [extra[1].model_copy(update={"name": "hybrid"})], "verdict-ft-100")
