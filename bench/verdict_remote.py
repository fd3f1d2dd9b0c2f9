"""A verdict suite with one remote-backend arm, end to end.

Starts a real OpenAI-compatible server, `ragtune serve` with `serving.engine_api` (vLLM's contract:
the client's messages completed as given, models named by the base model's name), in its own
workspace and process; writes a verdict suite over the bundled sample domain with one extra arm,
`remote-rag`, whose generator is that server (`backend: openai`); runs `ragtune verdict --suite` as a
user would; stops the server.

The remote server holds the same bundled model and decodes greedily, so `remote-rag` must answer
exactly what the in-process `rag` arm answers: the figure `remote_equals_rag` (share of questions
with the same answer text) checks that the whole remote path (messages out, text back) loses nothing.

Prints one JSON object on the last stdout line: the arms' scores and latencies from verdict.json,
the recommendation, and the agreement figure. `--quick` uses fewer questions and one training run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from ragtune.core.sample import sample_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared loopback helper
from net import free_port  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASE = "bundled:smollm2-135m-instruct"


def start_engine(workspace: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAGTUNE_WORKSPACE": str(workspace), "RAGTUNE_SERVING__ENGINE_API": "true"}
    cmd = [sys.executable, "-m", "ragtune.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the engine exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit(f"the engine did not answer within 300 s; see {log}")


def write_suite(folder: Path, base_url: str) -> Path:
    suite = {
        "data": str(sample_path("eval.jsonl")),
        "train": str(sample_path("train.jsonl")),
        "docs": [str(sample_path("docs", "v1"))],
        "arms": {
            "remote-rag": {
                "mode": "rag",
                "generator": {"backend": "openai", "base_url": base_url, "served_model": BASE},
            }
        },
    }
    path = folder / "verdict-remote.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def verdict_env(workspace: Path, quick: bool) -> dict[str, str]:
    env = {**os.environ, "RAGTUNE_WORKSPACE": str(workspace)}
    if quick:
        env |= {
            "RAGTUNE_VERDICT__CURVE_FRACTIONS": "[1.0]",
            "RAGTUNE_VERDICT__RAFT": "false",
            "RAGTUNE_VERDICT__EVAL_LIMIT": "24",
            "RAGTUNE_VERDICT__CURVE_EVAL_LIMIT": "8",
        }
    return env


def agreement(answers: Path, a: str, b: str) -> float:
    """Share of questions where arms `a` and `b` gave the same answer text."""
    rows = [json.loads(line)["answers"] for line in answers.read_text().splitlines() if line.strip()]
    pairs = [(r[a]["answer"], r[b]["answer"]) for r in rows if a in r and b in r]
    return round(sum(x == y for x, y in pairs) / len(pairs), 3) if pairs else float("nan")


def summary(out: Path) -> dict[str, Any]:
    """Each arm's quality (mean and interval) and p50 latency, and the recommended arm, from verdict.json."""
    report = json.loads((out / "verdict.json").read_text())
    arms = {
        a["arm"]: {
            "quality": a["quality"]["mean"],
            "ci": [a["quality"].get("lo"), a["quality"].get("hi")],
            "p50_ms": a["p50_ms"],
        }
        for a in report["figures"]["arms"]
    }
    return {"metric": report["figures"]["metric"], "arms": arms, "choice": report["recommendation"]["choice"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="24 questions, one training run, no RAFT")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run's folder here (default: a temp folder)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="verdict-remote-"))
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    started = time.perf_counter()
    engine = start_engine(root / "engine-ws", port, root / "engine.log")
    try:
        suite = write_suite(root, f"http://127.0.0.1:{port}/v1")
        out = root / "verdict-out"
        cmd = [sys.executable, "-m", "ragtune.cli", "verdict", "--suite", str(suite), "--out", str(out)]
        subprocess.run(cmd, env=verdict_env(root / "verdict-ws", args.quick), check=True)
    finally:
        engine.terminate()
        engine.wait(timeout=60)
    result = summary(out) | {
        "remote_equals_rag": agreement(out / "answers.jsonl", "remote-rag", "rag"),
        "wall_s": round(time.perf_counter() - started, 1),
        "quick": args.quick,
        "out": str(out),
        "targets": {"remote_equals_rag": ">= 0.95 (same model, greedy decoding)"},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
