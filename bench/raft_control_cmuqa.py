"""The control for RAFT-on-top in the CMU-QA verdict: the same 64 rows, the same training settings
and the same parent adapter, but plain SFT rows instead of RAFT rows.

`verdict-raft` continues `verdict-ft-100` on 64 RAFT rows, so against `verdict-ft-100` it has had
more training. This trains `verdict-sft-more`, which continues `verdict-ft-100` on those 64
examples as they were for the fine-tune, with the RAFT run's tuning overrides. Serving it in hybrid
next to `verdict-raft` (`bench/raft_vs_sft_cmuqa.yaml`, arm `hybrid-sft-more`) separates "RAFT
rows" from "more steps". Run in the verdict's workspace, after the verdict:

    python bench/raft_control_cmuqa.py -w WS     # then ragtune eval --suite bench/raft_vs_sft_cmuqa.yaml ...

With `--rows N` both sides grow: `--rows 160` trains `verdict-sft-more-160`, and `--rows 160 --raft`
trains `verdict-raft-160` (RAFT rows built as the verdict builds them).

Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from ragtune.core.config import load_config
from ragtune.eval.verdict.inputs import load_suite, load_verdict_data
from ragtune.eval.verdict.learning_curve import nested_subsets
from ragtune.eval.verdict.run import raft_rows, raft_tuning
from ragtune.retrieval.index import Index
from ragtune.tuning.trainer import train_adapter

ROOT = Path(__file__).resolve().parents[1]
PARENT, NAME = "verdict-ft-100", "verdict-sft-more"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-w", "--workspace", type=Path, required=True, help="the CMU-QA verdict's workspace")
    ap.add_argument("--suite", type=Path, default=ROOT / "bench" / "verdict_cmuqa.yaml")
    ap.add_argument("-c", "--config", type=Path, default=ROOT / "bench" / "verdict_cmuqa.config.yaml")
    ap.add_argument("--rows", type=int, default=None, help="training rows (default verdict.raft_examples, 64)")
    ap.add_argument("--raft", action="store_true", help="train RAFT rows instead (the treatment, for --rows N)")
    args = ap.parse_args()
    cfg = load_config(args.config, workspace=args.workspace)
    if not (cfg.adapters_dir / PARENT).is_dir():
        raise SystemExit(f"no adapter '{PARENT}' in {cfg.adapters_dir}: run the CMU-QA verdict there first")
    data = load_verdict_data(load_suite(args.suite))
    # the verdict's own selection: the 100% subset in its seeded order, then the first raft_examples rows
    full = nested_subsets(data.examples, sorted(set(cfg.verdict.curve_fractions) | {1.0}), cfg.generation.seed)[1.0]
    n = args.rows or cfg.verdict.raft_examples
    rows = full[:n]
    name = NAME if args.rows is None else f"{NAME}-{n}"
    snapshot = None
    if args.raft:  # the verdict's own RAFT builder, with n rows instead of verdict.raft_examples
        index = Index.from_config(cfg)
        snapshot = index.snapshot
        wide = cfg.model_copy(update={"verdict": cfg.verdict.model_copy(update={"raft_examples": n})})
        rows = raft_rows(full, index, wide, snapshot, Console(stderr=True)) or []
        name = f"verdict-raft-{n}"
    tuning = cfg.tuning.model_copy(update=raft_tuning(cfg))
    t0 = time.perf_counter()
    result = train_adapter(
        rows,
        name,
        cfg.model_copy(update={"tuning": tuning}),
        snapshot=snapshot,
        init_adapter=cfg.adapters_dir / PARENT,
    )
    print(
        json.dumps(
            {
                "bench": "raft_control_cmuqa",
                "adapter": name,
                "parent": PARENT,
                "rows": len(rows),
                "train_s": round(time.perf_counter() - t0, 1),
                "metrics": result.card.metrics,
            }
        )
    )


if __name__ == "__main__":
    main()
