"""What the latency knobs cost in accuracy on CMU-QA: hybrid with whole chunks against hybrid with
the retrieved text cut to its sentences nearest the question (`prompt.compress: sentences`), and
both again with the prompt's forward pass in bf16 (`generation.prefill_dtype: bfloat16`).

Same data, index, adapter, questions and seed as `bench/eval_cmuqa.py` (pass its --out folder to
reuse its workspace and adapter); the two arms run in one process, so the comparison is paired.
`bench/serving.py` measures the latency side (its `hybrid-short` row). Prints one JSON object on
the last line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from eval_cmuqa import ADAPTER, DATA, ROOT, setup  # type: ignore[import-not-found]

from ragtune.eval.harness.arms import EvalSuite
from ragtune.eval.harness.backends import InProcessBackend
from ragtune.eval.harness.runner import RunSettings
from ragtune.eval.harness.session import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="a few articles, 24 questions")
    ap.add_argument("--out", type=Path, default=None, help="the eval_cmuqa folder (workspace ws/ is reused)")
    ap.add_argument("--questions", type=int, default=None, help="test questions (default 320; quick 24)")
    ap.add_argument("--train-examples", type=int, default=None, help="as in eval_cmuqa (default 64; quick 16)")
    ap.add_argument("--short-context", type=int, default=160, help="token budget of the compressed arm")
    ap.add_argument("--fresh", action="store_true", help="discard records of an earlier run")
    ap.add_argument(
        "--arms",
        default="hybrid,hybrid-short,hybrid-bf16,hybrid-short-bf16",
        help="comma-separated subset of the four arms to run (default all)",
    )
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"CMU-QA not found at {DATA}")
    t_start = time.perf_counter()
    out = args.out or ROOT / "bench-out" / ("eval_cmuqa-quick" if args.quick else "eval_cmuqa")
    n_q = args.questions or (24 if args.quick else 320)

    ready = setup(out, args.quick, n_q, args.train_examples or (16 if args.quick else 64), not args.quick)
    cfg, pipeline, items = ready.cfg, ready.pipeline, ready.items
    short = {"mode": "hybrid", "adapter": ADAPTER, "compress": "sentences", "max_context_tokens": args.short_context}
    bf16 = {"prefill_dtype": "bfloat16"}
    arms = {
        "hybrid": {"adapter": ADAPTER},
        "hybrid-short": short,
        "hybrid-bf16": {"mode": "hybrid", "adapter": ADAPTER, **bf16},
        "hybrid-short-bf16": {**short, **bf16},
    }
    wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = sorted(set(wanted) - set(arms))
    if unknown or len(wanted) < 2:
        sys.exit(f"--arms: name two or more of {', '.join(arms)} (unknown: {', '.join(unknown) or 'none'})")
    suite = EvalSuite.model_validate({"arms": {a: arms[a] for a in wanted}})
    run = evaluate(
        cfg,
        suite,
        InProcessBackend(pipeline),
        out / "compress-report",
        items=items,
        settings=RunSettings(fresh=args.fresh, progress=not args.quick),
        title=f"CMU-QA: hybrid with whole chunks vs compressed to {args.short_context} tokens, float32 vs bf16 prefill",
        extra_meta={"dataset": str(DATA), "dataset_kind": "cmu_qa", "split": "test (30% of articles, seed 0)"},
    )
    doc = json.loads(run.json_path.read_text())
    records = [json.loads(line) for line in (run.json_path.parent / "records.jsonl").read_text().splitlines() if line]
    tokens = {
        a.name: round(statistics.mean(r["prompt_tokens"] for r in records if r["arm"] == a.name), 1) for a in suite.arms
    }
    summary = doc["summary"]
    print(run.md_path.read_text() if not args.quick else "", flush=True)
    result = {
        "bench": "compress_cmuqa",
        "quick": args.quick,
        "questions": int(doc["manifest"]["questions"]),
        "short_context_tokens": args.short_context,
        "prompt_tokens": tokens,
        "f1": {a: round(summary[a]["metrics"].get("f1", 0.0), 4) for a in summary},
        "contains": {a: round(summary[a]["metrics"].get("contains", 0.0), 4) for a in summary},
        "f1_vs_hybrid": {
            t["a"]: {k: t[k] for k in ("diff", "low", "high", "p_holm", "verdict")}
            for t in doc["comparisons"]
            if t["metric"] == "f1" and t["b"] == "hybrid"
        },
        "f1_bf16_vs_float32": {
            t["a"]: {k: t[k] for k in ("b", "diff", "low", "high", "p_holm", "verdict")}
            for t in doc["comparisons"]
            if t["metric"] == "f1" and t["a"].endswith("-bf16") and t["b"] == t["a"].removesuffix("-bf16")
        },
        "latency_p50_ms": {a: summary[a].get("p50_ms") for a in summary},
        "ttft_p50_ms": {a: summary[a].get("ttft_p50_ms") for a in summary},
        "wall_s": round(time.perf_counter() - t_start, 1),
        "report_dir": str(run.json_path.parent),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
