"""Serving under load: closed-loop HTTP clients against ragtune and a naive baseline, same process.

Rows: concurrency 1, 4 and 8 for modes ft, rag and hybrid (p50/p95/p99 latency, requests/s), the
naive baseline (one FastAPI endpoint calling `model.generate` per request, no batching) at the same
concurrencies, raw `model.generate` for the same prompt and tokens, and at one client `hybrid-short`
(hybrid with the retrieved text cut to its sentences nearest the question, `prompt.compress`,
budget `--short-context`); then ft, hybrid and hybrid-short again at one client with
`generation.prefill_dtype: bfloat16` (rows `+bf16`). Every request generates
exactly the same number of tokens (`ignore_eos`), so latencies compare equal work. Everything runs
on loopback in this process; the figures in `targets` are ratios between runs of this one process.

The ft/hybrid adapter is an untrained LoRA (rank and target modules of `ragtune tune`): serving
cost does not depend on what the weights learned. The baseline endpoint and raw `generate` free
their thread's OpenMP team after each call (core/threads.py), so no row runs slower for the
threads another row left behind. Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import torch  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from ragtune.core.adapters import AdapterCard, write_card  # noqa: E402
from ragtune.core.config import Config, load_config  # noqa: E402
from ragtune.core.generator import Generator  # noqa: E402
from ragtune.core.models import load_generator_model  # noqa: E402
from ragtune.core.sample import sample_path  # noqa: E402
from ragtune.core.threads import release_openmp_team  # noqa: E402
from ragtune.retrieval.index import Index  # noqa: E402
from ragtune.retrieval.loaders import load_documents  # noqa: E402
from ragtune.serving.app import create_app  # noqa: E402
from ragtune.serving.pipeline import Pipeline  # noqa: E402

MODES = ("ft", "rag", "hybrid")
LEVELS = (1, 4, 8)
ADAPTER = "bench"


@dataclass(frozen=True)
class Plan:
    tokens: int  # new tokens per request, exactly
    per_client: dict[int, int]  # requests each client sends, by concurrency


FULL = Plan(tokens=32, per_client={1: 10, 4: 3, 8: 2})
QUICK = Plan(tokens=16, per_client={1: 3, 4: 1, 8: 1})


def questions() -> list[str]:
    rows = [json.loads(line) for line in sample_path("eval.jsonl").read_text().splitlines() if line.strip()]
    return [r["question"] for r in rows[:8]]


def make_adapter(model: Any, path: Path, base_model: str) -> None:
    """An untrained LoRA with `ragtune tune`'s shape, saved with a card; the model is left as it was."""
    from peft import LoraConfig, get_peft_model

    from ragtune.tuning.trainer import target_modules

    tc = load_config(environ={}).tuning
    lora = LoraConfig(
        r=tc.lora_r,
        lora_alpha=tc.lora_alpha,
        target_modules=target_modules(model.config.model_type, tc.target_modules),
        init_lora_weights=False,  # non-zero B: the adapter changes the output, like a trained one
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(str(path))
    peft_model.unload()  # take the LoRA layers out again: the Generator loads the saved copy
    write_card(path, AdapterCard(name=path.name, base_model=base_model, data_hash="untrained", n_train=0, n_val=0))


def build(ws: Path, plan: Plan) -> tuple[Pipeline, Config]:
    cfg = load_config(
        workspace=ws,
        environ={},
        overrides={
            "generation": {"max_new_tokens": plan.tokens},
            "serving": {"max_queue": 256, "max_batch": 8, "default_adapter": ADAPTER},
        },
    )
    model, tok = load_generator_model(cfg.models.generator, cfg.models.cache_dir)
    make_adapter(model, cfg.adapters_dir / ADAPTER, cfg.models.generator)
    index = Index.from_config(cfg)
    index.upsert(load_documents([sample_path("docs", "v1")]), progress=False)
    pipeline = Pipeline(cfg, Generator(model, tok, cfg.generation), index)
    pipeline.load_adapter(ADAPTER)
    return pipeline, cfg


class GenerateIn(BaseModel):
    prompt: str
    max_new_tokens: int


def naive_app(generator: Generator) -> FastAPI:
    """The baseline: a plain endpoint that calls `model.generate` for each request, no queue, no batching."""
    app = FastAPI()
    model, tok = generator.model, generator.tokenizer

    @app.post("/generate")
    def generate(body: GenerateIn) -> dict[str, Any]:
        enc = tok(body.prompt, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=body.max_new_tokens,
                min_new_tokens=body.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        new = out[0, enc["input_ids"].shape[1] :]
        release_openmp_team()  # bench hygiene: this thread's OpenMP team must not slow the other rows
        return {"text": tok.decode(new, skip_special_tokens=True), "completion_tokens": int(new.numel())}

    return app


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


Send = Callable[[httpx.Client, int], dict[str, float]]  # one request; returns the server's timings


def summary(clients: int, latencies: list[float], wall: float, timings: list[dict[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "clients": clients,
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "req_per_s": round(len(latencies) / wall, 3),
        "wall_s": round(wall, 2),
    }
    if timings and timings[0]:
        row["server_ttft_p50_ms"] = round(statistics.median(t["ttft_ms"] for t in timings), 1)
        row["server_retrieve_mean_ms"] = round(statistics.mean(t["retrieve_ms"] for t in timings), 1)
    return row


def closed_loop(send: Send, clients: int, per_client: int) -> dict[str, Any]:
    """`clients` threads, each sending its next request as soon as the last one returned."""
    latencies: list[float] = []
    timings: list[dict[str, float]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(n: int) -> None:
        with httpx.Client(timeout=900) as c:
            start.wait()
            for i in range(per_client):
                t0 = time.perf_counter()
                try:
                    server = send(c, n * per_client + i)
                except BaseException as exc:
                    errors.append(exc)
                    return
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    timings.append(server)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"a benchmark request failed: {errors[0]}")
    return summary(clients, latencies, wall, timings)


def one_client_interleaved(sends: dict[str, Send], rounds: int) -> dict[str, dict[str, Any]]:
    """Single requests, taking turns (a, b, c, a, b, c ...) so load drift on a shared machine hits all alike."""
    lat: dict[str, list[float]] = {k: [] for k in sends}
    tim: dict[str, list[dict[str, float]]] = {k: [] for k in sends}
    with httpx.Client(timeout=900) as c:
        for i in range(rounds):
            for name, send in sends.items():
                t0 = time.perf_counter()
                tim[name].append(send(c, i))
                lat[name].append(time.perf_counter() - t0)
    return {k: summary(1, lat[k], sum(lat[k]), tim[k]) for k in sends}


def ragtune_sender(url: str, mode: str, qs: list[str], tokens: int) -> Send:
    def send(c: httpx.Client, i: int) -> dict[str, float]:
        body = {"question": qs[i % len(qs)], "mode": mode, "max_new_tokens": tokens, "ignore_eos": True}
        r = c.post(f"{url}/v1/answer", json=body)
        if r.status_code != 200 or r.json()["usage"]["completion_tokens"] != tokens:
            raise RuntimeError(f"{mode}: {r.status_code} {r.text[:300]}")
        return dict(r.json()["timings"])

    return send


def baseline_sender(url: str, prompts: list[str], tokens: int) -> Send:
    def send(c: httpx.Client, i: int) -> dict[str, float]:
        r = c.post(f"{url}/generate", json={"prompt": prompts[i % len(prompts)], "max_new_tokens": tokens})
        if r.status_code != 200 or r.json()["completion_tokens"] != tokens:
            raise RuntimeError(f"baseline: {r.status_code} {r.text[:300]}")
        return {}

    return send


def raw_sender(generator: Generator, prompts: list[str], tokens: int) -> Send:
    """`model.generate` itself on the ft prompt, in this thread: the floor a single request can reach."""
    model, tok = generator.model, generator.tokenizer

    def send(_: httpx.Client, i: int) -> dict[str, float]:
        enc = tok(prompts[i % len(prompts)], return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            model.generate(
                **enc, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id
            )
        release_openmp_team()
        return {}

    return send


def progress(message: str) -> None:
    print(f"[bench/serving] {message}", file=sys.stderr, flush=True)


def target(name: str, value: float, goal: float, op: str) -> dict[str, Any]:
    met = value >= goal if op == ">=" else value <= goal
    return {"name": name, "value": round(value, 3), "target": goal, "op": op, "met": met}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="16 tokens a request, fewer requests (under 2 minutes)")
    ap.add_argument(
        "--short-context",
        type=int,
        default=160,
        help="token budget of the hybrid-short row (prompt.compress=sentences); default 160",
    )
    args = ap.parse_args()
    plan = QUICK if args.quick else FULL
    t_start = time.perf_counter()
    qs = questions()
    with tempfile.TemporaryDirectory(prefix="ragtune-bench-serving-") as tmp:
        pipeline, cfg = build(Path(tmp), plan)
        gen = pipeline.generator
        ft_prompts = [p.prompt for p in pipeline.prepare_many(qs, mode="ft", adapter=ADAPTER)]
        hybrid_prompt_tokens = statistics.mean(
            gen.count_tokens(p.prompt) for p in pipeline.prepare_many(qs, mode="hybrid", adapter=ADAPTER)
        )
        # the same model, adapter and index, with extractive compression of the retrieved text
        prompt_short = cfg.prompt.model_copy(update={"compress": "sentences", "max_context_tokens": args.short_context})
        short = Pipeline(cfg.model_copy(update={"prompt": prompt_short}), gen, pipeline.index)
        short_prompt_tokens = statistics.mean(gen.count_tokens(p.prompt) for p in short.prepare_many(qs, mode="hybrid"))
        rows: dict[str, dict[str, Any]] = {}
        app = create_app(pipeline)
        with serve(app) as url, serve(naive_app(gen)) as base_url, serve(create_app(short)) as short_url:
            senders = {m: ragtune_sender(url, m, qs, plan.tokens) for m in MODES}
            senders["hybrid-short"] = ragtune_sender(short_url, "hybrid", qs, plan.tokens)
            senders["baseline"] = baseline_sender(base_url, ft_prompts, plan.tokens)
            senders["raw_generate"] = raw_sender(gen, ft_prompts, plan.tokens)
            with httpx.Client(timeout=900) as c:
                for send in senders.values():  # warm-up: adapter, retrieval, first shapes
                    send(c, 0)
            # the baseline and raw generate run the ft adapter too; ragtune leaves it active after ft requests
            one = one_client_interleaved(senders, plan.per_client[1])
            rows.update({f"{k}@1": v for k, v in one.items()})
            progress(f"1 client: {json.dumps({k: v['p50_ms'] for k, v in one.items()})}")
            # the same three rows with the prompt's forward pass (and sentence ranking) in bf16
            f32 = gen.config
            gen.config = f32.model_copy(update={"prefill_dtype": "bfloat16"})
            fast = {f"{k}+bf16": senders[k] for k in ("ft", "hybrid", "hybrid-short")}
            with httpx.Client(timeout=900) as c:
                for send in fast.values():
                    send(c, 0)
            one = one_client_interleaved(fast, plan.per_client[1])
            gen.config = f32
            rows.update({f"{k}@1": v for k, v in one.items()})
            progress(f"1 client, prefill bf16: {json.dumps({k: v['p50_ms'] for k, v in one.items()})}")
            for n in LEVELS[1:]:
                for name in ("ft", "baseline", "rag", "hybrid"):
                    rows[f"{name}@{n}"] = closed_loop(senders[name], n, plan.per_client[n])
                    progress(f"{name}@{n}: {rows[f'{name}@{n}']['req_per_s']} req/s")
        stats = app.state.scheduler.stats
        raw_ms = rows["raw_generate@1"]["p50_ms"]

    ft1, ft8, base8, bf1 = rows["ft@1"], rows["ft@8"], rows["baseline@8"], rows["ft+bf16@1"]
    out = {
        "bench": "serving",
        "quick": args.quick,
        "new_tokens_per_request": plan.tokens,
        "top_k": cfg.retrieval.top_k,
        "prompt_tokens": {
            "ft": round(statistics.mean(gen.count_tokens(p) for p in ft_prompts), 1),
            "hybrid": round(hybrid_prompt_tokens, 1),
            "hybrid-short": round(short_prompt_tokens, 1),
        },
        "short_context_tokens": args.short_context,
        "torch_threads": torch.get_num_threads(),
        "mean_batch_rows": round(stats.rows / max(1, stats.batches), 2),
        "rows": rows,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    out["targets"] = [
        target("throughput_8_clients_vs_baseline", ft8["req_per_s"] / base8["req_per_s"], 2.0, ">="),
        target("latency_1_client_vs_raw_generate", ft1["p50_ms"] / raw_ms, 1.10, "<="),
        target("hybrid_p50_vs_ft_p50", rows["hybrid@1"]["p50_ms"] / ft1["p50_ms"], 1.15, "<="),
        target("hybrid_short_p50_vs_ft_p50", rows["hybrid-short@1"]["p50_ms"] / ft1["p50_ms"], 1.15, "<="),
        target("hybrid_p50_vs_ft_p50_prefill_bf16", rows["hybrid+bf16@1"]["p50_ms"] / bf1["p50_ms"], 1.15, "<="),
        target(
            "hybrid_short_p50_vs_ft_p50_prefill_bf16", rows["hybrid-short+bf16@1"]["p50_ms"] / bf1["p50_ms"], 1.15, "<="
        ),
    ]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
