"""The targeted API fuzz at full size: thousands of hypothesis-drawn requests against a real app.

The app serves a real workspace (the sample domain's v1 documents in an embedded index, one untrained
LoRA adapter named `tiny` in its adapters folder), generation capped at one token. The requests and
the checks are those of `tests/api_fuzz.py` (documents, batches, filters, snapshots, adapter names,
chat model names, unicode edge cases). Prints one JSON object on the last line: cases, status
counts, 5xx, accepted writes and unreadable ones, and the targets.
`--quick` runs 600 cases (well under two minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared strategies

from api_fuzz import fuzz  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from ragtune.core.config import load_config  # noqa: E402
from ragtune.core.generator import Generator  # noqa: E402
from ragtune.core.models import load_generator_model  # noqa: E402
from ragtune.core.sample import sample_path  # noqa: E402
from ragtune.retrieval.index import Index  # noqa: E402
from ragtune.retrieval.loaders import load_documents  # noqa: E402
from ragtune.serving.app import create_app  # noqa: E402
from ragtune.serving.pipeline import Pipeline  # noqa: E402

FULL, QUICK = 3000, 600


def target(name: str, value: float, goal: float, op: str) -> dict[str, Any]:
    met = value >= goal if op == ">=" else value <= goal
    return {"name": name, "value": value, "target": goal, "op": op, "met": met}


def build(ws: Path) -> Pipeline:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from serving import make_adapter  # bench/serving.py: an untrained LoRA of `ragtune tune`'s shape

    serving = {"max_new_tokens_cap": 1, "default_mode": "base", "max_document_chars": 5000}
    cfg = load_config(workspace=ws, environ={}, overrides={"serving": serving})
    model, tok = load_generator_model(cfg.models.generator, cfg.models.cache_dir)
    make_adapter(model, cfg.adapters_dir / "tiny", cfg.models.generator)
    index = Index.from_config(cfg)
    index.upsert(load_documents([sample_path("docs", "v1")]), progress=False)
    return Pipeline(cfg, Generator(model, tok, cfg.generation), index)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"{QUICK} cases instead of {FULL}")
    ap.add_argument("--cases", type=int, default=None)
    args = ap.parse_args()
    cases = args.cases or (QUICK if args.quick else FULL)
    with tempfile.TemporaryDirectory(prefix="rt-fuzz-") as tmp:
        pipeline = build(Path(tmp) / "ws")
        tally, seconds = fuzz(TestClient(create_app(pipeline)), str(pipeline.config.workspace), cases)
    for p in tally.problems[:20]:
        print("problem:", p, file=sys.stderr)
    print(
        json.dumps(
            {
                "bench": "fuzz",
                "cases": tally.cases,
                "seconds": round(seconds, 1),
                "5xx": tally.server_errors,
                "writes_accepted": tally.writes,
                "unreadable_writes": tally.unreadable_writes,
                "other_problems": len(tally.problems) - tally.server_errors - tally.unreadable_writes,
                "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
                "by_kind": dict(sorted(tally.kinds.items())),
                "targets": [
                    target("cases", tally.cases, cases, ">="),
                    target("5xx", tally.server_errors, 0, "<="),
                    target("unreadable_writes", tally.unreadable_writes, 0, "<="),
                    target("problems", len(tally.problems), 0, "<="),
                ],
            }
        )
    )


if __name__ == "__main__":
    main()
