"""Calibration of the paired latency comparison on the real model (issue 23).

Three measurements with the eval harness's own interleaved sampler (eval/harness/latency.py):
- A/A: the same rag arm twice, repeated on fresh seeded question samples; the share of repeats that
  call a difference at alpha 0.05 is the false-positive rate (target <= 0.10);
- a known 1.5x: the same arm twice, one side's measured timings scaled by 1.5 (real noise, known
  ratio); the share of repeats that find it (target >= 0.9);
- hybrid / ft at the default sample size (eval.latency_samples): the width of the 95% ratio interval
  (target <= 0.15).

Setup: a small invented fact index and a tiny LoRA adapter trained here. `--quick` runs fewer repeats
on fewer questions (same code paths). Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragtune.core.config import Config, load_config  # noqa: E402
from ragtune.core.types import Answer, Document  # noqa: E402
from ragtune.eval.harness.arms import ArmSpec  # noqa: E402
from ragtune.eval.harness.backends import InProcessBackend  # noqa: E402
from ragtune.eval.harness.data import EvalItem  # noqa: E402
from ragtune.eval.harness.latency import RatioTest, compare_latency, latency_items, run_latency  # noqa: E402

FACTS = {
    "pricing": "The Zorblat Basic plan costs 17 florins a month. The Pro plan costs 45 florins.",
    "hours": "Zorblat support answers on Wednesdays from 9 to 13. The hotline is 555-0199.",
    "colours": "The Zorblat lamp ships in mauve, ochre and slate. Mauve is the default.",
    "battery": "A Zorblat lamp battery lasts 31 hours. Charging takes 90 minutes.",
}
ASKS = [
    "How much is the Basic plan?",
    "How much does the Pro plan cost?",
    "When does support answer?",
    "What is the hotline number?",
    "Which colours does the lamp come in?",
    "What is the default colour?",
    "How long does the battery last?",
    "How long does charging take?",
]
FACTOR = 1.5


class Scaled(InProcessBackend):
    """The pipeline, with one arm's measured timings multiplied by a known factor."""

    def __init__(self, inner: InProcessBackend, arm: str, factor: float) -> None:
        super().__init__(inner.pipeline)
        self.slow, self.factor = arm, factor

    def answer(self, questions: Sequence[str], arm: ArmSpec, snapshot: str | None) -> list[Answer]:
        out = super().answer(questions, arm, snapshot)
        if arm.name == self.slow:
            for a in out:
                t = a.timings
                for f in ("retrieve_ms", "ttft_ms", "generate_ms", "total_ms"):
                    setattr(t, f, getattr(t, f) * self.factor)
        return out


def questions(n: int) -> list[EvalItem]:
    """n distinct questions: the asks, each in several wordings."""
    lead = ["", "Please tell me: ", "Quick question. ", "I would like to know: ", "Zorblat: ", "One more: "]
    qs = [f"{p}{q}" for p in lead for q in ASKS]
    return [EvalItem(id=f"q{i}", question=q, answers=["x"]) for i, q in enumerate(qs[:n])]


def setup(ws: Path, max_new: int) -> tuple[Config, InProcessBackend]:
    from ragtune.retrieval.index import Index
    from ragtune.serving.pipeline import Pipeline
    from ragtune.tuning.data import Example
    from ragtune.tuning.trainer import train_adapter

    cfg = load_config(
        workspace=ws,
        environ={},
        overrides={
            "generation": {"max_new_tokens": max_new},
            "tuning": {"epochs": 1, "batch_size": 4, "learning_rate": 2e-3, "val_fraction": 0.0, "format_sample": 0},
        },
    )
    Index.from_config(cfg).upsert([Document(id=k, title=k, text=v) for k, v in FACTS.items()], progress=False)
    examples = [
        Example(question=q, answer=f"{FACTS['battery'].split('.')[0]}.\nSources: battery", group=f"g{i % 4}")
        for i, q in enumerate(ASKS * 2)
    ]
    train_adapter(examples, "bench", cfg, progress=False)
    return cfg, InProcessBackend(Pipeline.from_config(cfg))


def rate(tests: list[RatioTest], hit: str | None) -> float:
    """Share of repeats whose verdict names `hit` as faster (None: names anyone)."""
    return sum(t.significant and (hit is None or t.faster == hit) for t in tests) / max(len(tests), 1)


def repeats(
    backend: InProcessBackend, items: list[EvalItem], arms: list[ArmSpec], reps: int, n: int
) -> list[RatioTest]:
    out = []
    for r in range(reps):
        chosen = latency_items(items, n, seed=r)
        (t,) = compare_latency(run_latency(backend, chosen, arms, seed=r), resamples=2000, seed=r)
        out.append(t)
    return out


def target(name: str, value: float, goal: float, op: str) -> dict[str, Any]:
    met = value <= goal if op == "<=" else value >= goal
    return {"name": name, "value": round(value, 4), "target": goal, "op": op, "met": met}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats on fewer questions (under two minutes)")
    ap.add_argument("--repeats", type=int, default=None, help="A/A and known-difference repeats (default 40; quick 3)")
    args = ap.parse_args()
    reps, n, max_new = (3, 6, 4) if args.quick else (40, 32, 16)
    reps = args.repeats or reps
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        cfg, backend = setup(Path(tmp) / "ws", max_new)
        size = cfg.eval.latency_samples if isinstance(cfg.eval.latency_samples, int) and not args.quick else n
        items = questions(max(n, size))
        twins = [ArmSpec(name="rag-1", mode="rag"), ArmSpec(name="rag-2", mode="rag")]
        aa = repeats(backend, items, twins, reps, n)
        known = repeats(Scaled(backend, "rag-2", FACTOR), items, twins, reps, n)
        arms = [ArmSpec(name="ft", mode="ft", adapter="bench"), ArmSpec(name="hybrid", mode="hybrid", adapter="bench")]
        (hf,) = compare_latency(run_latency(backend, items[:size], arms, seed=0), resamples=2000)
    fp, found = rate(aa, None), rate(known, "rag-1")
    width = hf.high - hf.low
    print(
        json.dumps(
            {
                "quick": args.quick,
                "repeats": reps,
                "questions": n,
                "aa_false_positive_rate": fp,
                "known_1_5x_detection_rate": found,
                "known_1_5x_ratios": [round(t.ratio, 3) for t in known],
                "hybrid_over_ft": {"ratio": hf.ratio, "low": hf.low, "high": hf.high, "n": hf.n},
                "wall_s": round(time.time() - t0, 1),
                "targets": [
                    target("A/A false-positive rate at alpha 0.05", fp, 0.10, "<="),
                    target("detection rate of a known 1.5x difference", found, 0.9, ">="),
                    target("width of the hybrid/ft ratio interval at the default sample size", width, 0.15, "<="),
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
